"""Latency benchmark: our runtime vs transformers (eager) vs onnxruntime-genai, side by side.

One run measures every engine on the same checkpoint and the same token ids:

- ``ours``: the graph of :func:`aapp_export.export.export_model` run by :class:`aapp_runtime.Session`;
- ``transformers``: ``attn_implementation="eager"``, fp32, a prefill + decode loop with a
  ``DynamicCache`` (``logits_to_keep=1`` at prefill), torch threads = ``plan.threads``;
- ``genai``: onnxruntime-genai's own builder (``-p fp32 -e cpu``, its defaults: the prefill
  computes logits for every prompt position) and its generator API;
- ``genai-last``: the same builder with ``prune_lm_head=true`` (last-position logits only, like
  ours): the like-for-like onnxruntime-genai baseline;
- ``optimum``: *our* dense model dir loaded by Hugging Face optimum's ``ORTModelForCausalLM``
  (optimum-onnx pins transformers < 4.58, so its worker runs in the interpreter of
  ``.venv-optimum``, made by ``scripts/optimum_env.sh``, or ``$AAPP_OPTIMUM_PYTHON``; skipped
  without it): the same graph under optimum's Python loop, and a check that the export interoperates.

Every engine runs in its own subprocess, so its peak RSS (``VmHWM``) is its own, and the rounds
rotate the engine order so that a change of machine load does not land on one engine only. Each
worker warms up, then measures prefill ms at each prompt length and decode ms/token (median of the
per-step times of a run) after ``decode_prompt`` tokens; the report gives median, quartiles, min
and max over all runs of all rounds. The load average and the CPU time other processes took while
each worker ran are recorded, so a noisy measurement shows itself.

Correctness comes with the numbers: each engine's greedy tokens and its last-position prefill
logits at every prompt length are compared with transformers' (the reference).

:func:`aapp_export.synthetic.make_bench_checkpoint` writes the randomly initialised Gemma-3-shaped
checkpoint (about 120M parameters by default, shaped like Gemma-3-270M; a ``params_target`` changes
the depth, and above 200M the width becomes Gemma-3-1B's). The ``genai`` engines need the ``bench`` extra
(``pip install -e '.[bench]'``); onnxruntime-genai 0.18's builder expects transformers-4.x flat
rope fields, which transformers 5.x re-nests when it loads any ``config.json``, so the builder runs
in a subprocess whose loaded config is flattened before the build (:func:`flatten_rope_parameters`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import AappError

ENGINES = ("ours", "ours-onnx", "transformers", "genai", "genai-last", "optimum")
DEFAULT_ENGINES = ENGINES
REFERENCE = "transformers"
GENAI_MIN_CAPACITY = 1024  # genai sizes its KV buffers by max_length; keep them past the sliding window
GENAI_BUILD_OPTIONS: dict[str, dict[str, str]] = {"genai": {}, "genai-last": {"prune_lm_head": "true"}}
OURS_ATTENTION = {"ours": "gqa", "ours-onnx": "onnx"}  # our engines: the attention kernel of each export
ENGINE_NOTES = {
    "ours": "aapp_export.export.export_model (fp32, last-position logits, GroupQueryAttention) + "
            "aapp_runtime.Session(provider='cpu')",
    "ours-onnx": "the same export with --attention onnx (the standard opset-23 Attention op)",
    "transformers": "AutoModelForCausalLM eager fp32, DynamicCache, logits_to_keep=1 at prefill",
    "genai": "onnxruntime-genai builder -p fp32 -e cpu (defaults: logits for every prompt position) + og.Generator",
    "genai-last": "onnxruntime-genai builder -p fp32 -e cpu, extra option prune_lm_head=true + og.Generator",
    "optimum": "the 'ours' model dir loaded by optimum-onnx ORTModelForCausalLM (CPUExecutionProvider), "
               "forward() with its past_key_values, in .venv-optimum",
}
REPO_ROOT = Path(__file__).resolve().parents[1]
Log = Callable[[str], None]


class BenchmarkError(AappError):
    """An engine's worker or the onnxruntime-genai builder failed."""


def parse_count(text: str) -> float:
    """``"120M"``, ``"0.3B"``, ``"1.5e8"`` -> a number."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMbBgG]?)\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a count such as 120M, 0.3B or 1.5e8")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}[m.group(2).lower()]
    return float(m.group(1)) * scale


# -- plan and statistics --------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchPlan:
    prompt_lengths: tuple[int, ...] = (128, 512)
    decode_prompt: int = 128
    new_tokens: int = 64
    repeats: int = 5  # measured runs per engine per round
    rounds: int = 1  # fresh worker processes per engine, engine order rotated each round
    warmup: int = 1
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 0

    def prompt(self, length: int, vocab: int) -> list[int]:
        """The benchmark prompt: ``length`` random token ids above the special tokens."""
        rng = np.random.default_rng(self.seed + length)
        return [int(t) for t in rng.integers(5, vocab, size=length)]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "BenchPlan":
        return cls(**{**data, "prompt_lengths": tuple(data["prompt_lengths"])})


def summary(values: list[float]) -> dict[str, float]:
    """Median, quartiles, min, max and count of ``values`` (ms)."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
    return {"median": round(statistics.median(values), 3), "q1": round(q1, 3), "q3": round(q3, 3),
            "min": round(min(values), 3), "max": round(max(values), 3), "n": len(values)}


def peak_rss_mb() -> float:
    """Peak resident set of this process (VmHWM), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _busy_jiffies() -> int | None:
    """CPU time all processes spent busy since boot (clock ticks), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle and iowait


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        return next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                    if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def machine_info() -> dict[str, Any]:
    import onnxruntime

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "onnxruntime_genai": _version("onnxruntime-genai"), "torch": _version("torch"),
            "transformers": _version("transformers"), "provider": "CPUExecutionProvider",
            "available_providers": onnxruntime.get_available_providers()}


# -- engines: each gives prefill(ids) -> ms, decode(ids, n) -> (per-step ms, tokens), logits(ids) ----
@dataclass
class Engine:
    prefill: Callable[[list[int]], float]
    decode: Callable[[list[int], int], tuple[list[float], list[int]]]
    logits: Callable[[list[int]], np.ndarray]


def _ours(model_dir: Path, threads: int) -> Engine:
    from aapp_runtime import Session

    session = Session(model_dir, provider="cpu", threads=threads)

    def prefill(ids: list[int]) -> float:
        return session.generate(ids, max_new_tokens=1, ignore_eos=True).prefill_ms

    def decode(ids: list[int], n: int) -> tuple[list[float], list[int]]:
        r = session.generate(ids, max_new_tokens=n + 1, ignore_eos=True)
        return r.decode_ms, r.tokens

    return Engine(prefill, decode, lambda ids: np.asarray(session.logits(ids), np.float32))


def _greedy_loop(prefill: Callable[[list[int]], Any], step: Callable[[Any, int, int], Any]):
    """A torch engine's timed greedy run from its ``prefill(ids)`` and ``step(out, token, position)``
    forwards: ``run(ids, n) -> (prefill ms, per-step ms, tokens, first logits)``."""
    import torch

    @torch.no_grad()
    def run(ids: list[int], n: int) -> tuple[float, list[float], list[int], np.ndarray]:
        t0 = time.perf_counter()
        out = prefill(ids)
        token = int(out.logits[0, -1].argmax())
        prefill_ms = (time.perf_counter() - t0) * 1000
        first_logits = out.logits[0, -1].float().numpy().copy()
        steps, tokens = [], [token]
        for pos in range(len(ids), len(ids) + n):
            t0 = time.perf_counter()
            out = step(out, token, pos)
            token = int(out.logits[0, -1].argmax())
            steps.append((time.perf_counter() - t0) * 1000)
            tokens.append(token)
        return prefill_ms, steps, tokens, first_logits

    return run


def _transformers(checkpoint: Path, threads: int) -> Engine:
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32,
                                                 attn_implementation="eager").eval()

    def prefill(ids: list[int]):
        return model(torch.tensor([ids]), past_key_values=DynamicCache(config=model.config), use_cache=True,
                     logits_to_keep=1)

    def step(out, token: int, pos: int):
        return model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True,
                     position_ids=torch.tensor([[pos]]), cache_position=torch.tensor([pos]))

    run = _greedy_loop(prefill, step)
    return Engine(lambda ids: run(ids, 0)[0], lambda ids, n: run(ids, n)[1:3], lambda ids: run(ids, 0)[3])


def _genai(model_dir: Path, threads: int) -> Engine:
    import onnxruntime_genai as og

    config = og.Config(str(model_dir))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    model = og.Model(config)

    def generator(ids: list[int], n: int) -> Any:
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=max(len(ids) + n + 1, GENAI_MIN_CAPACITY))
        return og.Generator(model, params)  # allocates the KV buffers: outside the timed region

    def run(ids: list[int], n: int) -> tuple[float, list[float], list[int]]:
        gen = generator(ids, n)
        t0 = time.perf_counter()
        gen.append_tokens(ids)  # runs the prefill
        gen.generate_next_token()  # picks the first token from the prefill's logits
        tokens = [int(gen.get_next_tokens()[0])]
        prefill_ms = (time.perf_counter() - t0) * 1000
        steps = []
        for _ in range(n):
            t0 = time.perf_counter()
            gen.generate_next_token()
            tokens.append(int(gen.get_next_tokens()[0]))
            steps.append((time.perf_counter() - t0) * 1000)
        return prefill_ms, steps, tokens

    def logits(ids: list[int]) -> np.ndarray:
        gen = generator(ids, 0)
        gen.append_tokens(ids)
        return np.asarray(gen.get_logits(), np.float32).reshape(-1)[-_vocab(model_dir):]

    return Engine(lambda ids: run(ids, 0)[0], lambda ids, n: run(ids, n)[1:], logits)


def _vocab(model_dir: Path) -> int:
    return int(json.loads((model_dir / "genai_config.json").read_text())["model"]["vocab_size"])


def _optimum(model_dir: Path, threads: int) -> Engine:
    """Our model dir under optimum's ORTModelForCausalLM (runs in the optimum environment)."""
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = ORTModelForCausalLM.from_pretrained(str(model_dir), file_name="model.onnx", session_options=options,
                                                provider="CPUExecutionProvider")

    def prefill(ids: list[int]):
        x = torch.tensor([ids])
        return model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True)

    def step(out, token: int, pos: int):
        return model(input_ids=torch.tensor([[token]]), attention_mask=torch.ones(1, pos + 1, dtype=torch.long),
                     past_key_values=out.past_key_values, use_cache=True)

    run = _greedy_loop(prefill, step)
    return Engine(lambda ids: run(ids, 0)[0], lambda ids, n: run(ids, n)[1:3], lambda ids: run(ids, 0)[3])


def optimum_python() -> Path | None:
    """The interpreter of the optimum environment (``$AAPP_OPTIMUM_PYTHON`` or ``.venv-optimum``), if any."""
    configured = os.environ.get("AAPP_OPTIMUM_PYTHON")
    path = Path(configured) if configured else REPO_ROOT / ".venv-optimum" / "bin" / "python"
    return path if path.is_file() else None


def engine_command(engine: str) -> tuple[list[str], dict[str, str]]:
    """The interpreter and environment an engine's worker runs in: ours, except optimum's own venv
    (which imports this module from the source tree)."""
    if engine != "optimum":
        return [sys.executable], dict(os.environ)
    python = optimum_python()
    if python is None:
        raise BenchmarkError("the optimum engine needs its environment: run `bash scripts/optimum_env.sh` "
                             "(or set AAPP_OPTIMUM_PYTHON to an interpreter with optimum-onnx)")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return [str(python)], env


def open_engine(engine: str, path: Path, threads: int) -> Engine:
    if engine == "optimum":
        return _optimum(path, threads)
    if engine in OURS_ATTENTION:
        return _ours(path, threads)
    if engine == "transformers":
        return _transformers(path, threads)
    return _genai(path, threads)


def run_worker(engine: str, path: Path, plan: BenchPlan, vocab: int, logits_file: Path | None = None) -> dict[str, Any]:
    """Measure one engine in this process; returns its JSON record (and saves its prefill logits)."""
    t0 = time.perf_counter()
    eng = open_engine(engine, path, plan.threads)
    record: dict[str, Any] = {"engine": engine, "load_s": round(time.perf_counter() - t0, 3)}
    if engine == "optimum":  # its own environment: say which versions ran
        record["versions"] = {m: _version(m) for m in ("optimum-onnx", "optimum", "transformers", "onnxruntime", "torch")}
    for length in plan.prompt_lengths:
        ids = plan.prompt(length, vocab)
        for _ in range(plan.warmup):
            eng.prefill(ids)
        record[f"prefill_ms@{length}"] = [eng.prefill(ids) for _ in range(plan.repeats)]
    ids = plan.prompt(plan.decode_prompt, vocab)
    for _ in range(plan.warmup):
        eng.decode(ids, plan.new_tokens)
    per_run, steps_all, tokens = [], [], []
    for _ in range(plan.repeats):
        steps, tokens = eng.decode(ids, plan.new_tokens)
        per_run.append(statistics.median(steps))
        steps_all += steps
    record["decode_ms_per_token"] = per_run
    record["decode_step_ms"] = steps_all
    record["greedy_tokens"] = [int(t) for t in tokens[: plan.new_tokens]]
    if logits_file is not None:
        np.savez(logits_file, **{str(n): eng.logits(plan.prompt(n, vocab)) for n in plan.prompt_lengths})
    record["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return record


# -- preparing each engine's model from one checkpoint --------------------------------------------
def flatten_rope_parameters(config: Any) -> None:
    """Give a transformers-5.x Gemma 3 config the flat rope fields onnxruntime-genai 0.18's builder reads.

    5.x nests the rope per layer type (``rope_parameters[layer_type]``) and re-nests flat fields
    when it loads a ``config.json``; the builder expects ``rope_parameters["rope_type"]`` plus
    ``rope_theta`` / ``rope_local_base_freq`` as in 4.x, so the loaded object is patched.
    """
    text = getattr(config, "text_config", None) or config
    rope = getattr(text, "rope_parameters", None)
    if isinstance(rope, dict) and "full_attention" in rope:
        full, local = dict(rope["full_attention"]), dict(rope.get("sliding_attention") or {})
        text.rope_parameters = full
        text.rope_theta = full.get("rope_theta", 1_000_000.0)
        text.rope_local_base_freq = local.get("rope_theta", 10_000.0)
        if full.get("rope_type", "default") != "default":
            text.rope_scaling = {k: v for k, v in full.items() if k != "rope_theta"}


def _build_genai_here(checkpoint: Path, out: Path, extra: dict[str, str]) -> None:
    """Run the onnxruntime-genai builder in this process on a normalised config."""
    from onnxruntime_genai.models import builder

    cache = str(out.parent / "genai-cache")
    opts = builder.parse_extra_options(None, str(checkpoint), str(out), "fp32", "cpu", cache,
                                       [f"{k}={v}" for k, v in extra.items()])
    flatten_rope_parameters(opts["hf_details"]["hf_config"])
    builder.create_model(None, str(checkpoint), str(out), "fp32", "cpu", cache, **opts)


def _last_line(text: str) -> str:
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else "no error output"


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _checkpoint_key(checkpoint: Path) -> list[Any]:
    return sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in checkpoint.iterdir() if p.is_file())


def _cached(out: Path, key: str, marker: str) -> bool:
    return (out / marker).is_file() and (out / ".bench-key").is_file() and (out / ".bench-key").read_text() == key


def build_ours(checkpoint: Path, out: Path, log: Log, attention: str = "gqa") -> Path:
    """Export ``checkpoint`` with our exporter and ``attention`` kernel (reused while the checkpoint and
    the exporter's source are unchanged)."""
    import shutil

    from .export import ExportOptions, export_model

    src = Path(__file__).parent
    code = [(str(p.relative_to(src)), hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted([*src.glob("graph/*.py"), src / "export.py", src / "families.py"])]
    key = _fingerprint(_checkpoint_key(checkpoint), code, attention)
    if _cached(out, key, "aapp.json"):
        return out
    shutil.rmtree(out, ignore_errors=True)
    export_model(str(checkpoint), out / "model.onnx", ExportOptions(attention=attention), log=log)
    (out / ".bench-key").write_text(key)
    return out


def build_genai(checkpoint: Path, out: Path, log: Log, extra: dict[str, str] | None = None) -> Path:
    """Build the onnxruntime-genai fp32 CPU model of ``checkpoint`` with its own builder (subprocess)."""
    import shutil

    extra = dict(extra or {})
    key = _fingerprint(_checkpoint_key(checkpoint), extra, _version("onnxruntime-genai"))
    if _cached(out, key, "genai_config.json"):
        return out
    shutil.rmtree(out, ignore_errors=True)
    log(f"building the onnxruntime-genai model of {checkpoint} into {out} (extra options {extra or 'none'})")
    proc = subprocess.run([sys.executable, "-m", "aapp_export.benchmark", "--build-genai", str(checkpoint), str(out),
                           json.dumps(extra)], capture_output=True, text=True)
    if proc.returncode != 0 or not (out / "genai_config.json").is_file():
        log_file = out.parent / f"{out.name}-build.log"
        log_file.write_text(proc.stdout + proc.stderr)
        raise BenchmarkError(f"the onnxruntime-genai builder failed on {checkpoint} (exit {proc.returncode}): "
                             f"{_last_line(proc.stderr)}; full log in {log_file}")
    (out / ".bench-key").write_text(key)
    return out


def genai_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime_genai") is not None


def graph_stats(model_file: Path) -> dict[str, Any]:
    """Node count and op-type histogram of an ONNX graph (weights not loaded)."""
    import collections

    import onnx

    m = onnx.load(str(model_file), load_external_data=False)
    ops = collections.Counter((f"{n.domain}." if n.domain and n.domain != "ai.onnx" else "") + n.op_type
                              for n in m.graph.node)
    data = sum(p.stat().st_size for p in model_file.parent.glob(model_file.name + "*"))
    return {"nodes": len(m.graph.node), "op_types": dict(ops.most_common()), "file_mb": round(data / 2**20, 1)}


def _run_one(engine: str, path: Path, plan: BenchPlan, vocab: int, logits_file: Path) -> dict[str, Any]:
    """One worker subprocess; adds the load average and other processes' CPU share during it."""
    before = (os.getloadavg()[0], _busy_jiffies(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter())
    python, env = engine_command(engine)
    cmd = python + ["-m", "aapp_export.benchmark", "--worker", engine, str(path), json.dumps(plan.to_json()),
                    str(vocab), str(logits_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        log_file = logits_file.parent / f"{engine}-worker.log"
        log_file.write_text(proc.stdout + proc.stderr)
        raise BenchmarkError(f"the {engine} worker failed on {path} (exit {proc.returncode}): "
                             f"{_last_line(proc.stderr)}; full log in {log_file}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    wall = time.perf_counter() - before[3]
    after_jiffies, usage = _busy_jiffies(), resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (usage.ru_utime + usage.ru_stime) - (before[2].ru_utime + before[2].ru_stime)
    record["wall_s"] = round(wall, 2)
    record["cpu_s"] = round(own, 2)
    record["load_average_1m"] = [round(before[0], 2), round(os.getloadavg()[0], 2)]
    if before[1] is not None and after_jiffies is not None:
        busy = (after_jiffies - before[1]) / os.sysconf("SC_CLK_TCK")
        record["other_processes_cpu_fraction"] = round(max(0.0, busy - own) / (wall * (os.cpu_count() or 1)), 3)
    return record


def _merge(records: list[dict[str, Any]], plan: BenchPlan) -> dict[str, Any]:
    """Pool the runs of one engine's rounds into summaries."""
    keys = [f"prefill_ms@{n}" for n in plan.prompt_lengths] + ["decode_ms_per_token"]
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


def run_benchmark(checkpoint: Path, work: Path, plan: BenchPlan, engines: tuple[str, ...] = DEFAULT_ENGINES,
                  log: Log = print) -> dict[str, Any]:
    """Prepare every engine's model from ``checkpoint`` and measure them (``plan.rounds`` rounds, each
    engine in a fresh subprocess, order rotated per round); returns the JSON report."""
    from .families import load_model_spec

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
            records[engine].append(_run_one(engine, paths[engine], plan, spec.vocab_size, work / f"logits-{engine}.npz"))
    results = {e: {"how": ENGINE_NOTES[e], **_merge(records[e], plan)} for e in names}
    end_machine = machine_info()
    machine = {**start_machine, "load_average_start": start_machine.pop("load_average"),
               "load_average_end": end_machine["load_average"]}
    machine.pop("load_average", None)
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint), "family": spec.family, "parameters": _count_params(checkpoint),
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


def _count_params(checkpoint: Path) -> int:
    from .checkpoint import WeightReader

    reader = WeightReader(checkpoint)
    return int(sum(reader.get(k).numel() for k in reader.keys()))


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
    keys = [f"prefill_ms@{n}" for n in plan.prompt_lengths] + ["decode_ms_per_token"]
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
    metrics = [f"prefill_ms@{n}" for n in report["plan"]["prompt_lengths"]] + ["decode_ms_per_token"]
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


if __name__ == "__main__":  # subprocess entry points used by run_benchmark / build_genai
    if sys.argv[1] == "--worker":
        _, _, engine_name, model_path, plan_json, vocab_size, logits_path = sys.argv
        rec = run_worker(engine_name, Path(model_path), BenchPlan.from_json(json.loads(plan_json)), int(vocab_size),
                         Path(logits_path))
        print(json.dumps(rec))
    elif sys.argv[1] == "--build-genai":
        _build_genai_here(Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
