"""Methods at one sparsity on several held-out splits, through the reference and (optionally) the graphs.

    python scripts/eval_splits.py [--model demo] [--sparsity 0.4] [--splits test,val2]
        [--methods dense,pp,aapp,aapp-adaptive] [--adaptive-thresholds calibration,0.5,0.7769]
        [--adaptive-path restart|dense-prefill] [--scorer S] [--budget F]
        [--onnx exported/demo] [--out docs/results/adaptive/eval_0.4_strict.json] [--update]

Each row is what ``aapp-eval --json`` prints for ``--harmful data/harmful_S.txt --harmless
data/harmless_S.txt`` (marker and strict refusal, over-refusal, perplexity on the card's evaluation
text, FLOPs per request of each file), plus ``split`` and, for aapp-adaptive, ``adaptive_threshold`` (the
calibration's unless ``--adaptive-thresholds`` names others; ``adaptive_threshold_pinned`` says which)
and ``adaptive_path`` (default dense-prefill; the graphs run it through the split prefill; rows written
before it was the default and without the key took the restart path).
The reference's rows use the card's calibration (cached, as ``aapp-eval`` and ``reproduce_table.py``
do); with ``--onnx DIR`` the model dir's graphs (``aapp-eval --engine onnx``) answer the same prompts
for the methods the runtime runs. The splits' files live in the checkpoint's ``data/`` folder.
Prints a markdown table and writes the rows as JSON; with ``--update`` the rows replace those of the
same split, engine, method and threshold in the existing ``--out`` (``reproduce_table.merge_rows``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aapp_export.choices import ADAPTIVE_PATHS

ROOT = Path(__file__).resolve().parents[1]


def table(rows: list[dict]) -> str:
    lines = ["| split | engine | method | refusal (marker / strict) | over-refusal (marker / strict) | "
             "FLOPs harmful / harmless | perplexity |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["method"] + (f" (gate {r['adaptive_threshold']})" if "adaptive_threshold" in r else "") \
            + (f" ({r['adaptive_path']})" if "adaptive_path" in r else "")
        ppl = "" if r.get("perplexity") is None else f"{r['perplexity']:.3f}"
        lines.append(f"| {r['split']} | {r['engine']} | {name} | {r['refusal_rate']:.1%} / "
                     f"{r['strict_refusal_rate']:.1%} | {r['over_refusal_rate']:.1%} / "
                     f"{r['strict_over_refusal_rate']:.1%} | {r['flops_ratio_harmful']:.3f} / "
                     f"{r['flops_ratio_harmless']:.3f} | {ppl} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--sparsity", type=float, default=0.4)
    ap.add_argument("--splits", default="test,val2")
    ap.add_argument("--methods", default="dense,pp,aapp,aapp-adaptive")
    ap.add_argument("--adaptive-thresholds", default="calibration",
                    help="aapp-adaptive's gate thresholds, one row each: 'calibration' (the calibration's, which "
                         "the runtime defaults to) or a gate value in [0, 1]")
    ap.add_argument("--adaptive-path", choices=ADAPTIVE_PATHS, default=None,
                    help="aapp-adaptive's path for a flagged request (choices.ADAPTIVE_PATHS; default "
                         "dense-prefill; --onnx: it needs a model dir exported with the split prefill)")
    ap.add_argument("--onnx", type=Path, default=None, help="an exported model dir of --model: its rows too")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--scorer", default=None, help="pin the calibration's scorer (default: the one it chooses)")
    ap.add_argument("--budget", type=float, default=None, help="pin the protected fraction (default: chosen)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--update", action="store_true", help="merge these rows into the existing --out file")
    args = ap.parse_args(argv)
    if args.update and args.out is None:
        ap.error("--update needs --out")
    if args.onnx is not None and (args.scorer or args.budget is not None):
        ap.error("--onnx: the graphs carry their export's protected set; pin --scorer/--budget at export instead")

    from reproduce_table import card_calibration, merge_rows, prompt_files

    from aapp_export.calibration import load_model, read_lines
    from aapp_export.checkpoint import resolve_checkpoint
    from aapp_export.choices import RUNTIME_METHODS
    from aapp_export.evaluate import run_eval
    from aapp_export.evaluate_onnx import run_eval_onnx

    ckpt = resolve_checkpoint(args.model)
    files = prompt_files(ckpt)
    model, tok = load_model(ckpt.path)
    stats, circuits = card_calibration(ckpt, model, tok, files, scorer=args.scorer, budget=args.budget)
    session = None
    if args.onnx is not None:
        from aapp_runtime import Session

        session = Session(args.onnx, provider="cpu")
    text = read_lines(files["evaluation", "text"])
    try:
        thresholds = [None if t == "calibration" else float(t) for t in args.adaptive_thresholds.split(",")]
    except ValueError:
        ap.error(f"--adaptive-thresholds {args.adaptive_thresholds}: a comma list of 'calibration' and gate values")
    rows = []
    for split in args.splits.split(","):
        harmful, harmless = (read_lines(ckpt.path / "data" / f"{c}_{split}.txt") for c in ("harmful", "harmless"))
        for method in args.methods.split(","):
            sparsity = 0.0 if method == "dense" else args.sparsity
            for threshold in thresholds if method == "aapp-adaptive" else [None]:
                extra = {} if threshold is None else {"adaptive_threshold": threshold}
                path = {"adaptive_path": args.adaptive_path} if method == "aapp-adaptive" and args.adaptive_path else {}
                row = run_eval(model, tok, method, sparsity, harmful, harmless, text, stats, circuits,
                               args.max_new_tokens, **extra, **path).to_json()
                rows.append({"split": split, "engine": "torch", **row})
                print(json.dumps(rows[-1]), file=sys.stderr)
                if session is not None and method in RUNTIME_METHODS:
                    row = run_eval_onnx(session, method, sparsity, harmful, harmless, text, args.max_new_tokens,
                                        adaptive_threshold=threshold, **path).to_json()
                    rows.append({"split": split, "engine": "onnx", **row})
                    print(json.dumps(rows[-1]), file=sys.stderr)
    print(table(rows))
    if args.out is not None:
        command = "python scripts/eval_splits.py " + " ".join(argv or sys.argv[1:])
        meta = {"model": str(ckpt.source), "sparsity": args.sparsity, "scorer": circuits.scorer,
                "budget": circuits.budget, "command": command}
        if args.update:
            rows, meta = merge_rows(args.out, rows, {"command": command},
                                    {"sparsity": args.sparsity, "scorer": circuits.scorer, "budget": circuits.budget})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
