"""Would a dead zone in AAPP's gate close its perplexity gap to PP? An investigation (issue 21).

    python scripts/gate_dead_zone.py [--model demo] [--zones 0,0.1,0.25,0.5] [--held-out val2,test]
        [--out report.json]

Until 2026-12-07 AAPP forced ``round(gate x |protected|)`` protected units in at any gate, so a request
whose risk gate reads a little above 0 (general text reads 0.00-0.20 on the demo) gave up a few of PP's
units, and AAPP's perplexity on held-out text sat above PP's. This script sets the rule's dead zone
(``probe.forced_count``'s ``dead_zone``: "force nothing below ``zone``", then a ramp to the whole set at
gate 1; ``docs/results/gate_dead_zone.json`` was measured before the ramp, with the step "``round(gate x
|protected|)`` from ``zone`` on") for the run only and measures, for each
zone, AAPP at ``--sparsity`` and aapp-adaptive (its default path) on the calibration's check files
(``harmful_val`` / ``harmless_val``: the splits knobs are chosen on; val2 and test take no part): marker
and strict refusal, over-refusal, and perplexity on the card's evaluation text. Zone 0 is the old rule,
0.5 the shipped one (``choices.GATE_DEAD_ZONE``, adopted from this investigation). ``--held-out
SPLITS`` then explains, prompt by prompt, what the shipped zone changed on held-out splits (no choice is
made on them): each prompt's risk gate and its verdicts (marker, strict) under PP, AAPP with the old
rule and AAPP with the shipped one, and the prompts whose verdict moved. Prints and writes JSON;
nothing in the package changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def dead_zone(zone: float):
    """AAPP's forcing rule with ``zone`` as its dead zone (``probe.forced_count``'s ``dead_zone``) for
    the block; the shipped rule again after it."""
    from aapp_export import probe

    shipped = probe.forced_count
    probe.forced_count = lambda g, n, k: shipped(g, n, k, dead_zone=zone)
    try:
        yield
    finally:
        probe.forced_count = shipped


def text_gates(model, tokenizer, texts: list[str], stats, circuits, sparsity: float) -> dict:
    """AAPP's risk gate on each of ``texts`` read as a perplexity request reads it (plain text, last
    token): its quantiles, and how many texts reach 0.1 / 0.25 / 0.5."""
    import torch

    from aapp_export.placement import to_model
    from aapp_export.pruning import Pruner, PruneConfig

    values = []
    pruner = Pruner(model, PruneConfig("aapp", sparsity), stats, circuits.protection())
    with torch.no_grad(), pruner:
        for t in texts:
            pruner.new_request()
            model(**to_model(tokenizer([t], return_tensors="pt"), model))
            values.append(float(pruner.log.gate[0]))
    q = torch.tensor(values).quantile(torch.tensor([0.0, 0.5, 0.9, 1.0])).tolist()
    return {"n": len(values), "min_median_p90_max": [round(v, 4) for v in q],
            "reaching": {str(z): sum(v >= z for v in values) for z in (0.1, 0.25, 0.5)}}


def held_out_changes(model, tokenizer, prompts: list[str], stats, circuits, sparsity: float,
                     max_new_tokens: int) -> dict:
    """For one prompt file: how many prompts read a gate below the shipped zone, the marker and strict
    verdict counts under ``pp``, ``aapp`` with the old rule (zone 0) and ``aapp`` as shipped, and every
    prompt whose verdict differs between the two rules (its gate and the opening of each answer)."""
    from aapp_export.choices import GATE_DEAD_ZONE
    from aapp_export.evaluate import clause_nll, generate_answers
    from aapp_export.pruning import Pruner, PruneConfig
    from aapp_export.refusal import is_refusal, strict_verdicts

    answers = {}
    for name, method, zone in (("pp", "pp", GATE_DEAD_ZONE), ("aapp_old_rule", "aapp", 0.0),
                               ("aapp", "aapp", GATE_DEAD_ZONE)):
        with dead_zone(zone):
            pruner = Pruner(model, PruneConfig(method, sparsity), stats,
                            circuits.protection() if method == "aapp" else None)
            answers[name] = generate_answers(model, tokenizer, prompts, max_new_tokens, pruner)
    gates = []
    pruner = Pruner(model, PruneConfig("aapp", sparsity), stats, circuits.protection())
    for p in prompts:  # one request each: the gate of its own prefill
        generate_answers(model, tokenizer, [p], 1, pruner)
        gates.append(round(float(pruner.log.gate[0]), 4))
    verdicts = {name: list(zip(map(is_refusal, a), strict_verdicts(prompts, a, lambda p, x: clause_nll(
        model, tokenizer, p, x)))) for name, a in answers.items()}
    moved = [{"index": i, "gate": gates[i], **{name: {"marker": verdicts[name][i][0], "strict": verdicts[name][i][1],
                                                   "answer": answers[name][i][:80]} for name in answers}}
             for i in range(len(prompts)) if verdicts["aapp"][i] != verdicts["aapp_old_rule"][i]]
    return {"n": len(prompts), "below_zone": sum(g < GATE_DEAD_ZONE for g in gates),
            "marker": {name: sum(m for m, _ in v) for name, v in verdicts.items()},
            "strict": {name: sum(s for _, s in v) for name, v in verdicts.items()}, "moved": moved}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--sparsity", type=float, default=0.4)
    ap.add_argument("--zones", default="0,0.1,0.25,0.5")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--held-out", default=None, help="splits to explain prompt by prompt, e.g. val2,test")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    from reproduce_table import card_calibration, prompt_files

    from aapp_export.calibration import load_model, read_lines
    from aapp_export.checkpoint import resolve_checkpoint
    from aapp_export.evaluate import run_eval

    ckpt = resolve_checkpoint(args.model)
    files = prompt_files(ckpt)
    model, tok = load_model(ckpt.path)
    stats, circuits = card_calibration(ckpt, model, tok, files)
    harmful, harmless = read_lines(files["calibration", "check"]), read_lines(files["calibration", "check_harmless"])
    text = read_lines(files["evaluation", "text"])
    gates = {name: text_gates(model, tok, read_lines(files[section, "text"]), stats, circuits, args.sparsity)
             for name, section in (("calibration_text", "calibration"), ("evaluation_text", "evaluation"))}
    print(json.dumps(gates), file=sys.stderr)
    rows = [{"method": "pp", "zone": None,
             **run_eval(model, tok, "pp", args.sparsity, harmful, harmless, text, stats, None,
                        args.max_new_tokens).to_json()}]
    for zone in (float(z) for z in args.zones.split(",")):
        for method in ("aapp", "aapp-adaptive"):
            with dead_zone(zone):
                row = run_eval(model, tok, method, args.sparsity, harmful, harmless, text, stats, circuits,
                               args.max_new_tokens).to_json()
            rows.append({"method": method, "zone": zone, **row})
            print(json.dumps(rows[-1]), file=sys.stderr)
    report = {"model": str(ckpt.source), "sparsity": args.sparsity, "scorer": circuits.scorer,
              "budget": circuits.budget, "files": {"harmful": files["calibration", "check"].name,
                                                   "harmless": files["calibration", "check_harmless"].name},
              "command": "python scripts/gate_dead_zone.py " + " ".join(argv or sys.argv[1:]),
              "text_gates": gates, "rows": rows}
    if args.held_out:
        data = ckpt.path / "data"
        report["held_out"] = {f"{cls}_{split}": held_out_changes(model, tok, read_lines(data / f"{cls}_{split}.txt"),
                                                                 stats, circuits, args.sparsity, args.max_new_tokens)
                              for split in args.held_out.split(",") for cls in ("harmful", "harmless")}
    print(json.dumps(report, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
