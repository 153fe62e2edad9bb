"""The engines the latency benchmark compares, behind one small protocol.

Every engine answers ``run(ids, new_tokens) -> GreedyRun`` (a timed greedy generation: the prefill's
ms, each decode step's ms, the tokens) and ``logits(ids)`` (the prefill's last-position logits):

- ``ours`` / ``ours-onnx``: our export (GroupQueryAttention / the standard Attention op) run by
  :class:`aapp_runtime.Session`;
- ``transformers``: ``attn_implementation="eager"``, fp32, a prefill + decode loop with a
  ``DynamicCache`` (``logits_to_keep=1`` at prefill);
- ``genai`` / ``genai-last``: onnxruntime-genai's own builder's model and its generator API (defaults:
  logits for every prompt position; ``genai-last``: ``prune_lm_head=true``, like ours);
- ``optimum``: *our* dense model dir under optimum's ``ORTModelForCausalLM`` (in its own environment).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ENGINES = ("ours", "ours-onnx", "transformers", "genai", "genai-last", "optimum")
DEFAULT_ENGINES = ENGINES
REFERENCE = "transformers"
GENAI_MIN_CAPACITY = 1024  # genai sizes its KV buffers by max_length; keep them past the sliding window
GENAI_BUILD_OPTIONS: dict[str, dict[str, str]] = {"genai": {}, "genai-last": {"prune_lm_head": "true"}}
OURS_ATTENTION = {"ours": "gqa", "ours-onnx": "onnx"}  # our engines: the attention kernel of each export
ENGINE_NOTES = {
    "ours": "aapp_export.export.export_model (fp32, last-position logits, GroupQueryAttention) + "
            "aapp_runtime.Session(provider='cpu')",
    "ours-onnx": "the same export with --attention onnx (the standard opset-23 Attention op)",
    "transformers": "AutoModelForCausalLM eager fp32, DynamicCache, logits_to_keep=1 at prefill",
    "genai": "onnxruntime-genai builder -p fp32 -e cpu (defaults: logits for every prompt position) + og.Generator",
    "genai-last": "onnxruntime-genai builder -p fp32 -e cpu, extra option prune_lm_head=true + og.Generator",
    "optimum": "the 'ours' model dir loaded by optimum-onnx ORTModelForCausalLM (CPUExecutionProvider), "
               "forward() with its past_key_values, in .venv-optimum",
}


@dataclass
class GreedyRun:
    """One timed greedy generation: ``new_tokens`` decode steps after the prefill (``tokens`` holds the
    prefill's token, then one per step)."""

    prefill_ms: float
    step_ms: list[float]
    tokens: list[int]


class Engine:
    """An engine under test: a timed greedy ``run`` and the prefill's last-position ``logits``."""

    def run(self, ids: list[int], new_tokens: int) -> GreedyRun:
        raise NotImplementedError

    def logits(self, ids: list[int]) -> np.ndarray:
        raise NotImplementedError


class OursEngine(Engine):
    def __init__(self, model_dir: Path, threads: int) -> None:
        from aapp_runtime import Session

        self.session = Session(model_dir, provider="cpu", threads=threads)

    def run(self, ids: list[int], new_tokens: int) -> GreedyRun:
        r = self.session.generate(ids, max_new_tokens=new_tokens + 1, ignore_eos=True)
        return GreedyRun(r.prefill_ms, list(r.decode_ms), list(r.tokens))

    def logits(self, ids: list[int]) -> np.ndarray:
        return np.asarray(self.session.logits(ids), np.float32)


class TorchLoopEngine(Engine):
    """A torch model's timed greedy loop from its ``prefill(ids)`` and ``step(out, token, position)``."""

    def prefill(self, ids: list[int]) -> Any:
        raise NotImplementedError

    def step(self, out: Any, token: int, position: int) -> Any:
        raise NotImplementedError

    def run(self, ids: list[int], new_tokens: int) -> GreedyRun:
        return self._loop(ids, new_tokens)[0]

    def logits(self, ids: list[int]) -> np.ndarray:
        return self._loop(ids, 0)[1]

    def _loop(self, ids: list[int], new_tokens: int) -> tuple[GreedyRun, np.ndarray]:
        import torch

        with torch.no_grad():
            t0 = time.perf_counter()
            out = self.prefill(ids)
            token = int(out.logits[0, -1].argmax())
            prefill_ms = (time.perf_counter() - t0) * 1000
            first_logits = out.logits[0, -1].float().numpy().copy()
            steps, tokens = [], [token]
            for pos in range(len(ids), len(ids) + new_tokens):
                t0 = time.perf_counter()
                out = self.step(out, token, pos)
                token = int(out.logits[0, -1].argmax())
                steps.append((time.perf_counter() - t0) * 1000)
                tokens.append(token)
        return GreedyRun(prefill_ms, steps, tokens), first_logits


class TransformersEngine(TorchLoopEngine):
    def __init__(self, checkpoint: Path, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32,
                                                          attn_implementation="eager").eval()

    def prefill(self, ids: list[int]) -> Any:
        import torch
        from transformers import DynamicCache

        return self.model(torch.tensor([ids]), past_key_values=DynamicCache(config=self.model.config), use_cache=True,
                          logits_to_keep=1)

    def step(self, out: Any, token: int, position: int) -> Any:
        import torch

        return self.model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True,
                          position_ids=torch.tensor([[position]]), cache_position=torch.tensor([position]))


class OptimumEngine(TorchLoopEngine):
    """Our model dir under optimum's ORTModelForCausalLM (runs in the optimum environment)."""

    def __init__(self, model_dir: Path, threads: int) -> None:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForCausalLM

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.model = ORTModelForCausalLM.from_pretrained(str(model_dir), file_name="model.onnx",
                                                         session_options=options, provider="CPUExecutionProvider")

    def prefill(self, ids: list[int]) -> Any:
        import torch

        x = torch.tensor([ids])
        return self.model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True)

    def step(self, out: Any, token: int, position: int) -> Any:
        import torch

        return self.model(input_ids=torch.tensor([[token]]), attention_mask=torch.ones(1, position + 1, dtype=torch.long),
                          past_key_values=out.past_key_values, use_cache=True)


class GenaiEngine(Engine):
    def __init__(self, model_dir: Path, threads: int) -> None:
        import onnxruntime_genai as og

        self.og = og
        config = og.Config(str(model_dir))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.model = og.Model(config)
        self.vocab = int(json.loads((model_dir / "genai_config.json").read_text())["model"]["vocab_size"])

    def _generator(self, ids: list[int], new_tokens: int) -> Any:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=max(len(ids) + new_tokens + 1, GENAI_MIN_CAPACITY))
        return self.og.Generator(self.model, params)  # allocates the KV buffers: outside the timed region

    def run(self, ids: list[int], new_tokens: int) -> GreedyRun:
        gen = self._generator(ids, new_tokens)
        t0 = time.perf_counter()
        gen.append_tokens(ids)  # runs the prefill
        gen.generate_next_token()  # picks the first token from the prefill's logits
        tokens = [int(gen.get_next_tokens()[0])]
        prefill_ms = (time.perf_counter() - t0) * 1000
        steps = []
        for _ in range(new_tokens):
            t0 = time.perf_counter()
            gen.generate_next_token()
            tokens.append(int(gen.get_next_tokens()[0]))
            steps.append((time.perf_counter() - t0) * 1000)
        return GreedyRun(prefill_ms, steps, tokens)

    def logits(self, ids: list[int]) -> np.ndarray:
        gen = self._generator(ids, 0)
        gen.append_tokens(ids)
        return np.asarray(gen.get_logits(), np.float32).reshape(-1)[-self.vocab:]


ENGINE_CLASSES: dict[str, Callable[[Path, int], Engine]] = {
    "ours": OursEngine, "ours-onnx": OursEngine, "transformers": TransformersEngine,
    "genai": GenaiEngine, "genai-last": GenaiEngine, "optimum": OptimumEngine}


def open_engine(engine: str, path: Path, threads: int) -> Engine:
    """The engine named ``engine`` on ``path`` (a model dir, or the checkpoint for transformers)."""
    return ENGINE_CLASSES[engine](path, threads)
