"""The pruned graphs of one sparsity level: a prefill graph that decides, and a decode graph that reuses.

Kept counts per layer depend only on the sparsity (``probe.kept_counts``), so each level has static
shapes: GroupQueryAttention takes its head counts as attributes. Per level the export writes

- ``prefill-s{level}.onnx``: the dense graph's inputs plus ``aapp`` (``[1]`` float: 1 = AAPP, 0 = PP).
  Layers ``< skip_first`` run dense. In every other layer, at the attention and again at the MLP::

      residual -> ReduceL2 per token -> TopK(ceil(ratio*T)) positions ------------------.
      normed   -> Gather(positions) -> probe q|k|v (all heads) -> Attention among them  |
               -> X^2, history rows (calibration.safetensors) -> fusion -> S -> PPsp   |
               -> select (protected units forced by gate * aapp, the rest by TopK) -> kept indices
               -> Gather kept rows of the stored weights (contiguous rows) -> Transpose
               -> the layer computed with its kept units only

  The risk gate is read at the input of layer ``gate_layer``, aapp-adaptive's confirmation gate
  (``confirm_gate.py``; when the calibration has one for the level) at the final residual stream.
  Outputs: the dense graph's, plus ``risk_gate``, ``confirm_gate``, ``kept_heads.{i}``,
  ``kept_channels.{i}`` and the kept weights ``kept.{i}.*``.
- ``decode-s{level}.onnx``: the dense graph with the pruned layers' projections as inputs
  ``kept.{i}.*`` (bound by the runtime to the prefill's outputs, on the device, once per request):
  no gather and no control flow per step.

- the split prefill of aapp-adaptive's dense-prefill path: ``prefill-head.onnx`` (``HeadGraph``, one for
  every level: the ``skip_first`` unpruned layers and the risk gate; outputs ``hidden_states``),
  ``prefill-tail-s{level}.onnx`` (the prefill graph from ``skip_first`` on) and
  ``prefill-dense-s{level}.onnx`` (``mode="dense-prefill"``: every unit, the decode's kept units picked
  from each pruned layer's own o_proj / down_proj inputs, the K/V whole and gathered to the kept
  heads as ``present_kept.*``).

All graphs read the dense graph's stored weights (one data file). A pruned layer with several KV
heads gives each kept query head its group's K/V (``decoder.qkv_rows``), so its KV cache has as many
heads as it keeps query heads; with one KV head the cache keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto

from .. import probe as pp
from ..checkpoint import WeightReader
from ..choices import SKIP_FIRST
from ..errors import ExportError
from ..families import LayerSpec, ModelSpec
from . import probe_ops as ops
from .builder import ExternalTensor, WeightStore
from .decoder import DecoderGraph, DecoderOptions, LayerWeights, head_rows, kv_heads_kept, kv_shared, present_name

AAPP_INPUT, RISK_GATE, CONFIRM_GATE = "aapp", "risk_gate", "confirm_gate"
HEAD_FILE = "prefill-head.onnx"
KEPT_PARTS = ("qkv", "qkv_bias", "o", "gate", "up", "down")


def kept_name(i: int, part: str) -> str:
    return f"kept.{i}.{part}"


def present_kept_name(i: int, kind: str) -> str:
    """The dense tail's present K/V of layer ``i`` gathered to the decode's kept heads."""
    return f"present_kept.{i}.{kind}"


def level_name(sparsity: float) -> str:
    """``0.4`` -> ``"s0.40"`` (file names and manifest keys)."""
    return f"s{sparsity:.2f}"


@dataclass(frozen=True)
class PruningPlan:
    """What the pruned graphs of one sparsity level need (all from calibration and ``probe``)."""

    sparsity: float
    kept_heads: tuple[int, ...]  # per layer (``probe.kept_counts``)
    kept_channels: tuple[int, ...]
    history_attn: tuple[ExternalTensor | None, ...]  # per layer: [T_max, heads*D] float32 in calibration.safetensors
    history_mlp: tuple[ExternalTensor | None, ...]
    protected_heads: tuple[np.ndarray, ...]  # per layer, best first
    protected_channels: tuple[np.ndarray, ...]
    direction: np.ndarray  # [hidden] refusal direction at the gate layer's input
    gate_layer: int
    threshold: float
    temperature: float
    skip_first: int = SKIP_FIRST
    token_ratio: float = 0.5
    min_tokens: int = 2
    force_first_below: int = 10
    max_tokens: int = pp.PROBE_MAX_TOKENS
    confirm: tuple[np.ndarray, float, float] | None = None  # aapp-adaptive: direction, threshold, temperature
    extra: dict = field(default_factory=dict)

    def pruned(self, i: int) -> bool:
        return i >= self.skip_first

    def kv_heads(self, layer: LayerSpec) -> int:
        """KV heads of a layer in this level's graphs."""
        return kv_heads_kept(layer, self.kept_heads[layer.index] if self.pruned(layer.index) else None)


GRAPH_MODES = ("prefill", "decode", "dense-prefill")


class PrunedGraph(DecoderGraph):
    """The prefill (``mode="prefill"``) or decode (``mode="decode"``) graph of one ``PruningPlan``, or
    the dense tail of its split prefill (``mode="dense-prefill"``, ``layers=(skip_first, num_layers)``:
    every unit computed, the decode's units picked from the layer's own o_proj / down_proj inputs)."""

    def __init__(self, spec: ModelSpec, weights: WeightReader, store: WeightStore, options: DecoderOptions,
                 plan: PruningPlan, mode: str, layers: tuple[int, int] | None = None) -> None:
        if mode not in GRAPH_MODES:
            raise ValueError(mode)
        super().__init__(spec, weights, store, options, layers=layers)
        self.plan, self.mode = plan, mode
        self.gate: str | None = None  # risk gate * aapp, once computed

    # -- I/O ------------------------------------------------------------------------------------
    def kv_heads_of(self, layer: LayerSpec) -> int:
        return layer.num_kv_heads if self.mode == "dense-prefill" else self.plan.kv_heads(layer)

    def _inputs(self) -> None:
        super()._inputs()
        if self.mode == "prefill":
            self.b.add_input(AAPP_INPUT, TensorProto.FLOAT, [1])  # the dense tail runs for aapp-adaptive only

    def kept_shapes(self, layer: LayerSpec) -> dict[str, list[int]]:
        """Shapes of a pruned layer's kept weights, MatMul-ready (``LayerWeights``)."""
        s, i = self.spec, layer.index
        d, h = s.head_dim, s.hidden_size
        kq, kc, kv = self.plan.kept_heads[i], self.plan.kept_channels[i], self.plan.kv_heads(layer)
        shapes = {"qkv": [h, (kq + 2 * kv) * d], "o": [kq * d, h], "gate": [h, kc], "up": [h, kc], "down": [kc, h]}
        if s.qkv_bias:
            shapes["qkv_bias"] = [(kq + 2 * kv) * d]
        return shapes

    def layer_weights(self, layer: LayerSpec) -> LayerWeights:
        i = layer.index
        if not self.plan.pruned(i):
            return super().layer_weights(layer)
        if self.mode == "decode":  # the prefill's kept weights, bound as inputs
            shapes = self.kept_shapes(layer)
            names = {}
            for part, shape in shapes.items():
                names[part] = self.b.add_input(kept_name(i, part), self.b.onnx_dtype, shape)
            return LayerWeights(names["qkv"], names.get("qkv_bias"), names["o"], names["gate"], names["up"],
                                names["down"], self.plan.kept_heads[i], self.plan.kv_heads(layer), in_major=True)
        return self.stored_weights(layer)  # prefills: the full stored weights; the blocks gather what they keep

    def stored_weights(self, layer: LayerSpec) -> LayerWeights:
        """The full weights of a layer as stored (q|k|v, gate, up output-major; o, down input-major)."""
        s, i = self.spec, layer.index
        t = lambda part: s.layer_tensor(i, part)  # noqa: E731
        qkv = self.b.weight("qkv_proj.weight", lambda: torch.cat([self.tensor(t(f"self_attn.{n}_proj.weight"))
                                                                  for n in "qkv"]), key=t("self_attn.qkv"))
        bias = None
        if s.qkv_bias:
            bias = self.b.weight("qkv_proj.bias", lambda: torch.cat([self.tensor(t(f"self_attn.{n}_proj.bias"))
                                                                     for n in "qkv"]), key=t("self_attn.qkv_bias"))
        o = self.b.weight("o_proj.weight_t", lambda: self.tensor(t("self_attn.o_proj.weight")).t(),
                          key=t("self_attn.o_proj.weight"))
        mlp = {n: self.b.weight(f"{n}_proj.weight", (lambda n=n: self._mlp_rows(i, n)), key=t(f"mlp.{n}_proj.weight"))
               for n in ("gate", "up", "down")}
        return LayerWeights(qkv, bias, o, mlp["gate"], mlp["up"], mlp["down"], layer.num_heads, layer.num_kv_heads)

    def score_weights(self, layer: LayerSpec, kind: str) -> str:
        """PPsp's weight factors (``probe.head_score_weights`` / ``channel_score_weights``), float32, stored once."""
        t = lambda part: self.spec.layer_tensor(layer.index, part)  # noqa: E731
        if kind == "heads":
            make = lambda: pp.head_score_weights(self.tensor(t("self_attn.o_proj.weight")).float())  # noqa: E731
        else:
            make = lambda: pp.channel_score_weights(self.tensor(t("mlp.down_proj.weight")).float())  # noqa: E731
        return self.b.weight(f"{kind}_score_weights", make, dtype="fp32", key=f"{t(kind)}.score_weights")

    # -- the probe --------------------------------------------------------------------------------
    def _f32(self, x: str, label: str) -> str:
        return x if self.opt.dtype == "fp32" else self.b.op("Cast", [x], to=TensorProto.FLOAT, name=label)

    def _positions(self, residual: str) -> str:
        p = self.plan
        return ops.probe_positions(self.b, self._f32(residual, "residual_f32"), p.token_ratio, p.min_tokens,
                                   p.force_first_below, p.max_tokens)

    def _rows_at(self, h: str, positions: str, label: str) -> str:
        """The rows of ``h`` ``[1, T, H]`` at ``positions``: ``[n, H]``."""
        b = self.b
        picked = b.op("Gather", [h, positions], axis=1, name=f"{label}_3d")  # [1, n, H]
        return b.op("Reshape", [picked, b.ints("rows_flat", [-1, self.spec.hidden_size])], name=label)

    def _split_tokens(self, residual: str, h: str) -> tuple[str, str, str, str]:
        """The probe's positions, its rows of ``h``, the other rows, and each position's row in
        ``[probe rows; other rows]`` (``probe_ops.rest_positions``)."""
        b = self.b
        positions = self._positions(residual)
        n_tokens = b.op("Slice", [b.op("Shape", [h], name="h_shape"), b.ints("one", [1]), b.ints("two", [2])],
                        name="n_tokens")
        rest, order = ops.rest_positions(b, positions, n_tokens)
        return positions, self._rows_at(h, positions, "probe_tokens"), self._rows_at(h, rest, "rest_tokens"), order

    def _kept_in_major(self, stored: str, rows: str, label: str) -> str:
        """Kept rows of an output-major stored weight, transposed to ``[H, kept]``: the decode graph's
        MatMul reads them unpacked at full speed (the rows die at once, only the copy stays)."""
        b = self.b
        return b.op("Transpose", [b.op("Gather", [stored, rows], axis=0, name=f"{label}_kept_rows")], perm=[1, 0],
                    name=f"{label}_kept")

    def _in_order(self, probe_part: str, rest_part: str, order: str, label: str) -> str:
        """``[probe rows; rest rows]`` back in sequence order, ``[1, T, width]``."""
        b = self.b
        both = b.op("Concat", [probe_part, rest_part], axis=0, name=f"{label}_both")
        rows = b.op("Gather", [both, order], axis=0, name=f"{label}_ordered")
        return b.op("Unsqueeze", [rows, b.ints("axis0", [0])], name=label)

    def _gated(self, residual: str, layer: LayerSpec) -> str | None:
        """The forced-protection gate (risk gate * aapp) for decisions of this layer, read at ``gate_layer``."""
        p = self.plan
        if layer.index == p.gate_layer and self.gate is None:
            gate = ops.risk_gate(self.b, self._f32(residual, "gate_residual_f32"), p.direction, p.threshold,
                                 p.temperature)
            gate = self.b.add_output(gate, RISK_GATE, TensorProto.FLOAT, [1])
            self.gate = self.b.op("Mul", [gate, AAPP_INPUT], name="forced_gate") if self.mode == "prefill" else gate
        if self.gate is None:  # before the gate layer: gate 1 (as the reference)
            return AAPP_INPUT if self.mode == "prefill" else self.b.const("gate_one", np.ones(1, np.float32))
        return self.gate

    def final_residual(self, residual: str) -> None:
        """aapp-adaptive's confirmation gate (``confirm_gate.py``) on the prefill's final residual stream."""
        if self.mode == "prefill" and self.start == 0 and self.plan.confirm is not None:
            gate = ops.risk_gate(self.b, self._f32(residual, "confirm_residual_f32"), *self.plan.confirm,
                                 name=CONFIRM_GATE)
            self.b.add_output(gate, CONFIRM_GATE, TensorProto.FLOAT, [1])

    def _probe_attention(self, qkv: str, positions: str, layer: LayerSpec, w: LayerWeights,
                         rope: tuple[str, str]) -> str:
        """o_proj input of the probe tokens ``[n, heads*D]`` float32 from their q|k|v ``[n, (q+2kv)*D]``:
        all heads, RoPE at their positions, causal (and sliding-window) attention among the probe tokens."""
        b, s = self.b, self.spec
        d = s.head_dim
        qkv = b.op("Unsqueeze", [qkv, b.ints("axis0", [0])], name="probe_qkv_3d")  # [1, n, (q+2kv)*D]
        q, k, v = b.op("Split", [qkv, b.ints("probe_split", [w.n_q * d, w.n_kv * d, w.n_kv * d])], n_out=3, axis=-1,
                       name="probe_qkv_split")
        pos_ids = b.op("Gather", [b.op("Squeeze", [self.position_ids_f, b.ints("axis0", [0])], name="pos_row"),
                                  positions], axis=0, name="probe_pos_ids")  # [n] float
        cos, sin = (b.op("Gather", [table, positions], axis=1, name=f"probe_{n}") for table, n in zip(rope, ("cos", "sin")))
        q, k = self.qk_norm_rope(q, k, layer, w.n_q, w.n_kv, (cos, sin))
        rows = b.op("Unsqueeze", [pos_ids, b.ints("axis1", [1])], name="probe_rows")  # [n, 1]
        cols = b.op("Unsqueeze", [pos_ids, b.ints("axis0", [0])], name="probe_cols")  # [1, n]
        allowed = b.op("LessOrEqual", [cols, rows], name="probe_causal")
        if layer.sliding_window:
            within = b.op("Less", [b.op("Sub", [rows, cols], name="probe_distance"),
                                   b.const("probe_window", np.float32(layer.sliding_window))], name="probe_in_window")
            allowed = b.op("And", [allowed, within], name="probe_allowed")
        mask = b.op("Where", [allowed, b.scalar("zero_m", 0.0), b.scalar("neg_m", self.neg)], name="probe_mask")
        softcap = {"softcap": float(s.attn_logit_softcapping)} if s.attn_logit_softcapping else {}
        y = b.op("Attention", [q, k, v, mask], name="probe_attention", scale=s.attention_scale, q_num_heads=w.n_q,
                 kv_num_heads=w.n_kv, **softcap)
        flat = b.op("Reshape", [y, b.ints("probe_o_flat", [-1, w.n_q * d])], name="probe_o_input")
        return self._f32(flat, "probe_o_input_f32")

    # -- pruned blocks ------------------------------------------------------------------------------
    def _kept_output(self, i: int, part: str, value: str, shape: list[int]) -> str:
        return self.b.add_output(value, kept_name(i, part), self.b.onnx_dtype, shape)

    def attention_block(self, h: str, residual: str, layer: LayerSpec, w: LayerWeights, mask: str | None,
                        rope: tuple[str, str]) -> str:
        """Prefill of a pruned layer's attention, reusing the probe's work::

            probe rows of h -> Gemm(all q|k|v rows) -> probe attention -> S -> PPsp -> kept heads
                                     | kept columns                                      | rows of the stored weights
            other rows of h --------------------------------> Gemm(kept q|k|v rows) <---'
            [probe; other] -> sequence order -> norm/RoPE -> attention (kept heads) -> MatMul(kept o rows)
        """
        b, p, i = self.b, self.plan, layer.index
        if self.mode == "dense-prefill" and p.pruned(i):
            return self.dense_attention(h, residual, layer, w, mask, rope)
        gate = self._gated(residual, layer) if self.mode == "prefill" else None
        if self.mode != "prefill" or not p.pruned(i):
            return self.attend(h, layer, w, mask, rope)
        b.scope = f"layers.{i}/probe_attn/"
        positions, tokens, rest_tokens, order = self._split_tokens(residual, h)
        qkv_probe = self.gemm_rows(tokens, w.qkv, w.qkv_bias, "probe_qkv")  # [n, (heads + 2 kv) * D]
        x = self._probe_attention(qkv_probe, positions, layer, w, rope)
        s = ops.fused_statistic(b, x, b.external(p.history_attn[i]), positions, p.history_attn[i].dims[0] - 1)
        scores = ops.head_scores(b, s, self.score_weights(layer, "heads"), layer.num_heads)
        kept = ops.select_units(b, scores, p.kept_heads[i], p.protected_heads[i], gate, layer.num_heads, "heads")
        kept = b.add_output(kept, f"kept_heads.{i}", TensorProto.INT64, [p.kept_heads[i]])
        b.scope = f"layers.{i}/"
        rows, qkv, bias, o = self._kept_attention(kept, layer, w)
        probe_part = b.op("Gather", [qkv_probe, rows], axis=1, name="qkv_probe_kept")
        rest_part = self.project(rest_tokens, qkv, bias, "qkv_rest")
        projected = self._in_order(probe_part, rest_part, order, "qkv_proj")
        kept_w = LayerWeights("", bias, o, "", "", "", p.kept_heads[i], p.kv_heads(layer))
        return self.attend_projected(projected, layer, kept_w, mask, rope)

    def _kept_attention(self, kept: str, layer: LayerSpec, w: LayerWeights) -> tuple[str, str, str | None, str]:
        """The kept heads' rows of q|k|v (their K/V groups' too) and the decode's kept weights, as outputs:
        ``(rows, qkv [H, kept rows], bias, o [kept * D, H])``."""
        b, i = self.b, layer.index
        d = self.spec.head_dim
        q_rows = self._rows(kept, d, "q_rows")
        if kv_shared(layer.num_kv_heads):
            kv_rows = b.const("kv_rows", np.arange(layer.num_heads * d, (layer.num_heads + 2) * d, dtype=np.int64))
        else:
            group = b.op("Div", [kept, b.const("group_size", np.int64(layer.num_heads // layer.num_kv_heads))],
                         name="kv_group")
            k_rows = b.op("Add", [self._rows(group, d, "kv_head_rows"), b.const("k_offset", np.int64(layer.num_heads * d))],
                          name="k_rows")
            v_rows = b.op("Add", [k_rows, b.const("v_offset", np.int64(layer.num_kv_heads * d))], name="v_rows")
            kv_rows = b.op("Concat", [k_rows, v_rows], axis=0, name="kv_rows")
        rows = b.op("Concat", [q_rows, kv_rows], axis=0, name="qkv_rows")
        shapes = self.kept_shapes(layer)
        qkv = self._kept_output(i, "qkv", self._kept_in_major(w.qkv, rows, "qkv"), shapes["qkv"])  # [H, kept rows]
        bias = None
        if w.qkv_bias:
            bias = self._kept_output(i, "qkv_bias", b.op("Gather", [w.qkv_bias, rows], axis=0, name="qkv_bias_kept"),
                                     shapes["qkv_bias"])
        o = self._kept_output(i, "o", b.op("Gather", [w.o, q_rows], axis=0, name="o_kept"), shapes["o"])
        return rows, qkv, bias, o

    def _rows(self, heads: str, d: int, label: str) -> str:
        """Rows ``heads[:, None] * D + arange(D)``, flattened (``decoder.head_rows`` in ops)."""
        b = self.b
        start = b.op("Mul", [heads, b.const(f"{label}_d", np.int64(d))], name=f"{label}_start")
        base = b.op("Unsqueeze", [start, b.ints("axis1", [1])], name=f"{label}_col")
        offsets = b.const(f"{label}_offsets", head_rows(np.zeros(1, dtype=np.int64), d)[None, :])
        return b.op("Reshape", [b.op("Add", [base, offsets], name=f"{label}_2d"), b.ints("flat", [-1])], name=label)

    def mlp_block(self, h: str, residual: str, layer: LayerSpec, w: LayerWeights) -> str:
        """Prefill of a pruned layer's MLP, reusing the probe's work::

            probe rows of h -> Gemm(all gate, up rows) -> act * up -> S -> PPsp -> kept channels
                                            | kept columns                         | rows of the stored weights
            other rows of h ---> Gemm(kept gate, up rows) -> act * up              |
            [probe; other] -> MatMul(kept down rows) -> sequence order  <----------'
        """
        b, p, i = self.b, self.plan, layer.index
        if self.mode == "dense-prefill" and p.pruned(i):
            return self.dense_mlp(h, residual, layer, w)
        if self.mode != "prefill" or not p.pruned(i):
            return self.feed_forward(h, w)
        gate = self._gated(residual, layer)
        b.scope = f"layers.{i}/probe_mlp/"
        positions, tokens, rest_tokens, order = self._split_tokens(residual, h)
        gated_probe = b.op("Mul", [self.act(self.gemm_rows(tokens, w.gate, None, "probe_gate"), "probe_act"),
                                   self.gemm_rows(tokens, w.up, None, "probe_up")], name="probe_down_input")
        s = ops.fused_statistic(b, self._f32(gated_probe, "probe_down_input_f32"), b.external(p.history_mlp[i]),
                                positions, p.history_mlp[i].dims[0] - 1)
        scores = ops.channel_scores(b, s, self.score_weights(layer, "channels"))
        kept = ops.select_units(b, scores, p.kept_channels[i], p.protected_channels[i], gate,
                                layer.intermediate_size, "channels")
        kept = b.add_output(kept, f"kept_channels.{i}", TensorProto.INT64, [p.kept_channels[i]])
        b.scope = f"layers.{i}/"
        kept_w, down = self._kept_mlp(kept, layer, w)
        probe_part = b.op("Gather", [gated_probe, kept], axis=1, name="gated_probe_kept")
        rest_part = b.op("Mul", [self.act(self.project(rest_tokens, kept_w["gate"], None, "gate_rest"), "act_rest"),
                                 self.project(rest_tokens, kept_w["up"], None, "up_rest")], name="gated_rest")
        both = b.op("Concat", [probe_part, rest_part], axis=0, name="gated_both")
        out = b.op("MatMul", [both, down], name="down_proj")  # [T, H], probe rows first
        return b.op("Unsqueeze", [b.op("Gather", [out, order], axis=0, name="down_ordered"), b.ints("axis0", [0])],
                    name="down_proj_3d")

    def _kept_mlp(self, kept: str, layer: LayerSpec, w: LayerWeights) -> tuple[dict[str, str], str]:
        """The decode's kept gate / up ``[H, kept]`` and down ``[kept, H]`` weights, as outputs."""
        b, i = self.b, layer.index
        shapes = self.kept_shapes(layer)
        kept_w = {name: self._kept_output(i, name, self._kept_in_major(stored, kept, name), shapes[name])
                  for name, stored in (("gate", w.gate), ("up", w.up))}  # [H, kept] each
        return kept_w, self._kept_output(i, "down", b.op("Gather", [w.down, kept], axis=0, name="down_kept"),
                                         shapes["down"])

    # -- the dense tail of the split prefill ------------------------------------------------------------
    def _all_positions(self, x: str) -> str:
        """``[0, T)`` int64 for ``x [1, T, ...]``: the dense tail's statistic reads every prompt token."""
        b = self.b
        n = b.op("Squeeze", [b.op("Slice", [b.op("Shape", [x], name="x_shape"), b.ints("one", [1]), b.ints("two", [2])],
                                   name="n_tokens"), b.ints("axis0", [0])], name="n_tokens_scalar")
        return b.op("Range", [b.const("zero_i", np.int64(0)), n, b.const("one_i", np.int64(1))], name="all_positions")

    def _own_statistic(self, x: str, history: ExternalTensor, width: int) -> str:
        """PPsp's statistic of a layer's real unit inputs ``x [1, T, width]`` over every token, fused with the
        calibration history per position (``pruning.Pruner.decide_from_activations``)."""
        b = self.b
        rows = self._f32(b.op("Reshape", [x, b.ints(f"rows_{width}", [-1, width])], name="unit_input_rows"),
                         "unit_input_f32")
        return ops.fused_statistic(b, rows, b.external(history), self._all_positions(x), history.dims[0] - 1)

    def dense_attention(self, h: str, residual: str, layer: LayerSpec, w: LayerWeights, mask: str | None,
                        rope: tuple[str, str]) -> str:
        """A pruned layer's attention in the dense tail: every head, then the decode's kept heads from the
        kernel's own output, their weights, and the present K/V gathered to them (``present_kept.*``)."""
        b, p, i = self.b, self.plan, layer.index
        gate = self._gated(residual, layer)
        y = self.attention_heads(self.project(h, w.qkv, w.qkv_bias, "qkv_proj", True), layer, w, mask, rope)
        b.scope = f"layers.{i}/own_attn/"
        s = self._own_statistic(y, p.history_attn[i], layer.num_heads * self.spec.head_dim)
        scores = ops.head_scores(b, s, self.score_weights(layer, "heads"), layer.num_heads)
        kept = ops.select_units(b, scores, p.kept_heads[i], p.protected_heads[i], gate, layer.num_heads, "heads")
        kept = b.add_output(kept, f"kept_heads.{i}", TensorProto.INT64, [p.kept_heads[i]])
        b.scope = f"layers.{i}/"
        self._kept_attention(kept, layer, w)
        n_kv, d = p.kv_heads(layer), self.spec.head_dim
        groups = None if kv_shared(layer.num_kv_heads) else b.op(
            "Div", [kept, b.const("group_size", np.int64(layer.num_heads // layer.num_kv_heads))], name="kv_group")
        for kind in ("key", "value"):
            whole = present_name(i, kind)
            gathered = whole if groups is None else b.op("Gather", [whole, groups], axis=1, name=f"{kind}_kept")
            b.add_output(b.op("Identity", [gathered], name=f"present_kept_{kind}") if groups is None else gathered,
                         present_kept_name(i, kind), b.onnx_dtype, ["batch", n_kv, "total_sequence", d])
        return self.o_proj(y, layer, w)

    def dense_mlp(self, h: str, residual: str, layer: LayerSpec, w: LayerWeights) -> str:
        """A pruned layer's MLP in the dense tail: every channel, then the decode's kept channels from the
        down projection's own input, and their weights."""
        b, p, i = self.b, self.plan, layer.index
        gate = self._gated(residual, layer)
        gated = b.op("Mul", [self.act(self.project(h, w.gate, None, "gate_proj", True), "act"),
                             self.project(h, w.up, None, "up_proj", True)], name="gated")
        b.scope = f"layers.{i}/own_mlp/"
        s = self._own_statistic(gated, p.history_mlp[i], layer.intermediate_size)
        scores = ops.channel_scores(b, s, self.score_weights(layer, "channels"))
        kept = ops.select_units(b, scores, p.kept_channels[i], p.protected_channels[i], gate,
                                layer.intermediate_size, "channels")
        kept = b.add_output(kept, f"kept_channels.{i}", TensorProto.INT64, [p.kept_channels[i]])
        b.scope = f"layers.{i}/"
        self._kept_mlp(kept, layer, w)
        return b.op("MatMul", [gated, w.down], name="down_proj")

    def build(self, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
        if self.mode == "prefill":
            # float position ids for the probe's masks
            self.position_ids_f = self.b.op("Cast", ["position_ids"], to=TensorProto.FLOAT, name="position_ids_f")
        return super().build(metadata)


class HeadGraph(DecoderGraph):
    """The head of the split prefill: the embedding and the ``skip_first`` unpruned layers, whose output
    residual stream (``hidden_states``) the level's pruned tail or its dense tail continues, and the
    risk gate read on it (the input of the first pruned layer, as every prefill reads it)."""

    def __init__(self, spec: ModelSpec, weights: WeightReader, store: WeightStore, options: DecoderOptions,
                 plan: PruningPlan) -> None:
        if plan.gate_layer != plan.skip_first:
            raise ExportError(f"the risk gate is read at layer {plan.gate_layer}, not at the first pruned layer "
                              f"{plan.skip_first}: the split prefill needs them equal (calibrate again)")
        super().__init__(spec, weights, store, options, layers=(0, plan.skip_first))
        self.plan = plan

    def part_end(self, hidden: str) -> None:
        p = self.plan
        x = hidden if self.opt.dtype == "fp32" else self.b.op("Cast", [hidden], to=TensorProto.FLOAT,
                                                               name="gate_residual_f32")
        self.b.add_output(ops.risk_gate(self.b, x, p.direction, p.threshold, p.temperature), RISK_GATE,
                          TensorProto.FLOAT, [1])


def build_split(spec: ModelSpec, weights: WeightReader, store: WeightStore, options: DecoderOptions,
                plan: PruningPlan, directory: Path, metadata: dict[str, str] | None = None,
                head: bool = True) -> dict[str, str]:
    """Write the split prefill of ``plan`` (aapp-adaptive's dense-prefill path) into ``directory``: the
    level's pruned tail and dense tail, and (``head``) the head every level shares; returns file names."""
    tail = (plan.skip_first, spec.num_layers)
    graphs = {"tail": (f"prefill-tail-{level_name(plan.sparsity)}.onnx",
                       lambda: PrunedGraph(spec, weights, store, options, plan, "prefill", tail)),
              "dense_tail": (f"prefill-dense-{level_name(plan.sparsity)}.onnx",
                             lambda: PrunedGraph(spec, weights, store, options, plan, "dense-prefill", tail))}
    if head:
        graphs["head"] = (HEAD_FILE, lambda: HeadGraph(spec, weights, store, options, plan))
    files = {}
    for key, (name, make) in graphs.items():
        onnx.save(make().build(metadata), str(Path(directory) / name))
        files[key] = name
    return files


def build_level(spec: ModelSpec, weights: WeightReader, store: WeightStore, options: DecoderOptions,
                plan: PruningPlan, directory: Path, metadata: dict[str, str] | None = None) -> dict[str, str]:
    """Write the prefill and decode graphs of ``plan`` into ``directory``; returns their file names."""
    if spec.mlp_bias:
        raise ExportError("pruned graphs do not support mlp_bias")
    files = {}
    for mode in ("prefill", "decode"):
        name = f"{mode}-{level_name(plan.sparsity)}.onnx"
        proto = PrunedGraph(spec, weights, store, options, plan, mode).build(metadata)
        onnx.save(proto, str(Path(directory) / name))
        files[mode] = name
    return files


def kept_counts(spec: ModelSpec, sparsity: float, skip_first: int) -> tuple[list[int], list[int]]:
    """Kept query heads and MLP channels per layer at ``sparsity`` (``probe.kept_counts``, as the reference)."""
    heads = pp.kept_counts([l.num_heads for l in spec.layers], sparsity, skip_first)
    channels = pp.kept_counts([l.intermediate_size for l in spec.layers], sparsity, skip_first)
    return heads, channels


__all__ = ["PruningPlan", "PrunedGraph", "HeadGraph", "build_level", "build_split", "present_kept_name", "HEAD_FILE", "kept_counts", "kept_name", "level_name", "AAPP_INPUT",
           "RISK_GATE", "CONFIRM_GATE", "KEPT_PARTS"]
