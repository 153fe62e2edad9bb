"""Calibration at scale: time and peak RSS of calibrating a checkpoint in fp32 or bf16 against the
export plan's estimate, and how far bf16's protected units and pruning decisions are from fp32's.

    python scripts/measure_calibration.py CKPT --dtype fp32 --scorer actdiff   # one run, one process
    python scripts/measure_calibration.py CKPT --compare --scorer actdiff      # fp32 vs bf16 (two children)
    python scripts/measure_calibration.py CKPT --dtype bf16 --export --out D   # a whole aapp-export, step by step

Each run is a fresh child process (peak RSS is per process: ``VmHWM``); a sampler thread reads the
RSS every 20 ms and charges it to the calibration step running then (model load, history
statistics, circuit activations, grad-act backward (every backward scorer), causal check), the steps the plan estimates.
Prompt files default to the demo card's. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _hwm_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


class StepPeaks:
    """Peak RSS (MiB) per calibration step, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.02) -> None:
        self.step, self.peaks, self.anon, self.seconds = "start", {}, {}, {}
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._interval, self._stop = interval, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page / 2**20

    @staticmethod
    def _anon() -> float:
        """Resident anonymous memory (MiB): RSS less the file pages (a mapped checkpoint that the
        kernel may drop once read, as the graph build's streamed weights)."""
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def _sample(self) -> None:
        step = self.step
        self.peaks[step] = max(self.peaks.get(step, 0.0), self._rss())
        self.anon[step] = max(self.anon.get(step, 0.0), self._anon())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def wrap(self, module, name: str, step: str) -> None:
        """Charge the time inside ``module.name`` to ``step`` (the previous step resumes after it)."""
        fn = getattr(module, name)

        def wrapped(*args, **kwargs):
            outer, self.step, t0 = self.step, step, time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._sample()
                self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - t0
                self.step = outer
        setattr(module, name, wrapped)

    def __enter__(self) -> "StepPeaks":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _prompt_files(limit: int | None, work: Path) -> dict[str, Path]:
    """The demo card's calibration files, or their first ``limit`` lines (same batch shapes, fewer batches)."""
    data = ROOT / "models" / "demo" / "data"
    files = {"harmful": data / "harmful_calib.txt", "harmless": data / "harmless_calib.txt",
             "text": data / "text_calib.txt", "check": data / "harmful_val.txt",
             "check_harmless": data / "harmless_val.txt"}
    if limit is None:
        return files
    for key, path in files.items():
        files[key] = work / f"limited_{path.name}"
        files[key].write_text("\n".join(path.read_text().splitlines()[:limit]) + "\n")
    return files


def one(ckpt: Path, dtype: str, scorer: str | None, out: Path, check_prompts: int = 48,
        limit: int | None = None, export: bool = False) -> dict:
    """One calibration (or, ``export``, a whole ``aapp-export`` into ``out/model``) with its step peaks."""
    from aapp_export import calibration, circuits
    from aapp_export import export as export_module
    from aapp_export.calibration import calibrate_checkpoint
    from aapp_export.checkpoint import WeightReader
    from aapp_export.export import SOURCE_DTYPES, CalibrationOptions, ExportOptions, export_model, export_plan
    from aapp_export.families import load_model_spec
    from aapp_export.plan import plan_export

    files = _prompt_files(limit, out)
    spec = load_model_spec(ckpt, WeightReader(ckpt))
    options = ExportOptions(calibration=CalibrationOptions(**files, scorer=scorer, dtype=dtype, device="cpu",
                                                           check_prompts=check_prompts, use_cache=False))
    # the plan at the batch this run makes (the prompt files' lines, at most the calibration's 16)
    batch = min(16, limit or 16)
    export_dtype = export_plan(str(ckpt), out / "model" / "model.onnx", options).export_dtype if export else "fp32"
    plan = plan_export(spec, SOURCE_DTYPES.get(spec.source_dtype, "fp32"), export_dtype, dtype, scorer, out,
                       levels=4 if export else 0, batch=batch)
    peaks = StepPeaks()
    for module, name, step in ((calibration, "load_model", "model load"),
                               (calibration, "collect_stats", "history statistics"),
                               (circuits, "collect_activations", "circuit activations"),
                               (circuits, "score_grad_act", "grad-act backward"),
                               (circuits, "score_pruned_grad_act", "grad-act backward"),
                               (circuits, "dense_refusal", "causal check"),
                               (circuits, "causal_check", "causal check"),
                               (export_module, "build_decoder", "graph build"),
                               (export_module, "export_levels", "pruned levels")):
        peaks.wrap(module, name, step)
    t0 = time.perf_counter()
    with peaks:
        if export:
            export_model(str(ckpt), out / "model" / "model.onnx", options, log=lambda m: print(m, file=sys.stderr))
        else:
            calibrate_checkpoint(ckpt, out, **files, scorer=scorer, dtype=dtype, check_prompts=check_prompts,
                                 log=lambda m: None, use_cache=False)
    measured = {k: round(v, 1) for k, v in peaks.peaks.items()}
    planned = {k: round(v / 2**20, 1) for k, v in plan.calibration.items()}
    if export:
        planned["graph build"] = round(plan.graph_build / 2**20, 1)
    report = {"checkpoint": str(ckpt), "parameters": plan.params["total"], "dtype": dtype, "scorer": scorer,
              "check_prompts": check_prompts, "prompt_lines": limit or "all", "plan_batch": batch,
              "seconds": round(time.perf_counter() - t0, 1),
              "step_seconds": {k: round(v, 1) for k, v in peaks.seconds.items()},
              "peak_rss_mb": round(_hwm_mb(), 1), "plan_peak_mb": round(plan.peak / 2**20, 1) if export else
              round(max(plan.calibration.values()) / 2**20, 1),
              "step_peak_rss_mb": measured, "step_peak_anon_mb": {k: round(v, 1) for k, v in peaks.anon.items()},
              "plan_steps_mb": planned,
              "plan_over_measured": {k: round(planned[k] / measured[k], 3) for k in planned if measured.get(k)}}
    if export:
        report |= {"export_dtype": plan.export_dtype, "model_dir_bytes": sum(
            f.stat().st_size for f in (out / "model").iterdir()), "plan_model_dir_bytes": plan.model_dir}
    return report


def compare(ckpt: Path, scorer: str | None, check_prompts: int = 48, limit: int | None = None,
            decide: bool = True) -> dict:
    from safetensors.numpy import load_file

    runs, dirs = {}, {}
    for dtype in ("fp32", "bf16"):
        dirs[dtype] = Path(tempfile.mkdtemp(prefix=f"calib-{dtype}-"))
        cmd = [sys.executable, __file__, str(ckpt), "--dtype", dtype, "--out", str(dirs[dtype]),
               "--check-prompts", str(check_prompts)] + (["--limit", str(limit)] if limit else [])
        if scorer:
            cmd += ["--scorer", scorer]
        runs[dtype] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    a, b = (load_file(str(dirs[d] / "calibration.safetensors")) for d in ("fp32", "bf16"))
    same = total = 0
    for key in a:
        if key.startswith("circuits.layers.") and key.endswith(("protected_heads", "protected_channels")):
            x, y = set(a[key].tolist()), set(b[key].tolist())
            same += len(x & y)
            total += len(x)
    decisions = same_decisions(ckpt, dirs["fp32"], dirs["bf16"]) if decide else None
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
    return {"runs": runs, "protected_units_fp32": total, "protected_units_same_in_bf16": same,
            **({"decisions": decisions} if decisions else {})}


def same_decisions(ckpt: Path, a: Path, b: Path, sparsity: float = 0.4, limit: int = 24) -> dict:
    """The pruning decisions the two calibrations give on the same fp32 model (aapp at ``sparsity``, the
    first ``limit`` prompts of the demo card's harmful_test and harmless_test): how many (prompt, layer,
    kind) decisions keep the same units, and the mean overlap of the kept sets."""
    import torch

    from aapp_export.calibration import load_calibration, load_model, read_lines
    from aapp_export.evaluate import chat_inputs
    from aapp_export.pruning import Pruner, PruneConfig

    model, tok = load_model(ckpt)
    n = model.config.get_text_config().num_hidden_layers
    cals = [load_calibration(d, n) for d in (a, b)]
    data = ROOT / "models" / "demo" / "data"
    prompts = read_lines(data / "harmful_test.txt")[:limit] + read_lines(data / "harmless_test.txt")[:limit]
    equal = total = 0
    overlap = 0.0
    for prompt in prompts:
        ids = chat_inputs(tok, [prompt])["input_ids"]
        kept = []
        for stats, circuits in cals:
            with torch.no_grad(), Pruner(model, PruneConfig("aapp", sparsity), stats, circuits.protection()) as pruner:
                pruner.new_request()
                model(ids)
            kept.append({(unit, i): set(rows[0].tolist()) for unit in ("heads", "channels")
                         for i, rows in getattr(pruner.log, unit).items()})
        for key, x in kept[0].items():
            y = kept[1][key]
            total += 1
            equal += x == y
            overlap += len(x & y) / max(1, len(x))
    return {"method": "aapp", "sparsity": sparsity, "prompts": len(prompts), "decisions": total,
            "equal": equal, "mean_kept_overlap": round(overlap / max(1, total), 5)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--scorer", default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--compare", action="store_true")
    p.add_argument("--check-prompts", type=int, default=48,
                   help="harmful prompts of the causal check (the export uses 48; fewer is quicker, same peak)")
    p.add_argument("--limit", type=int, default=None,
                   help="the first N lines of each prompt file (16: one batch of each step, the same peak)")
    p.add_argument("--export", action="store_true",
                   help="run the whole export (calibration, graph build, pruned levels) into OUT/model")
    args = p.parse_args()
    if args.compare:
        print(json.dumps(compare(args.checkpoint, args.scorer, args.check_prompts, args.limit), indent=1))
    else:
        out = args.out or Path(tempfile.mkdtemp(prefix="calib-"))
        print(json.dumps(one(args.checkpoint, args.dtype, args.scorer, out, args.check_prompts, args.limit,
                             args.export)))


if __name__ == "__main__":
    main()
