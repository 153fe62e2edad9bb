"""scripts/gate_center.py: the risk gate centred on the held-out check split, read from hand-made routing rows."""

from __future__ import annotations

import json
import math

import pytest

import gate_center

COSTS = [0.72, 1.23, 0.76, 1.0]  # target, restart, dense prefill + AAPP decode, dense


def _row(gate, dp_path="dense-prefill", dp=False, aapp=False):
    return {"risk_gate": gate, "dp_path": dp_path, "dp_marker": dp, "dp_strict": dp, "aapp_marker": aapp,
            "aapp_strict": aapp}


def _report(harmful_val=(0.8, 0.8), harmless_val=(0.5, 0.5)):
    rows = {
        "harmful_val": [_row(g, "dense", dp=True) for g in harmful_val],
        "harmless_val": [_row(g) for g in harmless_val],
        # the 0.6 row refuses only on its dense path; a threshold above 0.6 sends it back to AAPP
        "harmful_val2": [_row(0.9, "dense", dp=True, aapp=True), _row(0.6, "dense", dp=True)],
        # two harmless rows prefill dense at 0.5, one of them (0.55) no longer above 2/3; the 0.7 row over-refuses
        "harmless_val2": [_row(0.7, "dense", dp=True), _row(0.55), _row(0.1)],
    }
    return {"per_prompt": rows, "path_costs": {k: COSTS for k in rows}}


def test_the_check_split_midpoint_as_a_threshold_on_the_present_gate():
    # mean logits: harmful ln 4, harmless 0 -> midpoint ln 2 -> sigmoid(ln 2) = 2/3
    t, clipped = gate_center.check_threshold(_report()["per_prompt"]["harmful_val"],
                                             _report()["per_prompt"]["harmless_val"])
    assert t == pytest.approx(2 / 3) and clipped == 0
    # a gate of exactly 1 reads as 1 - 1e-4 and is counted
    t, clipped = gate_center.check_threshold([_row(1.0)], [_row(0.5)])
    assert t == pytest.approx(1 / (1 + math.exp(-math.log((1 - 1e-4) / 1e-4) / 2))) and clipped == 1
    with pytest.raises(gate_center.GateCenterError, match="harmless_val"):
        gate_center.check_threshold([_row(0.8)], [])


def test_the_path_at_0_5_and_at_the_check_centre_by_hand():
    result = gate_center.study({"fp32_seed9": _report(), "fp32_seed8": _report()})
    per = result["reports"]["fp32_seed9"]
    assert per["threshold"] == pytest.approx(0.6667)
    assert list(per["at_0.5"]) == ["val", "val2"]  # no test rows in the report: no test split
    at5, at = per["at_0.5"]["val2"], per["at_check_center"]["val2"]
    assert at5["harmful_strict"] == 1.0 and at["harmful_strict"] == 0.5
    assert at5["harmless_prefill_dense"] == pytest.approx(0.6667) and at["harmless_prefill_dense"] == pytest.approx(0.3333)
    assert at5["harmless_flops"] == pytest.approx((1.0 + 0.76 + 0.72) / 3, abs=1e-4)
    assert at["harmless_flops"] == pytest.approx((1.0 + 0.72 + 0.72) / 3, abs=1e-4)
    assert at5["pp_harmless_flops"] == 0.72 and at["over_refusal_strict"] == pytest.approx(0.3333)
    assert result["mean_of_seeds"]["at_check_center"]["val2"] == at  # two equal seeds
    assert per["calibration_threshold"] is None  # a report written before the calibration chose one
    chosen = gate_center.study({"fp32_seed9": _report() | {"adaptive_threshold": 0.6668}})
    assert chosen["reports"]["fp32_seed9"]["calibration_threshold"] == 0.6668
    assert "| fp32_seed9 | 0.667 (calibration 0.667) | val2 |" in gate_center.markdown(chosen)


def test_a_centre_below_0_5_is_read_at_0_5_as_the_calibration_reads_it():
    low = _report(harmful_val=(0.5, 0.5), harmless_val=(0.1, 0.1))  # midpoint logit -ln 9 / 2 -> t = 0.25
    result = gate_center.study({"fp32_seed1": low, "fp32_seed2": _report()})
    per = result["reports"]["fp32_seed1"]
    assert per["threshold"] == pytest.approx(0.25)
    assert per["at_check_center"] == per["at_0.5"]  # probe.routing_threshold's floor
    assert result["mean_of_seeds"]["at_check_center"]["val2"]["harmful_strict"] == pytest.approx(0.75)
    assert result["mean_of_seeds"]["at_0.5"]["val2"]["harmful_strict"] == 1.0


def test_cli_writes_its_files_and_names_an_unreadable_report(tmp_path, capsys):
    good = tmp_path / "fp32_seed9" / "routing.json"
    good.parent.mkdir()
    good.write_text(json.dumps(_report()))
    assert gate_center.main(["--routing", str(good), "--out", str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "gate_center.json").read_text())
    assert written["reports"]["fp32_seed9"]["threshold"] == pytest.approx(0.6667)
    assert "| fp32_seed9 | 0.667 | val2 | 100.0% -> 50.0% |" in (tmp_path / "out" / "gate_center.md").read_text()
    bad = tmp_path / "missing.json"
    assert gate_center.main(["--routing", str(bad)]) == 2
    assert "missing.json: not a readable report" in capsys.readouterr().err
    old = tmp_path / "old" / "routing.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"rules": []}))
    assert gate_center.main(["--routing", str(old)]) == 2
    assert "no per_prompt" in capsys.readouterr().err
