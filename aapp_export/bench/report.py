"""The engine comparison's report: each engine's rounds pooled into summaries, the agreement of every
engine's greedy tokens and prefill logits with the reference's, the ratios of ours to each baseline,
and the bar chart."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from .engines import REFERENCE
from .plan import BenchPlan, summary, timed_keys


def merge(records: list[dict[str, Any]], plan: BenchPlan) -> dict[str, Any]:
    """Pool the runs of one engine's rounds into summaries."""
    keys = timed_keys(plan.prompt_lengths)
    out: dict[str, Any] = {k: summary([v for r in records for v in r[k]]) for k in keys}
    steps = [v for r in records for v in r["decode_step_ms"]]
    out["decode_step_ms"] = {"p10": round(float(np.percentile(steps, 10)), 3), "median": round(statistics.median(steps), 3),
                             "p90": round(float(np.percentile(steps, 90)), 3), "n": len(steps)}
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in records)
    out["load_s"] = summary([r["load_s"] for r in records])["median"]
    out["greedy_tokens"] = records[-1]["greedy_tokens"]
    out["greedy_tokens_stable_across_rounds"] = all(r["greedy_tokens"] == records[0]["greedy_tokens"] for r in records)
    out["rounds"] = [{k: r[k] for k in ("wall_s", "cpu_s", "load_average_1m", "other_processes_cpu_fraction") if k in r}
                     for r in records]
    return out


def agreement(results: dict[str, Any], logits_files: dict[str, Path], plan: BenchPlan) -> dict[str, Any]:
    """Greedy tokens and prefill logits of every engine against the reference (transformers), and
    ours against each genai engine; ``distinct_tokens`` shows the check is not a repeated token."""
    ref = REFERENCE if REFERENCE in results else next(iter(results), None)
    out: dict[str, Any] = {"reference": ref}
    if ref is None:
        return out
    logits = {e: dict(np.load(f)) for e, f in logits_files.items() if f.is_file()}
    out["distinct_tokens"] = len(set(results[ref]["greedy_tokens"]))
    pairs = [(e, ref) for e in results if e != ref] + [("ours", g) for g in results if g.startswith("genai") and "ours" in results]
    for a, b in pairs:
        ta, tb = results[a]["greedy_tokens"], results[b]["greedy_tokens"]
        entry: dict[str, Any] = {"tokens_identical": ta == tb,
                                 "first_divergence": next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), None)}
        if a in logits and b in logits:
            for n in plan.prompt_lengths:
                la, lb = logits[a][str(n)], logits[b][str(n)]
                entry[f"prefill_logits_max_abs_diff@{n}"] = float(f"{np.abs(la - lb).max():.3g}")
                entry[f"prefill_top1_same@{n}"] = bool(la.argmax() == lb.argmax())
        out[f"{a}_vs_{b}"] = entry
    return out


def ratios(results: dict[str, Any], plan: BenchPlan) -> dict[str, Any]:
    """ours / baseline for each metric's median and for peak RSS (< 1: ours is faster / smaller)."""
    if "ours" not in results:
        return {}
    keys = timed_keys(plan.prompt_lengths)
    out: dict[str, Any] = {}
    for engine, r in results.items():
        if engine != "ours":
            out[f"ours/{engine}"] = {k: round(results["ours"][k]["median"] / r[k]["median"], 3) for k in keys}
            out[f"ours/{engine}"]["peak_rss"] = round(results["ours"]["peak_rss_mb"] / r["peak_rss_mb"], 3)
    return out


def plot(report: dict[str, Any], path: Path) -> Path:
    """Bar chart: prefill at each length and decode ms/token per engine (medians, min-max whiskers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = list(report["engines"])
    metrics = timed_keys(report["plan"]["prompt_lengths"])
    colours = {"ours": "#2a7", "ours-onnx": "#7c9", "transformers": "#888", "genai": "#37c", "genai-last": "#69e"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8))
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        med = [report["engines"][e][metric]["median"] for e in engines]
        lo = [m - report["engines"][e][metric]["min"] for m, e in zip(med, engines)]
        hi = [report["engines"][e][metric]["max"] - m for m, e in zip(med, engines)]
        bars = ax.bar(engines, med, yerr=[lo, hi], capsize=4, color=[colours.get(e, "#999") for e in engines])
        ax.bar_label(bars, labels=[f"{m:.0f}" if m >= 100 else f"{m:.1f}" for m in med], fontsize=8, padding=2)
        ax.set_title(metric.replace("_ms", " ms").replace("_", " ").replace("@", " @"), fontsize=10)
        ax.set_ylabel("ms (median, min-max)")
        ax.tick_params(axis="x", labelsize=8)
    m = report["machine"]
    fig.suptitle(f"{report['family']} {report['parameters'] / 1e6:.0f}M fp32 CPU, {m['cpu']} x{m['cores']}, "
                 f"ORT {m['onnxruntime']}, genai {m.get('onnxruntime_genai')}, load {m['load_average_start'][0]}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
