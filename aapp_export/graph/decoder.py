"""The decoder-only LM graph (Gemma 3, Llama, Qwen 2.5), emitted directly from checkpoint weights.

Graph I/O (batch ``B``, new tokens ``S``, cached tokens ``P``, ``T = P + S``):

- inputs: ``input_ids [B,S] int64``, ``attention_mask [B,T] int64`` (1 = real token, cache
  included), ``position_ids [B,S] int64``, ``past_key_values.{i}.key|value [B,kv_i,P,head_dim]``
- outputs: ``logits [B,S,V]`` (or ``[B,1,V]`` with ``last_logits_only``),
  ``present.{i}.key|value [B,kv_i,T,head_dim]``

Attention is one of two kernels (``DecoderOptions.attention``) with the same inputs and outputs:

- ``"gqa"``: ONNX Runtime's ``com.microsoft.GroupQueryAttention`` (CPU: fp32/fp16; CUDA:
  fp16/bf16), the kernel onnxruntime-genai uses, without an attention bias so CUDA can take its
  flash paths. The kernel masks causally and by ``local_window_size`` itself and reads each row's
  length from ``attention_mask`` (``seqlens_k = sum - 1``): batches are right-padded. Because it
  appends new keys and values at that length, a past/present pair bound to one preallocated buffer
  is updated in place (the runtime's KV buffer). Faster on CPU than the standard op (README).
  These ONNX Runtime graphs also fuse each residual add with the next RMS norm
  (``com.microsoft.SkipSimplifiedLayerNormalization``).
- ``"onnx"``: the standard ``Attention`` op (opset 23) with an additive mask built from
  ``attention_mask`` (any padding, left included); runs on any ONNX backend.

Weights are stored once in the model dir's data file (``WeightStore``), in the layout that makes
every pruning gather a gather of contiguous rows: q|k|v, gate and up output-major (``[out, in]``, as
in the checkpoint, read by ``FusedMatMul(transB=1)``), o and down input-major (``[in, out]``, read
by ``MatMul``). In ONNX Runtime graphs no weight passes through an op that would be folded into a
new constant, so the runtime can hand every session the same mapped bytes (``aapp_runtime.weights``).

A graph may cover a range of layers (``layers=(start, stop)``, the split prefill of aapp-adaptive's
dense-prefill path): a part that starts after layer 0 reads ``hidden_states [B,S,hidden]`` (the residual
stream entering layer ``start``) instead of ``input_ids``; one that stops before the last layer outputs
it instead of ``logits``; each part has the KV inputs and outputs of its own layers only.

``LayerUnits`` selects, per layer, which query heads and MLP channels are built (a static pruned
model). A layer that keeps a subset of query heads gives each kept head its own K/V head when the
model has several KV heads (``kv_rows``: the rows of its group, copied; for MHA these are the head's
own K/V, i.e. whole heads are pruned); with one KV head all kept heads share it. So any subset works
with both attention kernels, and the pruned graphs (``graph/pruned.py``) use the same rule.

Conventions: node and tensor names are ``<scope><what>`` with the scope ``layers.{i}/`` inside a
layer (``layers.3/qkv_proj``, ``layers.3/probe/heads_topk``); ``GraphBuilder.fresh`` numbers repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto
from tqdm import tqdm

from ..checkpoint import WeightReader
from ..choices import ATTENTION_KERNELS
from ..errors import ExportError, InputError, UnsupportedModelError
from ..families import LayerSpec, ModelSpec
from .builder import ONNX_DTYPES, TORCH_DTYPES, GraphBuilder, WeightStore

INPUT_IDS, ATTENTION_MASK, POSITION_IDS, LOGITS = "input_ids", "attention_mask", "position_ids", "logits"
HIDDEN = "hidden_states"  # a split graph's residual stream between its parts ([B, S, hidden])


def past_name(i: int, kind: str) -> str:
    return f"past_key_values.{i}.{kind}"


def present_name(i: int, kind: str) -> str:
    return f"present.{i}.{kind}"


@dataclass(frozen=True)
class LayerUnits:
    """The query heads and MLP channels of one layer that the graph computes (None = all)."""

    heads: Sequence[int] | None = None
    channels: Sequence[int] | None = None


@dataclass(frozen=True)
class LayerWeights:
    """Names of the tensors one layer's projections read (constants, graph inputs or tensors computed in
    the graph), and the head counts they imply. ``o`` ``[n_q * D, H]`` and ``down`` ``[I, H]`` are
    input-major; ``qkv`` ``[(n_q + 2 n_kv) * D, H]``, ``gate`` and ``up`` ``[I, H]`` are output-major as
    stored, or input-major (``[H, out]``) when ``in_major`` (the pruned decode graph's kept copies)."""

    qkv: str
    qkv_bias: str | None
    o: str
    gate: str
    up: str
    down: str
    n_q: int
    n_kv: int
    in_major: bool = False


def kv_shared(num_kv_heads: int) -> bool:
    """With one KV head every kept query head shares it; otherwise each kept head gets its group's K/V."""
    return num_kv_heads == 1


def kv_heads_kept(layer: LayerSpec, kept_heads: int | None) -> int:
    """KV heads of a layer that keeps ``kept_heads`` query heads (None: all), by the rule above."""
    if kept_heads is None or kv_shared(layer.num_kv_heads):
        return layer.num_kv_heads
    return kept_heads


def head_rows(heads: np.ndarray, head_dim: int) -> np.ndarray:
    """Rows of an output-major per-head projection that belong to ``heads`` (in order)."""
    return (np.asarray(heads)[:, None] * head_dim + np.arange(head_dim)[None, :]).reshape(-1)


def qkv_rows(heads: np.ndarray, num_heads: int, num_kv_heads: int, head_dim: int) -> np.ndarray:
    """Rows of the fused q|k|v weight a layer keeping query ``heads`` computes (module docstring's rule)."""
    q = head_rows(heads, head_dim)
    kv = np.arange(num_kv_heads) if kv_shared(num_kv_heads) else np.asarray(heads) // (num_heads // num_kv_heads)
    k = num_heads * head_dim + head_rows(kv, head_dim)
    return np.concatenate([q, k, k + num_kv_heads * head_dim])




@dataclass(frozen=True)
class DecoderOptions:
    dtype: str = "fp32"
    last_logits_only: bool = True
    attention: str = "gqa"  # one of ATTENTION_KERNELS


class DecoderGraph:
    """Builds the graph of one model; call ``build()`` once. Subclasses (the pruned graphs) override
    ``layer_weights``, ``attention_block`` and ``mlp_block`` for the layers they prune."""

    def __init__(self, spec: ModelSpec, weights: WeightReader, store: WeightStore | Path, options: DecoderOptions,
                 units: Sequence[LayerUnits] | None = None, layers: tuple[int, int] | None = None) -> None:
        self.spec = spec
        self.start, self.stop = layers if layers is not None else (0, spec.num_layers)
        if not 0 <= self.start < self.stop <= spec.num_layers:
            raise ExportError(f"layers {layers} is not a range of the model's {spec.num_layers} layers")
        self.w = weights
        self.opt = options
        self.b = GraphBuilder(store, options.dtype)
        self.units = list(units) if units is not None else [LayerUnits()] * spec.num_layers
        if options.attention not in ATTENTION_KERNELS:
            raise InputError(f"--attention {options.attention!r} is not one of {', '.join(ATTENTION_KERNELS)}")
        self.neg = float(torch.finfo(TORCH_DTYPES[options.dtype]).min)

    # -- weights (keyed: stored once, shared by every graph of the model dir) ---------------------
    def tensor(self, name: str) -> torch.Tensor:
        return self.w.get(name)

    def stored(self, label: str, key: str, make) -> str:
        """An initializer stored once under ``key`` (``make`` builds it the first time)."""
        return self.b.weight(label, make, key=key)

    def layer_weights(self, layer: LayerSpec) -> LayerWeights:
        """The stored weights of a layer (or of its ``LayerUnits`` subset, stored for this graph only)."""
        s, i, d = self.spec, layer.index, self.spec.head_dim
        if s.mlp_bias:
            raise UnsupportedModelError("config.json: mlp_bias=true (biases on gate/up/down) is not supported by the "
                                        "graph builder; none of Gemma 3, Llama 2 or Qwen 2.5 uses it")
        units = self.units[i]
        t = lambda part: s.layer_tensor(i, part)  # noqa: E731
        heads = np.arange(layer.num_heads) if units.heads is None else np.asarray(sorted(units.heads))
        if len(heads) == 0 or heads.max() >= layer.num_heads or len(set(heads.tolist())) != len(heads):
            raise ExportError(f"layer {i} keeps query heads {heads.tolist()}: pass distinct heads in "
                              f"[0, {layer.num_heads}), at least one")
        rows = None if units.heads is None else torch.as_tensor(qkv_rows(heads, layer.num_heads, layer.num_kv_heads, d))
        ch = None if units.channels is None else torch.as_tensor(np.asarray(sorted(units.channels)))
        sub = lambda w, idx: w if idx is None else w[idx]  # noqa: E731
        key = lambda name: None if (rows if "attn" in name else ch) is not None else name  # noqa: E731
        qkv_full = lambda: torch.cat([self.tensor(t(f"self_attn.{n}_proj.weight")) for n in "qkv"])  # noqa: E731
        qkv = self.b.weight("qkv_proj.weight", lambda: sub(qkv_full(), rows), key=key(t("self_attn.qkv")))
        bias = None
        if s.qkv_bias:
            bias = self.b.weight("qkv_proj.bias", lambda: sub(torch.cat([self.tensor(t(f"self_attn.{n}_proj.bias"))
                                                                         for n in "qkv"]), rows),
                                 key=key(t("self_attn.qkv_bias")))
        q_rows = None if rows is None else rows[:len(heads) * d]
        o = self.b.weight("o_proj.weight_t", lambda: sub(self.tensor(t("self_attn.o_proj.weight")).t(), q_rows),
                          key=key(t("self_attn.o_proj.weight")))
        mlp = {name: self.b.weight(f"{name}_proj.weight", (lambda n=name: sub(self._mlp_rows(i, n), ch)),
                                   key=key(t(f"mlp.{name}_proj.weight"))) for name in ("gate", "up", "down")}
        n_kv = kv_heads_kept(layer, None if rows is None else len(heads))
        return LayerWeights(qkv, bias, o, mlp["gate"], mlp["up"], mlp["down"], len(heads), n_kv)

    def _mlp_rows(self, i: int, name: str) -> torch.Tensor:
        """An MLP weight with one row per channel: gate/up as stored in the checkpoint, down transposed."""
        w = self.tensor(self.spec.layer_tensor(i, f"mlp.{name}_proj.weight"))
        return w.t() if name == "down" else w

    # -- small pieces ---------------------------------------------------------------------------
    def project(self, x: str, weight: str, bias: str | None, label: str, out_major: bool = False) -> str:
        """``x [B,S,in] @ W + b``, ``W`` input-major (``MatMul``) or output-major ``[out, in]``: ONNX Runtime
        graphs read the latter with ``com.microsoft.FusedMatMul(transB=1)`` (no copy of the weight);
        standard graphs through a ``Transpose`` (folded into a constant at load)."""
        b = self.b
        if not out_major:
            y = b.op("MatMul", [x, weight], name=label)
        elif self.opt.attention == "gqa":
            y = b.op("FusedMatMul", [x, weight], name=label, domain="com.microsoft", transB=1)
        else:
            y = b.op("MatMul", [x, b.op("Transpose", [weight], perm=[1, 0], name=f"{label}_weight_t")], name=label)
        return b.op("Add", [y, bias], name=f"{label}_bias") if bias else y

    def gemm_rows(self, rows: str, weight: str, bias: str | None, label: str) -> str:
        """``rows [n, in]`` through an output-major ``weight [out, in]`` (and ``bias [out]``): ``[n, out]``."""
        return self.b.op("Gemm", [rows, weight] + ([bias] if bias else []), transB=1, name=label)

    def _norm_weight(self, weight_name: str, label: str) -> str:
        return self.b.weight(f"{label}.weight", lambda: self.w.get(weight_name).float() + self.spec.norm_weight_offset,
                             key=f"{weight_name}+{self.spec.norm_weight_offset}")

    def rms_norm(self, x: str, weight_name: str, label: str) -> str:
        return self.b.op("RMSNormalization", [x, self._norm_weight(weight_name, label)], name=label,
                         axis=-1, epsilon=self.spec.rms_norm_eps)

    def add_norm(self, x: str, branch: str | None, weight_name: str, label: str) -> tuple[str, str]:
        """``x + branch`` (the residual stream) and its RMS norm: ``(normed, residual)``. ONNX Runtime
        graphs (``attention="gqa"``) fuse both into ``com.microsoft.SkipSimplifiedLayerNormalization``
        as onnxruntime-genai does; standard graphs use ``Add`` and ``RMSNormalization``."""
        if branch is None:
            return self.rms_norm(x, weight_name, label), x
        if self.opt.attention != "gqa":
            x = self.b.op("Add", [x, branch], name=f"{label}_residual")
            return self.rms_norm(x, weight_name, label), x
        normed, _, _, residual = self.b.op("SkipSimplifiedLayerNormalization",
                                           [branch, x, self._norm_weight(weight_name, label)], n_out=4, name=label,
                                           domain="com.microsoft", unused=(1, 2), epsilon=self.spec.rms_norm_eps)
        return normed, residual

    def act(self, x: str, label: str) -> str:
        kind = self.spec.activation
        if kind == "silu":
            return self.b.op("Mul", [x, self.b.op("Sigmoid", [x], name=f"{label}_sigmoid")], name=label)
        return self.b.op("Gelu", [x], name=label, approximate="tanh" if kind == "gelu_tanh" else "none")

    def kv_heads_of(self, layer: LayerSpec) -> int:
        """KV heads of a layer's cache in this graph."""
        heads = self.units[layer.index].heads
        return kv_heads_kept(layer, None if heads is None else len(heads))

    # -- shared per-call tensors ----------------------------------------------------------------
    @property
    def own_layers(self) -> list[LayerSpec]:
        """The layers this graph computes (all, or its part of a split prefill)."""
        return self.spec.layers[self.start:self.stop]

    def _inputs(self) -> None:
        b, s = self.b, self.spec
        if self.start == 0:
            b.add_input(INPUT_IDS, TensorProto.INT64, ["batch", "sequence"])
        else:
            b.add_input(HIDDEN, b.onnx_dtype, ["batch", "sequence", s.hidden_size])
        b.add_input(ATTENTION_MASK, TensorProto.INT64, ["batch", "total_sequence"])
        b.add_input(POSITION_IDS, TensorProto.INT64, ["batch", "sequence"])
        for layer in self.own_layers:
            i = layer.index
            for kind in ("key", "value"):
                b.add_input(past_name(i, kind), b.onnx_dtype, ["batch", self.kv_heads_of(layer), "past_sequence", s.head_dim])

    def _masks(self) -> dict[int | None, str]:
        """Additive attention masks [B,1,S,T], one per distinct sliding window (None = full), for the
        standard op; for GroupQueryAttention its per-row lengths instead (no masks)."""
        b = self.b
        b.scope = "mask/"
        zero, one = b.ints("zero", [0]), b.ints("one", [1])
        total = b.op("Gather", [b.op("Shape", [ATTENTION_MASK]), one], name="total")  # [1]
        scalar = lambda t: b.op("Squeeze", [t, zero], name="scalar")  # noqa: E731
        masks: dict[int | None, str] = {}
        if self.opt.attention == "gqa":
            valid = b.op("ReduceSum", [ATTENTION_MASK, one], keepdims=0, name="valid_length")  # [B]
            self.gqa_seqlens = b.op("Cast", [b.op("Sub", [valid, one], name="last_valid")], to=TensorProto.INT32,
                                    name="seqlens_k")
            self.gqa_total = b.op("Cast", [scalar(total)], to=TensorProto.INT32, name="total_i32")  # scalar
            b.scope = ""
            return masks
        seq = b.op("Gather", [b.op("Shape", [POSITION_IDS]), one], name="seq")
        past = b.op("Sub", [total, seq], name="past")
        q_idx = b.op("Range", [scalar(past), scalar(total), scalar(one)], name="q_idx")  # [S]
        k_idx = b.op("Range", [scalar(zero), scalar(total), scalar(one)], name="k_idx")  # [T]
        q_col = b.op("Unsqueeze", [q_idx, one], name="q_col")  # [S,1]
        k_row = b.op("Unsqueeze", [k_idx, zero], name="k_row")  # [1,T]
        causal = b.op("LessOrEqual", [k_row, q_col], name="causal")  # [S,T]
        valid = b.op("Cast", [b.op("Unsqueeze", [ATTENTION_MASK, b.ints("axes12", [1, 2])], name="valid_4d")],
                     to=TensorProto.BOOL, name="valid")  # [B,1,1,T]
        zero_f, neg_f = b.scalar("zero_f", 0.0), b.scalar("neg_f", self.neg)
        for window in sorted({l.sliding_window for l in self.own_layers}, key=lambda w: (w is not None, w or 0)):
            allowed = causal
            if window is not None:
                lower = b.op("Sub", [q_col, b.ints("window", [window])], name=f"lower_w{window}")
                allowed = b.op("And", [causal, b.op("Greater", [k_row, lower], name=f"in_window_w{window}")],
                               name=f"causal_w{window}")
            allowed = b.op("And", [valid, allowed], name=f"allowed_w{window}")  # [B,1,S,T]
            masks[window] = b.op("Where", [allowed, zero_f, neg_f], name=f"additive_w{window}")
        b.scope = ""
        return masks

    def _rope_tables(self) -> dict[int, tuple[str, str]]:
        """cos and sin [B,S,D/2] per layer (shared between layers with the same RopeSpec), with the
        rope's attention scaling folded in; consumed by the ONNX ``RotaryEmbedding`` op."""
        b = self.b
        b.scope = "rope/"
        pos = b.op("Cast", [b.op("Unsqueeze", [POSITION_IDS, b.ints("axis2", [2])], name="pos_col")],
                   to=TensorProto.FLOAT, name="pos_f")  # [B,S,1]
        tables: dict[int, tuple[str, str]] = {}
        seen: list[tuple[object, tuple[str, str]]] = []
        for layer in self.own_layers:
            rope = layer.rope
            match = next((t for r, t in seen if r is rope), None)
            if match is None:
                k = len(seen)
                freqs = b.op("Mul", [pos, b.const(f"inv_freq{k}", rope.inv_freq.astype(np.float32))], name=f"freqs{k}")
                cos, sin = b.op("Cos", [freqs], name=f"cos{k}"), b.op("Sin", [freqs], name=f"sin{k}")
                if rope.attention_scaling != 1.0:
                    sc = b.const(f"scaling{k}", np.float32(rope.attention_scaling))
                    cos, sin = b.op("Mul", [cos, sc], name=f"cos_s{k}"), b.op("Mul", [sin, sc], name=f"sin_s{k}")
                if self.opt.dtype != "fp32":
                    cos = b.op("Cast", [cos], to=b.onnx_dtype, name=f"cos_cast{k}")
                    sin = b.op("Cast", [sin], to=b.onnx_dtype, name=f"sin_cast{k}")
                match = (cos, sin)
                seen.append((rope, match))
            tables[layer.index] = match
        b.scope = ""
        return tables

    # -- blocks ---------------------------------------------------------------------------------
    def attend(self, x: str, layer: LayerSpec, w: LayerWeights, mask: str | None, rope: tuple[str, str]) -> str:
        """Attention of one layer with the projections ``w`` on ``x`` [B,S,H]::

            x -> Gemm(q|k|v) -> Split -> q_norm/k_norm (Gemma) -> RotaryEmbedding -> kernel -> MatMul(o)
                                                        past K/V --^   present K/V <--'
        """
        return self.attend_projected(self.project(x, w.qkv, w.qkv_bias, "qkv_proj", not w.in_major), layer, w,
                                     mask, rope)

    def attend_projected(self, qkv: str, layer: LayerSpec, w: LayerWeights, mask: str | None,
                         rope: tuple[str, str]) -> str:
        """``attend`` from the q|k|v projection ``[B,S,(n_q+2n_kv)*D]`` on."""
        return self.o_proj(self.attention_heads(qkv, layer, w, mask, rope), layer, w)

    def attention_heads(self, qkv: str, layer: LayerSpec, w: LayerWeights, mask: str | None,
                        rope: tuple[str, str]) -> str:
        """The attention kernel's output ``[B,S,n_q*D]`` (o_proj's input) from the q|k|v projection; adds the
        layer's ``present.*`` outputs."""
        b, s, i = self.b, self.spec, layer.index
        d = s.head_dim
        n_q, n_kv = w.n_q, w.n_kv
        q, k, v = b.op("Split", [qkv, b.ints("qkv_split", [n_q * d, n_kv * d, n_kv * d])], n_out=3, axis=-1,
                       name="qkv")
        q, k = self.qk_norm_rope(q, k, layer, n_q, n_kv, rope)
        past = [past_name(i, "key"), past_name(i, "value")]
        softcap = {"softcap": float(s.attn_logit_softcapping)} if s.attn_logit_softcapping else {}
        if self.opt.attention == "gqa":
            window = {"local_window_size": layer.sliding_window} if layer.sliding_window else {}
            y, present_k, present_v = b.op(
                "GroupQueryAttention", [q, k, v, *past, self.gqa_seqlens, self.gqa_total], n_out=3, name="attention",
                domain="com.microsoft", num_heads=n_q, kv_num_heads=n_kv, scale=s.attention_scale, **softcap, **window)
        else:
            y, present_k, present_v = b.op("Attention", [q, k, v, mask, *past], n_out=3, name="attention",
                                           scale=s.attention_scale, q_num_heads=n_q, kv_num_heads=n_kv, **softcap)
        b.add_output(present_k, present_name(i, "key"), b.onnx_dtype, ["batch", n_kv, "total_sequence", d])
        b.add_output(present_v, present_name(i, "value"), b.onnx_dtype, ["batch", n_kv, "total_sequence", d])
        return y

    def o_proj(self, y: str, layer: LayerSpec, w: LayerWeights) -> str:
        """o_proj (and its bias) on the attention kernel's output."""
        b, s, i = self.b, self.spec, layer.index
        out = b.op("MatMul", [y, w.o], name="o_proj")
        if s.o_bias:
            bias = s.layer_tensor(i, "self_attn.o_proj.bias")
            out = b.op("Add", [out, b.weight("o_proj.bias", lambda: self.tensor(bias), key=bias)], name="o_proj_bias")
        return out

    def qk_norm_rope(self, q: str, k: str, layer: LayerSpec, n_q: int, n_kv: int, rope: tuple[str, str]) -> tuple[str, str]:
        """Per-head RMSNorm of q and k (Gemma), then RoPE with the layer's cos/sin tables ([B,S,H*D] in and out)."""
        b, s, i = self.b, self.spec, layer.index
        if s.qk_norm:  # RMSNorm over each head's D channels
            per_head, merged = b.ints("per_head", [0, 0, -1, s.head_dim]), b.ints("merged", [0, 0, -1])
            q, k = (b.op("Reshape", [self.rms_norm(b.op("Reshape", [z, per_head], name=f"{n}_heads"),
                                                   s.layer_tensor(i, f"self_attn.{n}_norm.weight"), f"{n}_norm"),
                                     merged], name=f"{n}_normed")
                    for z, n in ((q, "q"), (k, "k")))
        q = b.op("RotaryEmbedding", [q, rope[0], rope[1]], num_heads=n_q, name="q_rope")
        k = b.op("RotaryEmbedding", [k, rope[0], rope[1]], num_heads=n_kv, name="k_rope")
        return q, k

    def feed_forward(self, x: str, w: LayerWeights) -> str:
        """``down(act(gate(x)) * up(x))`` with the channels of ``w``."""
        gate = self.project(x, w.gate, None, "gate_proj", not w.in_major)
        up = self.project(x, w.up, None, "up_proj", not w.in_major)
        return self.down(gate, up, w)

    def down(self, gate: str, up: str, w: LayerWeights) -> str:
        """``down(act(gate) * up)``."""
        h = self.b.op("Mul", [self.act(gate, "act"), up], name="gated")
        return self.b.op("MatMul", [h, w.down], name="down_proj")

    def attention_block(self, h: str, residual: str, layer: LayerSpec, w: LayerWeights, mask: str | None,
                        rope: tuple[str, str]) -> str:
        """The layer's attention output from its normed input ``h`` (``residual``: the stream before the
        norm, which the pruned graphs' probe ranks tokens by)."""
        return self.attend(h, layer, w, mask, rope)

    def mlp_block(self, h: str, residual: str, layer: LayerSpec, w: LayerWeights) -> str:
        return self.feed_forward(h, w)

    def layer(self, x: str, pending: str | None, layer: LayerSpec, masks: dict, ropes: dict) -> tuple[str, str]:
        """One decoder layer on the residual stream ``x`` (plus ``pending``, the previous layer's MLP
        output not yet added); returns the new stream and this layer's MLP output, still pending."""
        b, s, i = self.b, self.spec, layer.index
        b.scope = f"layers.{i}/"
        lt = lambda part: s.layer_tensor(i, part)  # noqa: E731
        w = self.layer_weights(layer)
        h, x = self.add_norm(x, pending, lt("input_layernorm.weight"), "input_layernorm")
        a = self.attention_block(h, x, layer, w, masks.get(layer.sliding_window), ropes[i])
        if s.sandwich_norms:
            a = self.rms_norm(a, lt("post_attention_layernorm.weight"), "post_attention_layernorm")
            pre_mlp = "pre_feedforward_layernorm.weight"
        else:
            pre_mlp = "post_attention_layernorm.weight"
        h, x = self.add_norm(x, a, lt(pre_mlp), "pre_mlp_norm")
        m = self.mlp_block(h, x, layer, w)
        if s.sandwich_norms:
            m = self.rms_norm(m, lt("post_feedforward_layernorm.weight"), "post_feedforward_layernorm")
        b.scope = ""
        return x, m

    def final_residual(self, residual: str) -> None:
        """Called with the residual stream that enters the final norm (the pruned prefill reads a gate there)."""

    def part_end(self, hidden: str) -> None:
        """Called with the residual stream a part that stops before the last layer outputs (its head
        part reads the risk gate there)."""

    def build(self, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
        b, s = self.b, self.spec
        self._inputs()
        masks, ropes = self._masks(), self._rope_tables()

        embed = lambda: b.weight("embed_tokens.weight", lambda: self.w.get(s.tensor("embed_tokens.weight")),  # noqa: E731
                                 key=s.tensor("embed_tokens.weight"))
        if self.start == 0:
            x = b.op("Gather", [embed(), INPUT_IDS], name="embed")
            if s.embed_scale is not None:
                scale = float(torch.tensor(s.embed_scale, dtype=b.torch_dtype).float())  # rounded like transformers
                x = b.op("Mul", [x, b.scalar("embed_scale", scale)], name="embed_scaled")
        else:
            x = HIDDEN
        pending = None
        for layer in tqdm(self.own_layers, desc="writing layers", unit="layer", disable=None):
            x, pending = self.layer(x, pending, layer, masks, ropes)
        if self.stop < s.num_layers:  # a head part: the residual stream entering layer ``stop``
            hidden = b.op("Add", [x, pending], name="part_hidden") if pending is not None else x
            self.part_end(b.add_output(hidden, HIDDEN, b.onnx_dtype, ["batch", "sequence", s.hidden_size], first=True))
            return b.finish(f"aapp_{s.family}", metadata)
        if self.opt.last_logits_only:
            last = [b.ints("last_start", [-1]), b.ints("last_end", [2**62]), b.ints("seq_axis", [1])]
            x = b.op("Slice", [x, *last], name="last_position")
            pending = b.op("Slice", [pending, *last], name="last_position_mlp")
        x, residual = self.add_norm(x, pending, s.tensor("norm.weight"), "final_norm")
        self.final_residual(residual)
        if s.tie_word_embeddings:  # one copy of the embedding, used transposed by Gemm
            flat = b.op("Reshape", [x, b.ints("flat_shape", [-1, s.hidden_size])], name="final_flat")
            logits = b.op("Gemm", [flat, embed()], transB=1, name="lm_head")
            bs = b.op("Slice", [b.op("Shape", [x], name="hidden_shape"), b.ints("zero0", [0]), b.ints("two", [2])],
                      name="batch_seq")
            logits = b.op("Reshape", [logits, b.op("Concat", [bs, b.ints("vocab", [s.vocab_size])], axis=0,
                                                    name="logits_shape")], name="logits_3d")
        else:
            head = b.weight("lm_head.weight_t", lambda: self.w.get(s.lm_head_name).t(), key=f"{s.lm_head_name}.t")
            logits = b.op("MatMul", [x, head], name="lm_head")
        if s.final_logit_softcapping:
            cap = b.scalar("final_softcap", float(s.final_logit_softcapping))
            logits = b.op("Mul", [b.op("Tanh", [b.op("Div", [logits, cap], name="capped")], name="tanh_cap"), cap],
                          name="softcapped")
        b.add_output(logits, LOGITS, b.onnx_dtype, ["batch", 1 if self.opt.last_logits_only else "sequence", s.vocab_size],
                     first=True)
        return b.finish(f"aapp_{s.family}", metadata)


def build_decoder(spec: ModelSpec, weights: WeightReader, model_path: Path | None, options: DecoderOptions,
                  units: Sequence[LayerUnits] | None = None, metadata: dict[str, str] | None = None,
                  store: WeightStore | None = None) -> onnx.ModelProto:
    """Build the graph, writing weights to ``store`` (default: a store of its own, ``<model_path>.data``);
    returns the (small) model proto."""
    return DecoderGraph(spec, weights, store or Path(str(model_path) + ".data"), options, units).build(metadata)


__all__ = ["HIDDEN", "ATTENTION_KERNELS", "build_decoder", "DecoderGraph", "DecoderOptions", "LayerUnits", "LayerWeights", "ONNX_DTYPES", "past_name", "present_name"]
