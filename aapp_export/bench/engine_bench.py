"""``aapp-bench``'s engine comparison: our runtime vs transformers (eager) vs onnxruntime-genai (and our
model dir under optimum), side by side on the same checkpoint and the same token ids.

:func:`run_benchmark` prepares every engine's model (``builds``), then measures each engine in a fresh
subprocess per round (``worker``; its peak RSS is its own), rotating the engine order per round so
that a change of machine load does not land on one engine only; the report (``report``) gives median,
quartiles, min and max over all runs of all rounds, the ratios of ours to each baseline, and the
correctness that comes with the numbers: each engine's greedy tokens and last-position prefill logits
at every prompt length against transformers' (the reference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .builds import build_genai, build_ours, count_params, genai_available, graph_stats
from .engines import DEFAULT_ENGINES, ENGINE_NOTES, GENAI_BUILD_OPTIONS, OURS_ATTENTION
from .machine import machine_info
from .plan import BenchPlan
from .report import agreement, merge, ratios
from .worker import optimum_python, run_one

Log = Callable[[str], None]


def run_benchmark(checkpoint: Path, work: Path, plan: BenchPlan, engines: tuple[str, ...] = DEFAULT_ENGINES,
                  log: Log = print) -> dict[str, Any]:
    """Prepare every engine's model from ``checkpoint`` and measure them (``plan.rounds`` rounds, each
    engine in a fresh subprocess, order rotated per round); returns the JSON report."""
    from ..families import load_model_spec

    checkpoint, work = Path(checkpoint), Path(work)
    spec = load_model_spec(checkpoint)
    work.mkdir(parents=True, exist_ok=True)
    start_machine = machine_info()
    paths: dict[str, Path] = {}
    graphs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for engine in engines:
        if engine in OURS_ATTENTION:
            paths[engine] = build_ours(checkpoint, work / engine, log, OURS_ATTENTION[engine])
            graphs[engine] = graph_stats(paths[engine] / "model.onnx")
        elif engine == "transformers":
            paths[engine] = checkpoint
        elif engine in GENAI_BUILD_OPTIONS:
            if not genai_available():
                skipped[engine] = "onnxruntime-genai is not installed (pip install -e '.[bench]')"
                continue
            paths[engine] = build_genai(checkpoint, work / engine, log, GENAI_BUILD_OPTIONS[engine])
            graphs[engine] = graph_stats(paths[engine] / "model.onnx")
        elif engine == "optimum":
            if optimum_python() is None:
                skipped[engine] = "no optimum environment (bash scripts/optimum_env.sh, or AAPP_OPTIMUM_PYTHON)"
                continue
            paths[engine] = build_ours(checkpoint, work / "ours", log, OURS_ATTENTION["ours"])
    names = list(paths)
    records: dict[str, list[dict[str, Any]]] = {e: [] for e in names}
    for rnd in range(plan.rounds):
        order = names[rnd % len(names):] + names[: rnd % len(names)] if names else []
        for engine in order:
            log(f"round {rnd + 1}/{plan.rounds}: measuring {engine} ...")
            records[engine].append(run_one(engine, paths[engine], plan, spec.vocab_size, work / f"logits-{engine}.npz"))
    results = {e: {"how": ENGINE_NOTES[e], **merge(records[e], plan)} for e in names}
    end_machine = machine_info()
    machine = {**start_machine, "load_average_start": start_machine.pop("load_average"),
               "load_average_end": end_machine["load_average"]}
    machine.pop("load_average", None)
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint), "family": spec.family, "parameters": count_params(checkpoint),
        "shape": {"layers": spec.num_layers, "hidden": spec.hidden_size, "heads": spec.layers[0].num_heads,
                  "kv_heads": spec.layers[0].num_kv_heads, "head_dim": spec.head_dim, "vocab": spec.vocab_size,
                  "intermediate": spec.layers[0].intermediate_size,
                  "layer_types": "".join("G" if l.sliding_window is None else "L" for l in spec.layers)},
        "dtype": "fp32", "provider": "CPUExecutionProvider", "plan": plan.to_json(), "machine": machine,
        "engines": results, "graphs": graphs, "skipped": skipped,
    }
    report["agreement"] = agreement(results, {e: work / f"logits-{e}.npz" for e in names}, plan)
    report["ratios"] = ratios(results, plan)
    return report
