"""One engine measured in its own process: the worker (``python -m aapp_export.bench.worker``) and the
parent's side of it (the command and environment each engine runs in, the load around it).

Each worker opens its engine, warms up, times the prefill at every prompt length and a greedy decode
(``plan.repeats`` times each), saves its prefill logits for the agreement check and prints one JSON
record; its peak RSS (``VmHWM``) is its own. The parent adds the load average and the CPU time other
processes took while it ran, so a noisy measurement shows itself.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BenchmarkError
from .engines import open_engine
from .machine import busy_jiffies, package_version, peak_rss_mb
from .plan import DECODE_KEY, BenchPlan, prefill_key

REPO_ROOT = Path(__file__).resolve().parents[2]


def last_line(text: str) -> str:
    """The last non-empty line of a child's output (its error, usually)."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else "no error output"


def optimum_python() -> Path | None:
    """The interpreter of the optimum environment (``$AAPP_OPTIMUM_PYTHON`` or ``.venv-optimum``), if any."""
    configured = os.environ.get("AAPP_OPTIMUM_PYTHON")
    path = Path(configured) if configured else REPO_ROOT / ".venv-optimum" / "bin" / "python"
    return path if path.is_file() else None


def engine_command(engine: str) -> tuple[list[str], dict[str, str]]:
    """The interpreter and environment an engine's worker runs in: ours, except optimum's own venv
    (which imports this package from the source tree)."""
    if engine != "optimum":
        return [sys.executable], dict(os.environ)
    python = optimum_python()
    if python is None:
        raise BenchmarkError("the optimum engine needs its environment: run `bash scripts/optimum_env.sh` "
                             "(or set AAPP_OPTIMUM_PYTHON to an interpreter with optimum-onnx)")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return [str(python)], env


def run_worker(engine: str, path: Path, plan: BenchPlan, vocab: int, logits_file: Path | None = None) -> dict[str, Any]:
    """Measure one engine in this process; returns its JSON record (and saves its prefill logits)."""
    t0 = time.perf_counter()
    eng = open_engine(engine, path, plan.threads)
    record: dict[str, Any] = {"engine": engine, "load_s": round(time.perf_counter() - t0, 3)}
    if engine == "optimum":  # its own environment: say which versions ran
        record["versions"] = {m: package_version(m) for m in ("optimum-onnx", "optimum", "transformers", "onnxruntime",
                                                              "torch")}
    for length in plan.prompt_lengths:
        ids = plan.prompt(length, vocab)
        for _ in range(plan.warmup):
            eng.run(ids, 0)
        record[prefill_key(length)] = [eng.run(ids, 0).prefill_ms for _ in range(plan.repeats)]
    ids = plan.prompt(plan.decode_prompt, vocab)
    for _ in range(plan.warmup):
        eng.run(ids, plan.new_tokens)
    per_run, steps_all, tokens = [], [], []
    for _ in range(plan.repeats):
        run = eng.run(ids, plan.new_tokens)
        per_run.append(statistics.median(run.step_ms))
        steps_all += run.step_ms
        tokens = run.tokens
    record[DECODE_KEY] = per_run
    record["decode_step_ms"] = steps_all
    record["greedy_tokens"] = [int(t) for t in tokens[: plan.new_tokens]]
    if logits_file is not None:
        np.savez(logits_file, **{str(n): eng.logits(plan.prompt(n, vocab)) for n in plan.prompt_lengths})
    record["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return record


def run_one(engine: str, path: Path, plan: BenchPlan, vocab: int, logits_file: Path) -> dict[str, Any]:
    """One worker subprocess; adds the load average and other processes' CPU share during it."""
    before = (os.getloadavg()[0], busy_jiffies(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter())
    python, env = engine_command(engine)
    cmd = python + ["-m", "aapp_export.bench.worker", engine, str(path), json.dumps(plan.to_json()), str(vocab),
                    str(logits_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        log_file = logits_file.parent / f"{engine}-worker.log"
        log_file.write_text(proc.stdout + proc.stderr)
        raise BenchmarkError(f"the {engine} worker failed on {path} (exit {proc.returncode}): "
                             f"{last_line(proc.stderr)}; full log in {log_file}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    wall = time.perf_counter() - before[3]
    after_jiffies, usage = busy_jiffies(), resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (usage.ru_utime + usage.ru_stime) - (before[2].ru_utime + before[2].ru_stime)
    record["wall_s"] = round(wall, 2)
    record["cpu_s"] = round(own, 2)
    record["load_average_1m"] = [round(before[0], 2), round(os.getloadavg()[0], 2)]
    if before[1] is not None and after_jiffies is not None:
        busy = (after_jiffies - before[1]) / os.sysconf("SC_CLK_TCK")
        record["other_processes_cpu_fraction"] = round(max(0.0, busy - own) / (wall * (os.cpu_count() or 1)), 3)
    return record


if __name__ == "__main__":  # python -m aapp_export.bench.worker ENGINE PATH PLAN_JSON VOCAB LOGITS_FILE
    engine_name, model_path, plan_json, vocab_size, logits_path = sys.argv[1:6]
    print(json.dumps(run_worker(engine_name, Path(model_path), BenchPlan.from_json(json.loads(plan_json)),
                                int(vocab_size), Path(logits_path))))
