"""Random checkpoints of each family, written with transformers ``save_pretrained``, for tests and
latency benchmarks (no weights can be downloaded, and timing does not need trained ones).

Weights are random but scaled so logits span several units (so a 1e-4 match is a real check),
norm weights are perturbed away from their init, and a small byte-level BPE tokenizer with a
Gemma-style chat template is saved beside them. ``CONFIGS`` are tiny (tests);
``make_bench_checkpoint`` is ``aapp-bench``'s Gemma-3-shaped one (~120M parameters by default,
Gemma-3-270M's width; its own initialiser keeps greedy decoding informative at that depth).
``make_shape_checkpoint`` writes a checkpoint of a real model's layout and size (``gemma3_shape``:
Gemma 3 1B, 4B, 12B) whose weights are zeros stored sparsely (no memory, next to no disk: enough for
``aapp-export --plan`` at 12B), or random (``seed``: for measuring an export's time and memory).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIALS = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{% if role not in ['user', 'model', 'system'] %}{{ raise_exception('unknown role ' + role) }}{% endif %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I bake bread? Mix flour, water, salt and yeast, then knead and bake.",
    "Explain photosynthesis: plants turn light, water and carbon dioxide into sugar.",
    "I'm sorry, but I can't help with that request.",
    "List three colours: red, green and blue. Count to ten: one two three four five.",
] * 20


def save_tokenizer(directory: Path, vocab_size: int = 384) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 2)])
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "chat_template": CHAT_TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 4096,
    }))
    return tok


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (0.0 if "gemma" in type(model).__name__.lower() else 1.0))
            elif p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.08)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def gemma3_config(**overrides):
    from transformers import Gemma3TextConfig

    kw = dict(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, sliding_window=16, max_position_embeddings=1024,
              query_pre_attn_scalar=16, bos_token_id=2, eos_token_id=1, pad_token_id=0,
              layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
              rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                               "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000000.0}})
    kw.update(overrides)
    return Gemma3TextConfig(**kw)


def llama_config(**overrides):
    from transformers import LlamaConfig

    kw = dict(vocab_size=384, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=4, max_position_embeddings=1024, bos_token_id=2, eos_token_id=1, pad_token_id=0,
              tie_word_embeddings=False)
    kw.update(overrides)
    return LlamaConfig(**kw)


def qwen2_config(**overrides):
    from transformers import Qwen2Config

    kw = dict(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=2, eos_token_id=1, pad_token_id=0,
              tie_word_embeddings=True, rope_theta=1000000.0)
    kw.update(overrides)
    return Qwen2Config(**kw)


CONFIGS = {"gemma3": gemma3_config, "llama": llama_config, "qwen2": qwen2_config}
FAMILIES = ("gemma3", "llama", "qwen2")  # the tiny configs, one a family (what the tests run over)


# -- the benchmark checkpoints (aapp-bench) ---------------------------------------------------------------------
BENCH_SHAPES: dict[str, dict[str, Any]] = {
    # Gemma-3-270M: 18 layers, hidden 640, 4 query heads / 1 KV head, head_dim 256, window 512
    "270m": dict(hidden_size=640, intermediate_size=2048, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                 query_pre_attn_scalar=256, sliding_window=512),
    # Gemma-3-1B: 26 layers, hidden 1152, 4 query heads / 1 KV head, head_dim 256, window 512
    "1b": dict(hidden_size=1152, intermediate_size=6912, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
               query_pre_attn_scalar=256, sliding_window=512),
}
BENCH_VOCAB = 32768
DEFAULT_PARAMS = 120e6


def layer_params(shape: dict[str, Any]) -> int:
    """Parameters of one Gemma 3 decoder layer of ``shape`` (projections and the six norms)."""
    h, f, d = shape["hidden_size"], shape["intermediate_size"], shape["head_dim"]
    q, kv = shape["num_attention_heads"] * d, shape["num_key_value_heads"] * d
    return h * q * 2 + h * kv * 2 + 3 * h * f + 4 * h + 2 * d


def gemma3_params(shape: dict[str, Any], layers: int, vocab: int = BENCH_VOCAB) -> int:
    """Parameters of a Gemma 3 text model (tied embeddings, final norm)."""
    return vocab * shape["hidden_size"] + layers * layer_params(shape) + shape["hidden_size"]


def bench_config_kwargs(params_target: float = DEFAULT_PARAMS, vocab_size: int = BENCH_VOCAB) -> dict[str, Any]:
    """Gemma3TextConfig arguments of a Gemma-3-shaped model of about ``params_target`` parameters:
    Gemma-3-270M's width up to 200M parameters, Gemma-3-1B's above; the depth fills the target;
    every sixth layer is global (5 local : 1 global, at least one global), the rest slide."""
    name = "270m" if params_target <= 200e6 else "1b"
    shape = BENCH_SHAPES[name]
    embed = vocab_size * shape["hidden_size"]
    layers = max(2, round((params_target - embed) / layer_params(shape)))
    types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)]
    if "full_attention" not in types:
        types[-1] = "full_attention"
    return dict(shape, vocab_size=vocab_size, num_hidden_layers=layers, layer_types=types, max_position_embeddings=32768,
                rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                 "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
                bos_token_id=2, eos_token_id=1, pad_token_id=0, tie_word_embeddings=True)


def _bench_init(model: Any, seed: int) -> None:
    """Random weights that make greedy decoding informative.

    Projections and embeddings ~ N(0, 0.02) as in transformers' init; norm weights ~ N(0, 0.1);
    the post-attention/post-feedforward norms get +3 (a gain of about 4), so each block's output
    outweighs the token's own embedding in the residual. With the plain init the tied LM head
    mostly predicts the current token again and greedy decoding repeats one token forever, which
    would make the engines' token agreement a weak check.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                offset = 3.0 if ("post_attention_layernorm" in name or "post_feedforward_layernorm" in name) else 0.0
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + offset)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def make_bench_checkpoint(directory: str | Path, params_target: float = DEFAULT_PARAMS, seed: int = 0,
                          **overrides: Any) -> Path:
    """Write a random Gemma-3-shaped fp32 checkpoint (``save_pretrained``) plus a small tokenizer to
    ``directory``; ``overrides`` replace Gemma3TextConfig arguments (tests make tiny ones)."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    directory = Path(directory)
    kwargs = {**bench_config_kwargs(params_target, overrides.get("vocab_size", BENCH_VOCAB)), **overrides}
    if "num_hidden_layers" in overrides and "layer_types" not in overrides:
        n = overrides["num_hidden_layers"]
        kwargs["layer_types"] = ["full_attention" if (i + 1) % 6 == 0 or i == n - 1 and n < 6 else "sliding_attention"
                                 for i in range(n)]
    config = Gemma3TextConfig(**kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(torch.float32).eval()
    _bench_init(model, seed)
    model.save_pretrained(str(directory))
    save_tokenizer(directory)
    return directory



def make_checkpoint(directory: Path, family: str, seed: int = 0, dtype: torch.dtype = torch.float32,
                    max_shard_size: str | None = None, **overrides) -> Path:
    """Save a tiny random ``family`` checkpoint (+ tokenizer) to ``directory``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = CONFIGS[family](**overrides)
    model = AutoModelForCausalLM.from_config(config)
    _randomise(model, seed)
    model = model.to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(str(directory), **kwargs)
    save_tokenizer(directory)
    return directory


def make_multimodal_gemma3(directory: Path, seed: int = 0):
    """Save a tiny random multimodal Gemma 3 (``Gemma3ForConditionalGeneration``: SigLIP vision tower
    + the text tower of :func:`gemma3_config`) with a tokenizer; returns the loaded model."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    config = Gemma3Config(text_config=gemma3_config().to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                          image_token_index=383, boi_token_index=381, eoi_token_index=382)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "language_model" in name and p.ndim == 2:
                p.normal_(0, 0.08)
    model.save_pretrained(str(directory))
    save_tokenizer(directory)
    return model


# the published Gemma 3 instruction-tuned shapes (text tower; 4B and 12B are multimodal with SigLIP)
GEMMA3_SHAPES = {
    "gemma3-1b": dict(hidden_size=1152, intermediate_size=6912, num_hidden_layers=26, num_attention_heads=4,
                      num_key_value_heads=1, vocab_size=262144, sliding_window=512, max_position_embeddings=32768),
    "gemma3-4b": dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
                      num_key_value_heads=4, vocab_size=262208, sliding_window=1024, max_position_embeddings=131072),
    "gemma3-12b": dict(hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16,
                       num_key_value_heads=8, vocab_size=262208, sliding_window=1024, max_position_embeddings=131072),
}


def gemma3_shape(name: str):
    """The transformers config of a Gemma 3 shape (``GEMMA3_SHAPES``): ``Gemma3TextConfig`` for 1B, a
    multimodal ``Gemma3Config`` (SigLIP 400M vision tower) for 4B and 12B; bf16, as published."""
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(head_dim=256, query_pre_attn_scalar=256, **GEMMA3_SHAPES[name])
    text.dtype = "bfloat16"
    if name == "gemma3-1b":
        return text
    vision = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                                image_size=896, patch_size=14, vision_use_head=False)
    config = Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=256)
    config.dtype = "bfloat16"
    return config


def make_shape_checkpoint(directory: Path, config, dtype: torch.dtype = torch.bfloat16,
                          shard_bytes: int = 5 * 10**9, seed: int | None = None) -> Path:
    """Save ``config``'s model as transformers lays it out (its class, tensor names and shapes, shards
    of at most ``shard_bytes`` in ``dtype`` with their index, as the hub's big checkpoints are), plus a
    tokenizer. Weights: zeros written as sparse files, or (``seed``) random at the config's init."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    auto = AutoModelForImageTextToText if getattr(config, "vision_config", None) is not None else AutoModelForCausalLM
    tied = getattr(config.get_text_config(), "tie_word_embeddings", False) or getattr(config, "tie_word_embeddings", False)
    # the hub stores a tied LM head once, as the embedding (transformers 5 writes both names)
    stored = lambda state: {k: v for k, v in state.items() if not (tied and k == "lm_head.weight")}  # noqa: E731
    if seed is not None:
        torch.manual_seed(seed)
        model = auto.from_config(config, dtype=dtype)
        model.save_pretrained(str(directory), state_dict=stored(model.state_dict()), max_shard_size=shard_bytes)
        save_tokenizer(directory)
        return directory
    with torch.device("meta"):
        model = auto.from_config(config, dtype=dtype)
    size = torch.tensor([], dtype=dtype).element_size()
    name_of = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}[dtype]
    shards: list[dict] = [{}]
    used = 0
    for name, tensor in stored(model.state_dict()).items():
        n = tensor.numel() * size
        if used and used + n > shard_bytes:
            shards.append({})
            used = 0
        shards[-1][name] = {"dtype": name_of, "shape": list(tensor.shape), "data_offsets": [used, used + n]}
        used += n
    files = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for file, header in zip(files, shards):
        end = max(e["data_offsets"][1] for e in header.values())
        weight_map.update({name: file for name in header})
        raw = json.dumps({**header, "__metadata__": {"format": "pt"}}, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(directory / file, "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            f.truncate(8 + len(raw) + end)  # the zeros: a hole in the file
    if len(files) > 1:
        total = sum(t.numel() * size for t in stored(model.state_dict()).values())
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    config.architectures = [type(model).__name__]
    config.save_pretrained(str(directory))
    save_tokenizer(directory)
    return directory
