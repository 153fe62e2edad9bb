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

from .flops import Dims, dense_prefill_ratio, flops_ratio, prefill_ratio
from .refusal import first_clause, is_refusal, strict_refusal_rate

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
    strict_refusal_rate: float | None = None  # refusal.is_strict_refusal, clauses scored by the dense graph
    strict_over_refusal_rate: float | None = None
    flops_ratio_harmful: float | None = None  # FLOPs per request of each file relative to dense
    flops_ratio_harmless: float | None = None
    low_share_harmful: float | None = None  # aapp-adaptive: share of each file's requests the gate ran dense
    low_share_harmless: float | None = None
    adaptive_path: str | None = None  # aapp-adaptive: the path a flagged request took
    adaptive_threshold: float | None = None  # aapp-adaptive: the risk gate from which a request ran dense ...
    adaptive_threshold_pinned: bool | None = None  # ... named by the call (False: the calibration's)

    def to_json(self, per_prompt: bool = False) -> dict[str, Any]:
        out = {"engine": "onnx", "method": self.method, "sparsity": self.sparsity,
               "refusal_rate": round(self.refusal_rate, 4), "over_refusal_rate": round(self.over_refusal_rate, 4),
               "strict_refusal_rate": round(self.strict_refusal_rate, 4),
               "strict_over_refusal_rate": round(self.strict_over_refusal_rate, 4),
               "perplexity": None if self.perplexity is None else round(self.perplexity, 3),
               "flops_ratio": round(self.flops_ratio, 4), "n_harmful": self.n_harmful, "n_harmless": self.n_harmless,
               "flops_ratio_harmful": round(self.flops_ratio_harmful, 4),
               "flops_ratio_harmless": round(self.flops_ratio_harmless, 4), "provider": self.provider}
        if self.low_share_harmful is not None:
            out["low_share_harmful"] = round(self.low_share_harmful, 4)
            out["low_share_harmless"] = round(self.low_share_harmless, 4)
        if self.adaptive_path is not None:
            out |= {"adaptive_path": self.adaptive_path, "adaptive_threshold": self.adaptive_threshold,
                    "adaptive_threshold_pinned": self.adaptive_threshold_pinned}
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
            desc: str, **options: Any) -> tuple[list[str], list[int], list[bool], list[bool]]:
    """Greedy answers to chat-formatted prompts, the prompts' token counts, which ran dense although
    pruned was asked (aapp-adaptive's gate) and which prefilled dense (its dense-prefill path)."""
    texts, lengths, dense, prefilled = [], [], [], []
    for prompt in tqdm(prompts, desc=desc, unit="prompt", disable=None, leave=False):
        result = session.generate(prompt, max_new_tokens, sparsity=sparsity, method=method, **options)
        texts.append(result.text)
        lengths.append(result.prompt_tokens)
        dense.append(method != "dense" and sparsity > 0 and result.sparsity == 0)
        prefilled.append(bool(result.dense_prefill))
    return texts, lengths, dense, prefilled


def _target_log_probs(logits: np.ndarray, targets: list[int]) -> np.ndarray:
    """log softmax(logits)[i, targets[i]] for each row i (stable: the row maximum subtracted first)."""
    top = logits.max(-1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(-1))
    return logits[np.arange(len(targets)), targets] - log_z


def perplexity(session, texts: list[str], method: str, sparsity: float, **options: Any) -> float:
    """Token-level perplexity; each text one request (its own prefill decides)."""
    nll, count = 0.0, 0
    for text in texts:
        ids = session.tokenize(text, chat=False)
        if len(ids) < 2:
            continue
        logits = session.logits(ids, sparsity=sparsity, method=method, every_position=True,
                                **options)[:-1].astype(np.float64)
        nll -= float(_target_log_probs(logits, ids[1:]).sum())
        count += len(ids) - 1
    return math.exp(nll / max(1, count))


def clause_nll(session, prompt: str, answer: str) -> float | None:
    """Mean NLL (nats per token) of ``first_clause(answer)`` after the chat-formatted ``prompt`` under the
    dense graph: one prefill with every position's logits (``--all-logits``), else one prefill per clause
    token (a clause is a sentence: tens of tokens)."""
    ids = session.tokenize(prompt)
    clause = session.codec.encode(first_clause(answer), add_special_tokens=False)
    if not clause:
        return None
    if session.manifest.graph.get("last_logits_only", True):
        rows = np.stack([session.logits(ids + clause[:i]) for i in range(len(clause))])
    else:
        rows = session.logits(ids + clause, every_position=True)[len(ids) - 1:-1]
    return float(-_target_log_probs(rows.astype(np.float64), clause).mean())


def strict_rate(session, prompts: list[str], texts: list[str]) -> float:
    """Share of ``texts`` that are strict refusals (only anchored answers are scored)."""
    return strict_refusal_rate(prompts, texts, lambda p, a: clause_nll(session, p, a))


def run_eval_onnx(session, method: str, sparsity: float, harmful: list[str], harmless: list[str],
                  texts: list[str], max_new_tokens: int = 48, adaptive_threshold: float | None = None,
                  adaptive_path: str | None = None) -> OnnxEvalResult:
    """One row of the table, through the exported graphs (``adaptive_threshold``: aapp-adaptive's gate
    from which a request runs dense, None: the model dir's calibration's, ``Session.adaptive_threshold``;
    ``adaptive_path``: its path, None: the model dir's default, ``Session.default_adaptive_path``)."""
    level = session.pruned_level(method, sparsity)  # a bad method or level fails before any generation
    adaptive_path = session.resolve_adaptive_path(adaptive_path)
    options = {"adaptive_threshold": adaptive_threshold, "adaptive_path": adaptive_path} \
        if method == "aapp-adaptive" else {}
    harm, harm_len, harm_dense, harm_dp = answers(session, harmful, method, sparsity, max_new_tokens,
                                                  f"{method} harmful", **options)
    safe, safe_len, safe_dense, safe_dp = answers(session, harmless, method, sparsity, max_new_tokens,
                                                  f"{method} harmless", **options)
    refused, over = [is_refusal(a) for a in harm], [is_refusal(a) for a in safe]
    note = None
    if session.manifest.graph.get("last_logits_only", True):
        ppl, note = None, "the model dir holds the last position's logits only; export with --all-logits for perplexity"
    else:
        ppl = perplexity(session, texts, method, sparsity, **options)
    dims = dims_of(session.manifest)
    skip_first = int(session.pruning.get("skip_first", 3))

    def ratio(lengths: list[int], dense: list[bool], prefilled: list[bool]) -> float:
        """FLOPs per request of a file relative to dense at its mean prompt length, each request at its
        path's cost (``evaluate.path_costs``): aapp-adaptive's requests that the gates ran dense cost a
        dense request plus the pruned prefill that asked (restart), or a dense request that also picked
        the units of a decode it did not take (dense-prefill); those decoded pruned after a dense
        prefill, ``flops.dense_prefill_ratio``."""
        if level is None:
            return 1.0
        prompt = round(sum(lengths) / max(1, len(lengths)))
        probe = max(2, math.ceil(PROBE_RATIO * prompt))
        heads, channels = list(level[1]["kept_heads"]), list(level[1]["kept_channels"])
        target = flops_ratio(dims, prompt, max_new_tokens, heads, channels, probe, skip_first)
        if not any(dense) and not any(prefilled):
            return target
        if adaptive_path == "dense-prefill":
            low = dense_prefill_ratio(dims, prompt, max_new_tokens, list(dims.heads), list(dims.channels), skip_first)
        else:
            low = 1 + prefill_ratio(dims, prompt, max_new_tokens, heads, channels, probe, skip_first)
        pruned_decode = dense_prefill_ratio(dims, prompt, max_new_tokens, heads, channels, skip_first)
        costs = [low if d else pruned_decode if f else target for d, f in zip(dense, prefilled)]
        return sum(costs) / len(costs)

    r_harm, r_safe = ratio(harm_len, harm_dense, harm_dp), ratio(safe_len, safe_dense, safe_dp)
    if method == "aapp-adaptive":  # requests of both files, each at its own cost
        mean = (r_harm * len(harmful) + r_safe * len(harmless)) / max(1, len(harmful) + len(harmless))
    else:  # one request of the mean prompt length of both files, as the PyTorch engine reports
        mean = ratio(harm_len + safe_len, [], [])
    low = (None, None) if method != "aapp-adaptive" or level is None else \
        (sum(harm_dense) / max(1, len(harm_dense)), sum(safe_dense) / max(1, len(safe_dense)))
    return OnnxEvalResult(method if level is not None else "dense", float(sparsity) if level is not None else 0.0,
                          sum(refused) / max(1, len(refused)), sum(over) / max(1, len(over)), ppl, mean,
                          len(harmful), len(harmless), session.provider, refused, over, note,
                          strict_rate(session, harmful, harm), strict_rate(session, harmless, safe),
                          r_harm, r_safe, *low,
                          *((adaptive_path, round(session.adaptive_threshold if adaptive_threshold is None
                                                  else float(adaptive_threshold), 4), adaptive_threshold is not None)
                            if method == "aapp-adaptive" and level is not None else (None,) * 3))


__all__ = ["OnnxEvalResult", "run_eval_onnx", "dims_of"]
