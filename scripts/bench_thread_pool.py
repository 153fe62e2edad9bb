"""What a request pays for the previous one's spinning threads, per thread-pool setting.

    python scripts/bench_thread_pool.py exported/demo [--rounds 8] [--processes 2] [--out FILE]

A pruning-capable model dir runs several ONNX Runtime sessions. Each setting (``THREAD_POOL``)
runs in its own process, the settings alternating ``--processes`` times: ``stop``
(``thread_pool="auto"``: pools per session whose idle workers stop spinning when a run returns),
``spin`` ("session": ONNX Runtime's default, they spin on) and ``global`` ("shared": one pool for
the process, which ONNX Runtime then imposes on every session the process opens;
``aapp_runtime.thread_pool``). In each round: a dense 32+48-token generation (its median decode
step), then at once a flagged dense-prefill request on a 512-token prompt (wall ms), then after a
0.3 s pause the same request again, then an AAPP 32+48 generation (median decode step), then at once
a dense 512-token prefill (wall ms). Then decode alone: dense 64+128-token generations one after
another, then AAPP ones (median step); and the first 24 harmless val2 prompts (greedy, 48 new
tokens at most) in a row, dense, AAPP and aapp-adaptive's dense-prefill path each (ms per request,
median of 3 rounds). Prints JSON (medians over the rounds, per process and setting; the machine and
onnxruntime) and writes it to ``--out``. ``THREAD_POOL`` also serves ``bench_adaptive_paths.py --pools``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# the settings, as named in the stored reports, and the Session(thread_pool=...) each one runs
THREAD_POOL = {"stop": "auto", "spin": "session", "global": "shared"}
SETTINGS = tuple(THREAD_POOL)
DATA = Path(__file__).resolve().parents[1] / "models" / "demo" / "data" / "harmless_val2.txt"


def measure(model_dir: str, setting: str, rounds: int) -> dict:
    """One process, one setting: the medians over ``rounds``."""
    import numpy as np

    from aapp_runtime import Session

    s = Session(model_dir, provider="cpu", thread_pool=THREAD_POOL[setting])
    rng = np.random.default_rng(0)
    vocab = min(30000, int(s.manifest.dims["vocab_size"]))
    long, short = rng.integers(5, vocab, 512).tolist(), rng.integers(5, vocab, 32).tolist()
    flagged = dict(sparsity=0.4, method="aapp-adaptive", adaptive_path="dense-prefill", adaptive_threshold=0.0)
    aapp = dict(sparsity=0.4, method="aapp")
    for options in ({}, flagged, aapp):  # open every graph, warm up
        s.generate(short, 8, ignore_eos=True, **options)

    def wall(**options) -> float:
        t0 = time.perf_counter()
        s.generate(long, 1, ignore_eos=True, **options)
        return (time.perf_counter() - t0) * 1000

    got: dict[str, list[float]] = {k: [] for k in ("dense_decode_step_ms", "flagged_512_after_dense_ms",
                                                   "flagged_512_after_pause_ms", "aapp_decode_step_ms",
                                                   "dense_512_after_aapp_ms")}
    for _ in range(rounds):
        got["dense_decode_step_ms"].append(statistics.median(s.generate(short, 48, ignore_eos=True).decode_ms))
        got["flagged_512_after_dense_ms"].append(wall(**flagged))
        time.sleep(0.3)
        got["flagged_512_after_pause_ms"].append(wall(**flagged))
        got["aapp_decode_step_ms"].append(statistics.median(s.generate(short, 48, ignore_eos=True, **aapp).decode_ms))
        got["dense_512_after_aapp_ms"].append(wall())
    # one kind of request after another: decode steps alone, then real prompts end to end
    long_prompt = long[:64]
    got["dense_decode_alone_step_ms"] = [statistics.median(s.generate(long_prompt, 128, ignore_eos=True).decode_ms)
                                         for _ in range(rounds // 2)]
    got["aapp_decode_alone_step_ms"] = [statistics.median(s.generate(long_prompt, 128, ignore_eos=True,
                                                                     **aapp).decode_ms) for _ in range(rounds // 2)]
    texts = [t for t in DATA.read_text().splitlines() if t.strip()][:24]
    for name, options in (("dense", {}), ("aapp", aapp),
                          ("aapp_adaptive_dense_prefill", dict(sparsity=0.4, method="aapp-adaptive",
                                                               adaptive_path="dense-prefill"))):
        per_round = []
        for _ in range(3):
            t0 = time.perf_counter()
            for text in texts:
                s.generate(text, 48, **options)
            per_round.append((time.perf_counter() - t0) * 1000 / len(texts))
        got[f"{name}_requests_in_a_row_ms"] = per_round
    return {k: round(statistics.median(v), 3) for k, v in got.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--processes", type=int, default=2, help="processes per setting, alternating")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--one", choices=SETTINGS, default=None, help=argparse.SUPPRESS)  # a child process
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.model_dir, args.one, args.rounds)))
        return 0
    import onnxruntime as ort

    runs: dict[str, list[dict]] = {k: [] for k in SETTINGS}
    for _ in range(args.processes):
        for setting in SETTINGS:
            proc = subprocess.run([sys.executable, __file__, args.model_dir, "--rounds", str(args.rounds),
                                   "--one", setting], capture_output=True, text=True, check=True)
            runs[setting].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out = {"model_dir": args.model_dir, "rounds": args.rounds, "provider": "cpu", "onnxruntime": ort.__version__,
           "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "command": "python scripts/bench_thread_pool.py " + " ".join(argv or sys.argv[1:]), "runs": runs}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
