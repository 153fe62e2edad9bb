"""Family adapters: everything that differs between Gemma 3, Llama 2 and Qwen 2.5, in one place.

``load_model_spec`` reads a checkpoint's config with transformers (4.5x flat rope fields and 5.x
``rope_parameters`` both accepted; Gemma 3 multimodal checkpoints give their text tower) and
returns a ``ModelSpec``: plain numbers and flags the graph builder and the PyTorch reference read,
plus the tensor names of each layer in the checkpoint. Every layer keeps its own head count and MLP
width, so pruned graphs can give each layer a different width.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .checkpoint import WeightReader
from .errors import CheckpointError, UnsupportedModelError

FAMILIES = {"gemma3_text": "gemma3", "gemma3": "gemma3", "llama": "llama", "qwen2": "qwen2"}
ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh",
               "gelu": "gelu", "gelu_new": "gelu_tanh"}
SUPPORTED_ROPE = {"default", "linear", "llama3", "yarn", "dynamic"}


@dataclass(frozen=True)
class RopeSpec:
    """Rotary embedding of one layer kind: inverse frequencies and cos/sin scaling."""

    inv_freq: np.ndarray  # [head_dim // 2], float32
    attention_scaling: float = 1.0
    rope_type: str = "default"
    theta: float = 10000.0


@dataclass(frozen=True)
class LayerSpec:
    """One decoder layer: its attention kind and its (possibly pruned) widths."""

    index: int
    kind: str  # "full_attention" | "sliding_attention"
    sliding_window: int | None
    rope: RopeSpec
    num_heads: int
    num_kv_heads: int
    intermediate_size: int


@dataclass(frozen=True)
class ModelSpec:
    """The normalised description of a decoder-only model, family differences resolved."""

    family: str
    vocab_size: int
    hidden_size: int
    head_dim: int
    rms_norm_eps: float
    activation: str
    tie_word_embeddings: bool
    embed_scale: float | None  # Gemma: sqrt(hidden), applied in the weight dtype
    norm_weight_offset: float  # Gemma RMSNorm computes x * (1 + w)
    sandwich_norms: bool  # Gemma: post-attention and pre/post-feedforward norms
    qk_norm: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    attention_scale: float
    attn_logit_softcapping: float | None
    final_logit_softcapping: float | None
    max_position_embeddings: int
    layers: tuple[LayerSpec, ...]
    weight_prefix: str  # e.g. "model." or "model.language_model."
    lm_head_name: str | None  # None when tied
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    source_dtype: str = "float32"
    extra: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_kv_heads(self) -> int:
        return self.layers[0].num_kv_heads

    def layer_tensor(self, i: int, part: str) -> str:
        """Checkpoint name of a layer tensor, e.g. ``part='self_attn.q_proj.weight'``."""
        return f"{self.weight_prefix}layers.{i}.{part}"

    def tensor(self, part: str) -> str:
        return f"{self.weight_prefix}{part}"

    def with_widths(self, heads: list[int], intermediate: list[int]) -> "ModelSpec":
        """A copy whose layer i keeps ``heads[i]`` query heads and ``intermediate[i]`` MLP channels."""
        layers = tuple(replace(l, num_heads=h, intermediate_size=m) for l, h, m in zip(self.layers, heads, intermediate))
        return replace(self, layers=layers)


def load_text_config(directory: Path):
    """The text config of a checkpoint (the text tower of a multimodal Gemma 3)."""
    from transformers import AutoConfig

    cfg_file = Path(directory) / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{directory} has no config.json: it is not a Hugging Face checkpoint directory")
    try:
        config = AutoConfig.from_pretrained(str(directory))
    except Exception as exc:  # noqa: BLE001 - invalid JSON, wrong field types or values (transformers validates)
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise UnsupportedModelError(f"{cfg_file}: transformers cannot read this config ({first}); fix the file or "
                                    "use the checkpoint's original config.json") from exc
    text = getattr(config, "text_config", None)
    return text if text is not None and getattr(config, "model_type", "") == "gemma3" else config


def _rope_params(config, kind: str | None) -> dict:
    """Rope parameters of a layer kind, from 5.x ``rope_parameters`` or 4.x flat fields."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and params:
        if kind is not None and kind in params and isinstance(params[kind], dict):
            return dict(params[kind])
        if "rope_type" in params or "rope_theta" in params:
            return dict(params)
    # transformers 4.5x: flat fields
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    if "type" in scaling and "rope_type" not in scaling:
        scaling["rope_type"] = scaling.pop("type")
    if kind == "sliding_attention" and getattr(config, "rope_local_base_freq", None) is not None:
        return {"rope_type": "default", "rope_theta": config.rope_local_base_freq}
    out = {"rope_type": "default", "rope_theta": getattr(config, "rope_theta", 10000.0)}
    out.update(scaling)
    return out


def _rope_spec(config, kind: str | None, head_dim: int, family: str) -> RopeSpec:
    params = _rope_params(config, kind)
    rope_type = params.get("rope_type", "default")
    theta = float(params.get("rope_theta", 10000.0))
    if rope_type not in SUPPORTED_ROPE:
        raise UnsupportedModelError(
            f"config.json: rope type {rope_type!r} is not supported by the graph builder "
            f"(supported: {', '.join(sorted(SUPPORTED_ROPE))})"
        )
    if rope_type == "dynamic":
        raise UnsupportedModelError(
            "config.json: dynamic NTK rope changes with sequence length and cannot be baked into a static graph; "
            "remove rope_scaling or use a 'linear'/'yarn' scaled model"
        )
    if rope_type == "default":
        inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
        return RopeSpec(inv.astype(np.float32), 1.0, rope_type, theta)
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    fn = ROPE_INIT_FUNCTIONS[rope_type]
    try:
        inv_t, scaling = fn(config, "cpu", layer_type=kind) if kind else fn(config, "cpu")
    except TypeError:  # transformers 4.x: no layer_type argument
        inv_t, scaling = fn(config, "cpu")
    return RopeSpec(inv_t.float().numpy(), float(scaling), rope_type, theta)


def _weight_prefix(reader: WeightReader) -> tuple[str, str | None]:
    """Prefix of the text tower's tensors and the untied lm_head name, whatever the wrapper."""
    embeds = [k for k in reader.keys() if k.endswith("embed_tokens.weight") and "vision" not in k]
    if not embeds:
        raise CheckpointError(f"{reader.directory}: no '*embed_tokens.weight' tensor: not a decoder LM checkpoint")
    prefix = sorted(embeds, key=len)[0][: -len("embed_tokens.weight")]
    heads = [k for k in reader.keys() if k.endswith("lm_head.weight")]
    return prefix, (sorted(heads, key=len)[0] if heads else None)


def _token_ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (int(value),)


def load_model_spec(directory: Path, reader: WeightReader | None = None) -> ModelSpec:
    """Read the config and tensor names of a checkpoint into a ``ModelSpec``."""
    reader = reader or WeightReader(directory)
    config = load_text_config(directory)
    where = str(Path(directory) / "config.json")
    _family(config, where)  # an unsupported architecture is named before its tensor names are read
    prefix, lm_head = _weight_prefix(reader)
    spec = spec_from_config(config, prefix, lm_head, str(reader.dtype()).replace("torch.", ""), where=where)
    # what else transformers loads with the text model (a multimodal Gemma 3's vision tower and projector)
    other = sum(int(np.prod(reader.shape(n))) for n in reader.keys() if not n.startswith(prefix) and n != lm_head)
    return replace(spec, extra={**spec.extra, "other_params": other})


def spec_of_model(model) -> ModelSpec:
    """The ``ModelSpec`` of a loaded transformers causal LM (its text config; tensor names as in
    ``state_dict``), for the PyTorch reference: family differences are read here, never re-detected."""
    config = model.config
    text = getattr(config, "text_config", None)
    config = text if text is not None and getattr(model.config, "model_type", "") == "gemma3" else config
    names = [n for n, _ in model.named_parameters()]
    embed = next(n for n in names if n.endswith("embed_tokens.weight"))
    lm_head = next((n for n in names if n.endswith("lm_head.weight")), None)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    return spec_from_config(config, embed[: -len("embed_tokens.weight")], lm_head, dtype)


def _family(config, where: str) -> str:
    model_type = getattr(config, "model_type", "?")
    family = FAMILIES.get(model_type)
    if family is None:
        raise UnsupportedModelError(
            f"{where}: model_type {model_type!r} is not supported; "
            f"supported: {', '.join(sorted(set(FAMILIES.values())))} (Gemma 3, Llama, Qwen 2.5)"
        )
    return family


def spec_from_config(config, weight_prefix: str, lm_head: str | None, source_dtype: str,
                     where: str = "config.json") -> ModelSpec:
    """A ``ModelSpec`` from a transformers text config (``where`` names it in errors)."""
    family = _family(config, where)
    for field_name in ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers", "vocab_size"):
        value = getattr(config, field_name, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UnsupportedModelError(f"{where}: {field_name} is {value!r}, not a whole number >= 1; fix the config")
    hidden = int(config.hidden_size)
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // n_heads)
    act_name = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", "silu")
    activation = ACTIVATIONS.get(act_name)
    if activation is None:
        raise UnsupportedModelError(f"{where}: activation {act_name!r} is not supported")
    if n_heads % n_kv:
        raise UnsupportedModelError(f"{where}: {n_heads} query heads is not a multiple of {n_kv} KV heads")

    layer_types = list(getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers)
    window = getattr(config, "sliding_window", None)
    if family == "qwen2" and not getattr(config, "use_sliding_window", False):
        layer_types = ["full_attention"] * config.num_hidden_layers
    ropes = {kind: _rope_spec(config, kind if family == "gemma3" else None, head_dim, family) for kind in set(layer_types)}
    layers = tuple(
        LayerSpec(i, kind, int(window) if kind == "sliding_attention" and window else None, ropes[kind],
                  n_heads, n_kv, int(config.intermediate_size))
        for i, kind in enumerate(layer_types)
    )

    tied = bool(getattr(config, "tie_word_embeddings", False)) or lm_head is None
    gemma = family == "gemma3"
    embed_scale = hidden**0.5 if gemma else None  # the graph builder rounds it to the export dtype
    attn_scale = (float(config.query_pre_attn_scalar) ** -0.5) if gemma else head_dim**-0.5
    return ModelSpec(
        family=family,
        vocab_size=int(config.vocab_size),
        hidden_size=hidden,
        head_dim=head_dim,
        rms_norm_eps=float(config.rms_norm_eps),
        activation=activation,
        tie_word_embeddings=tied,
        embed_scale=embed_scale,
        norm_weight_offset=1.0 if gemma else 0.0,
        sandwich_norms=gemma,
        qk_norm=gemma,
        qkv_bias=family == "qwen2" or bool(getattr(config, "attention_bias", False)),
        o_bias=bool(getattr(config, "attention_bias", False)) and family == "llama",
        mlp_bias=bool(getattr(config, "mlp_bias", False)),
        attention_scale=float(attn_scale),
        attn_logit_softcapping=getattr(config, "attn_logit_softcapping", None),
        final_logit_softcapping=getattr(config, "final_logit_softcapping", None),
        max_position_embeddings=int(getattr(config, "max_position_embeddings", 4096)),
        layers=layers,
        weight_prefix=weight_prefix,
        lm_head_name=None if tied else lm_head,
        bos_token_id=getattr(config, "bos_token_id", None),
        eos_token_ids=_token_ids(getattr(config, "eos_token_id", None)),
        pad_token_id=getattr(config, "pad_token_id", None),
        source_dtype=source_dtype,
    )
