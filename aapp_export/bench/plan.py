"""What a benchmark run measures (``BenchPlan``), the report's metric keys (one helper for them),
and the summary statistics every report gives (median, quartiles, min, max)."""

from __future__ import annotations

import os
import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DECODE_KEY = "decode_ms_per_token"


def prefill_key(length: int) -> str:
    """The report's key of the prefill time at a prompt length."""
    return f"prefill_ms@{length}"


def timed_keys(prompt_lengths: tuple[int, ...] | list[int]) -> list[str]:
    """Every timed metric of a report: the prefill at each prompt length, then decode ms/token."""
    return [prefill_key(n) for n in prompt_lengths] + [DECODE_KEY]


def parse_count(text: str) -> float:
    """``"120M"``, ``"0.3B"``, ``"1.5e8"`` -> a number."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMbBgG]?)\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a count such as 120M, 0.3B or 1.5e8")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}[m.group(2).lower()]
    return float(m.group(1)) * scale


@dataclass(frozen=True)
class BenchPlan:
    prompt_lengths: tuple[int, ...] = (128, 512)
    decode_prompt: int = 128
    new_tokens: int = 64
    repeats: int = 5  # measured runs per engine per round
    rounds: int = 1  # fresh worker processes per engine, engine order rotated each round
    warmup: int = 1
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 0

    def prompt(self, length: int, vocab: int) -> list[int]:
        """The benchmark prompt: ``length`` random token ids above the special tokens."""
        rng = np.random.default_rng(self.seed + length)
        return [int(t) for t in rng.integers(5, vocab, size=length)]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "BenchPlan":
        return cls(**{**data, "prompt_lengths": tuple(data["prompt_lengths"])})


def summary(values: list[float]) -> dict[str, float]:
    """Median, quartiles, min, max and count of ``values`` (ms)."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
    return {"median": round(statistics.median(values), 3), "q1": round(q1, 3), "q3": round(q3, 3),
            "min": round(min(values), 3), "max": round(max(values), 3), "n": len(values)}
