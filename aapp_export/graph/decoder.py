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

``LayerUnits`` selects, per layer, which query heads and MLP channels are built: every unit stays
separately addressable for the pruned graphs, and both kernels take each layer's head count.
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
from ..errors import ExportError, InputError
from ..families import LayerSpec, ModelSpec
from .builder import ONNX_DTYPES, TORCH_DTYPES, GraphBuilder

INPUT_IDS, ATTENTION_MASK, POSITION_IDS, LOGITS = "input_ids", "attention_mask", "position_ids", "logits"


def past_name(i: int, kind: str) -> str:
    return f"past_key_values.{i}.{kind}"


def present_name(i: int, kind: str) -> str:
    return f"present.{i}.{kind}"


@dataclass(frozen=True)
class LayerUnits:
    """The query heads and MLP channels of one layer that the graph computes (None = all)."""

    heads: Sequence[int] | None = None
    channels: Sequence[int] | None = None


ATTENTION_KERNELS = ("gqa", "onnx")


@dataclass(frozen=True)
class DecoderOptions:
    dtype: str = "fp32"
    last_logits_only: bool = True
    attention: str = "gqa"  # one of ATTENTION_KERNELS


class DecoderGraph:
    """Builds the graph of one model; call ``build()`` once."""

    def __init__(self, spec: ModelSpec, weights: WeightReader, data_file: Path, options: DecoderOptions,
                 units: Sequence[LayerUnits] | None = None) -> None:
        self.spec = spec
        self.w = weights
        self.opt = options
        self.b = GraphBuilder(data_file, options.dtype)
        self.units = list(units) if units is not None else [LayerUnits()] * spec.num_layers
        if options.attention not in ATTENTION_KERNELS:
            raise InputError(f"--attention {options.attention!r} is not one of {', '.join(ATTENTION_KERNELS)}")
        self.neg = float(torch.finfo(TORCH_DTYPES[options.dtype]).min)

    # -- small pieces ---------------------------------------------------------------------------
    def linear(self, x: str, weight_name: str, bias_name: str | None, rows: np.ndarray | None = None,
               cols: np.ndarray | None = None, label: str = "linear") -> str:
        """``x @ W[rows][:, cols].T + b[rows]`` with W stored transposed ([in, out]) for MatMul."""
        w = self.w.get(weight_name)
        if rows is not None:
            w = w[torch.as_tensor(rows)]
        if cols is not None:
            w = w[:, torch.as_tensor(cols)]
        y = self.b.op("MatMul", [x, self.b.weight(f"{label}.weight_t", w.t())], name=label)
        if bias_name is not None:
            bias = self.w.get(bias_name)
            if rows is not None:
                bias = bias[torch.as_tensor(rows)]
            y = self.b.op("Add", [y, self.b.weight(f"{label}.bias", bias)], name=f"{label}_bias")
        return y

    def _norm_weight(self, weight_name: str, label: str) -> str:
        return self.b.weight(f"{label}.weight", self.w.get(weight_name).float() + self.spec.norm_weight_offset)

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

    # -- shared per-call tensors ----------------------------------------------------------------
    def _inputs(self) -> None:
        b, s = self.b, self.spec
        b.add_input(INPUT_IDS, TensorProto.INT64, ["batch", "sequence"])
        b.add_input(ATTENTION_MASK, TensorProto.INT64, ["batch", "total_sequence"])
        b.add_input(POSITION_IDS, TensorProto.INT64, ["batch", "sequence"])
        for i, layer in enumerate(s.layers):
            for kind in ("key", "value"):
                b.add_input(past_name(i, kind), b.onnx_dtype, ["batch", layer.num_kv_heads, "past_sequence", s.head_dim])

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
        seq = b.op("Gather", [b.op("Shape", [INPUT_IDS]), one], name="seq")
        past = b.op("Sub", [total, seq], name="past")
        q_idx = b.op("Range", [scalar(past), scalar(total), scalar(one)], name="q_idx")  # [S]
        k_idx = b.op("Range", [scalar(zero), scalar(total), scalar(one)], name="k_idx")  # [T]
        q_col = b.op("Unsqueeze", [q_idx, one], name="q_col")  # [S,1]
        k_row = b.op("Unsqueeze", [k_idx, zero], name="k_row")  # [1,T]
        causal = b.op("LessOrEqual", [k_row, q_col], name="causal")  # [S,T]
        valid = b.op("Cast", [b.op("Unsqueeze", [ATTENTION_MASK, b.ints("axes12", [1, 2])], name="valid_4d")],
                     to=TensorProto.BOOL, name="valid")  # [B,1,1,T]
        zero_f, neg_f = b.scalar("zero_f", 0.0), b.scalar("neg_f", self.neg)
        for window in sorted({l.sliding_window for l in self.spec.layers}, key=lambda w: (w is not None, w or 0)):
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
        for layer in self.spec.layers:
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
    def attention(self, x: str, layer: LayerSpec, units: LayerUnits, mask: str | None, rope: tuple[str, str]) -> str:
        """One fused q|k|v MatMul, per-head q/k norm (Gemma), RoPE, then the attention kernel on [B,S,heads*D]."""
        b, s, i = self.b, self.spec, layer.index
        d = s.head_dim
        heads = np.arange(layer.num_heads) if units.heads is None else np.asarray(sorted(units.heads))
        group = layer.num_heads // layer.num_kv_heads
        per_group = np.bincount(heads // group, minlength=layer.num_kv_heads)
        if len(heads) == 0 or heads.max() >= layer.num_heads or len(set(per_group.tolist())) != 1:
            raise ExportError(f"layer {i} keeps query heads {heads.tolist()}: both attention kernels map query heads "
                              f"to the {layer.num_kv_heads} KV heads in contiguous groups of {group}, so keep the same "
                              "number (at least one) of heads in every group")
        q_rows = torch.as_tensor((heads[:, None] * d + np.arange(d)[None, :]).reshape(-1))
        t = lambda part: s.layer_tensor(i, f"self_attn.{part}")  # noqa: E731
        w = torch.cat([self.w.get(t("q_proj.weight"))[q_rows], self.w.get(t("k_proj.weight")),
                       self.w.get(t("v_proj.weight"))])
        qkv = b.op("MatMul", [x, b.weight("qkv_proj.weight_t", w.t())], name="qkv_proj")
        if s.qkv_bias:
            bias = torch.cat([self.w.get(t("q_proj.bias"))[q_rows], self.w.get(t("k_proj.bias")),
                              self.w.get(t("v_proj.bias"))])
            qkv = b.op("Add", [qkv, b.weight("qkv_proj.bias", bias)], name="qkv_bias")
        n_q, n_kv = len(heads), layer.num_kv_heads
        q, k, v = b.op("Split", [qkv, b.ints("qkv_split", [n_q * d, n_kv * d, n_kv * d])], n_out=3, axis=-1,
                       name="qkv")
        if s.qk_norm:  # RMSNorm over each head's D channels
            per_head, merged = b.ints("per_head", [0, 0, -1, d]), b.ints("merged", [0, 0, -1])
            q, k = (b.op("Reshape", [self.rms_norm(b.op("Reshape", [z, per_head], name=f"{n}_heads"),
                                                   t(f"{n}_norm.weight"), f"{n}_norm"), merged], name=f"{n}_normed")
                    for z, n in ((q, "q"), (k, "k")))
        q = b.op("RotaryEmbedding", [q, rope[0], rope[1]], num_heads=n_q, name="q_rope")
        k = b.op("RotaryEmbedding", [k, rope[0], rope[1]], num_heads=n_kv, name="k_rope")
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
        o_bias = t("o_proj.bias") if s.o_bias else None
        cols = None if units.heads is None else q_rows.numpy()
        return self.linear(y, t("o_proj.weight"), o_bias, cols=cols, label="o_proj")

    def mlp(self, x: str, layer: LayerSpec, units: LayerUnits) -> str:
        s, i = self.spec, layer.index
        ch = None if units.channels is None else np.asarray(sorted(units.channels))
        t = lambda part: s.layer_tensor(i, f"mlp.{part}")  # noqa: E731
        bias = lambda part: t(f"{part}.bias") if s.mlp_bias else None  # noqa: E731
        gate = self.linear(x, t("gate_proj.weight"), bias("gate_proj"), ch, label="gate_proj")
        up = self.linear(x, t("up_proj.weight"), bias("up_proj"), ch, label="up_proj")
        h = self.b.op("Mul", [self.act(gate, "act"), up], name="gated")
        return self.linear(h, t("down_proj.weight"), bias("down_proj"), cols=ch, label="down_proj")

    def layer(self, x: str, pending: str | None, layer: LayerSpec, masks: dict, ropes: dict) -> tuple[str, str]:
        """One decoder layer on the residual stream ``x`` (plus ``pending``, the previous layer's MLP
        output not yet added); returns the new stream and this layer's MLP output, still pending."""
        b, s, i = self.b, self.spec, layer.index
        b.scope = f"layers.{i}/"
        lt = lambda part: s.layer_tensor(i, part)  # noqa: E731
        units = self.units[i]
        h, x = self.add_norm(x, pending, lt("input_layernorm.weight"), "input_layernorm")
        a = self.attention(h, layer, units, masks.get(layer.sliding_window), ropes[i])
        if s.sandwich_norms:
            a = self.rms_norm(a, lt("post_attention_layernorm.weight"), "post_attention_layernorm")
            pre_mlp = "pre_feedforward_layernorm.weight"
        else:
            pre_mlp = "post_attention_layernorm.weight"
        h, x = self.add_norm(x, a, lt(pre_mlp), "pre_mlp_norm")
        m = self.mlp(h, layer, units)
        if s.sandwich_norms:
            m = self.rms_norm(m, lt("post_feedforward_layernorm.weight"), "post_feedforward_layernorm")
        b.scope = ""
        return x, m

    def build(self, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
        b, s = self.b, self.spec
        self._inputs()
        masks, ropes = self._masks(), self._rope_tables()
        embed = self.w.get(s.tensor("embed_tokens.weight"))
        embed_name = b.weight("embed_tokens.weight", embed)
        x = b.op("Gather", [embed_name, INPUT_IDS], name="embed")
        if s.embed_scale is not None:
            scale = float(torch.tensor(s.embed_scale, dtype=b.torch_dtype).float())  # rounded like transformers
            x = b.op("Mul", [x, b.scalar("embed_scale", scale)], name="embed_scaled")
        pending = None
        for layer in tqdm(s.layers, desc="writing layers", unit="layer", disable=None):
            x, pending = self.layer(x, pending, layer, masks, ropes)
        if self.opt.last_logits_only:
            last = [b.ints("last_start", [-1]), b.ints("last_end", [2**62]), b.ints("seq_axis", [1])]
            x = b.op("Slice", [x, *last], name="last_position")
            pending = b.op("Slice", [pending, *last], name="last_position_mlp")
        x, _ = self.add_norm(x, pending, s.tensor("norm.weight"), "final_norm")
        if s.tie_word_embeddings:  # one copy of the embedding, used transposed by Gemm
            flat = b.op("Reshape", [x, b.ints("flat_shape", [-1, s.hidden_size])], name="final_flat")
            logits = b.op("Gemm", [flat, embed_name], transB=1, name="lm_head")
            bs = b.op("Slice", [b.op("Shape", [x], name="hidden_shape"), b.ints("zero0", [0]), b.ints("two", [2])],
                      name="batch_seq")
            logits = b.op("Reshape", [logits, b.op("Concat", [bs, b.ints("vocab", [s.vocab_size])], axis=0,
                                                    name="logits_shape")], name="logits_3d")
        else:
            logits = self.linear(x, s.lm_head_name, None, label="lm_head")
        if s.final_logit_softcapping:
            cap = b.scalar("final_softcap", float(s.final_logit_softcapping))
            logits = b.op("Mul", [b.op("Tanh", [b.op("Div", [logits, cap], name="capped")], name="tanh_cap"), cap],
                          name="softcapped")
        b.add_output(logits, LOGITS, b.onnx_dtype, ["batch", 1 if self.opt.last_logits_only else "sequence", s.vocab_size],
                     first=True)
        return b.finish(f"aapp_{s.family}", metadata)


def build_decoder(spec: ModelSpec, weights: WeightReader, model_path: Path, options: DecoderOptions,
                  units: Sequence[LayerUnits] | None = None, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Build the graph, writing weights to ``<model_path>.data``; returns the (small) model proto."""
    data_file = Path(str(model_path) + ".data")
    return DecoderGraph(spec, weights, data_file, options, units).build(metadata)


__all__ = ["ATTENTION_KERNELS", "build_decoder", "DecoderOptions", "LayerUnits", "ONNX_DTYPES", "past_name", "present_name"]
