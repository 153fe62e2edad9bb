"""Sampling: greedy, seeded reproducibility, top-k, top-p and min-p restrict the choice, repetition penalty."""

from __future__ import annotations

import numpy as np

from aapp_runtime.generation import resolve_params
from aapp_runtime.sampling import Sampler


def SamplingParams(**kw):  # noqa: N802 - checked parameters, as a Session builds them
    return resolve_params({}, **kw)

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


def test_min_p_drops_tokens_below_a_fraction_of_the_best():
    s = Sampler(SamplingParams(temperature=1.0, min_p=0.5, seed=0))
    assert {s(LOGITS) for _ in range(300)} == {0, 1}  # 0.3 >= 0.5 * 0.5; 0.15 is not


def test_repetition_penalty_as_transformers():
    import torch
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits = np.array([2.0, -1.0, 0.5, 3.0], np.float32)
    history = [3, 1, 3]
    sampler = Sampler(SamplingParams(repetition_penalty=2.0))
    want = RepetitionPenaltyLogitsProcessor(2.0)(torch.tensor([history]), torch.tensor(logits)[None])[0].numpy()
    assert np.array_equal(sampler.penalized(logits, history), want)  # [2.0, -2.0, 0.5, 1.5]
    assert sampler(logits, history) == 0 and Sampler(SamplingParams())(logits, history) == 3
