"""FLOPs accounting against a count done by hand for a tiny model."""

from __future__ import annotations

from aapp_export.flops import Dims, flops_ratio, probe_flops, request_flops

# 2 layers, hidden 4, head_dim 2, 2 query heads, 1 KV head, MLP width 6, vocab 10, layer 1 has window 2
DIMS = Dims(hidden=4, head_dim=2, heads=(2, 2), kv_heads=1, channels=(6, 6), vocab=10, windows=(None, 2))


def test_request_flops_by_hand():
    # per token per layer: q 2*4*2*2=32, k+v 4*4*1*2=32, o 2*2*2*4=32, mlp 6*4*6=144, attention 4*ctx*2*2=16*ctx
    per_layer = lambda ctx: 32 + 32 + 32 + 144 + 16 * ctx  # noqa: E731
    # prompt of 2 tokens then 1 new token: ctx 1, 2, 3; layer 1 attends at most 2 tokens
    expect = sum(per_layer(c) + per_layer(min(c, 2)) for c in (1, 2, 3))
    expect += 2 * (2 * 4 * 10)  # logits for the last prompt token and the decode step
    assert request_flops(DIMS, 2, 1) == expect


def test_pruning_and_probe_accounting():
    dense = request_flops(DIMS, 2, 1)
    half = request_flops(DIMS, 2, 1, heads=[2, 1], channels=[6, 3])
    # layer 1 with 1 head and 3 channels saves per token: q 16 + o 16 + mlp 72 + attention 8*min(ctx,2)
    saved = sum(16 + 16 + 72 + 8 * min(c, 2) for c in (1, 2, 3))
    assert dense - half == saved
    probe = probe_flops(DIMS, prompt=2, probe_tokens=1, pruned_layers=[1])
    by_hand = 2 * 4 * (2 + 2) * 2 * 1 + 4 * 2 * 2 * 1 + 4 * 4 * 6 * 1 + 2 * 2 * 4 + 3 * 4 * 2 * 2 + 3 * 4 * 6
    assert probe == by_hand
    assert flops_ratio(DIMS, 2, 1, [2, 1], [6, 3], probe_tokens=1, skip_first=1) == (half + probe) / dense
