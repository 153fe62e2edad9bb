"""One generation as its caller sees it: the parameters (the model's ``generation_config.json``
supplies what the caller leaves out), the chunks a stream yields, the final result, and the handle
that cancels it or bounds it by a deadline.

``Session.start(...)`` returns a ``Generation``: iterate it for ``Chunk``s, call ``result()`` for
the whole ``GenerationResult``, call ``cancel()`` from any thread. ``Session.stream`` and
``Session.generate`` are the two usual ways of consuming one, so the joined stream and the result
are the same text by construction.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .errors import InputError

FINISH_REASONS = ("stop", "eos", "length", "cancelled", "timeout")
DEFAULT_MAX_NEW_TOKENS = 64  # when neither the caller nor generation_config.json says


@dataclass(frozen=True)
class GenerationParams:
    """Everything that shapes one generation besides the prompt (``resolve_params`` builds it)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    timeout_s: float | None = None


def _real(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _whole(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def stop_strings(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """``stop`` as a tuple: one string is one stop string (as OpenAI and llama-cpp-python read it)."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    if isinstance(stop, (list, tuple)) and all(isinstance(x, str) for x in stop):
        return tuple(s for s in stop if s)
    raise InputError(f"stop={stop!r} is not a string or a list of strings")


def model_defaults(generation_config: dict[str, Any]) -> dict[str, Any]:
    """The defaults a model's ``generation_config.json`` gives, in ``GenerationParams`` names.

    As in transformers: ``do_sample`` false (or absent) means greedy whatever temperature the file
    lists; when it is true, the file's temperature / top_k / top_p / min_p apply (temperature 1 and
    top_k 50 where it lists none, transformers' own defaults)."""
    g = generation_config or {}
    out: dict[str, Any] = {}
    if _whole(g.get("max_new_tokens")) and g["max_new_tokens"] > 0:
        out["max_new_tokens"] = int(g["max_new_tokens"])
    if _real(g.get("repetition_penalty")) and g["repetition_penalty"] > 0:
        out["repetition_penalty"] = float(g["repetition_penalty"])
    if g.get("do_sample") is True:
        out["temperature"] = float(g["temperature"]) if _real(g.get("temperature")) else 1.0
        out["top_k"] = int(g["top_k"]) if _whole(g.get("top_k")) else 50
        for name in ("top_p", "min_p"):
            if _real(g.get(name)):
                out[name] = float(g[name])
    return out


def resolve_params(defaults: dict[str, Any], **given: Any) -> GenerationParams:
    """``GenerationParams`` from the caller's arguments; an argument left ``None`` takes the model's
    default (``model_defaults``), then the dataclass's. Every value is checked here, once."""
    values = {k: v for k, v in defaults.items()}
    values.update({k: v for k, v in given.items() if v is not None})
    p = GenerationParams(**{**values, "stop": stop_strings(values.get("stop"))})
    n = p.max_new_tokens
    if not _whole(n) or n < 0:
        raise InputError(f"max_new_tokens={n!r} is not a whole number >= 0")
    if not _real(p.temperature) or not math.isfinite(p.temperature) or p.temperature < 0:
        raise InputError(f"temperature={p.temperature!r} is not a finite number >= 0: use 0 for greedy or a value > 0")
    if not _whole(p.top_k) or p.top_k < 0:
        raise InputError(f"top_k={p.top_k!r} is not a whole number >= 0: use 0 to disable it")
    if not _real(p.top_p) or not 0 < p.top_p <= 1:  # NaN fails the comparison too
        raise InputError(f"top_p={p.top_p!r} is outside (0, 1]: use 1 to disable it")
    if not _real(p.min_p) or not 0 <= p.min_p < 1:
        raise InputError(f"min_p={p.min_p!r} is outside [0, 1): use 0 to disable it")
    if not _real(p.repetition_penalty) or not (0 < p.repetition_penalty < math.inf):
        raise InputError(f"repetition_penalty={p.repetition_penalty!r} is not a finite number > 0: use 1 to disable it")
    if p.seed is not None and (not _whole(p.seed) or p.seed < 0):
        raise InputError(f"seed={p.seed!r} is not a whole number >= 0 (or None for a random seed)")
    if not isinstance(p.ignore_eos, bool):
        raise InputError(f"ignore_eos={p.ignore_eos!r} is not True or False")
    if p.timeout_s is not None and (not _real(p.timeout_s) or not p.timeout_s > 0):
        raise InputError(f"timeout_s={p.timeout_s!r} is not a number of seconds > 0 (or None for no deadline)")
    return GenerationParams(**{**p.__dict__, "max_new_tokens": int(n)})


@dataclass
class Chunk:
    """A piece of a stream: the text released since the previous chunk and the token ids generated
    since then (a stop string's possible start is held back until it is decided, so a chunk's text
    can trail its tokens). The last chunk of a stream has ``finish_reason``, ``usage`` and ``timings``."""

    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    timings: dict[str, float] | None = None


@dataclass
class GenerationResult:
    """New tokens only; timings in milliseconds measured around the ORT runs."""

    text: str
    tokens: list[int]
    prompt_tokens: int
    provider: str
    finish_reason: str  # one of FINISH_REASONS
    prefill_ms: float
    decode_ms: list[float] = field(default_factory=list)
    method: str = "dense"
    sparsity: float = 0.0
    kept_fraction: float = 1.0  # bytes of weights a decode step reads / dense
    risk_gate: float | None = None  # AAPP's gate read at prefill (pruned runs)
    max_new_tokens_clipped: int | None = None  # max_new_tokens lowered to this to fit the context
    cached_tokens: int = 0  # prompt tokens whose KV came from a conversation's cache (not prefilled again)
    confirm_gate: float | None = None  # aapp-adaptive: the level's confirmation gate (when it has one)
    dense_prefill: bool | None = None  # aapp-adaptive's dense-prefill path: its risk gate ran the prompt dense

    @property
    def decode_ms_per_token(self) -> float:
        return float(np.median(self.decode_ms)) if self.decode_ms else 0.0

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": len(self.tokens),
                "total_tokens": self.prompt_tokens + len(self.tokens), "cached_tokens": self.cached_tokens}

    @property
    def timings(self) -> dict[str, float]:
        return {"prefill_ms": round(self.prefill_ms, 3), "decode_ms_per_token": round(self.decode_ms_per_token, 3),
                "total_ms": round(self.prefill_ms + float(sum(self.decode_ms)), 3)}

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "tokens": self.tokens, "provider": self.provider,
                "prefill_ms": round(self.prefill_ms, 3), "decode_ms_per_token": round(self.decode_ms_per_token, 3),
                "prompt_tokens": self.prompt_tokens, "finish_reason": self.finish_reason, "method": self.method,
                "sparsity": self.sparsity, "kept_fraction": self.kept_fraction,
                "risk_gate": None if self.risk_gate is None else round(self.risk_gate, 4),
                "confirm_gate": None if self.confirm_gate is None else round(self.confirm_gate, 4),
                **({} if self.dense_prefill is None else {"dense_prefill": self.dense_prefill}),
                "max_new_tokens_clipped": self.max_new_tokens_clipped, "usage": self.usage}


def stop_prefix(text: str, stop: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins a stop string (held back by a stream, so that
    the joined stream equals the result's text when the stop string completes)."""
    longest = max((len(s) for s in stop), default=0)
    for k in range(min(len(text), longest - 1), 0, -1):
        if any(s.startswith(text[-k:]) for s in stop if len(s) > k):
            return k
    return 0


class Generation:
    """One generation, run lazily as it is consumed (by one consumer).

    Iterate it for ``Chunk``s or call ``result()``; ``cancel()`` is safe from any thread and takes
    effect before the next decode step or prefill chunk, as does the deadline (``timeout_s``, counted
    from the first step). A cancelled or timed-out generation ends with what it has, finish reason
    ``"cancelled"`` / ``"timeout"``."""

    def __init__(self, run: Callable[["Generation"], Iterator[Chunk]], timeout_s: float | None,
                 finish: Callable[[], GenerationResult]) -> None:
        self._run, self._finish = run, finish
        self._timeout_s = timeout_s
        self._deadline: float | None = None
        self._cancelled = threading.Event()
        self._iterator: Iterator[Chunk] | None = None
        self._result: GenerationResult | None = None

    def cancel(self) -> None:
        """Stop before the next step (from any thread)."""
        self._cancelled.set()

    def stop_reason(self) -> str | None:
        """``"cancelled"`` or ``"timeout"`` once the generation must stop, else None (the session asks
        between steps)."""
        if self._cancelled.is_set():
            return "cancelled"
        if self._deadline is None and self._timeout_s is not None:
            self._deadline = time.monotonic() + self._timeout_s
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return "timeout"
        return None

    def __iter__(self) -> Iterator[Chunk]:
        if self._iterator is None:
            self._iterator = self._run(self)
        return self._iterator

    def result(self) -> GenerationResult:
        """Run to the end (what is left of it) and return the whole generation."""
        if self._result is None:
            for _ in self:
                pass
            self._result = self._finish()
        return self._result


__all__ = ["FINISH_REASONS", "GenerationParams", "Chunk", "GenerationResult", "Generation", "resolve_params",
           "model_defaults", "stop_strings", "stop_prefix"]
