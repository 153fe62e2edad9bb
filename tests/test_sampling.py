"""Sampling: greedy, seeded reproducibility, top-k and top-p restrict the choice."""

from __future__ import annotations

import numpy as np

from aapp_runtime.sampling import Sampler, SamplingParams

LOGITS = np.log(np.array([0.5, 0.3, 0.15, 0.05]))


def test_greedy_is_argmax():
    assert Sampler(SamplingParams())(LOGITS) == 0


def test_seed_reproduces_and_top_k_restricts():
    draws = [Sampler(SamplingParams(temperature=1.0, seed=7))(LOGITS) for _ in range(3)]
    assert len(set(draws)) == 1
    s = Sampler(SamplingParams(temperature=1.0, top_k=2, seed=0))
    assert {s(LOGITS) for _ in range(300)} == {0, 1}


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.75, seed=0))
    assert {s(LOGITS) for _ in range(300)} == {0, 1}  # 0.5 + 0.3 >= 0.75
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.5, seed=0))
    assert {s(LOGITS) for _ in range(50)} == {0}


def test_temperature_sampling_follows_the_distribution():
    s = Sampler(SamplingParams(temperature=1.0, seed=1))
    counts = np.bincount([s(LOGITS) for _ in range(4000)], minlength=4) / 4000
    assert np.abs(counts - np.exp(LOGITS)).max() < 0.03
