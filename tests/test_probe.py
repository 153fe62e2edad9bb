"""Probe Pruning decisions on hand-made tensors, against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from aapp_export.choices import GATE_DEAD_ZONE
from aapp_export.errors import InputError
from aapp_export.probe import (aapp_select, channel_score_weights, channel_scores, forced_count, fuse_history,
                               head_score_weights, head_scores, kept_counts, probe_positions, probe_rows,
                               probe_statistic, risk_gate, top_units)


def _residual(norms: list[list[float]]) -> torch.Tensor:
    """[B,T,2] residual whose token vectors have the given L2 norms (3-4-5 triangles)."""
    n = torch.tensor(norms)
    return torch.stack([n * 0.6, n * 0.8], dim=-1)


def test_probe_positions_top_half_by_residual_norm():
    h = _residual([[1, 9, 2, 8, 3, 7, 4, 6, 5, 0, 0.5, 10]])  # T=12 > 10: no forced position 0
    assert probe_positions(h).tolist() == [1, 3, 5, 7, 8, 11]  # norms 9, 8, 7, 6, 5, 10


def test_probe_positions_force_first_when_short_and_at_least_two():
    h = _residual([[0.1, 5, 3, 4]])  # T=4: ceil(2) = 2 positions, position 0 forced
    assert probe_positions(h).tolist() == [0, 1]
    h = _residual([[0.1, 5, 3]])  # ceil(1.5) = 2
    assert probe_positions(h).tolist() == [0, 1]


def test_probe_positions_batch_norm_and_padding():
    # importance of t = ||(r[0,t], r[1,t])||; row 1 is left-padded at t=0
    h = _residual([[3, 1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2], [100, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    valid = torch.ones(2, 12, dtype=torch.bool)
    valid[1, 0] = False
    # importance: t0 = 3 (the padded 100 is ignored), t1 = sqrt(1 + 16), t11 = 2, t10 = 1.9, ...
    assert probe_positions(h, valid).tolist() == [0, 1, 8, 9, 10, 11]
    assert probe_rows(h, valid).tolist() == [0]  # row 0: ||r|| = 5.9 > row 1: 4 (padding ignored)


def test_probe_rows_top_five_percent():
    h = _residual([[1.0] * 4] * 40)
    h[7] *= 3
    h[30] *= 2
    assert probe_rows(h).tolist() == [7, 30]  # ceil(0.05*40) = 2


def test_history_fusion_formula():
    p, h = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([2.0, 4.0, 0.0])
    a = p / (p + h + 1e-6)
    assert torch.allclose(fuse_history(p, h), a * p + (1 - a) * h)
    assert torch.allclose(fuse_history(p, h), torch.tensor([2.0, 4.0, 1.0]), atol=1e-5)


def test_probe_statistic():
    x = torch.tensor([[[1.0, 2.0]], [[3.0, 0.0]]])  # 2 rows, 1 token, 2 channels
    assert probe_statistic(x).tolist() == [[5.0, 2.0]]


def test_ppsp_channel_and_head_scores_by_hand():
    s = torch.tensor([1.0, 2.0, 0.5, 0.0])
    w = torch.tensor([[1.0, 1.0, 2.0, 3.0], [2.0, 0.0, 2.0, 1.0]])  # [hidden=2, K=4]
    # I_k = || S_k * W[:,k]^2 ||_2
    expect = [math.sqrt(1 + 16), math.sqrt(4 + 0), math.sqrt(4 + 4), 0.0]
    assert torch.allclose(channel_scores(s, channel_score_weights(w)), torch.tensor(expect))
    # two heads of 2 channels: I_h = sqrt(sum_i sum_k (S_k W_ik^2)^2)
    h0 = math.sqrt((1 * 1) ** 2 + (2 * 1) ** 2 + (1 * 4) ** 2 + (2 * 0) ** 2)
    h1 = math.sqrt((0.5 * 4) ** 2 + 0 + (0.5 * 4) ** 2 + 0)
    assert torch.allclose(head_scores(s, head_score_weights(w), 2), torch.tensor([h0, h1]))


def test_kept_counts_rescale_with_dense_first_layers():
    kept = kept_counts([100] * 10, 0.3)
    assert kept[:3] == [100] * 3
    assert abs(1 - sum(kept) / 1000 - 0.3) < 0.01  # model-wide average equals the target
    assert kept_counts([8] * 6, 0.0) == [8] * 6
    assert kept_counts([4096] * 8, 0.4, multiple=64)[5] % 64 == 0
    with pytest.raises(InputError, match="outside"):
        kept_counts([4] * 4, 0.95)


def test_top_units_and_aapp_select_keep_the_same_count():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.8, 0.2])
    assert top_units(scores, 3).tolist() == [1, 2, 4]
    protected = torch.tensor([0, 5])  # low PP scores, high alignment scores
    assert aapp_select(scores, protected, gate=1.0, n_keep=3).tolist() == [0, 1, 5]
    assert aapp_select(scores, protected, gate=0.0, n_keep=3).tolist() == [1, 2, 4]
    assert aapp_select(scores, protected, gate=0.8, n_keep=3).tolist() == [0, 1, 4]  # ramp 0.6 x 2 -> 1 forced
    assert aapp_select(scores, protected, gate=0.5, n_keep=3).tolist() == [1, 2, 4]  # ramp 0: PP's units
    assert aapp_select(scores, protected, gate=0.3, n_keep=3).tolist() == [1, 2, 4]  # the dead zone: PP's units
    for gate in (0.0, 0.3, 0.7, 1.0):
        assert len(aapp_select(scores, protected, gate, 3)) == 3


def test_risk_gate_is_a_sigmoid_around_the_threshold():
    assert float(risk_gate(2.0, 2.0, 1.0)) == pytest.approx(0.5)
    assert risk_gate(10.0, 2.0, 1.0) > 0.99 and risk_gate(-10.0, 2.0, 1.0) < 0.01
    assert torch.allclose(risk_gate(torch.tensor([2.0, 3.0]), 2.0, 0.5), torch.sigmoid(torch.tensor([0.0, 2.0])))


def test_routing_threshold_reads_the_gate_at_the_held_out_midpoint_by_hand():
    from aapp_export.probe import routing_threshold

    # class means 3 and 1: midpoint 2; the gate (threshold 1, temperature 0.5) reads sigmoid(2) there
    harmful, harmless = torch.tensor([2.0, 4.0]), torch.tensor([0.0, 2.0])
    assert routing_threshold(harmful, harmless, 1.0, 0.5) == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-6)
    # held-out classes centred below the fitted gate's centre (midpoint -1: sigmoid(-4)): the floor,
    # ADAPTIVE_THRESHOLD, holds
    assert routing_threshold(harmful - 3, harmless - 3, 1.0, 0.5) == 0.5
    assert routing_threshold(harmful - 3, harmless - 3, 1.0, 0.5, floor=0.0) == pytest.approx(
        1 / (1 + math.exp(4.0)), abs=1e-6)


def test_forced_count_rounds_half_to_even_and_caps_at_n_keep():
    assert forced_count(0.5, 5, 10, dead_zone=0.0) == 2  # 2.5 -> 2
    assert forced_count(0.7, 5, 10, dead_zone=0.0) == 4  # 3.5 -> 4
    assert forced_count(0.75, 10, 10) == 5 and forced_count(0.85, 10, 10) == 7  # ramp 0.5 -> 5; 0.7 -> 7
    assert forced_count(0.875, 4, 10) == 3  # ramp 0.75 x 4 = 3
    assert forced_count(1.0, 5, 3) == 3
    assert forced_count(-0.2, 5, 3) == 0 and forced_count(1.7, 4, 9) == 4


def test_forced_count_ramps_from_the_dead_zone_to_the_whole_set():
    assert GATE_DEAD_ZONE == 0.5
    assert forced_count(0.49, 10, 10) == 0 and forced_count(0.3, 100, 50) == 0  # 5 and 30 under round(gate x n)
    assert forced_count(0.5, 10, 10) == 0 and forced_count(0.55, 10, 10) == 1  # the ramp starts at the zone ...
    assert forced_count(0.6, 100, 100) == 20 and forced_count(0.9, 100, 100) == 80  # ... (0.6 - 0.5) / 0.5 = 0.2
    assert forced_count(1.0, 100, 100) == 100 and forced_count(0.99, 100, 50) == 50  # ... to all at 1, capped
    assert forced_count(0.3, 10, 10, dead_zone=0.0) == 3  # zone 0: round(gate x n), the rule before the zone
    assert forced_count(0.625, 10, 10, dead_zone=0.25) == 5 and forced_count(0.2, 10, 10, dead_zone=0.25) == 0
    with pytest.raises(ValueError, match="dead_zone"):
        forced_count(0.9, 10, 10, dead_zone=1.0)
