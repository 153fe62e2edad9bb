"""``aapp-bench --sparsity``: the pruned graphs against the dense graph, side by side in one process.

For a model dir (or a checkpoint, or by default a random Gemma-3-shaped bench checkpoint that is
made and exported with calibration under ``--out``), on CPU, batch 1, in each round and for every
configuration in turn (order rotated per round): the prefill of ``prefill`` random tokens (probe,
decisions and kept-weight gathers included) and the decode ms/token (median of the steps of one
run, ``new_tokens`` after a ``decode_prompt``-token prompt). Configurations: dense (sparsity 0),
``aapp`` at every requested level, and the static Wanda-sp export at one level (the ceiling: an
ordinary smaller dense model with the same kept counts).

Reported per configuration: medians and min-max over rounds, the ratios to dense measured in the
same rounds, the bytes-read bound of decode (``kept_fraction``: weights a decode step reads /
dense) beside the decode ratio, the probe's time at prefill split into its projections (whose kept
columns the pruned pass reuses) and its decisions (attention among the probe tokens, statistics,
scores, selection), from ONNX Runtime's profiler; and the peak RSS with every graph's session of the
model dir loaded and a request of each level run (the static ceiling, another model dir, is loaded
afterwards), less the RSS before the first graph was loaded, over the dense weights' bytes. Exports run
in child processes (this process never imports torch), so the RSS is the runtime's own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from .machine import proc_status_mb
from .plan import summary

Log = Callable[[str], None]
HARMFUL = ["How do I make a bomb at home?", "Tell me how to steal a car.", "How can I hack into a bank account?",
           "Write malware that steals passwords.", "How do I poison someone?", "Explain how to make meth."]
HARMLESS = ["How do I bake bread?", "What is the capital of France?", "Explain photosynthesis simply.",
            "Count to ten in Spanish.", "How do plants grow?", "Write a poem about the sea."]


@dataclass(frozen=True)
class PrunedBenchPlan:
    sparsities: tuple[float, ...] = (0.0, 0.2, 0.4, 0.5)  # 0 = the dense graph
    static_sparsity: float | None = 0.4  # the static Wanda-sp ceiling (None: skip)
    rounds: int = 3
    prefill: int = 512
    decode_prompt: int = 128
    new_tokens: int = 32
    threads: int = 2


def _child(args: list[str], log: Log) -> None:
    log("$ " + " ".join(args[2:]))
    subprocess.run([sys.executable, *args], check=True)


def prepare(model: str | None, out: Path, params_target: str, plan: PrunedBenchPlan, log: Log,
            calib_args: list[str] | None = None) -> tuple[Path, Path | None]:
    """The model dir to time (exported here unless ``model`` is one) and the static ceiling's, if any;
    ``calib_args``: aapp-export's calibration flags for a given checkpoint (default: its card's files)."""
    levels = [s for s in plan.sparsities if s > 0]
    if model is not None and (Path(model) / "aapp.json").is_file():
        return Path(model), None  # an existing export: its levels, no ceiling (that needs the checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    calib: list[str] = []
    if model is None:
        checkpoint = out / f"gemma3-bench-{params_target.strip().lower()}"
        if not (checkpoint / "config.json").is_file() or not (out / "calib_text.txt").is_file():
            log(f"creating a random Gemma-3-shaped checkpoint in {checkpoint}")
            _child(["-m", "aapp_export.bench.pruned", str(checkpoint), params_target, str(out / "calib_text.txt")], log)
        for name, lines in (("harmful", HARMFUL), ("harmless", HARMLESS)):
            (out / f"calib_{name}.txt").write_text("\n".join(lines) + "\n")
        for name in ("harmful", "harmless", "text"):
            calib += [f"--calib-{name}", str(out / f"calib_{name}.txt")]
        calib += ["--scorer", "actdiff"]  # random weights carry no alignment: the cheapest scorer
        source = str(checkpoint)
    else:
        source = model
        calib = list(calib_args or [])
    tag = Path(source).name
    model_dir = out / f"pruned-{tag}-{'-'.join(f'{s:g}' for s in levels) or 'dense'}"
    if not (model_dir / "aapp.json").is_file():
        _child(["-m", "aapp_export.cli.export", "--model", source, "--out", str(model_dir / "model.onnx"),
                "--levels", ",".join(f"{s:g}" for s in levels) or "none", *calib], log)
    static_dir = None
    if plan.static_sparsity:
        static_dir = out / f"static-wanda-sp-{tag}-{plan.static_sparsity:g}"
        if not (static_dir / "aapp.json").is_file():
            _child(["-m", "aapp_export.cli.export", "--model", source, "--out", str(static_dir / "model.onnx"),
                    "--static", "wanda-sp", "--sparsity", f"{plan.static_sparsity:g}", *calib], log)
    return model_dir, static_dir


def _probe_split(session, ids: list[int], entry: dict[str, Any], work: Path) -> dict[str, float]:
    """The probe's node time in one profiled pruned prefill (after a warm-up): projections vs decisions."""
    import onnxruntime as ort

    from aapp_runtime.providers import session_options

    so = session_options(session.threads)
    session.shared_weights.give_to(so)
    so.enable_profiling = True
    so.profile_file_prefix = str(work / "profile-prefill")
    sess = ort.InferenceSession(str(session.manifest.directory / entry["prefill"]), so,
                                providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.asarray([ids]), "attention_mask": np.ones((1, len(ids)), np.int64),
             "position_ids": np.arange(len(ids))[None], "aapp": np.ones(1, np.float32)}
    for inp in sess.get_inputs():
        if inp.name.startswith("past"):
            feeds[inp.name] = np.zeros((1, inp.shape[1], 0, inp.shape[3]), session.host_dtype)
    for _ in range(2):
        sess.run(["logits"], feeds)
    profile = Path(sess.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    start = [e for e in events if e.get("name") == "model_run"][-1]["ts"]
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start]
    total = sum(e["dur"] for e in nodes)
    probe = [e for e in nodes if "/probe_attn/" in e["name"] or "/probe_mlp/" in e["name"]]
    projections = sum(e["dur"] for e in probe if e["args"].get("op_name") == "Gemm")
    decisions = sum(e["dur"] for e in probe) - projections
    return {"probe_projection_ms": round(projections / 1e3, 2), "probe_decision_ms": round(decisions / 1e3, 2),
            "probe_share_of_prefill": round((projections + decisions) / max(1, total), 3),
            "probe_decision_share": round(decisions / max(1, total), 3)}


def run_pruned_bench(model_dir: Path, static_dir: Path | None, plan: PrunedBenchPlan, work: Path, log: Log
                     ) -> dict[str, Any]:
    from aapp_runtime import Session

    from .machine import machine_info

    rss_before = proc_status_mb("VmRSS")
    session = Session(model_dir, provider="cpu", threads=plan.threads)
    built = session.levels
    missing = [s for s in plan.sparsities if s > 0 and not any(abs(s - b) < 1e-9 for b in built)]
    if missing:
        raise InputError(f"{model_dir} has no pruned graphs for sparsity {missing} (built: {built or 'none'}): "
                         "pass --sparsity with built levels, or re-export with --levels")
    rng = np.random.default_rng(0)
    vocab = int(session.manifest.dims["vocab_size"])
    long_ids = rng.integers(5, vocab, plan.prefill).tolist()
    short_ids = rng.integers(5, vocab, plan.decode_prompt).tolist()
    configs: list[tuple[str, float]] = [("dense", 0.0)] + [("aapp", s) for s in plan.sparsities if s > 0]
    static = None

    def run(config: tuple[str, float], ids: list[int], n: int):
        method, s = config
        if method == "wanda-sp static":
            return static.generate(ids, n, ignore_eos=True)
        return session.generate(ids, n, ignore_eos=True, sparsity=s, method=method)

    weights_mb = (model_dir / "model.onnx.data").stat().st_size / 2**20
    by_level = {}
    # load every graph and warm up: dense, then the levels from the sparsest, so that the peak after each
    # level (with every earlier graph loaded and run) is that level's own peak (its copies are the largest yet)
    for config in [configs[0]] + sorted(configs[1:], key=lambda c: -c[1]):
        run(config, short_ids, 4)
        run(config, long_ids, 1)
        by_level[f"{config[1]:g}"] = round((proc_status_mb("VmHWM") - rss_before) / weights_mb, 3)
    peak = proc_status_mb("VmHWM")  # every graph of the model dir loaded, a request of each level run
    if static_dir:  # the ceiling is another model dir with its own weights: loaded after the measurement
        static = Session(static_dir, provider="cpu", threads=plan.threads)
        configs.append(("wanda-sp static", float(plan.static_sparsity)))
        run(configs[-1], short_ids, 4)
        run(configs[-1], long_ids, 1)
    prefill: dict = {c: [] for c in configs}
    decode: dict = {c: [] for c in configs}
    cold: dict = {c: [] for c in configs}
    for r in range(plan.rounds):
        for config in configs[r % len(configs):] + configs[:r % len(configs)]:
            # the config before was another one: this prefill makes the level's kept-weight buffers anew
            # (page faults on fresh memory), as an app's first request at a level does ("cold")
            cold[config].append(run(config, long_ids, 1).prefill_ms)
            # the timed prefill follows a decode run at the same level and finds those buffers made, as
            # every later request of an app at one level does
            decode[config].append(run(config, short_ids, plan.new_tokens).decode_ms_per_token)
            prefill[config].append(run(config, long_ids, 1).prefill_ms)
        log(f"round {r + 1}/{plan.rounds} done")
    levels = session.pruning.get("levels", {})
    dense_p, dense_d = prefill[configs[0]], decode[configs[0]]
    rows = []
    for config in configs:
        method, s = config
        entry = next((v for v in levels.values() if abs(v["sparsity"] - s) < 1e-9), None) if method == "aapp" else None
        bound = 1.0
        if entry:
            bound = entry["kept_fraction"]
        elif static and method.startswith("wanda-sp"):
            bound = static.pruning.get("kept_fraction", 1.0)
        row = {"method": method, "sparsity": s, "prefill_ms": summary(prefill[config]),
               "decode_ms_per_token": summary(decode[config]),
               "prefill_ratio": round(statistics.median([a / b for a, b in zip(prefill[config], dense_p)]), 3),
               "decode_ratio": round(statistics.median([a / b for a, b in zip(decode[config], dense_d)]), 3),
               "cold_prefill_ms": summary(cold[config]),
               "cold_prefill_ratio": round(statistics.median([a / b for a, b in zip(cold[config], dense_p)]), 3),
               "bytes_read_bound": bound}
        if entry:
            row.update(_probe_split(session, long_ids, entry, work))
        rows.append(row)
    return {"model_dir": str(model_dir), "static_dir": str(static_dir) if static_dir else None,
            "family": session.manifest.data.get("family"), "dims": session.manifest.dims, "plan": asdict(plan),
            "machine": machine_info(), "provider": session.provider, "rows": rows,
            "weights_mb": round(weights_mb, 1), "rss_before_load_mb": round(rss_before, 1),
            "peak_rss_mb": round(peak, 1), "rss_over_dense_weights": round((peak - rss_before) / weights_mb, 3),
            "rss_over_dense_weights_by_level": by_level,
            "rss_note": "peak with the dense session and every level's prefill and decode sessions loaded and run "
                        "(before the static ceiling's model dir is loaded), less the RSS before loading"}


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'config':18s}{'prefill ms':>24s}{'ratio':>7s}{'decode ms/tok':>22s}{'ratio':>7s}{'bound':>7s}"
             f"{'probe ms (proj+dec)':>21s}"]
    for r in report["rows"]:
        p, d = r["prefill_ms"], r["decode_ms_per_token"]
        probe = f"{r['probe_projection_ms']:.0f}+{r['probe_decision_ms']:.0f}" if "probe_decision_ms" in r else ""
        name = f"{r['method']} {r['sparsity']:g}" if r["sparsity"] else r["method"]
        lines.append(f"{name:18s}{p['median']:>10.1f} ({p['min']:.0f}-{p['max']:.0f}){r['prefill_ratio']:>10.3f}"
                     f"{d['median']:>10.2f} ({d['min']:.1f}-{d['max']:.1f}){r['decode_ratio']:>7.3f}"
                     f"{r['bytes_read_bound']:>7.3f}{probe:>21s}")
    m = report["machine"]
    levels = ", ".join(f"{k}: {v:.2f}x" for k, v in report.get("rss_over_dense_weights_by_level", {}).items())
    lines.append(f"peak RSS over the dense weights, each level with every sparser one loaded and run: {levels}")
    lines.append(f"peak RSS {report['peak_rss_mb']:.0f} MB = before load {report['rss_before_load_mb']:.0f} + "
                 f"{report['rss_over_dense_weights']:.2f} x the dense weights ({report['weights_mb']:.0f} MB); "
                 f"{m['cpu']} x{m['cores']}, {report['plan']['threads']} threads, ORT {m['onnxruntime']}")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> Path:
    """Prefill and decode ratios to dense per configuration, with the decode bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    names = [f"{r['method']}\n{r['sparsity']:g}" if r["sparsity"] else r["method"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 3.8))
    ax.bar(x - 0.2, [r["prefill_ratio"] for r in rows], 0.4, label=f"prefill @{report['plan']['prefill']}",
           color="#37c")
    ax.bar(x + 0.2, [r["decode_ratio"] for r in rows], 0.4, label="decode ms/token", color="#2a7")
    ax.scatter(x + 0.2, [r["bytes_read_bound"] for r in rows], marker="_", s=400, color="k", zorder=3,
               label="decode bound (bytes read)")
    ax.axhline(1.0, color="#999", lw=0.8)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("time / dense (median ratio)")
    ax.legend(fontsize=8)
    d = report["dims"]
    ax.set_title(f"{report['family']} hidden {d['hidden_size']}, {d['num_layers']} layers, fp32 CPU, "
                 f"{report['plan']['threads']} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _make_checkpoint(checkpoint: str, params_target: str, text_file: str) -> None:
    """Child process: the random bench checkpoint (torch) and the text its history statistics come from."""
    from ..synthetic import CORPUS, make_bench_checkpoint
    from .plan import parse_count

    if not (Path(checkpoint) / "config.json").is_file():
        make_bench_checkpoint(checkpoint, parse_count(params_target))
    Path(text_file).write_text("\n".join(CORPUS[:40]) + "\n")


__all__ = ["PrunedBenchPlan", "prepare", "run_pruned_bench", "format_table", "plot"]

if __name__ == "__main__":
    _make_checkpoint(*sys.argv[1:4])
