"""scripts/measure_routing.py (``simulate``): a rule's dense share, and refusal counted from the dense
answer where it sends a row dense and from AAPP's elsewhere; no refusal figure when it would send
dense a row whose dense answer was never generated."""

from __future__ import annotations

from measure_routing import RULES, simulate


def _row(dense: bool, p: float, adaptive: bool, aapp: bool, gate: float = 0.9, confirm: float = 0.9) -> dict:
    return {"risk_gate": gate, "confirm_gate": confirm, "dense": dense, "first_token_refusal": p,
            "adaptive_marker": adaptive, "adaptive_strict": adaptive, "aapp_marker": aapp, "aapp_strict": False}


ROWS = [_row(True, 0.9, True, True), _row(True, 0.05, True, False), _row(True, 0.5, True, False),
        _row(False, 0.0, False, False, gate=0.1)]


def test_current_rule_reproduces_aapp_adaptive():
    rule, _ = RULES["current"]
    assert simulate(ROWS, rule, 0.0) == {"dense_share": 0.75, "refusal_marker": 0.75, "refusal_strict": 0.75}


def test_staying_on_aapp_counts_aapp_answers():
    rule, _ = RULES["stay-if-refusing"]
    # p >= 0.5 stays on AAPP: row 0 (AAPP refuses, marker only), row 2 (AAPP does not refuse)
    assert simulate(ROWS, rule, 0.5) == {"dense_share": 0.25, "refusal_marker": 0.5, "refusal_strict": 0.25}


def test_veto_keeps_unlikely_rows_on_aapp():
    rule, _ = RULES["veto-unlikely"]
    assert simulate(ROWS, rule, 0.1) == {"dense_share": 0.5, "refusal_marker": 0.5, "refusal_strict": 0.5}


def test_a_rule_sending_more_rows_dense_reports_no_refusal():
    rows = ROWS + [_row(False, 0.9, False, True, gate=0.9, confirm=0.2)]  # risk gate flags, confirm did not
    rule, _ = RULES["mean"]
    assert simulate(rows, rule, 0.5) == {"dense_share": 0.6}
