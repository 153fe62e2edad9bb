"""A checkpoint checked against its config before anything is built.

Every tensor the graph reads has the shape the config implies (``families.ModelSpec``), the
embedding has ``vocab_size`` rows, and the checkpoint has no layers beyond ``num_hidden_layers``.
Each failure is one ``CheckpointError`` naming the tensor, the shapes and the config field, so an
inconsistent checkpoint stops before the export writes anything (non-finite values are caught while
the weights stream, ``WeightReader.get``).
"""

from __future__ import annotations

import re

from .checkpoint import WeightReader
from .errors import CheckpointError
from .families import ModelSpec

_LAYER = re.compile(r"layers\.(\d+)\.")


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name -> (shape, the config fields it follows)."""
    h, d, v = spec.hidden_size, spec.head_dim, spec.vocab_size
    out = {spec.tensor("embed_tokens.weight"): ((v, h), "vocab_size x hidden_size")}
    if spec.lm_head_name:
        out[spec.lm_head_name] = ((v, h), "vocab_size x hidden_size")
    for layer in spec.layers:
        i, nq, nkv, inter = layer.index, layer.num_heads * d, layer.num_kv_heads * d, layer.intermediate_size
        t = lambda part: spec.layer_tensor(i, part)  # noqa: E731
        out[t("self_attn.q_proj.weight")] = ((nq, h), "num_attention_heads*head_dim x hidden_size")
        out[t("self_attn.k_proj.weight")] = ((nkv, h), "num_key_value_heads*head_dim x hidden_size")
        out[t("self_attn.v_proj.weight")] = ((nkv, h), "num_key_value_heads*head_dim x hidden_size")
        out[t("self_attn.o_proj.weight")] = ((h, nq), "hidden_size x num_attention_heads*head_dim")
        out[t("mlp.gate_proj.weight")] = ((inter, h), "intermediate_size x hidden_size")
        out[t("mlp.up_proj.weight")] = ((inter, h), "intermediate_size x hidden_size")
        out[t("mlp.down_proj.weight")] = ((h, inter), "hidden_size x intermediate_size")
        if spec.qkv_bias:
            out[t("self_attn.q_proj.bias")] = ((nq,), "num_attention_heads*head_dim")
            out[t("self_attn.k_proj.bias")] = ((nkv,), "num_key_value_heads*head_dim")
            out[t("self_attn.v_proj.bias")] = ((nkv,), "num_key_value_heads*head_dim")
        out[t("input_layernorm.weight")] = ((h,), "hidden_size")
        if spec.qk_norm:
            out[t("self_attn.q_norm.weight")] = ((d,), "head_dim")
            out[t("self_attn.k_norm.weight")] = ((d,), "head_dim")
    return out


def validate_checkpoint(spec: ModelSpec, reader: WeightReader) -> None:
    """Raise ``CheckpointError`` on the first tensor that disagrees with the config."""
    where = f"{reader.directory}"
    for name, (shape, fields) in expected_shapes(spec).items():
        found = reader.shape(name)
        if tuple(found) != shape:
            raise CheckpointError(f"{where}: tensor {name!r} has shape {list(found)} but config.json implies "
                                  f"{list(shape)} ({fields}); the config and the weights disagree: use the config "
                                  "the checkpoint was saved with")
    prefix = spec.weight_prefix + "layers."
    deeper = sorted({int(m.group(1)) for n in reader.keys() if n.startswith(prefix)
                     for m in [_LAYER.search(n[len(spec.weight_prefix):])] if m} - set(range(spec.num_layers)))
    if deeper:
        raise CheckpointError(f"{where}: the weights have layers up to {deeper[-1]} but config.json's "
                              f"num_hidden_layers is {spec.num_layers}; the export would drop layers: use the config "
                              "the checkpoint was saved with")


__all__ = ["validate_checkpoint", "expected_shapes"]
