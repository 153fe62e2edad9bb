"""Is the alignment calibration stable? Calibrate on two disjoint halves of the calibration prompts and
compare what each chooses: the scorer (by the causal check), its margin, and every scorer's protected
units (overlap between the halves, and with the calibration on all prompts). Issue 21.

    python scripts/calibration_stability.py [--model demo] [--budget F] [--out report.json]

The harmful and harmless calibration files and the causal check's held-out harmful and harmless files
are split by alternate lines into halves A and B (no prompt in both); the general text (history
statistics) is shared. Each
half runs the export's calibration (all scorers scored on its calibration prompts, each checked
causally on its half of the check file: marker and strict refusal under AAPP at 0.4 at every budget,
over-refusal on its half of the harmless check file, and the ablation gap). Overlap is |A & B| / |A|
per kind (heads, channels), pooled over the pruned layers, at 5% and at the budget the calibration on
every prompt keeps. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def halves(path: Path, work: Path) -> tuple[Path, Path]:
    from aapp_export.calibration import read_lines

    lines = read_lines(path)
    out = []
    for k, part in enumerate((lines[0::2], lines[1::2])):
        f = work / f"{'AB'[k]}_{path.name}"
        f.write_text("\n".join(part) + "\n")
        out.append(f)
    return out[0], out[1]


def protected_sets(circuits, budget: float) -> dict[str, dict[str, set]]:
    """Every scorer's protected (layer, unit) pairs, heads and channels."""
    from aapp_export.circuits import protected_units

    out = {}
    for name, (hs, cs) in circuits.scores.items():
        out[name] = {kind: {(i, int(u)) for i, units in enumerate(protected_units(sc, budget)) for u in units.tolist()}
                     for kind, sc in (("heads", hs), ("channels", cs))}
    return out


def overlap(a: dict[str, set], b: dict[str, set]) -> dict[str, float]:
    return {kind: round(len(a[kind] & b[kind]) / max(1, len(a[kind])), 4) for kind in a}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo")
    p.add_argument("--budget", type=float, default=None,
                   help="pin the protected fraction (default: each run chooses it, as the export does; overlaps at 0.05)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    from reproduce_table import prompt_files

    from aapp_export.calibration import cached_calibration, load_model
    from aapp_export.checkpoint import resolve_checkpoint
    from aapp_export.choices import BUDGETS

    ckpt = resolve_checkpoint(args.model)
    files = prompt_files(ckpt)
    model, tok = load_model(ckpt.path)
    work = Path(tempfile.mkdtemp(prefix="calib-halves-"))
    (ha, hb), (sa, sb) = halves(files["calibration", "harmful"], work), halves(files["calibration", "harmless"], work)
    (ca, cb), check = halves(files["calibration", "check"], work), files["calibration", "check"]
    (xa, xb), check_harmless = halves(files["calibration", "check_harmless"], work), files["calibration", "check_harmless"]
    text = files["calibration", "text"]
    runs = {}
    for name, harmful, harmless, held_out, held_out_harmless in (
            ("all", files["calibration", "harmful"], files["calibration", "harmless"], check, check_harmless),
            ("A", ha, sa, ca, xa), ("B", hb, sb, cb, xb)):
        # cached: the run on every prompt is the export's own calibration (aapp-export stores it), and a rerun
        # of this script reads all three
        _, circuits = cached_calibration(ckpt.path, model, tok, harmful=harmful, harmless=harmless, text=text,
                                         budget=args.budget, check=held_out, check_harmless=held_out_harmless,
                                         log=lambda m: print(m, file=sys.stderr))
        runs[name] = circuits
    compared = BUDGETS[0] if args.budget is None else args.budget
    sets = {name: protected_sets(c, compared) for name, c in runs.items()}
    kept = runs["all"].budget  # the fraction the calibration on every prompt keeps: overlaps there too
    kept_sets = {name: protected_sets(c, kept) for name, c in runs.items()}
    report = {"model": str(ckpt.source), "budget": args.budget, "overlap_budget": compared,
              "chosen_budget": {name: c.budget for name, c in runs.items()},
              **{f"by_budget{suffix}": {name: {b: v.get(key) for b, v in c.check.get("by_budget", {}).items()}
                                        for name, c in runs.items()}
                 for suffix, key in (("", "refusal"), ("_strict", "strict_refusal"), ("_over_refusal", "over_refusal"),
                                     ("_refusal_token_prob", "refusal_token_prob"))},
              "prompts": {"harmful": len(files["calibration", "harmful"].read_text().split("\n")) - 1},
              "chosen_scorer": {name: c.scorer for name, c in runs.items()},
              "criterion": {name: c.check.get("criterion") for name, c in runs.items()},
              "check_prompts": {name: c.check.get("prompts") for name, c in runs.items()},
              "pp_refusal_at_check": {name: c.check.get("pp", {}).get("refusal") for name, c in runs.items()},
              "causal_check": {name: {s: {**{k: v[k] for k in ("gap", "prob_gap", "protected_ablated_refusal_token_prob")},
                                          "aapp_refusal": v.get("sufficiency", {}).get("refusal"),
                                          "aapp_refusal_token_prob": v.get("sufficiency", {}).get("refusal_token_prob"),
                                          "aapp_strict_refusal": v.get("sufficiency", {}).get("strict_refusal"),
                                          "aapp_over_refusal": v.get("sufficiency", {}).get("over_refusal"),
                                          "kept_budget": v.get("budget"),
                                          "net_by_budget": {b: x.get("net", x.get("strict_refusal"))
                                                            for b, x in v.get("by_budget", {}).items()}}
                                      for s, v in c.check.get("by_scorer", {}).items()} for name, c in runs.items()},
              "overlap_A_vs_B": {s: overlap(sets["A"][s], sets["B"][s]) for s in sets["A"]},
              "overlap_half_vs_all": {f"{h}/{s}": overlap(sets[h][s], sets["all"][s]) for h in "AB" for s in sets[h]},
              "overlap_at_kept_budget": kept,
              "overlap_A_vs_B_at_kept_budget": {s: overlap(kept_sets["A"][s], kept_sets["B"][s]) for s in kept_sets["A"]},
              "gate": {name: {"layer": c.gate_layer, "threshold": round(c.threshold, 4),
                              "temperature": round(c.temperature, 4)} for name, c in runs.items()},
              "direction_cosine_A_B": round(float(runs["A"].direction @ runs["B"].direction), 4)}
    text_out = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text_out + "\n")
    print(text_out)


if __name__ == "__main__":
    main()
