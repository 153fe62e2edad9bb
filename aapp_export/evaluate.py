"""Evaluation harness: refusal and over-refusal rates, perplexity and compute, for any pruning method.

Prompts are chat-formatted and answered greedily (batched, left-padded; every row is its own
request, so per-request pruning decisions stay per row). Refusal is detected by
``aapp_export.refusal.is_refusal`` (a marker anywhere) and, stricter, by ``is_strict_refusal`` (a
marker that opens an answer whose first clause the dense model finds likely: ``clause_nll``).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from tqdm import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from .placement import to_model

from .probe import PROBE_MAX_TOKENS, probe_token_count
from .pruning import Pruner
from . import refusal
from .refusal import first_clause, is_refusal


def chat_inputs(tokenizer, prompts: list[str]) -> dict[str, torch.Tensor]:
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side


class _StopWhen(StoppingCriteria):
    """Per row: done once its answer so far (new tokens, decoded) satisfies ``done``."""

    def __init__(self, tokenizer, prompt_len: int, done: Callable[[str], bool]) -> None:
        self.tokenizer, self.prompt_len, self.done = tokenizer, prompt_len, done

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([self.done(t) for t in texts], dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 48, pruner: Pruner | None = None,
                     batch_size: int = 16, desc: str = "generating",
                     stop_when: Callable[[str], bool] | None = None) -> list[str]:
    """Greedy answers (new text only) to chat-formatted prompts. ``stop_when``: a row stops as soon as
    its answer so far satisfies it (a batch ends when every row has stopped or ended); for a property
    that stays true as text is appended (a refusal marker found), the verdict equals the full answer's."""
    return _greedy(model, tokenizer, prompts, max_new_tokens, pruner, batch_size, desc, stop_when)[0]


@torch.no_grad()
def answers_and_first_logits(model, tokenizer, prompts: list[str], max_new_tokens: int = 48,
                             batch_size: int = 16, desc: str = "generating", pruner: Pruner | None = None
                             ) -> tuple[list[str], torch.Tensor]:
    """Greedy answers to chat-formatted prompts and the logits of each answer's first position
    ([len(prompts), vocab], float32), from the same generation (under ``pruner``, if given)."""
    answers, first = _greedy(model, tokenizer, prompts, max_new_tokens, pruner, batch_size, desc, None, True)
    return answers, torch.cat(first)


def _greedy(model, tokenizer, prompts: list[str], max_new_tokens: int, pruner: Pruner | None, batch_size: int,
            desc: str, stop_when: Callable[[str], bool] | None, first_logits: bool = False
            ) -> tuple[list[str], list[torch.Tensor]]:
    """The one greedy loop: left-padded batches, each a new request for ``pruner``."""
    answers: list[str] = []
    firsts: list[torch.Tensor] = []
    ctx = pruner if pruner is not None else nullcontext()
    with ctx:
        for s in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch", disable=None, leave=False):
            enc = chat_inputs(tokenizer, prompts[s:s + batch_size])
            if pruner is not None:
                pruner.new_request()
            stop = None if stop_when is None else \
                StoppingCriteriaList([_StopWhen(tokenizer, enc["input_ids"].shape[1], stop_when)])
            out = model.generate(**to_model(enc, model), max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, stopping_criteria=stop,
                                 output_logits=first_logits, return_dict_in_generate=True)
            answers += tokenizer.batch_decode(out.sequences[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            if first_logits:
                firsts.append(out.logits[0].float().cpu())
    return answers, firsts


@torch.no_grad()
def first_token_probs(model, tokenizer, prompts: list[str], pruner: Pruner | None = None,
                      batch_size: int = 16) -> torch.Tensor:
    """[len(prompts), vocab] probabilities of the answer's first token after each chat-formatted prompt
    (each batch a new request for ``pruner``)."""
    out = []
    with pruner if pruner is not None else nullcontext():
        for s in range(0, len(prompts), batch_size):
            enc = chat_inputs(tokenizer, prompts[s:s + batch_size])
            if pruner is not None:
                pruner.new_request()
            out.append(model(**to_model(enc, model), logits_to_keep=1).logits[:, -1].float().softmax(-1).cpu())
    return torch.cat(out)


def refusal_rate(answers: list[str]) -> float:
    return sum(map(is_refusal, answers)) / max(1, len(answers))


@torch.no_grad()
def answer_nll(model, tokenizer, prompt: str, answer: str) -> float | None:
    """Mean negative log-likelihood (nats per token) of ``answer`` after the chat-formatted ``prompt``
    under ``model`` as it is called (outside a ``Pruner``: dense); ``None`` for an empty answer."""
    ids = chat_inputs(tokenizer, [prompt])["input_ids"][0]
    tokens = tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    if len(tokens) == 0:
        return None
    enc = {"input_ids": torch.cat([ids, tokens])[None]}
    logits = model(**to_model(enc, model)).logits[0, len(ids) - 1:-1].float().cpu()
    return float(-torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).mean())


def clause_nll(model, tokenizer, prompt: str, answer: str) -> float | None:
    """``answer_nll`` of ``first_clause(answer)``: the strict refusal detector's coherence score."""
    return answer_nll(model, tokenizer, prompt, first_clause(answer))


def strict_refusal_rate(model, tokenizer, prompts: list[str], answers: list[str]) -> float:
    """Share of ``answers`` that are strict refusals (``refusal.is_strict_refusal``), their clauses scored
    by the dense ``model`` (call it outside any ``Pruner``); only anchored answers are scored."""
    return refusal.strict_refusal_rate(prompts, answers, lambda p, a: clause_nll(model, tokenizer, p, a))


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], pruner: Pruner | None = None, batch_size: int = 8) -> float:
    """Token-level perplexity over ``texts``; each text is one request (decisions from its own prefill)."""
    nll, count = 0.0, 0
    ctx = pruner if pruner is not None else nullcontext()
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        with ctx:
            for s in range(0, len(texts), batch_size):
                enc = tokenizer(texts[s:s + batch_size], return_tensors="pt", padding=True)
                if pruner is not None:
                    pruner.new_request()
                logits = model(**to_model(enc, model)).logits[:, :-1].float().cpu()
                target = enc["input_ids"][:, 1:]
                mask = enc["attention_mask"][:, 1:].bool()
                lp = torch.log_softmax(logits, -1).gather(-1, target[..., None])[..., 0]
                nll -= float(lp[mask].sum())
                count += int(mask.sum())
    finally:
        tokenizer.padding_side = side
    return math.exp(nll / max(1, count))


@dataclass
class EvalResult:
    method: str
    sparsity: float
    refusal_rate: float
    over_refusal_rate: float
    perplexity: float
    flops_ratio: float
    n_harmful: int
    n_harmless: int
    strict_refusal_rate: float | None = None  # refusal.is_strict_refusal: anchored and coherent
    strict_over_refusal_rate: float | None = None
    flops_ratio_harmful: float | None = None  # FLOPs per request of each file relative to dense
    flops_ratio_harmless: float | None = None
    low_share_harmful: float | None = None  # aapp-adaptive: share of requests run at the low sparsity
    low_share_harmless: float | None = None
    confirm_gate: bool | None = None  # aapp-adaptive: the sparsity had a confirmation gate (confirm_gate.py)
    adaptive_path: str | None = None  # aapp-adaptive: the path a flagged request took (choices.ADAPTIVE_PATHS)
    adaptive_threshold: float | None = None  # aapp-adaptive: the risk gate from which a request ran dense ...
    adaptive_threshold_pinned: bool | None = None  # ... named by the call (False: the calibration's)

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("refusal_rate", "over_refusal_rate", "strict_refusal_rate", "strict_over_refusal_rate",
                  "flops_ratio", "flops_ratio_harmful", "flops_ratio_harmless", "low_share_harmful",
                  "low_share_harmless"):
            if d[k] is not None:
                d[k] = round(d[k], 4)
        for k in ("low_share_harmful", "low_share_harmless", "confirm_gate", "adaptive_path",
                  "adaptive_threshold", "adaptive_threshold_pinned"):  # aapp-adaptive only
            if d[k] is None:
                del d[k]
        d["perplexity"] = round(d["perplexity"], 3)
        return d


def mean_prompt_tokens(tokenizer, prompts: list[str]) -> float:
    return sum(len(chat_inputs(tokenizer, [p])["input_ids"][0]) for p in prompts) / max(1, len(prompts))


def path_costs(config, tokenizer, pruner: Pruner, prompts: list[str], max_new_tokens: int
               ) -> tuple[float, float, float]:
    """FLOPs of one request of ``prompts``' mean length relative to a dense one, for ``pruner``'s
    paths: its target sparsity (probe included for the probed methods); aapp-adaptive's flagged
    request (the low sparsity's request, after the screening AAPP prefill when the level has a
    confirmation gate; on the "dense-prefill" path a dense request that also picked, from its own
    activations, the units of a decode it did not take); and, on that path, a flagged request decoded
    pruned after its dense prefill (the third; meaningless for the other methods and paths)."""
    from .flops import Dims, dense_prefill_ratio, flops_ratio, prefill_ratio

    cfg, dims = pruner.cfg, Dims.from_config(config)
    prompt = round(mean_prompt_tokens(tokenizer, prompts))
    probe = probe_token_count(prompt, cfg.token_ratio, max_tokens=cfg.probe_max_tokens) \
        if cfg.method in ("pp", "aapp", "aapp-adaptive") else 0
    target = flops_ratio(dims, prompt, max_new_tokens, pruner.keep_heads, pruner.keep_channels, probe, cfg.skip_first)
    low = flops_ratio(dims, prompt, max_new_tokens, pruner.low_heads, pruner.low_channels,
                      probe if cfg.adaptive_low > 0 else 0, cfg.skip_first)  # dense rows need no probe
    if pruner.confirm is not None:  # a flagged row ran the screening AAPP prefill first
        low += prefill_ratio(dims, prompt, max_new_tokens, pruner.keep_heads, pruner.keep_channels, probe,
                             cfg.skip_first)
    dense_prefill = dense_prefill_ratio(dims, prompt, max_new_tokens, pruner.keep_heads, pruner.keep_channels,
                                        cfg.skip_first)
    if pruner.dense_prefill:  # a dense row picked the units of a decode it did not take, from its own activations
        low += dense_prefill_ratio(dims, prompt, max_new_tokens, dims.heads, dims.channels, cfg.skip_first) - 1.0
    return target, low, dense_prefill


def run_eval(model, tokenizer, method: str, sparsity: float, harmful: list[str], harmless: list[str],
             texts: list[str], stats=None, circuits=None, max_new_tokens: int = 48,
             probe_max_tokens: int = PROBE_MAX_TOKENS, adaptive_threshold: float | None = None,
             adaptive_path: str | None = None) -> EvalResult:
    """One row of the table: refusal, over-refusal, perplexity and FLOPs ratio of a method
    (``adaptive_threshold`` and ``adaptive_path``: aapp-adaptive's, None the calibration's threshold and
    the default path, ``PruneConfig``)."""
    from .pruning import PruneConfig

    cfg = PruneConfig(method, sparsity, probe_max_tokens=probe_max_tokens, adaptive_threshold=adaptive_threshold,
                      adaptive_path=adaptive_path)
    protection = circuits.protection() if circuits is not None and method in ("aapp", "aapp-adaptive") else None
    make = (lambda: None) if method == "dense" else (lambda: Pruner(model, cfg, stats, protection))  # noqa: E731
    pruners = {"harmful": make(), "harmless": make()}
    harmful_answers = generate_answers(model, tokenizer, harmful, max_new_tokens, pruners["harmful"],
                                       desc=f"{method} harmful")
    harmless_answers = generate_answers(model, tokenizer, harmless, max_new_tokens, pruners["harmless"],
                                        desc=f"{method} harmless")
    ppl = perplexity(model, tokenizer, texts, make())

    def ratio(pruner, prompts: list[str]) -> tuple[float, float | None]:
        """FLOPs per request of ``prompts`` relative to dense, and aapp-adaptive's share at the low sparsity."""
        if pruner is None:
            return 1.0, None
        target, low, dense_prefill = path_costs(model.config, tokenizer, pruner, prompts, max_new_tokens)
        if method != "aapp-adaptive":
            return target, None
        logs = pruner.request_logs()
        flags = [flag for log in logs for flag in log.low]
        prefills = [flag for log in logs for flag in (log.dense_prefill or [False] * len(log.low))]
        costs = [low if f else dense_prefill if d else target for f, d in zip(flags, prefills)]
        return sum(costs) / max(1, len(costs)), sum(flags) / max(1, len(flags))

    (r_harm, low_harm), (r_safe, low_safe) = ratio(pruners["harmful"], harmful), ratio(pruners["harmless"], harmless)
    if method == "aapp-adaptive":  # requests of both files, each at its own cost
        mean = (r_harm * len(harmful) + r_safe * len(harmless)) / max(1, len(harmful) + len(harmless))
    else:  # the table's historical figure: one request of the mean prompt length of both files
        mean = ratio(pruners["harmful"], harmful + harmless)[0]
    strict = strict_refusal_rate(model, tokenizer, harmful, harmful_answers)  # the dense model scores
    strict_over = strict_refusal_rate(model, tokenizer, harmless, harmless_answers)
    return EvalResult(method, sparsity, refusal_rate(harmful_answers), refusal_rate(harmless_answers), ppl, mean,
                      len(harmful), len(harmless), strict, strict_over, r_harm, r_safe, low_harm, low_safe,
                      *((None,) * 4 if method != "aapp-adaptive" else
                        (pruners["harmful"].confirm is not None, cfg.adaptive_path,
                         round(pruners["harmful"].adaptive_threshold, 4), adaptive_threshold is not None)))
