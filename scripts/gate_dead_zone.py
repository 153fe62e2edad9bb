"""Would a dead zone in AAPP's gate close its perplexity gap to PP? An investigation (issue 21).

    python scripts/gate_dead_zone.py [--model demo] [--zones 0,0.1,0.25,0.5] [--out report.json]

AAPP forces ``round(gate x |protected|)`` protected units in (``probe.forced_count``), so a request whose
risk gate reads a little above 0 (general text reads 0.00-0.20 on the demo) still gives up a few of PP's
units, and AAPP's perplexity on held-out text sits above PP's. This script replaces the rule, for the
run only, by "force nothing below ``zone``, else ``round(gate x |protected|)``" and measures, for each
zone, AAPP at ``--sparsity`` and aapp-adaptive (its default path) on the calibration's check files
(``harmful_val`` / ``harmless_val``: the splits knobs are chosen on; val2 and test take no part): marker
and strict refusal, over-refusal, and perplexity on the card's evaluation text. Zone 0 is the shipped
rule. Prints and writes JSON; nothing in the package changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--sparsity", type=float, default=0.4)
    ap.add_argument("--zones", default="0,0.1,0.25,0.5")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    from reproduce_table import card_calibration, prompt_files

    from aapp_export import probe
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
    shipped = probe.forced_count
    rows = [{"method": "pp", "zone": None,
             **run_eval(model, tok, "pp", args.sparsity, harmful, harmless, text, stats, None,
                        args.max_new_tokens).to_json()}]
    try:
        for zone in (float(z) for z in args.zones.split(",")):
            probe.forced_count = (lambda g, n, k, z=zone: 0 if g < z else shipped(g, n, k))
            for method in ("aapp", "aapp-adaptive"):
                row = run_eval(model, tok, method, args.sparsity, harmful, harmless, text, stats, circuits,
                               args.max_new_tokens).to_json()
                rows.append({"method": method, "zone": zone, **row})
                print(json.dumps(rows[-1]), file=sys.stderr)
    finally:
        probe.forced_count = shipped
    report = {"model": str(ckpt.source), "sparsity": args.sparsity, "scorer": circuits.scorer,
              "budget": circuits.budget, "files": {"harmful": files["calibration", "check"].name,
                                                   "harmless": files["calibration", "check_harmless"].name},
              "command": "python scripts/gate_dead_zone.py " + " ".join(argv or sys.argv[1:]),
              "text_gates": gates, "rows": rows}
    print(json.dumps(report, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
