"""The pruning tables of several training seeds side by side, and their mean: what issue 21's targets ask.

    python scripts/seed_summary.py --run "2 (shipped)=docs/results" \\
        --run "0=docs/results/seeds/train_seed0" --run "1=docs/results/seeds/train_seed1" \\
        [--mean "2 (shipped),0,1"] [--sparsity 0.4] [--out docs/results/seeds/summary]

Each ``--run NAME=DIR`` is one checkpoint's results folder, as the scripts write it:

- ``table.json`` (``scripts/reproduce_table.py --model CKPT --out DIR``): the test files;
- ``eval_val2.json``, else ``adaptive/eval_0.4_strict.json`` (``scripts/eval_splits.py --splits val2``):
  the second held-out set, whose rows of the reference (``engine`` torch, gate threshold 0.5) are read;
- ``calibration_stability.json`` (``scripts/calibration_stability.py``, optional): the calibration's
  choice on the whole check file and on its two halves, and the protected units' overlap between them.

For dense, pp, aapp and aapp-adaptive at ``--sparsity`` it writes, per run and as the mean over the
``--mean`` runs (default: all): refusal (marker / strict), over-refusal, FLOPs per request of each file
relative to dense, perplexity on the card's text, and each refusal as a ratio to the same run's dense (the issue's targets are ratios).
Writes ``DIR/summary.md`` and ``summary.json`` with ``--out``; prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from reproduce_table import pinned_threshold

METHODS = ("dense", "pp", "aapp", "aapp-adaptive")
EVAL_FILES = ("eval_val2.json", "adaptive/eval_0.4_strict.json")
FIELDS = ("refusal_rate", "strict_refusal_rate", "over_refusal_rate", "strict_over_refusal_rate",
          "flops_ratio_harmful", "flops_ratio_harmless", "perplexity")


class SummaryError(Exception):
    """A run's folder lacks a results file or the rows asked for."""


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SummaryError(f"{path}: cannot read it as JSON ({e}); write it with the script its name says") from e


def _pick(rows: list[dict], method: str, sparsity: float, where: str) -> dict:
    want = 0.0 if method == "dense" else sparsity
    found = [r for r in rows if r["method"] == method and abs(r["sparsity"] - want) < 1e-9
             and r.get("engine", "torch") == "torch" and not pinned_threshold(r)]
    if not found:
        raise SummaryError(f"{where}: no reference row for {method} at sparsity {want}; "
                           f"run it with --methods including {method}")
    return found[0]


def run_rows(folder: Path, sparsity: float) -> dict[str, dict[str, dict]]:
    """``{split: {method: row}}`` for the test files and val2 of one results folder."""
    table = _load(folder / "table.json")
    evals = [folder / f for f in EVAL_FILES if (folder / f).is_file()]
    if not evals:
        raise SummaryError(f"{folder}: none of {', '.join(EVAL_FILES)}; run scripts/eval_splits.py --model CKPT "
                           f"--splits val2 --out {folder / EVAL_FILES[0]}")
    val2 = [r for r in _load(evals[0])["rows"] if r["split"] == "val2"]
    out = {"test": {m: _pick(table["rows"], m, sparsity, str(folder / "table.json")) for m in METHODS},
           "val2": {m: _pick(val2, m, sparsity, str(evals[0])) for m in METHODS}}
    for split in out.values():  # the targets are ratios to the same checkpoint's dense
        dense = split["dense"]
        for row in split.values():
            row["_ratio"] = {key: row[key] / dense[key] if dense[key] else float("nan")
                             for key in ("refusal_rate", "strict_refusal_rate")}
    return out


def calibration_choice(folder: Path) -> dict | None:
    path = folder / "calibration_stability.json"
    if not path.is_file():
        return None
    d = _load(path)
    return {"scorer": d["chosen_scorer"], "budget": d["chosen_budget"], "check_prompts": d["check_prompts"],
            "overlap_A_vs_B": d["overlap_A_vs_B"], "direction_cosine_A_B": d.get("direction_cosine_A_B"),
            "aapp_refusal_at_check": {half: {s: v["aapp_refusal"] for s, v in by.items()}
                                      for half, by in d["causal_check"].items()},
            "pp_refusal_at_check": d["pp_refusal_at_check"]}


def mean_rows(runs: list[dict[str, dict[str, dict]]]) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for split in ("test", "val2"):
        out[split] = {}
        for m in METHODS:
            rows = [r[split][m] for r in runs]
            row = {k: statistics.fmean(x[k] for x in rows) for k in FIELDS}
            row["_ratio"] = {k: statistics.fmean(x["_ratio"][k] for x in rows) for k in ("refusal_rate", "strict_refusal_rate")}
            row["_spread"] = {k: [min(x[k] for x in rows), max(x[k] for x in rows)] for k in ("refusal_rate", "strict_refusal_rate")}
            out[split][m] = row
    return out


def markdown(named: dict[str, dict[str, dict[str, dict]]], sparsity: float) -> str:
    lines = ["| seed | split | method | refusal (marker / strict) | x dense (marker / strict) | over-refusal (marker / strict) "
             "| FLOPs harmful / harmless | perplexity |", "|---|---|---|---|---|---|---|---|"]
    for name, splits in named.items():
        for split, rows in splits.items():
            for m, r in rows.items():
                label = m if m == "dense" else f"{m} {sparsity}"
                lines.append(f"| {name} | {split} | {label} | {r['refusal_rate']:.1%} / {r['strict_refusal_rate']:.1%} | "
                             f"{r['_ratio']['refusal_rate']:.2f} / {r['_ratio']['strict_refusal_rate']:.2f} | "
                             f"{r['over_refusal_rate']:.1%} / {r['strict_over_refusal_rate']:.1%} | "
                             f"{r['flops_ratio_harmful']:.3f} / {r['flops_ratio_harmless']:.3f} | {r['perplexity']:.2f} |")
    return "\n".join(lines) + "\n"


def choices_markdown(choices: dict[str, dict | None]) -> str:
    lines = ["| seed | scorer (all / A / B) | budget (all / A / B) | AAPP refusal at the check, by scorer (all) | PP (all) "
             "| channel overlap A vs B (chosen scorer) |", "|---|---|---|---|---|---|"]
    for name, c in choices.items():
        if c is None:
            continue
        chosen = c["scorer"]["all"]
        by = ", ".join(f"{s} {v:.1%}" for s, v in c["aapp_refusal_at_check"]["all"].items())
        lines.append(f"| {name} | {' / '.join(c['scorer'][h] for h in ('all', 'A', 'B'))} | "
                     f"{' / '.join(str(c['budget'][h]) for h in ('all', 'A', 'B'))} | {by} | "
                     f"{c['pp_refusal_at_check']['all']:.1%} | {c['overlap_A_vs_B'][chosen]['channels']:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--mean", default=None, help="comma-separated run names to average (default: all)")
    ap.add_argument("--sparsity", type=float, default=0.4)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        folders = {}
        for spec in args.run:
            name, sep, folder = spec.partition("=")
            if not sep:
                raise SummaryError(f"--run {spec!r}: expected NAME=DIR")
            folders[name] = Path(folder)
        named = {name: run_rows(folder, args.sparsity) for name, folder in folders.items()}
        mean_names = list(named) if args.mean is None else [n.strip() for n in args.mean.split(",")]
        unknown = [n for n in mean_names if n not in named]
        if unknown:
            raise SummaryError(f"--mean: {unknown} are not among the --run names {list(named)}")
        label = f"mean of {len(mean_names)}"
        table = dict(named, **{label: mean_rows([named[n] for n in mean_names])})
        choices = {name: calibration_choice(folder) for name, folder in folders.items()}
    except SummaryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = (f"## Per seed, sparsity {args.sparsity} (reference; test files and val2)\n\n{markdown(table, args.sparsity)}\n"
            f"Mean over: {', '.join(mean_names)}.\n\n## The calibration's choice per seed (check file and its halves)\n\n"
            f"{choices_markdown(choices)}")
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.md").write_text(text)
        (args.out / "summary.json").write_text(json.dumps({
            "sparsity": args.sparsity, "runs": {n: str(f) for n, f in folders.items()}, "mean_over": mean_names,
            "rows": table, "calibration": choices, "command": "python scripts/seed_summary.py " + " ".join(
                f'"{a}"' if " " in a else a for a in (argv if argv is not None else sys.argv[1:]))}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
