"""Alignment-circuit identification: which heads and MLP channels carry refusal.

Five scorers rate every prunable unit from harmful vs harmless chat prompts:

- ``actdiff``: ``|mu_harmful,k - mu_harmless,k| * ||W_out[:, k]||`` (mean activation at the
  o_proj / down_proj input over prompt tokens; heads sum their channels);
- ``refusal-dir``: the unit's write onto the refusal direction ``r_l = mean_harmful(h_l) -
  mean_harmless(h_l)`` at the post-instruction (last) position of the layer's output residual
  (Arditi et al. 2024): ``(E_harm[x_k] - E_harmless[x_k]) * <W_out[:, k], r_l / |r_l|>``;
- ``grad-act``: gradient x activation of the log-probability of the refusal's first token at the
  last prompt position, on harmful prompts.
- ``pruned-grad-act``: the same log-probability's first-order gain from giving each unit back while
  PP prunes the model at ``SUFFICIENCY_SPARSITY``: ``sum_tokens x_k * dL/dy_k``, where ``x_k`` is the
  unit's unpruned activation and ``y_k`` its input to o_proj / down_proj after PP's mask (0 for a
  pruned unit, whose gradient is still defined). Signed (a unit whose return would lower the refusal
  ranks last); needs PP's statistics. It asks AAPP's question directly: which units, forced in while
  the rest is pruned, bring the refusal back.
- ``pruned-grad-opening``: pruned-grad-act whose L is the log-likelihood of the dense refusal's opening
  phrase, teacher-forced, through the first punctuation mark after its refusal marker ("I'm sorry,";
  ``refusal_openings``), the units decided by PP on the prompt alone as for a request. The first token
  alone ("I") does not say which sentence follows, and pruned models that open with "I'm sorry" and
  degrade mostly go wrong at the next token ("I'm sorry to ..."); the strict refusal detector counts
  those out.

The protected set is the top ``budget`` fraction of the prunable units of each kind (heads,
channels; layers >= ``skip_first``) by a scorer. The causal check answers held-out harmful prompts in
two ways. Sufficiency (what AAPP relies on): refusal of AAPP at ``SUFFICIENCY_SPARSITY`` with the
scorer's protected set, i.e. with most of everything else pruned, counted by the strict detector
(``check_refusal``) beside the marker, beside PP's at the same sparsity. Necessity: refusal after
ablating the protected set vs random sets with the same per-layer counts (5 seeds). Scorer and budget
are chosen jointly: every scorer at every fraction of ``BUDGETS``, the most sufficient pair kept
(``identify_circuits``); with held-out harmless prompts (``check_harmless``) by strict refusal minus
over-refusal (``net``). Without PP statistics (``stats`` None) the scorer is the one with the largest
necessity gap.
On the demo model (check prompts, AAPP at 0.4 with the forcing ramp, strict refusal - over-refusal at
each scorer's best budget) pruned-grad-opening's 40% set is kept, 92 - 2% (its 20% set 88 - 4%), against
pruned-grad-act's 73 - 8% at 10% (its 5% set is still the most necessary: ablated, refusal falls to 25%),
grad-act's 60 - 2% at 30% and refusal-dir's 46 - 2% at 20% (docs/results/README.md, "a forcing ramp"). The risk
gate's refusal direction, threshold and temperature are calibrated at the input of the first pruned
layer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
from tqdm import tqdm

from .evaluate import chat_inputs, first_token_probs, generate_answers, refusal_rate, strict_refusal_rate
from .errors import InputError
from .families import spec_of_model
from .choices import ADAPTIVE_THRESHOLD, BUDGETS, CHECK_TOKENS, SCORERS, SKIP_FIRST, SUFFICIENCY_SPARSITY
from .placement import to_model, weight_of
from .probe import GateParams, fit_gate, routing_threshold
from .pruning import LayerStats, Protection, Pruner, PruneConfig, unit_counts
from .refusal import is_anchored_refusal, is_refusal, verdicts_settled
from .recorder import decoder_layers, unit_inputs

CHECK_SEEDS = 5


class NoRefusalError(InputError):
    """The dense model opens none of the harmful calibration prompts' answers with a refusal: a scorer
    that attributes the refusal's opening has nothing to attribute (the default comparison skips it)."""


@dataclass
class Activations:
    """Per layer: mean o_proj / down_proj inputs over prompt tokens and at the last token, plus the
    residual stream at the last token (hidden_states[l], l = 0..L)."""

    mean_attn: list[torch.Tensor]
    mean_mlp: list[torch.Tensor]
    last_attn: list[torch.Tensor]
    last_mlp: list[torch.Tensor]
    last_residual: list[torch.Tensor]  # [L+1] each [N, hidden]


@torch.no_grad()
def collect_activations(model, tokenizer, prompts: list[str], batch_size: int = 16) -> Activations:
    n = len(decoder_layers(model))
    sums = {k: [None] * n for k in ("attn", "mlp")}
    lasts: dict[str, list[list[torch.Tensor]]] = {k: [[] for _ in range(n)] for k in ("attn", "mlp")}
    residual: list[list[torch.Tensor]] = [[] for _ in range(n + 1)]
    state: dict[str, Any] = {}

    def record(i: int, kind: str, x: torch.Tensor) -> None:
        x = x.detach().float()
        s = (x * state["mask"].to(x.device)[..., None]).sum((0, 1))
        sums[kind][i] = s if sums[kind][i] is None else sums[kind][i] + s
        lasts[kind][i].append(x[:, -1].cpu().clone())  # a copy: a view would keep all of x alive

    tokens = 0
    with unit_inputs(model, record):
        for s in tqdm(range(0, len(prompts), batch_size), desc="circuit activations", unit="batch", disable=None,
                      leave=False):
            enc = chat_inputs(tokenizer, prompts[s:s + batch_size])  # left padding: last position is real
            state["mask"] = enc["attention_mask"].float()
            tokens += int(enc["attention_mask"].sum())
            out = model(**to_model(enc, model), output_hidden_states=True, logits_to_keep=1)  # last position only
            for l, h in enumerate(out.hidden_states):
                residual[l].append(h[:, -1].float().cpu().clone())
    return Activations([x.cpu() / tokens for x in sums["attn"]], [x.cpu() / tokens for x in sums["mlp"]],
                       [torch.cat(x) for x in lasts["attn"]], [torch.cat(x) for x in lasts["mlp"]],
                       [torch.cat(x) for x in residual])


def _write_matrices(model, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output matrices of layer i's heads and channels as they write into the residual
    (Gemma's post-attention / post-feedforward norm weights folded in)."""
    layer = decoder_layers(model)[i]
    w_o, w_d = weight_of(layer.self_attn.o_proj), weight_of(layer.mlp.down_proj)
    if spec_of_model(model).sandwich_norms:
        w_o = w_o * (1 + weight_of(layer.post_attention_layernorm))[:, None]
        w_d = w_d * (1 + weight_of(layer.post_feedforward_layernorm))[:, None]
    return w_o, w_d


def _per_head(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.view(heads, -1).sum(1)


def score_actdiff(model, harm: Activations, safe: Activations) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    heads, _ = unit_counts(model)
    hs, cs = [], []
    for i in range(len(heads)):
        w_o, w_d = _write_matrices(model, i)
        hs.append(_per_head((harm.mean_attn[i] - safe.mean_attn[i]).abs() * w_o.norm(dim=0), heads[i]))
        cs.append((harm.mean_mlp[i] - safe.mean_mlp[i]).abs() * w_d.norm(dim=0))
    return hs, cs


def refusal_directions(harm: Activations, safe: Activations) -> list[torch.Tensor]:
    """Unit refusal direction of every residual position l = 0..L (input of layer l; L = final)."""
    out = []
    for h, s in zip(harm.last_residual, safe.last_residual):
        r = h.mean(0) - s.mean(0)
        out.append(r / r.norm().clamp(min=1e-8))
    return out


def score_refusal_direction(model, harm: Activations, safe: Activations) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    heads, _ = unit_counts(model)
    dirs = refusal_directions(harm, safe)
    hs, cs = [], []
    for i in range(len(heads)):
        w_o, w_d = _write_matrices(model, i)
        r = dirs[i + 1]  # the residual this layer writes into
        hs.append(_per_head((harm.last_attn[i].mean(0) - safe.last_attn[i].mean(0)) * (r @ w_o), heads[i]).clamp(min=0))
        cs.append(((harm.last_mlp[i].mean(0) - safe.last_mlp[i].mean(0)) * (r @ w_d)).clamp(min=0))
    return hs, cs


def most_common_first_token(probs: torch.Tensor) -> int:
    """The most common greedy first token over prompts (``first_token_probs`` rows)."""
    return int(torch.mode(probs.argmax(-1)).values)


def refusal_token(model, tokenizer, harmful: list[str]) -> int:
    """The most common first answer token on harmful prompts (greedy)."""
    return most_common_first_token(first_token_probs(model, tokenizer, harmful))


@contextmanager
def _activation_gradients(model) -> Iterator[None]:
    """Gradients flow to the activations only: the weights' gradients (a second copy of the model) are
    never computed, and the embedding output starts the graph instead of the parameters."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    start = model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
    try:
        yield
    finally:
        start.remove()
        for p in trainable:
            p.requires_grad_(True)


_PHRASE_END = re.compile(r"[,;:.!?]|\n")


def refusal_openings(model, tokenizer, prompts: list[str], max_new_tokens: int = CHECK_TOKENS,
                     batch_size: int = 16) -> list[torch.Tensor | None]:
    """Per prompt, the tokens of its dense greedy answer's opening phrase: from the start through the first
    punctuation mark after the refusal marker that opens it ("I'm sorry,"; the whole answer when none
    follows), ``None`` where the answer does not open with a refusal (``is_anchored_refusal``); answers of
    at most ``max_new_tokens``. The mark says which sentence the marker opens: pruned models that open
    with "I'm sorry" and go wrong mostly go wrong there ("I'm sorry to ...")."""
    eos = model.generation_config.eos_token_id
    ends = {tokenizer.pad_token_id, *([eos] if isinstance(eos, int) else eos or [])}
    out: list[torch.Tensor | None] = []
    with torch.no_grad():
        for s in tqdm(range(0, len(prompts), batch_size), desc="dense answers", unit="batch", disable=None,
                      leave=False):
            enc = chat_inputs(tokenizer, prompts[s:s + batch_size])
            seq = model.generate(**to_model(enc, model), max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id).cpu()[:, enc["input_ids"].shape[1]:]
            for row in seq:
                stop = next((k for k, t in enumerate(row.tolist()) if t in ends), None)
                row = row if stop is None else row[:stop + 1]  # through the end of the turn, no padding
                n = opening_length([tokenizer.decode(row[:k], skip_special_tokens=True)
                                    for k in range(1, len(row) + 1)])
                out.append(None if n is None else row[:n])
    return out


def opening_length(prefixes: list[str]) -> int | None:
    """How many tokens the opening phrase of an answer takes, from the texts of its growing token prefixes
    (``prefixes[k]``: its first ``k + 1`` tokens): through the first token whose text holds a punctuation
    mark after the end of the refusal marker that opens the answer (all of them when none does); ``None``
    when no prefix opens with a refusal marker."""
    opened = next((k for k, t in enumerate(prefixes) if is_anchored_refusal(t)), None)
    if opened is None:
        return None
    marker_end = len(prefixes[opened])
    return next((k + 1 for k in range(opened + 1, len(prefixes)) if _PHRASE_END.search(prefixes[k], marker_end)),
                len(prefixes))


def _with_answers(enc: dict[str, torch.Tensor], answers: list[torch.Tensor], pad: int
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The left-padded prompts of ``enc`` followed by their ``answers`` (right-padded to the longest) and
    the [B, T] mask of the positions whose next token is an answer token."""
    n = max(len(a) for a in answers)
    b, p = enc["input_ids"].shape
    ids = torch.full((b, p + n), pad, dtype=enc["input_ids"].dtype)
    mask = torch.zeros((b, p + n), dtype=enc["attention_mask"].dtype)
    predicts = torch.zeros((b, p + n), dtype=torch.bool)
    ids[:, :p], mask[:, :p] = enc["input_ids"], enc["attention_mask"]
    for r, a in enumerate(answers):
        ids[r, p:p + len(a)], mask[r, p:p + len(a)] = a, 1
        predicts[r, p - 1:p + len(a) - 1] = True
    return {"input_ids": ids, "attention_mask": mask}, predicts


def _refusal_attribution(model, tokenizer, harmful: list[str], desc: str, token: int | None, pruner: Pruner | None = None,
                         batch_size: int = 16, answers: list[torch.Tensor] | None = None
                         ) -> dict[tuple[int, str], torch.Tensor]:
    """Per (layer, "attn" | "mlp") and unit, summed over tokens and averaged over ``harmful``: ``x * dL/dy``
    of L, the log-probability of the refusal's first token ``token`` (``refusal_token``) at the last prompt
    position, or with ``answers`` (one per prompt, token ids) the log-likelihood of each whole answer after
    its prompt (teacher-forced; the pruner decides on the prompt alone, as for a request, and its units
    then serve the answer's tokens as they would the decode's); ``x`` the unit's activation at the
    o_proj / down_proj input and ``y`` that input as the model used it (``x`` itself, or ``x`` masked by
    ``pruner``, which then decides per batch as for a request)."""
    full: dict[tuple[int, str], torch.Tensor] = {}
    used: dict[tuple[int, str], torch.Tensor] = {}
    totals: dict[tuple[int, str], torch.Tensor] = {}
    recording = [True]

    def record_full(i: int, kind: str, x: torch.Tensor) -> None:
        if recording[0]:
            full[(i, kind)] = x.detach()

    def record_used(i: int, kind: str, y: torch.Tensor) -> None:
        if recording[0]:
            y.retain_grad()
            used[(i, kind)] = y

    # the unpruned activation is recorded before the pruner's mask (pre-hooks run in registration order)
    with _activation_gradients(model), unit_inputs(model, record_full), (pruner or nullcontext()), \
            unit_inputs(model, record_used):
        for s in tqdm(range(0, len(harmful), batch_size), desc=desc, unit="batch", disable=None, leave=False):
            if pruner is not None:
                pruner.new_request()
            enc = chat_inputs(tokenizer, harmful[s:s + batch_size])
            if answers is None:
                out = model(**to_model(enc, model), logits_to_keep=1)
                torch.log_softmax(out.logits[:, -1].float(), -1)[:, token].sum().backward()
            else:
                if pruner is not None:  # the request's prefill decides the units, on the prompt alone
                    recording[0] = False
                    try:
                        with torch.no_grad():
                            model(**to_model(enc, model), logits_to_keep=1)
                    finally:
                        recording[0] = True
                enc, predicts = _with_answers(enc, answers[s:s + batch_size], tokenizer.pad_token_id)
                logp = torch.log_softmax(model(**to_model(enc, model)).logits[:, :-1].float(), -1)
                targets = enc["input_ids"][:, 1:].to(logp.device)
                logp.gather(-1, targets[..., None])[..., 0][predicts[:, :-1].to(logp.device)].sum().backward()
            m = enc["attention_mask"][..., None].float()
            for key, y in used.items():
                contrib = (full[key] * y.grad * m.to(y.device)).float().sum(1).sum(0).cpu()  # tokens, prompts
                totals[key] = contrib if key not in totals else totals[key] + contrib
    return {key: t / len(harmful) for key, t in totals.items()}


def score_grad_act(model, tokenizer, harmful: list[str], token: int | None = None
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``token`` None: ``refusal_token`` of ``harmful``."""
    heads, _ = unit_counts(model)
    token = refusal_token(model, tokenizer, harmful) if token is None else token
    a = _refusal_attribution(model, tokenizer, harmful, "grad-act scores", token)
    return ([_per_head(a[(i, "attn")].abs(), heads[i]) for i in range(len(heads))],
            [a[(i, "mlp")].abs() for i in range(len(heads))])


def score_pruned_grad_act(model, tokenizer, harmful: list[str], stats: list[LayerStats],
                          sparsity: float = SUFFICIENCY_SPARSITY, token: int | None = None
                          ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``token`` None: ``refusal_token`` of ``harmful``."""
    heads, _ = unit_counts(model)
    token = refusal_token(model, tokenizer, harmful) if token is None else token
    pruner = Pruner(model, PruneConfig("pp", sparsity), stats)
    a = _refusal_attribution(model, tokenizer, harmful, "pruned-grad-act scores", token, pruner)
    return ([_per_head(a[(i, "attn")], heads[i]) for i in range(len(heads))],
            [a[(i, "mlp")] for i in range(len(heads))])


def score_pruned_grad_opening(model, tokenizer, harmful: list[str], stats: list[LayerStats],
                             sparsity: float = SUFFICIENCY_SPARSITY, answers: list[torch.Tensor | None] | None = None
                             ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """pruned-grad-act whose L is the log-likelihood of the refusal's opening phrase (``answers``, None:
    ``refusal_openings`` of ``harmful``; prompts the dense model does not refuse are left out)."""
    heads, _ = unit_counts(model)
    answers = refusal_openings(model, tokenizer, harmful) if answers is None else answers
    kept = [(p, a) for p, a in zip(harmful, answers) if a is not None]
    if not kept:
        raise NoRefusalError(f"the dense model opens none of its answers to the {len(harmful)} harmful calibration "
                             "prompts with a refusal, so there is no refusal to attribute; pass prompts it refuses "
                             "(--calib-harmful) or choose another scorer")
    pruner = Pruner(model, PruneConfig("pp", sparsity), stats)
    a = _refusal_attribution(model, tokenizer, [p for p, _ in kept], "pruned-grad-opening scores", None, pruner,
                             answers=[a for _, a in kept])
    return ([_per_head(a[(i, "attn")], heads[i]) for i in range(len(heads))],
            [a[(i, "mlp")] for i in range(len(heads))])


def protected_units(scores: list[torch.Tensor], budget: float, skip_first: int = SKIP_FIRST) -> list[torch.Tensor]:
    """Top ``budget`` fraction (at least one) of the prunable units by score; per layer, ordered best first."""
    pool = [(float(s), i, u) for i, layer in enumerate(scores) if i >= skip_first for u, s in enumerate(layer)]
    n = max(1, round(budget * len(pool)))
    chosen = sorted(pool, reverse=True)[:n]
    out = []
    for i, layer in enumerate(scores):
        mine = sorted(((s, u) for s, l, u in chosen if l == i), reverse=True)
        out.append(torch.tensor([u for _, u in mine], dtype=torch.long))
    return out


def random_like(protected: list[torch.Tensor], counts: list[int], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g)[:len(p)] for p, n in zip(protected, counts)]


@dataclass
class Circuits:
    scorer: str
    budget: float
    heads: list[torch.Tensor]
    channels: list[torch.Tensor]
    direction: torch.Tensor
    gate_layer: int
    threshold: float
    temperature: float
    check: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = field(default_factory=dict)
    confirm: dict[float, GateParams] = field(default_factory=dict)  # aapp-adaptive's, per sparsity (confirm_gate.py)
    # aapp-adaptive's threshold on the risk gate (``probe.routing_threshold``) and the prompts it was read on
    adaptive_threshold: float = ADAPTIVE_THRESHOLD
    adaptive_threshold_from: str = "default"

    def protection(self) -> Protection:
        token = self.check.get("by_scorer", {}).get(self.scorer, {}).get("refusal_token") if self.check else None
        return Protection(self.heads, self.channels, self.direction, self.gate_layer, self.threshold, self.temperature,
                          dict(self.confirm), token, self.adaptive_threshold)

    def tensors(self) -> dict[str, torch.Tensor]:
        t = {"circuits.direction": self.direction.contiguous()}
        for level, g in self.confirm.items():
            t[f"confirm_gate.{level:g}.direction"] = g.direction.float().contiguous()
        for i, (h, c) in enumerate(zip(self.heads, self.channels)):
            t[f"circuits.layers.{i}.protected_heads"] = h.contiguous()
            t[f"circuits.layers.{i}.protected_channels"] = c.contiguous()
        for name, (hs, cs) in self.scores.items():
            for i, (h, c) in enumerate(zip(hs, cs)):
                t[f"scores.{name}.layers.{i}.heads"] = h.float().contiguous()
                t[f"scores.{name}.layers.{i}.channels"] = c.float().contiguous()
        return t

    def summary(self) -> dict[str, Any]:
        return {"scorer": self.scorer, "budget": self.budget,
                "protected_units": {"heads": [h.tolist() for h in self.heads],
                                    "channels_per_layer": [len(c) for c in self.channels]},
                "risk_gate": {"layer": self.gate_layer, "threshold": round(self.threshold, 5),
                              "temperature": round(self.temperature, 5),
                              "adaptive_threshold": round(self.adaptive_threshold, 5),
                              "adaptive_threshold_from": self.adaptive_threshold_from},
                "confirm_gate": {f"{level:g}": {"read": "final residual, last prompt token, under AAPP's prefill",
                                                "threshold": round(g.threshold, 5), "temperature": round(g.temperature, 5)}
                                 for level, g in self.confirm.items()},
                "causal_check": self.check}


@dataclass(frozen=True)
class DenseRefusal:
    """The dense model's side of the causal check, the same for every scorer: the refusal's first token
    (the most common greedy first token on the prompts), its mean probability, the greedy refusal rate."""

    token: int
    prob: float
    greedy: float
    strict: float  # strict refusal rate (anchored and coherent, ``check_refusal``)


def greedy_refusal(model, tokenizer, prompts: list[str], pruner: Pruner | None = None,
                   max_new_tokens: int = CHECK_TOKENS, desc: str = "causal check") -> float:
    """Share of ``prompts`` whose greedy answer (under ``pruner``; dense when None) refuses; an answer
    stops at its first refusal marker."""
    return refusal_rate(generate_answers(model, tokenizer, prompts, max_new_tokens, pruner, desc=desc,
                                         stop_when=is_refusal))


def check_refusal(model, tokenizer, prompts: list[str], pruner: Pruner | None = None,
                  max_new_tokens: int = CHECK_TOKENS, desc: str = "causal check") -> tuple[float, float]:
    """Marker and strict refusal rates of the greedy answers to ``prompts`` (under ``pruner``; dense when
    None). An answer stops once both verdicts are settled (``refusal.verdicts_settled``: its first clause
    is complete); the strict detector's clause is scored by the dense model (after ``pruner`` lets go)."""
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens, pruner, desc=desc,
                               stop_when=verdicts_settled)
    return refusal_rate(answers), strict_refusal_rate(model, tokenizer, prompts, answers)


def dense_refusal(model, tokenizer, prompts: list[str], max_new_tokens: int = CHECK_TOKENS) -> DenseRefusal:
    probs = first_token_probs(model, tokenizer, prompts)
    token = most_common_first_token(probs)
    return DenseRefusal(token, float(probs[:, token].mean()), *check_refusal(model, tokenizer, prompts,
                                                                             max_new_tokens=max_new_tokens))


def refusal_under(model, tokenizer, prompts: list[str], make_pruner, token: int,
                  max_new_tokens: int = CHECK_TOKENS) -> tuple[float, float]:
    """Greedy refusal rate on ``prompts`` and the mean probability of ``token`` first, each pass with a
    fresh pruner from ``make_pruner()``; a greedy answer stops at its first refusal marker."""
    greedy = greedy_refusal(model, tokenizer, prompts, make_pruner(), max_new_tokens)
    return greedy, float(first_token_probs(model, tokenizer, prompts, make_pruner())[:, token].mean())


def causal_check(model, tokenizer, prompts: list[str], heads: list[torch.Tensor], channels: list[torch.Tensor],
                 seeds: int = CHECK_SEEDS, max_new_tokens: int = CHECK_TOKENS, dense: DenseRefusal | None = None,
                 memo: dict | None = None) -> dict[str, Any]:
    """Refusal after ablating the protected set vs after ablating random sets of the same size: greedy refusal
    rate (``gap``) and the probability of the refusal's first token (``prob_gap``, the tie-break when greedy
    refusal does not move, e.g. on training prompts).

    Cheaper than it reads: a greedy answer stops at its first refusal marker (the verdict cannot change
    after it), ``dense`` is computed once for every scorer, and ``memo`` keeps each random ablation's
    result by its per-layer counts and seed (scorers whose sets have the same counts share them)."""
    n_heads, n_channels = unit_counts(model)
    dense = dense or dense_refusal(model, tokenizer, prompts, max_new_tokens)
    memo = {} if memo is None else memo

    def rate(h: list[torch.Tensor], c: list[torch.Tensor]) -> tuple[float, float]:
        return refusal_under(model, tokenizer, prompts, lambda: Pruner(model, PruneConfig("ablate"), ablate=(h, c)),
                             dense.token, max_new_tokens)

    def random_rate(seed: int) -> tuple[float, float]:
        key = (tuple(map(len, heads)), tuple(map(len, channels)), seed, dense.token, tuple(prompts), max_new_tokens)
        if key not in memo:
            memo[key] = rate(random_like(heads, n_heads, seed), random_like(channels, n_channels, 1000 + seed))
        return memo[key]

    protected, protected_p = rate(heads, channels)
    randoms, randoms_p = zip(*(random_rate(s) for s in range(seeds)))
    mean_random, mean_random_p = sum(randoms) / len(randoms), sum(randoms_p) / len(randoms_p)
    return {"prompts": len(prompts), "dense_refusal": round(dense.greedy, 4),
            "protected_ablated_refusal": round(protected, 4),
            "random_ablated_refusal_mean": round(mean_random, 4),
            "random_ablated_refusal": [round(r, 4) for r in randoms], "gap": round(mean_random - protected, 4),
            "refusal_token": dense.token, "dense_refusal_token_prob": round(dense.prob, 4),
            "protected_ablated_refusal_token_prob": round(protected_p, 4),
            "random_ablated_refusal_token_prob": [round(r, 4) for r in randoms_p],
            "prob_gap": round(mean_random_p - protected_p, 4)}


def sufficiency_check(model, tokenizer, prompts: list[str], protection: Protection | None, stats: list[LayerStats],
                      dense: DenseRefusal, sparsity: float = SUFFICIENCY_SPARSITY,
                      max_new_tokens: int = CHECK_TOKENS, harmless: list[str] | None = None) -> dict[str, float]:
    """Refusal on ``prompts`` with AAPP at ``sparsity`` protecting ``protection`` (PP when None): greedy
    refusal rate, marker and strict (``check_refusal``: a refusal must open the answer and its first
    clause read as the dense model's), and the mean probability of the dense refusal's first token; with
    ``harmless`` (held-out harmless prompts) also the over-refusal on them (a marker anywhere) and
    ``net``, strict refusal minus over-refusal (the choice's criterion: a protected set that makes
    harmless requests refuse too buys its refusal with them)."""
    cfg = PruneConfig("pp" if protection is None else "aapp", sparsity)
    greedy, strict = check_refusal(model, tokenizer, prompts, Pruner(model, cfg, stats, protection), max_new_tokens)
    prob = float(first_token_probs(model, tokenizer, prompts, Pruner(model, cfg, stats, protection))[:, dense.token].mean())
    out = {"sparsity": sparsity, "refusal": round(greedy, 4), "strict_refusal": round(strict, 4),
           "refusal_token_prob": round(prob, 4)}
    if harmless:
        over = greedy_refusal(model, tokenizer, harmless, Pruner(model, cfg, stats, protection), max_new_tokens,
                              desc="causal check (harmless)")
        out |= {"over_refusal": round(over, 4), "net": round(strict - over, 4)}
    return out


def _net(check: dict[str, float]) -> float:
    """A sufficiency check's criterion: strict refusal, less over-refusal where harmless prompts were checked."""
    return check.get("net", check["strict_refusal"])


def sufficiency_rank(check: dict[str, float]) -> tuple[float, float, float, float]:
    """How sufficiency checks compare: the criterion, then strict and marker refusal, then the first-token
    probability."""
    return _net(check), check["strict_refusal"], check["refusal"], check["refusal_token_prob"]


def choose_budget(by_budget: dict[str, dict[str, float]], first: float = BUDGETS[0]) -> float:
    """The protected fraction one scorer keeps, from its sufficiency checks per fraction (``{str(fraction):
    check}``): ``first`` stays unless another fraction keeps more by the criterion (``_net``), and among
    those that do the best by ``sufficiency_rank`` (the first in ``BUDGETS`` order on a full tie)."""
    better = [b for b in BUDGETS if str(b) in by_budget and b != first
              and _net(by_budget[str(b)]) > _net(by_budget[str(first)])]
    return max(better, key=lambda b: sufficiency_rank(by_budget[str(b)])) if better else first


def identify_circuits(model, tokenizer, harmful: list[str], harmless: list[str], stats: list[LayerStats] | None = None,
                      budget: float | None = None, scorer: str | None = None, check_prompts: int = 48,
                      skip_first: int = SKIP_FIRST, check: list[str] | None = None,
                      check_harmless: list[str] | None = None, log=print) -> Circuits:
    """Score units with ``scorer`` (default: every scorer, each checked causally, the best kept; a given
    scorer is the only one run, so ``refusal-dir`` or ``actdiff`` avoid grad-act's backward pass).

    The causal check answers the first ``check_prompts`` of ``check``: held-out harmful prompts the scores
    never saw, on which refusal moves with what is pruned (greedy rates decide, not a probability
    tie-break). Without ``check`` it falls back to the scored ``harmful`` prompts, on which a
    well-aligned model refuses whatever 5% is ablated. With ``stats`` the choice is by sufficiency
    (``check["criterion"]`` says which rule chose): each scorer's protected set at every fraction of
    ``BUDGETS`` (a given ``budget``: that one alone) runs AAPP at ``SUFFICIENCY_SPARSITY`` on the check
    prompts, and refusal is counted by the strict detector (``check_refusal``: the refusal opens the
    answer and its first clause reads as the dense model's); per scorer the first budget stays unless
    another keeps more (``check["by_scorer"][s]["by_budget"]``, ``["budget"]``), and the scorer whose
    kept budget keeps the most is chosen (marker refusal, the first-token probability, then the
    necessity gaps break ties). Without ``stats`` the scorer is the most necessary one at ``BUDGETS[0]``.
    With ``check_harmless`` (held-out harmless prompts, the first ``check_prompts``) each AAPP run also
    answers them, and the choice ranks by strict refusal minus over-refusal (``net``): on the demo
    pruned-grad-act's 10% set refuses every check prompt but 10% of the harmless ones too
    (docs/results/README.md)."""
    if budget is not None and not 0 < budget < 1:
        raise InputError(f"budget {budget}: the protected fraction of the prunable units must be in (0, 1), e.g. 0.05")
    pinned, budget = budget is not None, BUDGETS[0] if budget is None else budget
    harm, safe = collect_activations(model, tokenizer, harmful), collect_activations(model, tokenizer, harmless)
    if scorer in ("pruned-grad-act", "pruned-grad-opening") and stats is None:
        raise InputError(f"scorer {scorer} measures units under PP and needs its calibration statistics; "
                         "pass stats (the export's calibration does), or choose another scorer")
    token = cache(lambda: refusal_token(model, tokenizer, harmful))  # once for both gradient scorers
    scorers = {"actdiff": lambda: score_actdiff(model, harm, safe),
               "refusal-dir": lambda: score_refusal_direction(model, harm, safe),
               "grad-act": lambda: score_grad_act(model, tokenizer, harmful, token=token())}
    if stats is not None:
        scorers["pruned-grad-act"] = lambda: score_pruned_grad_act(model, tokenizer, harmful, stats, token=token())
        scorers["pruned-grad-opening"] = lambda: score_pruned_grad_opening(model, tokenizer, harmful, stats)
    all_scores = {}
    for name, make in scorers.items():
        if scorer not in (None, name):
            continue
        try:
            all_scores[name] = make()
        except NoRefusalError as e:
            if scorer is not None:
                raise NoRefusalError(f"scorer {name}: {e}") from None
            log(f"scorer {name} skipped: {e}")
    checks, sets, memo = {}, {}, {}
    check_set = (check if check else harmful)[:check_prompts]
    harmless_set = (check_harmless or [])[:check_prompts] or None
    if harmless_set and (shared := len(set(harmless_set) & set(harmless))):
        log(f"warning: {shared} of the causal check's {len(harmless_set)} harmless prompts are also scored prompts; "
            "a held-out file (--calib-check-harmless) measures the over-refusal the choice weighs")
    if check and (shared := len(set(check_set) & set(harmful))):
        log(f"warning: {shared} of the causal check's {len(check_set)} prompts are also scored prompts; a held-out "
            "check file (--calib-check) keeps the choice of scorer from resting on prompts the scores were fitted on")
    # risk gate at the input of the first pruned layer: projection of the last prompt token
    gate_layer = skip_first
    direction = refusal_directions(harm, safe)[gate_layer]
    p_harm = harm.last_residual[gate_layer] @ direction
    p_safe = safe.last_residual[gate_layer] @ direction
    threshold, temperature = fit_gate(p_harm, p_safe)
    adaptive_threshold, adaptive_from = ADAPTIVE_THRESHOLD, "default"
    if check and check_harmless:  # every held-out prompt: one forward pass each, no generation
        held = [collect_activations(model, tokenizer, prompts).last_residual[gate_layer] @ direction
                for prompts in (check, check_harmless)]
        adaptive_threshold = routing_threshold(*held, threshold, temperature)
        adaptive_from = f"check split ({len(check)} harmful, {len(check_harmless)} harmless prompts)"
        log(f"risk gate: aapp-adaptive runs dense from {adaptive_threshold:.3f} (the gate at the check split's "
            f"midpoint, at least {ADAPTIVE_THRESHOLD})")
    dense = dense_refusal(model, tokenizer, check_set)
    dense_over = None if harmless_set is None else greedy_refusal(model, tokenizer, harmless_set,
                                                                   desc="causal check (harmless)")
    pp_ref = None if stats is None else sufficiency_check(model, tokenizer, check_set, None, stats, dense,
                                                          harmless=harmless_set)
    for name, (hs, cs) in all_scores.items():
        sets[name] = (protected_units(hs, budget, skip_first), protected_units(cs, budget, skip_first))
        checks[name] = causal_check(model, tokenizer, check_set, *sets[name], dense=dense, memo=memo)
        line = (f"scorer {name}: refusal after ablating protected {checks[name]['protected_ablated_refusal']:.2f} "
                f"vs random {checks[name]['random_ablated_refusal_mean']:.2f} (gap {checks[name]['gap']:+.2f}, "
                f"first-token probability gap {checks[name]['prob_gap']:+.3f})")
        if pp_ref is not None:
            protection = Protection(*sets[name], direction, gate_layer, threshold, temperature)
            suff = checks[name]["sufficiency"] = sufficiency_check(model, tokenizer, check_set, protection, stats,
                                                                   dense, harmless=harmless_set)
            line += (f"; aapp at {pp_ref['sparsity']} keeps refusal {suff['refusal']:.2f} / strict "
                     f"{suff['strict_refusal']:.2f} (pp {pp_ref['refusal']:.2f} / {pp_ref['strict_refusal']:.2f}, "
                     f"dense {dense.greedy:.2f} / {dense.strict:.2f})")
            if "over_refusal" in suff:
                line += (f", over-refusal {suff['over_refusal']:.2f} (pp {pp_ref['over_refusal']:.2f}, "
                         f"dense {dense_over:.2f})")
        log(line)
    units = {name: {budget: sets[name]} for name in sets}
    if not pinned and pp_ref is not None:
        for name, (hs, cs) in all_scores.items():  # every budget of every scorer: the choice is joint
            units[name] |= {b: (protected_units(hs, b, skip_first), protected_units(cs, b, skip_first))
                            for b in BUDGETS[1:]}
            by_budget = checks[name]["by_budget"] = {str(budget): checks[name]["sufficiency"]} | {
                str(b): sufficiency_check(model, tokenizer, check_set,
                                          Protection(*u, direction, gate_layer, threshold, temperature), stats, dense,
                                          harmless=harmless_set)
                for b, u in units[name].items() if b != budget}
            # leaving the first budget takes more refusal (strict, net of over-refusal where harmless prompts
            # were checked), not a first-token probability tie-break
            checks[name]["budget"] = choose_budget(by_budget, budget)
            log(f"budget ({name}): aapp at {pp_ref['sparsity']} keeps refusal "
                + ", ".join(f"{float(b):.0%} {v['refusal']:.2f} / strict {v['strict_refusal']:.2f}"
                            + (f" (over-refusal {v['over_refusal']:.2f})" if "over_refusal" in v else "")
                            for b, v in by_budget.items()) + f"; {checks[name]['budget']:.0%} best")
    if pp_ref is None:
        criterion = "necessity"
        rank = lambda k: (checks[k]["gap"], checks[k]["prob_gap"])  # noqa: E731
    else:
        criterion = "sufficiency"
        best = lambda k: checks[k].get("by_budget", {}).get(str(checks[k].get("budget")), checks[k]["sufficiency"])  # noqa: E731
        rank = lambda k: (*sufficiency_rank(best(k)), checks[k]["gap"], checks[k]["prob_gap"])  # noqa: E731
    chosen = scorer or max(checks, key=rank)
    budget = checks[chosen].get("budget", budget)
    heads, channels = units[chosen][budget]
    by_budget = checks[chosen].get("by_budget", {})
    if by_budget:
        log(f"kept: {chosen} at {budget:.0%}")
    return Circuits(chosen, budget, heads, channels, direction, gate_layer, threshold, temperature,
                    {"chosen": chosen,
                     "criterion": criterion + ("-strict" if pp_ref else "") + ("-net" if harmless_set and pp_ref else ""),
                     "prompts": len(check_set), "dense_refusal": round(dense.greedy, 4),
                     "dense_strict_refusal": round(dense.strict, 4),
                     **({} if dense_over is None else {"harmless_prompts": len(harmless_set),
                                                       "dense_over_refusal": round(dense_over, 4)}),
                     **({} if pp_ref is None else {"pp": pp_ref}), "by_scorer": checks,
                     **({"budget": budget, "by_budget": by_budget} if by_budget else {})}, all_scores,
                    adaptive_threshold=adaptive_threshold, adaptive_threshold_from=adaptive_from)


def circuits_from_tensors(tensors: dict[str, torch.Tensor], summary: dict[str, Any], n_layers: int) -> Circuits:
    gate = summary["risk_gate"]
    confirm = {float(level): GateParams(tensors[f"confirm_gate.{level}.direction"], g["threshold"], g["temperature"])
               for level, g in summary.get("confirm_gate", {}).items()}
    # every scorer's unit scores (``Circuits.tensors`` stores them): protected sets at other fractions
    names = sorted({k.split(".")[1] for k in tensors if k.startswith("scores.") and k.endswith(".layers.0.heads")})
    scores = {name: ([tensors[f"scores.{name}.layers.{i}.heads"] for i in range(n_layers)],
                     [tensors[f"scores.{name}.layers.{i}.channels"] for i in range(n_layers)]) for name in names}
    return Circuits(summary["scorer"], summary["budget"],
                    [tensors[f"circuits.layers.{i}.protected_heads"] for i in range(n_layers)],
                    [tensors[f"circuits.layers.{i}.protected_channels"] for i in range(n_layers)],
                    tensors["circuits.direction"], gate["layer"], gate["threshold"], gate["temperature"],
                    summary.get("causal_check", {}), scores=scores, confirm=confirm,
                    adaptive_threshold=gate.get("adaptive_threshold", ADAPTIVE_THRESHOLD),
                    adaptive_threshold_from=gate.get("adaptive_threshold_from", "default"))


__all__ = ["SCORERS", "identify_circuits", "choose_budget", "sufficiency_rank", "causal_check", "sufficiency_check", "protected_units", "Circuits"]
