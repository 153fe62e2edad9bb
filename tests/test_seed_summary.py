"""scripts/seed_summary.py: per-seed rows, ratios to each seed's own dense, and their mean, by hand."""

from __future__ import annotations

import json

import pytest

import seed_summary

METHODS = ("dense", "pp", "aapp", "aapp-adaptive")


def _row(method: str, sparsity: float, refusal: float, strict: float, split: str | None = None, **extra) -> dict:
    row = {"method": method, "sparsity": sparsity, "refusal_rate": refusal, "strict_refusal_rate": strict,
           "over_refusal_rate": 0.02, "strict_over_refusal_rate": 0.01, "flops_ratio_harmful": 1.0 if method == "dense" else 0.72,
           "flops_ratio_harmless": 1.0 if method == "dense" else 0.7, "perplexity": 2.0}
    if split:
        row.update(split=split, engine="torch")
    return dict(row, **extra)


def _run(folder, dense: float, aapp: float) -> None:
    folder.mkdir()
    rows = [_row("dense", 0.0, dense, dense)] + [_row(m, s, aapp, aapp / 2) for m in METHODS[1:] for s in (0.2, 0.4)]
    (folder / "table.json").write_text(json.dumps({"rows": rows}))
    val2 = [_row("dense", 0.0, dense, dense, "val2")] + [_row(m, 0.4, aapp, aapp / 2, "val2") for m in METHODS[1:]]
    val2 += [_row("aapp-adaptive", 0.4, 0.0, 0.0, "val2", adaptive_threshold=0.9),  # another gate: not read
             _row("aapp", 0.4, 0.0, 0.0, "val2", engine="onnx")]  # the graphs' row: not read
    (folder / "eval_val2.json").write_text(json.dumps({"rows": val2}))


def test_ratios_and_mean_by_hand(tmp_path, capsys):
    _run(tmp_path / "a", dense=0.8, aapp=0.4)
    _run(tmp_path / "b", dense=1.0, aapp=0.9)
    assert seed_summary.main(["--run", f"a={tmp_path / 'a'}", "--run", f"b={tmp_path / 'b'}",
                              "--out", str(tmp_path / "out")]) == 0
    got = json.loads((tmp_path / "out" / "summary.json").read_text())
    a, b, mean = got["rows"]["a"], got["rows"]["b"], got["rows"]["mean of 2"]
    assert a["val2"]["aapp"]["refusal_rate"] == 0.4 and a["val2"]["aapp"]["_ratio"]["refusal_rate"] == pytest.approx(0.5)
    assert b["val2"]["aapp"]["_ratio"]["strict_refusal_rate"] == pytest.approx(0.45)
    # the mean of the ratios (each seed against its own dense), not the ratio of the means
    assert mean["val2"]["aapp"]["_ratio"]["refusal_rate"] == pytest.approx((0.5 + 0.9) / 2)
    assert mean["test"]["aapp"]["refusal_rate"] == pytest.approx(0.65)
    assert mean["val2"]["aapp"]["_spread"]["refusal_rate"] == [0.4, 0.9]
    assert "| mean of 2 | val2 | aapp 0.4 | 65.0% / 32.5% | 0.70 / 0.35 | 2.0% / 1.0% | 0.720 / 0.700 | 2.00 |" in capsys.readouterr().out


def test_the_adaptive_row_read_is_the_calibrations_threshold():
    """A row at the calibration's threshold (``adaptive_threshold_pinned`` false) is read whatever its value; a
    row at a threshold its command named is not; rows from before the flag count at 0.5 only."""
    pinned = _row("aapp-adaptive", 0.4, 0.1, 0.1, "val2", adaptive_threshold=0.7, adaptive_threshold_pinned=True)
    calibrated = _row("aapp-adaptive", 0.4, 0.9, 0.9, "val2", adaptive_threshold=0.7621, adaptive_threshold_pinned=False)
    assert seed_summary._pick([pinned, calibrated], "aapp-adaptive", 0.4, "x")["refusal_rate"] == 0.9
    old_default = _row("aapp-adaptive", 0.4, 0.8, 0.8, "val2", adaptive_threshold=0.5)
    old_sweep = _row("aapp-adaptive", 0.4, 0.2, 0.2, "val2", adaptive_threshold=0.7769)
    assert seed_summary._pick([old_sweep, old_default], "aapp-adaptive", 0.4, "x")["refusal_rate"] == 0.8
    assert not seed_summary.pinned_threshold(_row("aapp-adaptive", 0.4, 0.8, 0.8))  # reproduce_table's rows
    with pytest.raises(seed_summary.SummaryError, match="no reference row for aapp-adaptive"):
        seed_summary._pick([pinned, old_sweep], "aapp-adaptive", 0.4, "x")


def test_missing_results_name_the_script(tmp_path, capsys):
    _run(tmp_path / "a", dense=0.8, aapp=0.4)
    (tmp_path / "a" / "eval_val2.json").unlink()
    assert seed_summary.main(["--run", f"a={tmp_path / 'a'}"]) == 2
    err = capsys.readouterr().err
    assert "eval_splits.py" in err and "eval_val2.json" in err
    assert seed_summary.main(["--run", f"a={tmp_path / 'a'}", "--mean", "z"]) == 2
