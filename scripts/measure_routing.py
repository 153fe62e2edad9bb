"""Which requests should aapp-adaptive send to dense? Per-prompt signals and outcomes, and routing rules
simulated from them.

aapp-adaptive's restart path (``adaptive_path="restart"``; the rules below are its variants) runs a
request dense when the risk gate (at the first pruned layer) and the confirmation gate (final residual
under the level's AAPP prefill) both reach their thresholds; the
harmless requests it sends there for nothing are why its harmless FLOPs sit above PP's. A third
signal is free: the probability of the refusal's first token (the calibration's causal check token)
in the last logits of that same AAPP prefill. This script records, for every prompt of the model's
``*_val``, ``*_val2`` and ``*_test`` files at ``--sparsity``: the two gates, whether aapp-adaptive ran
it dense, that first-token probability, and whether the answers of aapp-adaptive, plain AAPP and the
dense model are refusals (marker and strict, as ``aapp-eval`` counts them). A rule's outcome is then
exact: a row it sends dense answers as the dense model, the others as AAPP (aapp-adaptive's
undecided rows run AAPP's prefill and decode). ``consistency`` checks that premise: the share of
rows where the ``current`` rule's simulated verdict equals aapp-adaptive's own.

Rules (``RULES``): ``aapp`` and ``dense`` (every request on one path); ``current``;
``stay-if-refusing``: dense unless AAPP's first token is already the refusal with probability >= t;
``veto-unlikely``: dense only when also p >= t; ``mean``: the risk gate and the mean of the
confirmation gate and p >= t. ``chosen_on_val``: each family's setting chosen on
``val`` alone (``choose_on_val``); ``val2`` and ``test`` only report.

``dense_prefill_path``: aapp-adaptive on its default path (``choices.DEFAULT_ADAPTIVE_PATH``) at the lowest
threshold ``ADAPTIVE_THRESHOLD``, generated (not simulated: its pruned decode after a dense prefill is an
answer no other path gives). The risk gate alone flags a request; its prefill then runs dense and the decode stays dense only when the dense
prefill's first token is the refusal's; every row's path (``dp_path``) and verdicts are recorded,
and where it decoded pruned after the dense prefill, the dense model's NLL of its answer, AAPP's and
the dense model's (``answer_nll``). ``dense_prefill_thresholds``: the path at higher risk-gate
thresholds, exact from the same rows; ``chosen_on_val["dense-prefill"]`` picks one as the rules are picked;
``dense_prefill_at_calibration``: the path at the calibration's threshold (``adaptive_threshold``, read on
its check split: what aapp-adaptive runs by default), exact from the same rows.
``perplexity``: the card's evaluation text under dense, PP, AAPP and both aapp-adaptive paths (the
issue's perplexity target, so that one run per seed answers every target).

    python scripts/measure_routing.py --model demo --out docs/results/routing.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from aapp_export.choices import ADAPTIVE_THRESHOLD

ROOT = Path(__file__).resolve().parents[1]

SPLITS = ("val", "val2", "test")
CLASSES = ("harmful", "harmless", "borderline")
MAX_NEW_TOKENS = 48  # aapp-eval's default

Row = dict
RULES: dict[str, tuple[Callable[[Row, float], bool], tuple[float, ...]]] = {
    "aapp": (lambda r, t: False, (0.0,)),
    "dense": (lambda r, t: True, (0.0,)),
    "current": (lambda r, t: r["dense"], (0.0,)),
    "stay-if-refusing": (lambda r, t: r["dense"] and r["first_token_refusal"] < t, (0.3, 0.5, 0.7, 0.9)),
    "veto-unlikely": (lambda r, t: r["dense"] and r["first_token_refusal"] >= t, (0.01, 0.03, 0.1, 0.2)),
    "mean": (lambda r, t: r["risk_gate"] >= ADAPTIVE_THRESHOLD
             and (r["confirm_gate"] + r["first_token_refusal"]) / 2 >= t, (0.3, 0.4, 0.5)),
}


def simulate(rows: list[Row], rule: Callable[[Row, float], bool], t: float, costs: tuple[float, float]) -> dict:
    """Share sent dense by ``rule`` at ``t``, the refusal rates (dense answers where it sends a row
    dense, AAPP's elsewhere) and the FLOPs per request relative to dense (``costs``: a request kept at
    the target, a request sent dense after the screening prefill; ``record``)."""
    dense = [rule(r, t) for r in rows]
    share = sum(dense) / max(1, len(rows))
    out = {"dense_share": round(share, 4), "flops_ratio": round((1 - share) * costs[0] + share * costs[1], 4)}
    for kind in ("marker", "strict"):
        hits = sum(r[("dense_" if d else "aapp_") + kind] for r, d in zip(rows, dense))
        out[f"refusal_{kind}"] = round(hits / max(1, len(rows)), 4)
    return out


def consistency(rows: list[Row]) -> float:
    """Share of rows whose ``current``-rule verdicts (marker and strict) equal aapp-adaptive's own."""
    same = [(r["dense_" + k] if r["dense"] else r["aapp_" + k]) == r["adaptive_" + k]
            for r in rows for k in ("marker", "strict")]
    return round(sum(same) / max(1, len(same)), 4)


def choose_on_val(rules: list[dict], current: float | None = None) -> dict[str, dict]:
    """Per rule family, the setting chosen on ``val`` alone: among its settings whose strict refusal on
    harmful_val is at least ``current`` (default: the shipped rule's), the one with the lowest harmless_val
    FLOPs (then the lowest harmful_val FLOPs); ``None`` where no setting keeps that refusal."""
    if current is None:
        current = next(r for r in rules if r["rule"] == "current")["harmful_val"]["refusal_strict"]
    chosen: dict[str, dict] = {}
    for name in dict.fromkeys(r["rule"] for r in rules):
        keep = [r for r in rules if r["rule"] == name and r["harmful_val"]["refusal_strict"] >= current]
        chosen[name] = min(keep, key=lambda r: (r["harmless_val"]["flops_ratio"], r["harmful_val"]["flops_ratio"]),
                           default=None)
    return chosen


def record(model, tok, stats, circuits, sparsity: float, prompts: list[str], name: str
           ) -> tuple[list[Row], tuple[float, float, float, float]]:
    """The per-prompt signals and outcomes of one file, and its paths' FLOPs per request relative to dense:
    the target, the restart (``simulate`` reads these two), a dense prefill + AAPP's decode and a dense
    request on the dense-prefill path (``dense_prefill_outcome``)."""
    from aapp_export.evaluate import answer_nll, answers_and_first_logits, clause_nll, generate_answers, path_costs
    from aapp_export.pruning import Pruner, PruneConfig
    from aapp_export.refusal import is_refusal, strict_verdicts

    protection = circuits.protection()
    pruner = lambda method, **kw: Pruner(model, PruneConfig(method, sparsity, **kw), stats, protection)  # noqa: E731
    # the restart path (both gates): the rules below are its variants; the default path is measured after
    # both aapp-adaptive paths are recorded at the lowest threshold, ADAPTIVE_THRESHOLD, which the calibration's
    # never goes below (probe.routing_threshold): every threshold from it up is then exact from these rows
    adaptive = pruner("aapp-adaptive", adaptive_path="restart", adaptive_threshold=ADAPTIVE_THRESHOLD)
    adaptive_answers = generate_answers(model, tok, prompts, MAX_NEW_TOKENS, adaptive, desc=f"aapp-adaptive {name}")
    logs = adaptive.request_logs()
    gate, dense, confirm = ([x for log in logs for x in getattr(log, k)] for k in ("gate", "low", "confirm"))
    if len(confirm) != len(prompts):
        raise SystemExit(f"{name}: the level {sparsity} has no confirmation gate; calibrate it (--levels)")
    # AAPP's answers and, from the same prefill, the first-token probability of the refusal
    aapp_answers, first_logits = answers_and_first_logits(model, tok, prompts, MAX_NEW_TOKENS, desc=f"aapp {name}",
                                                          pruner=pruner("aapp"))
    token = circuits.check["by_scorer"][circuits.scorer]["refusal_token"]
    first = first_logits.softmax(-1)[:, token].tolist()
    dense_answers = generate_answers(model, tok, prompts, MAX_NEW_TOKENS, desc=f"dense {name}")
    # the dense-prefill path (choices.ADAPTIVE_PATHS): its own answers and, per row, the path it took
    dp = pruner("aapp-adaptive", adaptive_path="dense-prefill", adaptive_threshold=ADAPTIVE_THRESHOLD)
    dp_answers = generate_answers(model, tok, prompts, MAX_NEW_TOKENS, dp, desc=f"dense-prefill {name}")
    dp_logs = dp.request_logs()
    dp_path = ["dense" if low else "dense-prefill" if pre else "aapp"
               for log in dp_logs for low, pre in zip(log.low, log.dense_prefill or [False] * len(log.low))]
    answers = {"adaptive": adaptive_answers, "aapp": aapp_answers, "dense": dense_answers, "dp": dp_answers}
    nll = lambda p, a: clause_nll(model, tok, p, a)  # noqa: E731
    verdicts = {f"{k}_marker": [is_refusal(a) for a in v] for k, v in answers.items()}
    verdicts |= {f"{k}_strict": strict_verdicts(prompts, v, nll) for k, v in answers.items()}
    rows = [{"risk_gate": round(gate[i], 4), "confirm_gate": round(confirm[i], 4), "dense": bool(dense[i]),
             "first_token_refusal": round(first[i], 4), "dp_path": dp_path[i], **{k: v[i] for k, v in verdicts.items()}}
            for i in range(len(prompts))]
    for i, row in enumerate(rows):  # the pruned decode after a dense prompt: as fluent as AAPP's?
        if row["dp_path"] == "dense-prefill":
            row["answer_nll"] = {k: answer_nll(model, tok, prompts[i], answers[k][i]) for k in ("dp", "aapp", "dense")}
    target, restart, _ = path_costs(model.config, tok, adaptive, prompts, MAX_NEW_TOKENS)
    _, dense, dense_prefill = path_costs(model.config, tok, dp, prompts, MAX_NEW_TOKENS)
    return rows, (target, restart, dense_prefill, dense)


DP_THRESHOLDS = (ADAPTIVE_THRESHOLD, 0.6, 0.7, 0.8, 0.9)  # >= the recorded one: simulated exactly


def dense_prefill_outcome(rows: list[Row], costs: tuple[float, ...], t: float = ADAPTIVE_THRESHOLD) -> dict:
    """The dense-prefill path with the risk gate's threshold at ``t``: the shares of rows whose prefill
    ran dense and of rows that stayed dense for the decode, its refusal rates and its FLOPs per request
    (``record``'s costs: target, restart, dense prefill + AAPP decode, dense). At the recorded
    threshold these are its own answers; a higher ``t`` only returns flagged rows to AAPP, whose answers
    there are AAPP's (the path's unflagged rows run AAPP's exact decisions), so it is exact too. Where rows
    decoded pruned after a dense prefill, ``answer_nll_{dp,aapp,dense}``: the dense model's mean NLL per
    token of their answers on this path, under AAPP and under the dense model (fluency)."""
    if t < ADAPTIVE_THRESHOLD:
        raise ValueError(f"t={t}: below the recorded threshold {ADAPTIVE_THRESHOLD} the rows' outcomes are unknown")
    n = max(1, len(rows))
    path = [r["dp_path"] if r["risk_gate"] >= t else "aapp" for r in rows]
    verdict = lambda r, p, k: r[("aapp_" if p == "aapp" else "dp_") + k]  # noqa: E731
    cost = {"aapp": costs[0], "dense-prefill": costs[2], "dense": costs[3]}
    out = {"dense_prefill_share": round(sum(p != "aapp" for p in path) / n, 4),
           "dense_share": round(sum(p == "dense" for p in path) / n, 4),
           "refusal_marker": round(sum(verdict(r, p, "marker") for r, p in zip(rows, path)) / n, 4),
           "refusal_strict": round(sum(verdict(r, p, "strict") for r, p in zip(rows, path)) / n, 4),
           "flops_ratio": round(sum(cost[p] for p in path) / n, 4)}
    scored = [r["answer_nll"] for r, p in zip(rows, path) if p == "dense-prefill" and "answer_nll" in r
              and None not in r["answer_nll"].values()]
    if scored:  # the dense model's mean NLL per token of the answers decoded pruned after a dense prefill
        out |= {f"answer_nll_{k}": round(sum(x[k] for x in scored) / len(scored), 4) for k in ("dp", "aapp", "dense")}
    return out


def held_out_perplexity(model, tok, stats, circuits, sparsity: float, texts: list[str]) -> dict[str, float]:
    """Perplexity on the card's evaluation text of dense, PP, AAPP and aapp-adaptive on each of its paths
    (``aapp-eval``'s figure; issue 21's target: aapp-adaptive's no worse than PP's)."""
    from aapp_export.choices import ADAPTIVE_PATHS
    from aapp_export.evaluate import perplexity
    from aapp_export.pruning import Pruner, PruneConfig

    configs = {"pp": PruneConfig("pp", sparsity), "aapp": PruneConfig("aapp", sparsity)}
    configs |= {f"aapp-adaptive/{path}": PruneConfig("aapp-adaptive", sparsity, adaptive_path=path) for path in ADAPTIVE_PATHS}
    out = {"dense": round(perplexity(model, tok, texts), 4)}
    for name, cfg in configs.items():
        out[name] = round(perplexity(model, tok, texts, Pruner(model, cfg, stats, circuits.protection())), 4)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo")
    p.add_argument("--sparsity", type=float, default=0.4)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--limit", type=int, default=None, help="the first N prompts of each file (a quick check)")
    p.add_argument("--splits", default=",".join(SPLITS), help="held-out splits to measure (val chooses)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "routing.json")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts"))
    import torch
    from reproduce_table import card_calibration, prompt_files

    from aapp_export.calibration import load_model, read_lines
    from aapp_export.checkpoint import resolve_checkpoint

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    ckpt = resolve_checkpoint(args.model)
    files = prompt_files(ckpt)
    model, tok = load_model(ckpt.path, device=device)
    stats, circuits = card_calibration(ckpt, model, tok, files)
    data = ckpt.path / "data"
    recorded = {f"{c}_{s}": record(model, tok, stats, circuits, args.sparsity,
                                   read_lines(data / f"{c}_{s}.txt")[:args.limit], f"{c}_{s}")
                for s in args.splits.split(",") for c in CLASSES if (data / f"{c}_{s}.txt").is_file()}
    rules = [{"rule": name, "t": t, **{key: simulate(rows, rule, t, costs) for key, (rows, costs) in recorded.items()}}
             for name, (rule, ts) in RULES.items() for t in ts]
    report = {"model": str(ckpt.source), "sparsity": args.sparsity, "device": device, "limit": args.limit,
              "refusal_token": circuits.check["by_scorer"][circuits.scorer]["refusal_token"],
              "scorer": circuits.scorer, "budget": circuits.budget,
              "consistency": {key: consistency(rows) for key, (rows, _) in recorded.items()},
              "path_costs": {key: [round(c, 4) for c in costs] for key, (_, costs) in recorded.items()},
              "rules": rules,
              "dense_prefill_path": {key: dense_prefill_outcome(rows, costs) for key, (rows, costs) in recorded.items()},
              "dense_prefill_thresholds": [{"t": t, **{key: dense_prefill_outcome(rows, costs, t)
                                                       for key, (rows, costs) in recorded.items()}}
                                           for t in DP_THRESHOLDS],
              # the path as aapp-adaptive runs it by default: at the calibration's threshold
              "adaptive_threshold": round(circuits.adaptive_threshold, 4),
              "adaptive_threshold_from": circuits.adaptive_threshold_from,
              "dense_prefill_at_calibration": {key: dense_prefill_outcome(rows, costs, circuits.adaptive_threshold)
                                               for key, (rows, costs) in recorded.items()},
              "per_prompt": {key: rows for key, (rows, _) in recorded.items()},
              "perplexity": held_out_perplexity(model, tok, stats, circuits, args.sparsity,
                                                read_lines(files["evaluation", "text"])[:args.limit])}
    if "val" in args.splits.split(","):
        report["chosen_on_val"] = choose_on_val(rules)
        current = next(r for r in rules if r["rule"] == "current")["harmful_val"]["refusal_strict"]
        report["chosen_on_val"]["dense-prefill"] = choose_on_val(
            [{"rule": "dense-prefill", **r} for r in report["dense_prefill_thresholds"]], current)["dense-prefill"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print("consistency with aapp-adaptive's own verdicts:", report["consistency"])
    print("perplexity on the evaluation text:", report["perplexity"])
    for r in rules:
        cells = [f"{k}: dense {v['dense_share']:.3f} ref {v['refusal_marker']:.3f}/{v['refusal_strict']:.3f} "
                 f"flops {v['flops_ratio']:.3f}" for k, v in r.items() if isinstance(v, dict) and not k.startswith("borderline")]
        print(f"{r['rule']:17s} t={r['t']:<5}", " | ".join(cells))
    for row in report["dense_prefill_thresholds"] + [{"t": report["adaptive_threshold"],
                                                      **report["dense_prefill_at_calibration"]}]:
        cells = [f"{k}: prefill dense {v['dense_prefill_share']:.3f} dense {v['dense_share']:.3f} ref "
                 f"{v['refusal_marker']:.3f}/{v['refusal_strict']:.3f} flops {v['flops_ratio']:.3f}"
                 for k, v in row.items() if k != "t" and not k.startswith("borderline")]
        print(f"dense-prefill t={row['t']:<4}", " | ".join(cells))


if __name__ == "__main__":
    main()
