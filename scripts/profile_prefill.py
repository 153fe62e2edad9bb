"""Where a prefill spends its time: ONNX Runtime's profiler, kernel time per op type, for one or more
ONNX decoder graphs (ours, or onnxruntime-genai's) on the CPU provider.

    aapp-bench --out bench_out          # builds bench_out/ours, bench_out/genai-last, ...
    python scripts/profile_prefill.py bench_out/ours/model.onnx bench_out/genai-last/model.onnx [--length 512]

Feeds random token ids and an empty KV cache (for onnxruntime-genai's shared-buffer graphs: buffers of
the sliding window on local layers and of the prompt length on global ones, read from its
``genai_config.json``). Prints JSON: per graph the median run time and, per op type, kernel ms per
run and share of the kernel total.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def _genai_dims(model_file: Path, length: int) -> dict[str, int]:
    config_file = model_file.parent / "genai_config.json"
    if not config_file.is_file():
        return {}
    decoder = json.loads(config_file.read_text())["model"]["decoder"]
    window = (decoder.get("sliding_window") or {}).get("window_size", length)
    return {"kv_cache_dim": decoder["head_size"], "past_sliding_length": window, "past_sequence_length": length}


def feeds(sess: ort.InferenceSession, length: int, dims: dict[str, int]) -> dict[str, np.ndarray]:
    """Random prompt of ``length`` tokens and an empty (or, for shared buffers, zeroed) KV cache."""
    rng = np.random.RandomState(0)
    out: dict[str, np.ndarray] = {}
    for i in sess.get_inputs():
        if i.name == "input_ids":
            out[i.name] = rng.randint(5, 1000, (1, length)).astype(np.int64)
        elif i.name == "attention_mask":
            out[i.name] = np.ones((1, length), np.int64)
        elif i.name == "position_ids":
            out[i.name] = np.arange(length, dtype=np.int64)[None]
        elif "past" in i.name:
            shape = [d if isinstance(d, int) else 1 if "batch" in d else dims.get(d, 0) for d in i.shape]
            out[i.name] = np.zeros(shape, np.float16 if "float16" in i.type else np.float32)
        else:
            raise SystemExit(f"{i.name}: input not understood by this script ({i.shape}, {i.type})")
    return out


def profile(model_file: Path, length: int, threads: int, repeats: int) -> dict:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "trace")
    sess = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
    inputs = feeds(sess, length, _genai_dims(model_file, length))
    sess.run(None, inputs)  # warm-up (also profiled, excluded below by counting runs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, inputs)
        times.append((time.perf_counter() - t0) * 1e3)
    trace = Path(sess.end_profiling())
    per_op: collections.Counter = collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1e3
    trace.unlink()
    runs = repeats + 1
    total = sum(per_op.values())
    return {"model": str(model_file), "length": length, "run_ms_median": round(statistics.median(times), 1),
            "run_ms_min_max": [round(min(times), 1), round(max(times), 1)], "kernel_ms_per_run": round(total / runs, 1),
            "op_types": {op: {"ms_per_run": round(ms / runs, 2), "share": round(ms / total, 4)}
                         for op, ms in per_op.most_common()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path, help="model.onnx files")
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    report = {"onnxruntime": ort.__version__, "threads": args.threads,
              "graphs": [profile(m, args.length, args.threads, args.repeats) for m in args.models]}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
