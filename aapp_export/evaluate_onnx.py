"""The evaluation harness through an exported model dir: ``aapp-eval --engine onnx``.

The same prompts, refusal detector, greedy decoding and JSON as the PyTorch engine
(``evaluate.run_eval``), but every answer comes from ``aapp_runtime.Session``: the dense graph, or
the prefill and decode graphs of the requested sparsity level, where the decisions are ONNX ops.
Requests run one at a time (batch 1, no padding; the PyTorch engine left-pads batches of 16, so
an answer can differ where two tokens are nearly tied). Perplexity needs every position's logits:
it is computed when the model dir was exported with ``--all-logits`` and is ``null`` otherwise
(``perplexity_note`` says so). The FLOPs ratio uses the level's kept counts and the same accounting
as the PyTorch engine (``flops.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from .flops import Dims, flops_ratio
from .refusal import is_refusal

PROBE_RATIO = 0.5


@dataclass
class OnnxEvalResult:
    method: str
    sparsity: float
    refusal_rate: float
    over_refusal_rate: float
    perplexity: float | None
    flops_ratio: float
    n_harmful: int
    n_harmless: int
    provider: str
    refused: list[bool]  # per harmful prompt
    over_refused: list[bool]  # per harmless prompt
    perplexity_note: str | None = None

    def to_json(self, per_prompt: bool = False) -> dict[str, Any]:
        out = {"engine": "onnx", "method": self.method, "sparsity": self.sparsity,
               "refusal_rate": round(self.refusal_rate, 4), "over_refusal_rate": round(self.over_refusal_rate, 4),
               "perplexity": None if self.perplexity is None else round(self.perplexity, 3),
               "flops_ratio": round(self.flops_ratio, 4), "n_harmful": self.n_harmful, "n_harmless": self.n_harmless,
               "provider": self.provider}
        if self.perplexity_note:
            out["perplexity_note"] = self.perplexity_note
        if per_prompt:
            out["refused"], out["over_refused"] = self.refused, self.over_refused
        return out


def dims_of(manifest) -> Dims:
    """FLOPs dimensions from a model dir's manifest (no checkpoint needed)."""
    d = manifest.dims
    n = int(d["num_layers"])
    return Dims(int(d["hidden_size"]), int(d["head_dim"]), tuple(int(h) for h in d["num_heads"]),
                int(d["num_kv_heads"][0]), tuple(int(c) for c in d["intermediate_size"]), int(d["vocab_size"]),
                tuple(d.get("sliding_window") or [None] * n))


def answers(session, prompts: list[str], method: str, sparsity: float, max_new_tokens: int,
            desc: str) -> tuple[list[str], list[int]]:
    """Greedy answers to chat-formatted prompts, and the prompts' token counts."""
    texts, lengths = [], []
    for prompt in tqdm(prompts, desc=desc, unit="prompt", disable=None, leave=False):
        result = session.generate(prompt, max_new_tokens, sparsity=sparsity, method=method)
        texts.append(result.text)
        lengths.append(result.prompt_tokens)
    return texts, lengths


def perplexity(session, texts: list[str], method: str, sparsity: float) -> float:
    """Token-level perplexity; each text one request (its own prefill decides)."""
    nll, count = 0.0, 0
    for text in texts:
        ids = session.tokenize(text, chat=False)
        if len(ids) < 2:
            continue
        logits = session.logits(ids, sparsity=sparsity, method=method, every_position=True)[:-1].astype(np.float64)
        top = logits.max(-1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(logits - top).sum(-1))
        nll -= float((logits[np.arange(len(ids) - 1), ids[1:]] - log_z).sum())
        count += len(ids) - 1
    return math.exp(nll / max(1, count))


def run_eval_onnx(session, method: str, sparsity: float, harmful: list[str], harmless: list[str],
                  texts: list[str], max_new_tokens: int = 48) -> OnnxEvalResult:
    """One row of the table, through the exported graphs."""
    level = session.pruned_level(method, sparsity)  # a bad method or level fails before any generation
    harm, harm_len = answers(session, harmful, method, sparsity, max_new_tokens, f"{method} harmful")
    safe, safe_len = answers(session, harmless, method, sparsity, max_new_tokens, f"{method} harmless")
    refused, over = [is_refusal(a) for a in harm], [is_refusal(a) for a in safe]
    note = None
    if session.manifest.graph.get("last_logits_only", True):
        ppl, note = None, "the model dir holds the last position's logits only; export with --all-logits for perplexity"
    else:
        ppl = perplexity(session, texts, method, sparsity)
    dims = dims_of(session.manifest)
    prompt = sum(harm_len + safe_len) / max(1, len(harm_len + safe_len))
    ratio = 1.0
    if level is not None:
        entry = level[1]
        probe = max(2, math.ceil(PROBE_RATIO * prompt))
        ratio = flops_ratio(dims, round(prompt), max_new_tokens, list(entry["kept_heads"]),
                            list(entry["kept_channels"]), probe, int(session.pruning.get("skip_first", 3)))
    return OnnxEvalResult(method if level is not None else "dense", float(sparsity) if level is not None else 0.0,
                          sum(refused) / max(1, len(refused)), sum(over) / max(1, len(over)), ppl, ratio,
                          len(harmful), len(harmless), session.provider, refused, over, note)


__all__ = ["OnnxEvalResult", "run_eval_onnx", "dims_of"]
