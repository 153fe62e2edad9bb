"""``Session``: load an exported model dir and generate text on ONNX Runtime.

Generation is a prefill of the whole prompt followed by one-token decode steps. The KV cache never
leaves the device (IOBinding of ``OrtValue``s; on CUDA it stays in GPU memory and only the
last-position logits are copied to the host), in one of two layouts:

- ``"buffer"`` (graphs exported with ``--attention gqa``, the default): one buffer per layer and
  kind of ``[1, kv, capacity, head_dim]`` bound as both ``past_key_values.*`` and ``present.*``;
  GroupQueryAttention writes the new keys and values in place and attends over the valid length
  only, so a step costs no copy of the cache. The capacity starts at the prompt + 512 tokens and
  doubles when full (one copy), never past prompt + ``max_new_tokens``;
- ``"concat"`` (any graph): ``present.*`` of one step, ``[1, kv, T, head_dim]``, are fed back as the
  next step's ``past_key_values.*``; the attention op copies the cache into a longer one each step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import onnxruntime as ort

from .chat import TextCodec
from .errors import InputError
from .manifest import Manifest
from .providers import open_session
from .sampling import Sampler, SamplingParams

NUMPY_DTYPES = {"fp32": np.float32, "fp16": np.float16}

Prompt = str | Sequence[dict[str, Any]] | Sequence[int]


@dataclass
class GenerationResult:
    """New tokens only; timings in milliseconds measured around the ORT runs."""

    text: str
    tokens: list[int]
    prompt_tokens: int
    provider: str
    finish_reason: str  # "eos" | "stop" | "length"
    prefill_ms: float
    decode_ms: list[float] = field(default_factory=list)

    @property
    def decode_ms_per_token(self) -> float:
        return float(np.median(self.decode_ms)) if self.decode_ms else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "tokens": self.tokens, "provider": self.provider,
                "prefill_ms": round(self.prefill_ms, 3), "decode_ms_per_token": round(self.decode_ms_per_token, 3),
                "prompt_tokens": self.prompt_tokens, "finish_reason": self.finish_reason}


class _Stream:
    """Internal state of one generation: KV OrtValues, positions, timings."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.prefill_ms = 0.0
        self.decode_ms: list[float] = []
        self.finish_reason = "length"
        self.text = ""


class _ConcatCache:
    """``present.*`` of one step become the ``past_key_values.*`` of the next (a new binding per step)."""

    def __init__(self, session: "Session") -> None:
        self.s = session
        self.past = [(self._empty(h), self._empty(h)) for h in session.kv_heads]
        self.logits_index = 2 * len(self.past)  # logits are bound after the present pairs

    def _empty(self, kv_heads: int) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.zeros((1, kv_heads, 0, self.s.head_dim), self.s._np_dtype),
                                                self.s.device, 0)

    def binding(self, start: int, n: int) -> ort.IOBinding:
        b = self.s.ort_session.io_binding()
        for (pk, pv), (vk, vv), (ok, ov) in zip(self.s._past_names, self.past, self.s._present_names):
            b.bind_ortvalue_input(pk, vk)
            b.bind_ortvalue_input(pv, vv)
            b.bind_output(ok, self.s.device)
            b.bind_output(ov, self.s.device)
        return b

    def update(self, outs: list[ort.OrtValue]) -> None:
        self.past = [(outs[2 * i], outs[2 * i + 1]) for i in range(len(self.past))]


class _BufferCache:
    """One ``[1, kv, capacity, head_dim]`` buffer per layer and kind, bound once as both the past input
    and the present output: GroupQueryAttention appends in place (its shared-buffer mode). The
    capacity starts at the prompt plus at most ``KV_BLOCK`` new tokens and doubles (one copy of the
    filled rows) when a step would pass it, up to ``limit``: a long ``max_new_tokens`` does not
    reserve the whole context up front."""

    KV_BLOCK = 512

    def __init__(self, session: "Session", prompt: int, limit: int) -> None:
        self.s = session
        self.limit = limit
        self.logits_index = 2 * len(session.kv_heads)
        self.buffers: list[ort.OrtValue] = []
        self.capacity = 0
        self._allocate(min(limit, prompt + self.KV_BLOCK), filled=0)

    def _allocate(self, capacity: int, filled: int) -> None:
        s, old = self.s, self.buffers
        self._binding = s.ort_session.io_binding()
        self.buffers = []
        names = [(p, o) for (pk, pv), (ok, ov) in zip(s._past_names, s._present_names) for p, o in ((pk, ok), (pv, ov))]
        heads = [h for h in s.kv_heads for _ in range(2)]
        for j, ((past, present), h) in enumerate(zip(names, heads)):
            shape = [1, h, capacity, s.head_dim]
            if filled:
                host = np.zeros(shape, s._np_dtype)
                host[:, :, :filled] = old[j].numpy()[:, :, :filled]
                buf = ort.OrtValue.ortvalue_from_numpy(host, s.device, 0)
            else:
                buf = ort.OrtValue.ortvalue_from_shape_and_type(shape, s._np_dtype, s.device, 0)
            self._binding.bind_ortvalue_input(past, buf)
            self._binding.bind_ortvalue_output(present, buf)
            self.buffers.append(buf)
        self.capacity = capacity

    def binding(self, start: int, n: int) -> ort.IOBinding:
        if start + n > self.capacity:
            self._allocate(min(self.limit, max(start + n, 2 * self.capacity)), filled=min(start, self.capacity))
        return self._binding

    def update(self, outs: list[ort.OrtValue]) -> None:
        pass  # written in place


class Session:
    """An exported model on one execution provider.

    ``provider``: "auto" (CUDA when usable, else CPU; ``provider_reason`` says why), "cuda" (error
    when CUDA is unusable) or "cpu". ``kv_cache``: "auto" (a preallocated in-place buffer when the
    graph's attention supports it, else concatenation), "buffer" or "concat" (module docstring).
    """

    def __init__(self, model_dir: str | Path, provider: str = "auto", *, threads: int | None = None,
                 verify: str = "fast", kv_cache: str = "auto") -> None:
        self.manifest = Manifest.load(model_dir, verify=verify)
        m = self.manifest
        g = m.graph
        gqa = g.get("attention") == "gqa"  # GroupQueryAttention: appends in place to a shared past/present buffer
        if kv_cache not in ("auto", "buffer", "concat"):
            raise InputError(f"kv_cache={kv_cache!r} is not one of auto, buffer, concat")
        if kv_cache == "buffer" and not gqa:
            raise InputError(f"kv_cache='buffer' needs a graph exported with --attention gqa; {m.directory} uses "
                             f"{g.get('attention', 'onnx')!r} attention: pass kv_cache='concat' or re-export")
        self.kv_cache = ("buffer" if gqa else "concat") if kv_cache == "auto" else kv_cache
        self.ort_session, choice = open_session(m.model_path, provider, threads)
        self.provider, self.provider_reason = choice.name, choice.reason
        if self.provider == "cuda" and m.dtype == "fp32" and gqa:
            self.provider_reason += ("; GroupQueryAttention has no fp32 CUDA kernel, so ONNX Runtime places those "
                                     "nodes on CPU: export with --dtype fp16 (or --attention onnx) for CUDA")
        self.device = "cuda" if self.provider == "cuda" else "cpu"
        tok = m.data.get("tokenizer", {})
        self.codec = TextCodec(m.directory, tok.get("file", "tokenizer.json"), tok.get("chat_template"),
                               tok.get("special_tokens", {}))
        self.num_layers = int(m.dims["num_layers"])
        self.kv_heads = list(m.dims["num_kv_heads"])
        self.head_dim = int(m.dims["head_dim"])
        self.context_length = int(m.dims["max_position_embeddings"])
        self.eos_ids = set(m.tokens.get("eos", []))
        self._np_dtype = NUMPY_DTYPES.get(m.dtype, np.float32)
        self._past_names = [(g["past_key"].format(i=i), g["past_value"].format(i=i)) for i in range(self.num_layers)]
        self._present_names = [(g["present_key"].format(i=i), g["present_value"].format(i=i))
                               for i in range(self.num_layers)]
        self._logits_name = g["logits"]

    # -- inputs ---------------------------------------------------------------------------------
    def tokenize(self, prompt: Prompt, chat: bool | None = None) -> list[int]:
        """Token ids of a prompt: a string (chat-formatted when the model has a template, unless
        ``chat=False``), a list of chat messages, or a list of token ids (used as is)."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise InputError("the prompt is empty: pass some text, chat messages or token ids")
            use_chat = self.codec.template is not None if chat is None else chat
            ids = (self.codec.encode_chat([{"role": "user", "content": prompt}]) if use_chat
                   else self.codec.encode(prompt))
        elif len(prompt) == 0:
            raise InputError("the prompt is empty: pass some text, chat messages or token ids")
        elif all(isinstance(t, (int, np.integer)) for t in prompt):
            ids = [int(t) for t in prompt]
            vocab = int(self.manifest.dims["vocab_size"])
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise InputError(f"token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        elif all(isinstance(m, dict) for m in prompt):
            ids = self.codec.encode_chat(list(prompt))
        else:
            raise InputError("prompt must be a string, a list of {'role','content'} messages, or a list of token ids")
        if len(ids) >= self.context_length:
            raise InputError(f"the prompt has {len(ids)} tokens but the model's context is {self.context_length}: "
                             "shorten the prompt")
        return ids

    # -- one graph run ------------------------------------------------------------------------------
    def _new_cache(self, prompt: int, max_new_tokens: int) -> "_ConcatCache | _BufferCache":
        if self.kv_cache == "buffer":
            return _BufferCache(self, prompt, prompt + max_new_tokens)
        return _ConcatCache(self)

    def _run(self, ids: list[int], start: int, cache: "_ConcatCache | _BufferCache") -> np.ndarray:
        """Run ``ids`` at positions ``start..`` through ``cache``; returns last-position logits [V]."""
        n = len(ids)
        b = cache.binding(start, n)
        b.bind_cpu_input("input_ids", np.asarray([ids], dtype=np.int64))
        b.bind_cpu_input("attention_mask", np.ones((1, start + n), dtype=np.int64))
        b.bind_cpu_input("position_ids", np.arange(start, start + n, dtype=np.int64)[None, :])
        b.bind_output(self._logits_name, self.device)
        self.ort_session.run_with_iobinding(b)
        outs = b.get_outputs()
        cache.update(outs)
        return outs[cache.logits_index].numpy()[0, -1].astype(np.float32, copy=False)

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Last-position logits [vocab] of a prefill over ``token_ids`` (for checks)."""
        ids = self.tokenize(list(token_ids))
        return self._run(ids, 0, self._new_cache(len(ids), 0))

    # -- generation ------------------------------------------------------------------------------
    def _generate(self, ids: list[int], state: _Stream, max_new_tokens: int, sampler: Sampler,
                  stop: Sequence[str], ignore_eos: bool = False) -> Iterator[str]:
        if max_new_tokens < 0:
            raise InputError(f"max_new_tokens={max_new_tokens} is negative")
        max_new_tokens = min(max_new_tokens, self.context_length - len(ids))
        cache = self._new_cache(len(ids), max_new_tokens)
        emitted = ""
        pos, step_ids = 0, ids
        for step in range(max_new_tokens):
            t0 = time.perf_counter()
            logits = self._run(step_ids, pos, cache)
            token = sampler(logits)
            elapsed = (time.perf_counter() - t0) * 1000
            if step == 0:
                state.prefill_ms = elapsed
            else:
                state.decode_ms.append(elapsed)
            pos += len(step_ids)
            step_ids = [token]
            if token in self.eos_ids and not ignore_eos:
                state.finish_reason = "eos"
                break
            state.tokens.append(token)
            text = self.codec.decode(state.tokens)
            hit = min((text.find(s) for s in stop if s and s in text), default=-1)
            if hit >= 0:
                state.text, state.finish_reason = text[:hit], "stop"
                if len(state.text) > len(emitted):
                    yield state.text[len(emitted):]
                return
            state.text = text
            if not text.endswith("\ufffd") and len(text) > len(emitted):  # hold back half a UTF-8 char
                yield text[len(emitted):]
                emitted = text

    def stream(self, prompt: Prompt, max_new_tokens: int = 64, *, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, stop: Sequence[str] = (), seed: int | None = None,
               chat: bool | None = None, ignore_eos: bool = False) -> Iterator[str]:
        """Yield the new text piece by piece as it is generated."""
        sampler = Sampler(SamplingParams(temperature, top_k, top_p, seed))
        yield from self._generate(self.tokenize(prompt, chat), _Stream(), max_new_tokens, sampler, stop, ignore_eos)

    def generate(self, prompt: Prompt, max_new_tokens: int = 64, *, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, stop: Sequence[str] = (), seed: int | None = None,
                 chat: bool | None = None, ignore_eos: bool = False) -> GenerationResult:
        """Generate up to ``max_new_tokens`` new tokens (``temperature=0``: greedy; ``ignore_eos``
        keeps going past end-of-sequence tokens, for benchmarks and parity checks)."""
        sampler = Sampler(SamplingParams(temperature, top_k, top_p, seed))
        ids = self.tokenize(prompt, chat)
        state = _Stream()
        for _ in self._generate(ids, state, max_new_tokens, sampler, stop, ignore_eos):
            pass
        return GenerationResult(state.text, state.tokens, len(ids), self.provider, state.finish_reason,
                                state.prefill_ms, state.decode_ms)
