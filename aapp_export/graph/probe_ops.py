"""Probe Pruning's decisions as ONNX ops: the formulas of ``aapp_export.probe``, emitted op for op.

Every function takes a ``GraphBuilder`` and tensor names and returns tensor names; all statistics are
float32 whatever the model's dtype (the caller casts). Batch 1 (one request per graph run):

- ``probe_positions``: residual norms -> top ``ceil(ratio*T)`` positions (<= ``max_tokens`` when set,
  >= ``min_tokens``; position
  0 forced in when ``T <= force_first_below``), sorted ascending (``probe.probe_positions``);
- ``rest_positions``: the other positions, ascending, and the permutation that puts
  ``[probe rows; rest rows]`` back in sequence order (the pruned pass reuses the probe's rows);
- ``fused_statistic``: ``P = X^2``, history rows at the probe's positions, ``a = P/(P+H+eps)``,
  ``S = sum_t (a P + (1-a) H)`` (``probe.probe_statistic``, ``fuse_history``);
- ``head_scores`` / ``channel_scores``: PPsp with the precomputed weight factors;
- ``risk_gate``: sigmoid of the last token's projection on the refusal direction;
- ``select_units``: the ``n_keep`` best units, the first ``round(clip((gate - dead_zone) / (1 -
  dead_zone), 0, 1) * len(protected))`` protected units forced in (none below ``dead_zone``, all at
  gate 1; ``probe.aapp_select``, ``probe.forced_count``; gate 0 is plain PP, ``probe.top_units``),
  sorted ascending.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from ..choices import GATE_DEAD_ZONE
from ..probe import EPS
from .builder import GraphBuilder

INF = np.float32(np.inf)


def _sorted_ascending(b: GraphBuilder, idx: str, k: str, label: str) -> str:
    """int64 indices sorted ascending (TopK of their float values, smallest first)."""
    as_float = b.op("Cast", [idx], to=TensorProto.FLOAT, name=f"{label}_f")
    values, _ = b.op("TopK", [as_float, k], n_out=2, largest=0, sorted=1, name=f"{label}_sort")
    return b.op("Cast", [values], to=TensorProto.INT64, name=label)


def probe_positions(b: GraphBuilder, residual: str, token_ratio: float, min_tokens: int,
                    force_first_below: int, max_tokens: int) -> str:
    """Sorted probe positions ``[n]`` (int64) of ``residual`` ``[1, T, H]`` float32."""
    norms = b.op("ReduceL2", [residual, b.ints("last_axis", [-1])], keepdims=0, name="token_norms")  # [1, T]
    importance = b.op("Squeeze", [norms, b.ints("axis0", [0])], name="importance")  # [T]
    t = b.op("Shape", [importance], name="n_tokens")  # [1]
    t_f = b.op("Cast", [t], to=TensorProto.FLOAT, name="n_tokens_f")
    k = b.op("Cast", [b.op("Ceil", [b.op("Mul", [t_f, b.const("token_ratio", np.float32(token_ratio))],
                                         name="ratio_t")], name="ceil_ratio_t")], to=TensorProto.INT64,
             name="ratio_count")
    if max_tokens:
        k = b.op("Min", [k, b.ints("max_tokens", [max_tokens])], name="within_budget")
    k = b.op("Min", [t, b.op("Max", [k, b.ints("min_tokens", [min_tokens])], name="at_least")], name="probe_count")
    positions = b.op("Range", [b.const("zero_i", np.int64(0)), b.op("Squeeze", [t], name="t_scalar"),
                               b.const("one_i", np.int64(1))], name="positions")
    force = b.op("And", [b.op("Equal", [positions, b.const("zero_pos", np.int64(0))], name="is_first"),
                         b.op("LessOrEqual", [t, b.ints("force_below", [force_first_below])], name="short")],
                 name="force_first")
    importance = b.op("Where", [force, b.const("inf", INF), importance], name="importance_forced")
    _, top = b.op("TopK", [importance, k], n_out=2, largest=1, sorted=1, name="top_tokens")
    return _sorted_ascending(b, top, k, "probe_positions")


def rest_positions(b: GraphBuilder, positions: str, n_tokens: str) -> tuple[str, str]:
    """``(rest [T-n], order [T])``: the positions not in ``positions`` (ascending), and for each position
    its row in ``Concat(probe rows, rest rows)`` (``n_tokens``: ``[1]`` int64)."""
    false = onnx.helper.make_tensor("false", TensorProto.BOOL, [1], [False])
    none = b.op("ConstantOfShape", [n_tokens], name="no_token", value=false)
    ones = b.op("Expand", [b.const("true", np.array(True)), b.op("Shape", [positions], name="probe_shape")],
                name="probe_true")
    is_probe = b.op("ScatterElements", [none, positions, ones], axis=0, name="is_probe")
    rest = b.op("Reshape", [b.op("NonZero", [b.op("Not", [is_probe], name="is_rest")], name="rest_nz"),
                            b.ints("flat", [-1])], name="rest_positions")
    both = b.op("Concat", [positions, rest], axis=0, name="probe_then_rest")
    count = b.op("Squeeze", [n_tokens, b.ints("axis0", [0])], name="t_scalar")
    rows = b.op("Range", [b.const("zero_i", np.int64(0)), count, b.const("one_i", np.int64(1))], name="rows")
    order = b.op("ScatterElements", [b.op("ConstantOfShape", [n_tokens], name="order_init",
                                          value=onnx.helper.make_tensor("zero", TensorProto.INT64, [1], [0])),
                                     both, rows], axis=0, name="row_of_position")
    return rest, order


def fused_statistic(b: GraphBuilder, x: str, history: str, positions: str, max_position: int) -> str:
    """``S [K]`` from probe activations ``x [n, K]`` (float32) and the history ``[T_max, K]`` at ``positions``."""
    p = b.op("Mul", [x, x], name="probe_stat")  # one probe row: ||X[:, t, k]||^2 / 1
    rows = b.op("Min", [positions, b.const("max_position", np.int64(max_position))], name="history_rows")
    h = b.op("Gather", [history, rows], axis=0, name="history")
    a = b.op("Div", [p, b.op("Add", [b.op("Add", [p, h], name="p_plus_h"), b.const("eps", np.float32(EPS))],
                             name="p_plus_h_eps")], name="fusion_weight")
    one_minus = b.op("Sub", [b.const("one_f", np.float32(1.0)), a], name="one_minus_a")
    fused = b.op("Add", [b.op("Mul", [a, p], name="a_p"), b.op("Mul", [one_minus, h], name="b_h")], name="fused")
    return b.op("ReduceSum", [fused, b.ints("axis0", [0])], keepdims=0, name="fused_sum")


def head_scores(b: GraphBuilder, s: str, weights: str, num_heads: int) -> str:
    """``[heads]``: ``sqrt(sum_{k in h} S_k^2 w_k)`` (``probe.head_scores``)."""
    contrib = b.op("Mul", [b.op("Mul", [s, s], name="s_sq"), weights], name="head_contrib")
    per_head = b.op("Reshape", [contrib, b.ints("per_head_shape", [num_heads, -1])], name="per_head")
    return b.op("Sqrt", [b.op("ReduceSum", [per_head, b.ints("axis1", [1])], keepdims=0, name="head_sum")],
                name="head_scores")


def channel_scores(b: GraphBuilder, s: str, weights: str) -> str:
    """``[channels]``: ``S_k * w_k`` (``probe.channel_scores``)."""
    return b.op("Mul", [s, weights], name="channel_scores")


def risk_gate(b: GraphBuilder, residual: str, direction: np.ndarray, threshold: float, temperature: float,
              name: str = "risk_gate") -> str:
    """``[1]`` float32: sigmoid of the last position's projection of ``residual`` ``[1, T, H]`` on ``direction``
    (``probe.risk_gate``; ``name`` prefixes its nodes: AAPP's risk gate, aapp-adaptive's confirmation gate)."""
    last = b.op("Gather", [residual, b.const(f"{name}_last_index", np.int64(-1))], axis=1, name=f"{name}_last_token")
    proj = b.op("ReduceSum", [b.op("Mul", [last, b.const(f"{name}_direction", direction.astype(np.float32))],
                                   name=f"{name}_last_times_dir"), b.ints(f"{name}_last_axis", [-1])], keepdims=0,
                name=f"{name}_projection")
    z = b.op("Div", [b.op("Sub", [proj, b.const(f"{name}_threshold", np.float32(threshold))], name=f"{name}_centred"),
                     b.const(f"{name}_temperature", np.float32(max(temperature, EPS)))], name=f"{name}_logit")
    return b.op("Sigmoid", [z], name=name)


def select_units(b: GraphBuilder, scores: str, n_keep: int, protected: np.ndarray | None, gate: str | None,
                 n_units: int, label: str, dead_zone: float = GATE_DEAD_ZONE) -> str:
    """Sorted int64 indices ``[n_keep]`` of the kept units (module docstring)."""
    key = scores
    if protected is not None and len(protected) and gate is not None:
        n_prot = len(protected)
        ramp = b.op("Div", [b.op("Sub", [gate, b.const("gate_dead_zone", np.float32(dead_zone))],
                                 name=f"{label}_gate_past_zone"),
                            b.const("gate_ramp_width", np.float32(1.0 - dead_zone))], name=f"{label}_gate_ramp")
        clipped = b.op("Clip", [ramp, b.const("zero_f", np.float32(0.0)), b.const("one_f", np.float32(1.0))],
                       name=f"{label}_gate_forcing")
        n_force = b.op("Cast", [b.op("Round", [b.op("Mul", [clipped, b.const(f"{label}_n_protected",
                                                                               np.float32(n_prot))],
                                                    name=f"{label}_gate_times_n")], name=f"{label}_round")],
                       to=TensorProto.INT64, name=f"{label}_n_force")
        n_force = b.op("Min", [n_force, b.ints(f"{label}_n_keep_cap", [n_keep])], name=f"{label}_n_force_capped")
        is_forced = b.op("Less", [b.const(f"{label}_protected_rank", np.arange(n_prot, dtype=np.int64)), n_force],
                         name=f"{label}_is_forced")  # [P]
        forced = b.op("ScatterElements", [b.const(f"{label}_none_forced", np.zeros(n_units, dtype=bool)),
                                          b.const(f"{label}_protected", np.asarray(protected, dtype=np.int64)),
                                          is_forced], axis=0, name=f"{label}_forced")
        key = b.op("Where", [forced, b.const("inf", INF), scores], name=f"{label}_key")
    k = b.ints(f"{label}_n_keep", [n_keep])
    _, top = b.op("TopK", [key, k], n_out=2, largest=1, sorted=1, name=f"{label}_topk")
    return _sorted_ascending(b, top, k, f"{label}_kept")


__all__ = ["probe_positions", "rest_positions", "fused_statistic", "head_scores", "channel_scores", "risk_gate", "select_units"]
