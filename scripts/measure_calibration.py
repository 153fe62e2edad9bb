"""Calibration at scale: time and peak RSS of calibrating a checkpoint in fp32 or bf16 against the
export plan's estimate, and how far bf16's protected units and pruning decisions are from fp32's.

    python scripts/measure_calibration.py CKPT --dtype fp32 --scorer actdiff   # one run, one process
    python scripts/measure_calibration.py CKPT --compare --scorer actdiff      # fp32 vs bf16 (two children)

Each run is a fresh child process (peak RSS is per process: ``VmHWM``). Prompt files default to the
demo card's. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _hwm_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


def one(ckpt: Path, dtype: str, scorer: str | None, out: Path) -> dict:
    from aapp_export.calibration import calibrate_checkpoint
    from aapp_export.checkpoint import WeightReader
    from aapp_export.export import SOURCE_DTYPES
    from aapp_export.families import load_model_spec
    from aapp_export.plan import plan_export

    data = ROOT / "models" / "demo" / "data"
    spec = load_model_spec(ckpt, WeightReader(ckpt))
    plan = plan_export(spec, SOURCE_DTYPES.get(spec.source_dtype, "fp32"), "fp32", dtype, scorer, out)
    t0 = time.perf_counter()
    calibrate_checkpoint(ckpt, out, harmful=data / "harmful_calib.txt", harmless=data / "harmless_calib.txt",
                         text=data / "text_calib.txt", scorer=scorer, dtype=dtype, log=lambda m: None)
    return {"dtype": dtype, "scorer": scorer, "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": round(_hwm_mb(), 1), "plan_peak_mb": round(max(plan.calibration.values()) / 2**20, 1),
            "plan_steps_mb": {k: round(v / 2**20, 1) for k, v in plan.calibration.items()}}


def compare(ckpt: Path, scorer: str | None) -> dict:
    from safetensors.numpy import load_file

    runs, dirs = {}, {}
    for dtype in ("fp32", "bf16"):
        dirs[dtype] = Path(tempfile.mkdtemp(prefix=f"calib-{dtype}-"))
        cmd = [sys.executable, __file__, str(ckpt), "--dtype", dtype, "--out", str(dirs[dtype])]
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
    return {"runs": runs, "protected_units_fp32": total, "protected_units_same_in_bf16": same}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--scorer", default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--compare", action="store_true")
    args = p.parse_args()
    if args.compare:
        print(json.dumps(compare(args.checkpoint, args.scorer), indent=1))
    else:
        out = args.out or Path(tempfile.mkdtemp(prefix="calib-"))
        print(json.dumps(one(args.checkpoint, args.dtype, args.scorer, out)))


if __name__ == "__main__":
    main()
