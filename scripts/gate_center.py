"""Where should the risk gate's centre sit? The calibration centres the gate, ``sigmoid((p - c) / T)``, at the
midpoint ``c`` of the class means of the projections of its own scored prompts; held-out harmless prompts
can sit above it (fp32 seed 2: 63% of ``harmless_val``). This script asks what centring it on the held-out check split instead
(``harmful_val`` / ``harmless_val``, the calibration's causal-check prompts; never val2 or test) would do
to aapp-adaptive's dense-prefill path. Issue 21.

    python scripts/gate_center.py [--routing FILE ...] [--out DIR]

Each ``--routing`` file is ``scripts/measure_routing.py``'s report for one checkpoint (default: the
shipped model's ``docs/results/routing.json`` and every ``docs/results/seeds/*/routing.json``). It holds
every prompt's risk gate and the dense-prefill path's outcome at the recorded threshold 0.5. The gate is
monotone in the projection, so a centre ``c'`` is the present gate read at the threshold
``t' = sigmoid((c' - c) / T)``; with ``c'`` the midpoint of the check split's class means, ``(c' - c) / T`` is
the midpoint of the two classes' mean gate logits, computed from the recorded gates (rounded to four
decimals: a gate of exactly 0 or 1 is clipped, and the report counts them). A higher threshold only sends
flagged rows back to AAPP, whose answers the report holds, so ``measure_routing.dense_prefill_outcome``
gives the path at ``t'`` exactly. The calibration never sets a threshold below 0.5 (``probe.routing_threshold``,
which reads ``t'`` from the projections themselves), so a ``t'`` below 0.5 is read at 0.5, the recorded path.

Per report and split: harmful strict refusal, the harmless requests' share that prefilled dense, their
FLOPs relative to dense against PP's (the path's AAPP cost), and over-refusal, at 0.5 and at ``t'``; then
the mean over the seeds' reports (``seeds/*``). Prints markdown; ``--out DIR`` writes ``gate_center.json``
and ``gate_center.md``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from measure_routing import dense_prefill_outcome
from pooled_reports import default_reports, read_reports, write_outputs

from aapp_export.choices import ADAPTIVE_THRESHOLD

CLIP = 1e-4  # half the recorded gates' last decimal: 0.0 and 1.0 read as 1e-4 and 1 - 1e-4
SPLITS = ("val", "val2", "test")


class GateCenterError(Exception):
    """A routing report that cannot be read."""


def gate_logit(gate: float) -> float:
    """``(p - c) / T`` of a recorded gate value, clipped to ``[CLIP, 1 - CLIP]``."""
    g = min(max(gate, CLIP), 1.0 - CLIP)
    return math.log(g / (1.0 - g))


def check_threshold(harmful: list[dict], harmless: list[dict]) -> tuple[float, int]:
    """The threshold on the present gate equal to a gate centred at the midpoint of the check split's class
    means, and how many of the check rows were clipped."""
    if not harmful or not harmless:
        raise GateCenterError("the report has no harmful_val or harmless_val rows; run measure_routing.py with "
                              "--splits including val")
    mid = (statistics.fmean(gate_logit(r["risk_gate"]) for r in harmful)
           + statistics.fmean(gate_logit(r["risk_gate"]) for r in harmless)) / 2
    clipped = sum(not CLIP <= r["risk_gate"] <= 1.0 - CLIP for r in harmful + harmless)
    return 1.0 / (1.0 + math.exp(-mid)), clipped


def outcome(report: dict, split: str, t: float) -> dict:
    """The dense-prefill path on ``split`` (harmful and harmless files) at threshold ``t`` (at least 0.5)."""
    rows, costs = report["per_prompt"], report["path_costs"]  # costs: target (PP's), restart, dense prefill, dense
    harmful = dense_prefill_outcome(rows[f"harmful_{split}"], tuple(costs[f"harmful_{split}"]), t)
    harmless = dense_prefill_outcome(rows[f"harmless_{split}"], tuple(costs[f"harmless_{split}"]), t)
    return {"harmful_strict": harmful["refusal_strict"], "harmless_prefill_dense": harmless["dense_prefill_share"],
            "harmless_flops": harmless["flops_ratio"], "pp_harmless_flops": round(costs[f"harmless_{split}"][0], 4),
            "over_refusal_marker": harmless["refusal_marker"], "over_refusal_strict": harmless["refusal_strict"]}


def splits_of(report: dict) -> list[str]:
    """The splits of ``SPLITS`` whose harmful and harmless files the report measured."""
    have = set(report["per_prompt"]) & set(report["path_costs"])
    return [s for s in SPLITS if {f"harmful_{s}", f"harmless_{s}"} <= have]


def study(reports: dict[str, dict]) -> dict:
    """Per report the check-split threshold and the path at 0.5 and there; the mean over the seeds' (on the
    splits every seed measured)."""
    per = {}
    for name, report in reports.items():
        if "per_prompt" not in report or "path_costs" not in report:
            raise GateCenterError(f"{name}: no per_prompt / path_costs (a routing report before 2026-12-07?); "
                                  "run scripts/measure_routing.py again")
        t, clipped = check_threshold(report["per_prompt"].get("harmful_val", []),
                                     report["per_prompt"].get("harmless_val", []))
        splits = splits_of(report)
        # the calibration's own threshold (probe.routing_threshold, from the projections themselves, not the
        # rounded gates; reports written before the calibration chose one have none)
        per[name] = {"threshold": round(t, 4), "clipped_check_rows": clipped,
                     "calibration_threshold": report.get("adaptive_threshold"),
                     "at_0.5": {s: outcome(report, s, ADAPTIVE_THRESHOLD) for s in splits},
                     "at_check_center": {s: outcome(report, s, max(t, ADAPTIVE_THRESHOLD)) for s in splits}}
    seeds = [n for n in per if n != "shipped"]
    common = [s for s in SPLITS if seeds and all(s in per[n]["at_0.5"] for n in seeds)]
    mean = {}
    for at in ("at_0.5", "at_check_center"):
        rows = {s: [per[n][at][s] for n in seeds] for s in common}
        mean[at] = {s: {k: round(statistics.fmean(x[k] for x in r), 4) for k in r[0]} for s, r in rows.items()}
    return {"reports": per, "seeds": seeds, "mean_of_seeds": mean}


def markdown(result: dict) -> str:
    lines = ["| report | threshold | split | harmful strict (0.5 -> t') | harmless prefill dense | harmless FLOPs (PP) "
             "| over-refusal marker / strict |", "|---|---|---|---|---|---|---|"]
    rows = [(n, f"{r['threshold']:.3f}" + ("" if r.get("calibration_threshold") is None
                                            else f" (calibration {r['calibration_threshold']:.3f})"),
             r["at_0.5"], r["at_check_center"]) for n, r in result["reports"].items()]
    if len(result["seeds"]) > 1:
        rows.append((f"mean of {len(result['seeds'])} seeds", "", *result["mean_of_seeds"].values()))
    for name, t, at5, at in rows:
        for s in at5:
            a, b = at5[s], at[s]
            lines.append(
                f"| {name} | {t} | {s} | {a['harmful_strict']:.1%} -> {b['harmful_strict']:.1%} "
                f"| {a['harmless_prefill_dense']:.1%} -> {b['harmless_prefill_dense']:.1%} "
                f"| {a['harmless_flops']:.3f} -> {b['harmless_flops']:.3f} ({a['pp_harmless_flops']:.3f}) "
                f"| {a['over_refusal_marker']:.1%} / {a['over_refusal_strict']:.1%} -> "
                f"{b['over_refusal_marker']:.1%} / {b['over_refusal_strict']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routing", type=Path, nargs="*", default=None,
                    help="measure_routing.py reports (default: the shipped model's and every seed's)")
    ap.add_argument("--out", type=Path, default=None, help="write gate_center.json and gate_center.md here")
    args = ap.parse_args(argv)
    try:
        result = study(read_reports(args.routing or default_reports("routing.json"), "measure_routing.py",
                                    GateCenterError))
    except GateCenterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_outputs(result, markdown(result), args.out, "gate_center")
    return 0


if __name__ == "__main__":
    sys.exit(main())
