"""Next-token choice from logits: repetition penalty, then greedy or temperature sampling restricted
by top-k, top-p and min-p, with a seeded generator (the parameters: ``generation.GenerationParams``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .generation import GenerationParams


class Sampler:
    def __init__(self, params: GenerationParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """Pick a token from a [vocab] logits vector; ``history``: the ids so far (prompt and generated),
        which a ``repetition_penalty`` != 1 makes less (> 1) or more (< 1) likely, as transformers does."""
        p = self.params
        logits = self.penalized(logits, history)
        if p.temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / p.temperature
        if p.top_k and p.top_k < z.size:
            kth = np.partition(z, -p.top_k)[-p.top_k]
            z = np.where(z < kth, -np.inf, z)
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        if p.min_p > 0:  # keep tokens at least min_p times as likely as the most likely one
            probs = np.where(probs >= p.min_p * probs.max(), probs, 0.0)
            probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs)
            cum = np.cumsum(probs[order])
            cut = int(np.searchsorted(cum, p.top_p)) + 1  # keep the smallest prefix reaching top_p
            keep = np.zeros_like(probs, dtype=bool)
            keep[order[:cut]] = True
            probs = np.where(keep, probs, 0.0)
            probs /= probs.sum()
        return int(self.rng.choice(probs.size, p=probs))

    def penalized(self, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
        """``logits`` with the repetition penalty applied to every id in ``history`` (once per id)."""
        penalty = self.params.repetition_penalty
        if penalty == 1.0 or not len(history):
            return logits
        seen = np.unique(np.asarray(history, dtype=np.int64))
        out = logits.astype(np.float32, copy=True)
        hit = out[seen]
        out[seen] = np.where(hit > 0, hit / penalty, hit * penalty)
        return out
