"""circuits.choose_budget (the calibration's budget rule) and scripts/budget_rule.py (how candidate rules
transfer between disjoint check splits) on hand-made check results."""

from __future__ import annotations

import json

import pytest

import budget_rule
from aapp_export.circuits import choose_budget


def _check(strict, over=0.0, refusal=None, prob=0.5):
    return {"strict_refusal": strict, "over_refusal": over, "net": round(strict - over, 4),
            "refusal": strict if refusal is None else refusal, "refusal_token_prob": prob}


def test_the_first_budget_stays_unless_another_keeps_more_net():
    assert choose_budget({"0.05": _check(0.5), "0.2": _check(0.6, over=0.1), "0.4": _check(0.5)}) == 0.05
    assert choose_budget({"0.05": _check(0.5), "0.2": _check(0.7, over=0.1), "0.4": _check(0.65)}) == 0.4
    # a tie on net: strict refusal, then marker refusal, then the probability decide
    assert choose_budget({"0.05": _check(0.5), "0.2": _check(0.7, over=0.1), "0.4": _check(0.6)}) == 0.2
    tied = {"0.05": _check(0.5), "0.1": _check(0.6, prob=0.4), "0.3": _check(0.6, prob=0.7)}
    assert choose_budget(tied) == 0.3
    # a full tie: the first in BUDGETS order
    assert choose_budget({"0.05": _check(0.5), "0.4": _check(0.6), "0.1": _check(0.6)}) == 0.1
    assert choose_budget({"0.05": _check(0.5), "0.02": _check(0.9)}, first=0.02) == 0.02


def _report(all_, a, b, chosen=None, prob=True):
    """A stability report whose three runs have strict refusal ``{budget: s}`` and no over-refusal."""
    runs = {"all": all_, "A": a, "B": b}
    report = {"by_budget": {r: dict(v) for r, v in runs.items()}, "by_budget_strict": runs,
              "by_budget_over_refusal": {r: {k: 0.0 for k in v} for r, v in runs.items()},
              "check_prompts": {"all": 48, "A": 24, "B": 24}, "chosen_budget": chosen or {}}
    if prob:
        report["by_budget_refusal_token_prob"] = {r: {k: 0.5 for k in v} for r, v in runs.items()}
    return report


def test_rules_choices_and_their_transfer_by_hand():
    a = {"0.05": 0.5, "0.2": 0.9, "0.4": 0.875}
    b = {"0.05": 0.5, "0.2": 0.6, "0.4": 0.8}
    result = budget_rule.study({"x": _report(a, a, b), "old": {"by_budget": {"all": {"0.05": 1.0}}}})
    assert set(result["skipped"]) == {"old"}
    best = result["reports"]["x"]["rules"]["best"]
    assert best["chosen"] == {"all": 0.2, "A": 0.2, "B": 0.4} and not best["halves_agree"]
    # A's 20% read on B: net 0.6 against B's best 0.8; B's 40% read on A: 0.875 against 0.9
    assert [(h["budget"], h["net"], h["regret"]) for h in best["held_out"]] == [(0.2, 0.6, 0.2), (0.4, 0.875, 0.025)]
    assert result["means"]["best"]["held_out_net"] == pytest.approx((0.6 + 0.875) / 2)
    # one-se on A: best 0.9, se sqrt(0.9 * 0.1 / 24) = 0.061, so 0.875 (40%) is within and 0.5 is not: the
    # smallest within is 20%; on B: 0.8 - sqrt(0.16 / 24) = 0.718, only 40% is within
    one_se = result["reports"]["x"]["rules"]["one-se"]["chosen"]
    assert one_se["A"] == 0.2 and one_se["B"] == 0.4
    assert result["reports"]["x"]["rules"]["fixed-0.4"]["held_out"][0]["net"] == 0.8
    assert result["means"]["fixed-0.4"]["halves_agree"] == 1


def test_a_recorded_choice_breaks_a_tie_the_report_cannot_and_stands_only_then():
    tie = {"0.05": 0.5, "0.1": 0.7, "0.4": 0.7}
    report = _report(tie, tie, tie, chosen={"all": 0.4, "A": 0.4, "B": 0.4}, prob=False)
    rows = budget_rule.study({"x": report})["reports"]["x"]
    assert rows["rules"]["best"]["chosen"]["A"] == 0.4 and rows["best_reproduces_recorded"]
    report = _report(tie, tie, tie, chosen={"all": 0.05, "A": 0.05, "B": 0.05}, prob=False)
    rows = budget_rule.study({"x": report})["reports"]["x"]  # 5% does not tie with 10%: recomputed, flagged
    assert rows["rules"]["best"]["chosen"]["A"] == 0.1 and not rows["best_reproduces_recorded"]
    report = _report(tie, tie, tie, chosen={"all": 0.3, "A": 0.3, "B": 0.3}, prob=False)
    rows = budget_rule.study({"x": report})["reports"]["x"]  # a recorded budget the report never checked
    assert rows["rules"]["best"]["chosen"]["A"] == 0.1 and not rows["best_reproduces_recorded"]


def test_the_command_writes_its_files_and_names_a_bad_input(tmp_path, capsys):
    a = {"0.05": 0.5, "0.2": 0.9}
    (tmp_path / "r.json").write_text(json.dumps(_report(a, a, a)))
    assert budget_rule.main(["--stability", str(tmp_path / "r.json"), "--out", str(tmp_path / "out")]) == 0
    assert "| best | 20% / 20% / 20% |" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "budget_rule.json").read_text())["means"]["best"]["held_out_net"] == 0.9
    assert budget_rule.main(["--stability", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
