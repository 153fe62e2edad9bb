"""Load time of a model dir with each integrity check: ``verify="none"`` (sizes only: the baseline),
the first default load (every file hashed, the large ones' stamps written), later default loads
(small files hashed, large ones trusted by their stamp) and ``verify="full"``.

    python scripts/bench_load.py MODEL_DIR [--repeats 7]

Each load is a fresh child process (``Session(dir, provider="cpu")``, the time of the constructor),
the first-load case with an empty ``AAPP_CACHE``; the order of the cases rotates each repeat. Prints
JSON: median, min, max per case and the ratio of later loads to the unverified baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys, time
t0 = time.perf_counter()
from aapp_runtime import Session
Session(sys.argv[1], provider="cpu", verify=sys.argv[2])
print(time.perf_counter() - t0)
"""


def load_s(model_dir: Path, verify: str, cache: Path) -> float:
    env = {**os.environ, "AAPP_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(model_dir), verify], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    scratch = tempfile.TemporaryDirectory(prefix="aapp-bench-load-")  # every stamp cache below, removed at the end
    fresh = iter(range(1 << 30))
    stamped = Path(scratch.name) / "stamped"

    def new_cache() -> Path:
        return Path(scratch.name) / f"first-{next(fresh)}"

    load_s(args.model_dir, "fast", stamped)  # writes the stamps the "later loads" case uses
    cases = {"none": lambda: load_s(args.model_dir, "none", stamped),
             "first": lambda: load_s(args.model_dir, "fast", new_cache()),
             "later": lambda: load_s(args.model_dir, "fast", stamped),
             "full": lambda: load_s(args.model_dir, "full", stamped)}
    load_s(args.model_dir, "none", stamped)  # warm the page cache
    times: dict[str, list[float]] = {k: [] for k in cases}
    names = list(cases)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(cases[name]())
    summary = {k: {"median_s": round(statistics.median(v), 3), "min_s": round(min(v), 3), "max_s": round(max(v), 3)}
               for k, v in times.items()}
    size = sum(f.stat().st_size for f in args.model_dir.iterdir() if f.is_file())
    base = summary["none"]["median_s"]
    print(json.dumps({"model_dir": str(args.model_dir), "bytes": size, "repeats": args.repeats,
                      "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
                      "loads": summary, "later_over_none": round(summary["later"]["median_s"] / base, 3),
                      "first_over_none": round(summary["first"]["median_s"] / base, 3),
                      "full_over_none": round(summary["full"]["median_s"] / base, 3)}, indent=1))
    scratch.cleanup()


if __name__ == "__main__":
    main()
