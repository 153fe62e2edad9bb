"""Next-token choice from logits: greedy, temperature, top-k, top-p, with a seeded generator."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not _real(self.temperature) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise InputError(f"temperature={self.temperature!r} is not a finite number >= 0: use 0 for greedy or a "
                             "value > 0")
        if not _whole(self.top_k) or self.top_k < 0:
            raise InputError(f"top_k={self.top_k!r} is not a whole number >= 0: use 0 to disable it")
        if not _real(self.top_p) or not 0 < self.top_p <= 1:  # NaN fails the comparison too
            raise InputError(f"top_p={self.top_p!r} is outside (0, 1]: use 1 to disable it")
        if self.seed is not None and (not _whole(self.seed) or self.seed < 0):
            raise InputError(f"seed={self.seed!r} is not a whole number >= 0 (or None for a random seed)")


def _real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _whole(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


class Sampler:
    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        """Pick a token from a [vocab] logits vector."""
        p = self.params
        if p.temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / p.temperature
        if p.top_k and p.top_k < z.size:
            kth = np.partition(z, -p.top_k)[-p.top_k]
            z = np.where(z < kth, -np.inf, z)
        probs = np.exp(z - z.max())
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
