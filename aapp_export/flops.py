"""Compute accounting: FLOPs of one request (prefill + decode) relative to dense, probe included.

Counts multiply-adds as 2 FLOPs for every matmul (q/k/v/o, gate/up/down, lm_head) and the
attention products (scores and weighted values over the attended context, sliding windows
respected). A pruned layer computes q and o for its kept heads only (K/V heads are never pruned, as
in PP for GQA) and gate/up/down for its kept channels. The probe of PP/AAPP costs, per pruned layer,
q/k/v and the MLP's gate/up on the probe tokens, the attention among them and the scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

from .choices import SKIP_FIRST


@dataclass(frozen=True)
class Dims:
    hidden: int
    head_dim: int
    heads: tuple[int, ...]  # query heads per layer (dense)
    kv_heads: int
    channels: tuple[int, ...]  # MLP width per layer (dense)
    vocab: int
    windows: tuple[int | None, ...]  # sliding window per layer (None = full)

    @classmethod
    def from_config(cls, config) -> "Dims":
        n = config.num_hidden_layers
        d = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        types = getattr(config, "layer_types", None) or ["full_attention"] * n
        window = getattr(config, "sliding_window", None)
        return cls(config.hidden_size, d, (config.num_attention_heads,) * n,
                   getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
                   (config.intermediate_size,) * n, config.vocab_size,
                   tuple(window if t == "sliding_attention" else None for t in types))


def _layer_token_flops(dims: Dims, i: int, heads: int, channels: int, ctx: int) -> int:
    h, d, g = dims.hidden, dims.head_dim, dims.kv_heads
    attended = min(ctx, dims.windows[i]) if dims.windows[i] else ctx
    return (2 * h * heads * d + 4 * h * g * d + 2 * heads * d * h  # q, k, v, o
            + 6 * h * channels  # gate, up, down
            + 4 * attended * d * heads)  # scores and values


def request_flops(dims: Dims, prompt: int, new_tokens: int, heads: list[int] | None = None,
                  channels: list[int] | None = None) -> int:
    """FLOPs of a request: ``prompt`` prefill tokens then ``new_tokens`` decode steps."""
    heads = list(heads or dims.heads)
    channels = list(channels or dims.channels)
    total = 0
    for pos in range(prompt + new_tokens):
        ctx = pos + 1
        total += 2 * dims.hidden * dims.vocab if pos >= prompt - 1 else 0  # logits: last prefill + decode
        for i in range(len(dims.heads)):
            total += _layer_token_flops(dims, i, heads[i], channels[i], ctx)
    return total


def probe_flops(dims: Dims, prompt: int, probe_tokens: int, pruned_layers: list[int]) -> int:
    """FLOPs of PP's probe on ``probe_tokens`` positions in each pruned layer."""
    h, d, g, n = dims.hidden, dims.head_dim, dims.kv_heads, probe_tokens
    total = 0
    for i in pruned_layers:
        nh, nc = dims.heads[i], dims.channels[i]
        total += 2 * h * (nh + 2 * g) * d * n  # q, k, v of the probe
        total += 4 * d * nh * n * (n + 1) // 2  # causal attention among probe tokens
        total += 4 * h * nc * n  # gate and up of the probe
        total += 2 * prompt * h  # residual norms for the token ranking
        total += 3 * h * nh * d + 3 * h * nc  # PPsp scores: S * W^2 and the norms
    return total


def flops_ratio(dims: Dims, prompt: int, new_tokens: int, heads: list[int], channels: list[int],
                probe_tokens: int = 0, skip_first: int = SKIP_FIRST) -> float:
    """(pruned request + probe) / dense request."""
    dense = request_flops(dims, prompt, new_tokens)
    pruned = request_flops(dims, prompt, new_tokens, heads, channels)
    if probe_tokens:
        pruned += probe_flops(dims, prompt, probe_tokens, list(range(skip_first, len(dims.heads))))
    return pruned / dense


def prefill_ratio(dims: Dims, prompt: int, new_tokens: int, heads: list[int], channels: list[int],
                  probe_tokens: int = 0, skip_first: int = SKIP_FIRST) -> float:
    """A pruned prefill of ``prompt`` tokens (+ probe) alone, relative to the dense request of ``prompt``
    + ``new_tokens``: what aapp-adaptive's flagged requests spend before they start again dense."""
    pruned = request_flops(dims, prompt, 0, heads, channels)
    if probe_tokens:
        pruned += probe_flops(dims, prompt, probe_tokens, list(range(skip_first, len(dims.heads))))
    return pruned / request_flops(dims, prompt, new_tokens)


def own_statistic_flops(dims: Dims, prompt: int, pruned_layers: list[int]) -> int:
    """FLOPs of picking units from a dense prefill's own activations in each pruned layer: the squares of
    the o_proj and down_proj inputs summed over ``prompt`` tokens, their fusion with the history and
    PPsp's scores (no probe pass: the prefill computed those inputs already)."""
    total = 0
    for i in pruned_layers:
        units = dims.heads[i] * dims.head_dim + dims.channels[i]
        total += 2 * prompt * units + 5 * prompt * units  # X^2 summed over tokens; fusion per position
        total += 3 * dims.hidden * units  # PPsp scores: S * W^2 and the norms
    return total


def dense_prefill_ratio(dims: Dims, prompt: int, new_tokens: int, heads: list[int], channels: list[int],
                        skip_first: int = SKIP_FIRST) -> float:
    """A dense prefill of ``prompt`` tokens that picks the decode's units from its own activations
    (``own_statistic_flops``), then ``new_tokens`` pruned decode steps, relative to the dense request:
    aapp-adaptive's "dense-prefill" path for a flagged request whose first token is not the refusal's."""
    pruned_layers = list(range(skip_first, len(dims.heads)))
    dense_prefill = request_flops(dims, prompt, 0) + own_statistic_flops(dims, prompt, pruned_layers)
    decode = request_flops(dims, prompt, new_tokens, heads, channels) - request_flops(dims, prompt, 0, heads, channels)
    return (dense_prefill + decode) / request_flops(dims, prompt, new_tokens)
