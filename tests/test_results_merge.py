"""scripts/reproduce_table.py --update (``merge_rows``): new rows replace the same measurement in place,
the others stay, the calibration must match, and the command is recorded."""

from __future__ import annotations

import json

import pytest

from reproduce_table import merge_rows, row_key


def _row(method: str, sparsity: float, refusal: float, **extra) -> dict:
    return {"method": method, "sparsity": sparsity, "refusal_rate": refusal, **extra}


def test_merge_replaces_in_place_keeps_the_rest_and_records_the_update(tmp_path):
    path = tmp_path / "table.json"
    old = [_row("dense", 0.0, 0.9), _row("pp", 0.4, 0.5), _row("aapp-adaptive", 0.4, 0.8),
           _row("aapp-adaptive", 0.4, 0.7, adaptive_threshold=0.77), _row("aapp-adaptive", 0.5, 0.6)]
    path.write_text(json.dumps({"meta": {"scorer": "grad-act", "budget": 0.05, "command": "first"}, "rows": old}))
    new = [_row("dense", 0.0, 0.9), _row("aapp-adaptive", 0.4, 0.85), _row("aapp-adaptive", 0.2, 0.95)]
    rows, meta = merge_rows(path, new, {"command": "second"}, {"scorer": "grad-act", "budget": 0.05})
    assert [r["refusal_rate"] for r in rows] == [0.9, 0.5, 0.85, 0.7, 0.6, 0.95]
    assert meta["command"] == "first" and meta["updates"] == [{"command": "second"}]
    assert row_key(rows[3]) != row_key(rows[2])  # another gate threshold is another measurement
    path.write_text(json.dumps({**meta, "rows": rows}))  # eval_splits' layout: metadata at the top level
    rows, meta = merge_rows(path, [_row("pp", 0.4, 0.4)], {"command": "third"}, {"scorer": "grad-act"})
    assert [r["refusal_rate"] for r in rows][:2] == [0.9, 0.4] and "rows" not in meta
    assert [u["command"] for u in meta["updates"]] == ["second", "third"]


def test_merge_refuses_another_calibration_or_no_file(tmp_path):
    path = tmp_path / "table.json"
    with pytest.raises(SystemExit, match="does not exist"):
        merge_rows(path, [], {}, {})
    path.write_text(json.dumps({"meta": {"scorer": "grad-act", "budget": 0.05}, "rows": []}))
    with pytest.raises(SystemExit, match="another calibration"):
        merge_rows(path, [], {}, {"scorer": "refusal-dir", "budget": 0.05})


def test_a_row_at_the_calibrations_threshold_replaces_the_old_default_row(tmp_path):
    """aapp-adaptive rows a command ran at the calibration's threshold are one measurement whatever its value:
    a row of a new calibration (0.7621) replaces the row of the old default (0.5, written before rows said
    whether a threshold was named); a row at a named threshold stays another measurement."""
    path = tmp_path / "eval.json"
    old = [_row("aapp-adaptive", 0.4, 0.8, split="val2", adaptive_threshold=0.5),  # eval_splits' old default
           _row("aapp-adaptive", 0.4, 0.7, split="val2", adaptive_threshold=0.7769),  # a threshold it named
           _row("aapp-adaptive", 0.4, 0.6, split="test")]  # reproduce_table's: no threshold recorded, 0.5
    path.write_text(json.dumps({"scorer": "grad-act", "rows": old}))
    new = [_row("aapp-adaptive", 0.4, 0.9, split="val2", adaptive_threshold=0.7621, adaptive_threshold_pinned=False),
           _row("aapp-adaptive", 0.4, 0.95, split="test", adaptive_threshold=0.7621, adaptive_threshold_pinned=False),
           _row("aapp-adaptive", 0.4, 0.5, split="val2", adaptive_threshold=0.9, adaptive_threshold_pinned=True)]
    rows, _ = merge_rows(path, new, {"command": "again"}, {"scorer": "grad-act"})
    assert [r["refusal_rate"] for r in rows] == [0.9, 0.7, 0.95, 0.5]
