"""Latency benchmark: our runtime vs transformers (eager) vs onnxruntime-genai, side by side.

Every engine runs in its own subprocess (so its peak RSS is its own) on the same checkpoint and the
same token ids: prefill ms at each prompt length, decode ms/token after a prompt, warm-up first,
then repeats reported as median with min and max. The greedy tokens of each engine are returned
so the report can say whether the engines computed the same model.

The onnxruntime-genai side needs the ``bench`` extra (``pip install -e .[bench]``); its model is
built by its own builder from the same checkpoint, after giving the loaded config the flat
transformers-4.x rope fields that the 0.18 builder expects.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ENGINES = ("ours", "transformers", "genai")
GENAI_MIN_CAPACITY = 1024


@dataclass(frozen=True)
class BenchPlan:
    prompt_lengths: tuple[int, ...] = (128, 512)
    decode_prompt: int = 128
    new_tokens: int = 64
    repeats: int = 5
    warmup: int = 1
    threads: int | None = None
    seed: int = 0

    def prompt(self, length: int, vocab: int) -> list[int]:
        rng = np.random.default_rng(self.seed + length)
        return [int(t) for t in rng.integers(5, vocab, size=length)]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def peak_rss_mb() -> float:
    """Peak resident set of this process (VmHWM), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import onnxruntime

    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "providers": onnxruntime.get_available_providers()}


# -- engines: each returns (prefill(ids) -> ms, decode(ids, n) -> (per-step ms list, tokens)) ----
Engine = tuple[Callable[[list[int]], float], Callable[[list[int], int], tuple[list[float], list[int]]]]


def _ours(model_dir: Path, threads: int | None) -> Engine:
    from aapp_runtime import Session

    session = Session(model_dir, provider="cpu", threads=threads)

    def prefill(ids: list[int]) -> float:
        return session.generate(ids, max_new_tokens=1, ignore_eos=True).prefill_ms

    def decode(ids: list[int], n: int) -> tuple[list[float], list[int]]:
        r = session.generate(ids, max_new_tokens=n + 1, ignore_eos=True)
        return r.decode_ms, r.tokens

    return prefill, decode


def _transformers(checkpoint: Path, threads: int | None) -> Engine:
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32,
                                                 attn_implementation="eager").eval()

    @torch.no_grad()
    def run(ids: list[int], n: int) -> tuple[float, list[float], list[int]]:
        cache = DynamicCache(config=model.config)
        t0 = time.perf_counter()
        out = model(torch.tensor([ids]), past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = int(out.logits[0, -1].argmax())
        prefill_ms = (time.perf_counter() - t0) * 1000
        steps, tokens, pos = [], [token], len(ids)
        for _ in range(n):
            t0 = time.perf_counter()
            out = model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True,
                        position_ids=torch.tensor([[pos]]), cache_position=torch.tensor([pos]))
            token = int(out.logits[0, -1].argmax())
            steps.append((time.perf_counter() - t0) * 1000)
            tokens.append(token)
            pos += 1
        return prefill_ms, steps, tokens[:n + 1]

    return (lambda ids: run(ids, 0)[0]), (lambda ids, n: run(ids, n)[1:])


def _genai(model_dir: Path, threads: int | None) -> Engine:
    import onnxruntime_genai as og

    model = og.Model(str(model_dir))

    def run(ids: list[int], n: int) -> tuple[float, list[float], list[int]]:
        params = og.GeneratorParams(model)
        # genai sizes its KV buffer by max_length and needs it to hold at least the sliding window
        params.set_search_options(do_sample=False, max_length=max(len(ids) + n + 1, GENAI_MIN_CAPACITY))
        gen = og.Generator(model, params)
        t0 = time.perf_counter()
        gen.append_tokens(ids)  # runs the prefill
        gen.generate_next_token()  # picks the first token from the prefill's logits
        prefill_ms = (time.perf_counter() - t0) * 1000
        tokens = [int(gen.get_next_tokens()[0])]
        steps = []
        for _ in range(n):
            t0 = time.perf_counter()
            gen.generate_next_token()
            tokens.append(int(gen.get_next_tokens()[0]))
            steps.append((time.perf_counter() - t0) * 1000)
        return prefill_ms, steps, tokens

    return (lambda ids: run(ids, 0)[0]), (lambda ids, n: run(ids, n)[1:])


def run_worker(engine: str, path: Path, plan: BenchPlan, vocab: int) -> dict[str, Any]:
    """Measure one engine in this process; returns its JSON record."""
    t0 = time.perf_counter()
    prefill, decode = {"ours": _ours, "transformers": _transformers, "genai": _genai}[engine](path, plan.threads)
    load_s = time.perf_counter() - t0
    record: dict[str, Any] = {"engine": engine, "load_s": round(load_s, 2)}
    for length in plan.prompt_lengths:
        ids = plan.prompt(length, vocab)
        for _ in range(plan.warmup):
            prefill(ids)
        record[f"prefill_ms@{length}"] = summary([prefill(ids) for _ in range(plan.repeats)])
    ids = plan.prompt(plan.decode_prompt, vocab)
    for _ in range(plan.warmup):
        decode(ids, plan.new_tokens)
    per_run, tokens = [], []
    for _ in range(plan.repeats):
        steps, tokens = decode(ids, plan.new_tokens)
        per_run.append(statistics.median(steps))
    record["decode_ms_per_token"] = summary(per_run)
    record["greedy_tokens"] = tokens[: plan.new_tokens]
    record["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return record


# -- preparing each engine's model from one checkpoint --------------------------------------------
def flatten_rope_parameters(config) -> None:
    """Give a transformers-5.x config the flat rope fields onnxruntime-genai 0.18's builder reads.

    5.x nests Gemma 3's rope per layer type (``rope_parameters[layer_type]``); the builder expects
    ``rope_parameters["rope_type"]`` plus ``rope_local_base_freq`` as in 4.x.
    """
    text = getattr(config, "text_config", None) or config
    rope = getattr(text, "rope_parameters", None)
    if isinstance(rope, dict) and "full_attention" in rope:
        full, local = dict(rope["full_attention"]), dict(rope.get("sliding_attention") or {})
        text.rope_parameters = full
        text.rope_theta = full.get("rope_theta", 1_000_000.0)
        text.rope_local_base_freq = local.get("rope_theta", 10_000.0)


def _build_genai_here(checkpoint: Path, out: Path) -> None:
    """Run the onnxruntime-genai builder in this process on a normalised config."""
    from onnxruntime_genai.models import builder

    cache = str(out.parent / "genai-cache")
    opts = builder.parse_extra_options(None, str(checkpoint), str(out), "fp32", "cpu", cache, [])
    flatten_rope_parameters(opts["hf_details"]["hf_config"])
    builder.create_model(None, str(checkpoint), str(out), "fp32", "cpu", cache, **opts)


def build_genai(checkpoint: Path, out: Path, log: Callable[[str], None]) -> Path:
    """Build the onnxruntime-genai fp32 CPU model of ``checkpoint`` with its own builder (subprocess)."""
    if (out / "genai_config.json").is_file():
        return out
    log(f"building the onnxruntime-genai model of {checkpoint} into {out}")
    proc = subprocess.run([sys.executable, "-m", "aapp_export.benchmark", "--build-genai", str(checkpoint), str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not (out / "genai_config.json").is_file():
        raise RuntimeError(f"onnxruntime-genai builder failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return out


def genai_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime_genai") is not None


def run_benchmark(checkpoint: Path, work: Path, plan: BenchPlan, engines: tuple[str, ...] = ENGINES,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Prepare every engine's model from ``checkpoint`` and measure them one after another."""
    from .export import export_model
    from .families import load_model_spec

    spec = load_model_spec(checkpoint)
    n_params = _count_params(checkpoint)
    work.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for engine in engines:
        if engine == "ours":
            target = work / "ours"
            paths[engine] = target if (target / "aapp.json").is_file() else export_model(
                str(checkpoint), target / "model.onnx", log=log)
        elif engine == "transformers":
            paths[engine] = checkpoint
        elif engine == "genai":
            if not genai_available():
                skipped[engine] = "onnxruntime-genai is not installed (pip install -e '.[bench]')"
                continue
            paths[engine] = build_genai(checkpoint, work / "genai", log)
    results: dict[str, Any] = {}
    for engine, path in paths.items():
        log(f"measuring {engine} ...")
        cmd = [sys.executable, "-m", "aapp_export.benchmark", "--worker", engine, str(path), json.dumps(plan.__dict__),
               str(spec.vocab_size)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark worker {engine} failed: {proc.stderr.strip()[-1500:]}")
        results[engine] = json.loads(proc.stdout.strip().splitlines()[-1])
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint), "family": spec.family, "parameters": n_params, "dtype": "fp32",
        "provider": "CPUExecutionProvider", "plan": plan.__dict__, "machine": machine_info(),
        "engines": results, "skipped": skipped,
    }
    report["greedy_agreement"] = _agreement(results)
    report["ratios"] = _ratios(results, plan)
    return report


def _count_params(checkpoint: Path) -> int:
    from .checkpoint import WeightReader

    reader = WeightReader(checkpoint)
    return int(sum(reader.get(k).numel() for k in reader.keys()))


def _agreement(results: dict[str, Any]) -> dict[str, Any]:
    out = {}
    if "ours" in results:
        ref = results["ours"]["greedy_tokens"]
        for engine, r in results.items():
            if engine != "ours":
                same = next((i for i, (a, b) in enumerate(zip(ref, r["greedy_tokens"])) if a != b), len(ref))
                out[f"ours_vs_{engine}"] = {"identical": r["greedy_tokens"] == ref, "first_divergence": same}
    return out


def _ratios(results: dict[str, Any], plan: BenchPlan) -> dict[str, Any]:
    """ours / baseline for each metric (< 1 means ours is faster)."""
    if "ours" not in results:
        return {}
    keys = [f"prefill_ms@{n}" for n in plan.prompt_lengths] + ["decode_ms_per_token"]
    ratios: dict[str, Any] = {}
    for engine, r in results.items():
        if engine == "ours":
            continue
        ratios[f"ours/{engine}"] = {k: round(results["ours"][k]["median"] / r[k]["median"], 3) for k in keys}
        ratios[f"ours/{engine}"]["peak_rss"] = round(results["ours"]["peak_rss_mb"] / r["peak_rss_mb"], 3)
    return ratios


def plot(report: dict[str, Any], path: Path) -> Path:
    """Bar chart: prefill at each length and decode ms/token per engine (medians, min-max whiskers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = list(report["engines"])
    metrics = [k for k in next(iter(report["engines"].values())) if k.startswith("prefill_ms@")] + ["decode_ms_per_token"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6))
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        med = [report["engines"][e][metric]["median"] for e in engines]
        lo = [m - report["engines"][e][metric]["min"] for m, e in zip(med, engines)]
        hi = [report["engines"][e][metric]["max"] - m for m, e in zip(med, engines)]
        ax.bar(engines, med, yerr=[lo, hi], capsize=4, color=["#2b7", "#888", "#37c"][: len(engines)])
        ax.set_title(metric.replace("_", " "))
        ax.set_ylabel("ms")
    m = report["machine"]
    fig.suptitle(f"{report['family']} {report['parameters'] / 1e6:.0f}M fp32, {m['cores']} cores, ORT {m['onnxruntime']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":  # subprocess entry points used by run_benchmark / build_genai
    if sys.argv[1] == "--worker":
        _, _, engine_name, model_path, plan_json, vocab_size = sys.argv
        plan_dict = json.loads(plan_json)
        plan_dict["prompt_lengths"] = tuple(plan_dict["prompt_lengths"])
        print(json.dumps(run_worker(engine_name, Path(model_path), BenchPlan(**plan_dict), int(vocab_size))))
    elif sys.argv[1] == "--build-genai":
        _build_genai_here(Path(sys.argv[2]), Path(sys.argv[3]))
