"""Decode steps with a concatenated KV cache vs a preallocated buffer, on ONNX Runtime.

    python scripts/bench_kv_cache.py --model bench_out/ours [--contexts 128,1024,3000] [--rounds 4]
    python scripts/bench_kv_cache.py [--layers 18] [--past 128] [--buffers 256,1024,4096] [--repeats 60]

With ``--model`` (a model dir exported with ``--attention gqa``, e.g. ``aapp-bench``'s
``bench_out/ours``): ``aapp_runtime.Session`` decoding with ``kv_cache="buffer"`` (one preallocated
buffer per layer, GroupQueryAttention appends in place) vs ``kv_cache="concat"``, for prompts of
each ``--contexts`` length, 32 new tokens, the two alternating per round; median of the rounds'
median ms per step.

Without it, the op-level comparison for the standard ``Attention`` op: two graphs of ``--layers`` attention ops for one decode token (shape of the bench model: 4 query
heads, 1 KV head, head_dim 256):

- ``concat``: opset-23 ``Attention`` with ``past_key``/``past_value``; ORT concatenates the cache
  into a new ``present`` every step (what our exported graphs do);
- ``buffer``: opset-24 ``TensorScatter`` writes the new key/value into a preallocated buffer bound
  as both input and output (IOBinding, so ORT updates it in place), then ``Attention`` over the
  buffer with ``nonpad_kv_seqlen``.

Prints JSON: median and min-max ms per step for each, the machine and ORT version. Both variants run
alternately in one process, so the ratio is measured side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

Q_HEADS, KV_HEADS, HEAD_DIM = 4, 1, 256


def _f(name: str, shape: list | None) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _session(nodes: list, inputs: list, outputs: list, opset: int, threads: int) -> ort.InferenceSession:
    model = helper.make_model(helper.make_graph(nodes, "kv", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def concat_step(layers: int, past: int, threads: int, rng: np.random.RandomState):
    """Session and bound IOBinding of the concatenating variant."""
    nodes, inputs, outputs = [], [_f("q", [1, Q_HEADS, 1, HEAD_DIM])], []
    for i in range(layers):
        inputs += [_f(f"pk{i}", [1, KV_HEADS, "P", HEAD_DIM]), _f(f"pv{i}", [1, KV_HEADS, "P", HEAD_DIM]),
                   _f(f"nk{i}", [1, KV_HEADS, 1, HEAD_DIM]), _f(f"nv{i}", [1, KV_HEADS, 1, HEAD_DIM])]
        nodes.append(helper.make_node("Attention", ["q", f"nk{i}", f"nv{i}", "", f"pk{i}", f"pv{i}"],
                                      [f"y{i}", f"ck{i}", f"cv{i}"]))
        outputs += [_f(f"y{i}", None), _f(f"ck{i}", None), _f(f"cv{i}", None)]
    sess = _session(nodes, inputs, outputs, 23, threads)
    b = sess.io_binding()
    b.bind_cpu_input("q", rng.randn(1, Q_HEADS, 1, HEAD_DIM).astype(np.float32))
    for i in range(layers):
        for name in (f"pk{i}", f"pv{i}"):
            b.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(
                rng.randn(1, KV_HEADS, past, HEAD_DIM).astype(np.float32)))
        for name in (f"nk{i}", f"nv{i}"):
            b.bind_cpu_input(name, rng.randn(1, KV_HEADS, 1, HEAD_DIM).astype(np.float32))
    for o in sess.get_outputs():
        b.bind_output(o.name)
    return sess, b


def buffer_step(layers: int, past: int, size: int, threads: int, rng: np.random.RandomState):
    """Session and bound IOBinding of the preallocated-buffer variant (buffers updated in place)."""
    nodes = []
    inputs = [_f("q", [1, Q_HEADS, 1, HEAD_DIM]), helper.make_tensor_value_info("write", TensorProto.INT64, [1]),
              helper.make_tensor_value_info("valid", TensorProto.INT64, [1])]
    outputs = []
    for i in range(layers):
        inputs += [_f(f"bk{i}", [1, KV_HEADS, size, HEAD_DIM]), _f(f"bv{i}", [1, KV_HEADS, size, HEAD_DIM]),
                   _f(f"nk{i}", [1, KV_HEADS, 1, HEAD_DIM]), _f(f"nv{i}", [1, KV_HEADS, 1, HEAD_DIM])]
        nodes += [helper.make_node("TensorScatter", [f"bk{i}", f"nk{i}", "write"], [f"ok{i}"], axis=-2),
                  helper.make_node("TensorScatter", [f"bv{i}", f"nv{i}", "write"], [f"ov{i}"], axis=-2),
                  helper.make_node("Attention", ["q", f"ok{i}", f"ov{i}", "", "", "", "valid"], [f"y{i}"])]
        outputs += [_f(f"y{i}", None), _f(f"ok{i}", None), _f(f"ov{i}", None)]
    sess = _session(nodes, inputs, outputs, 24, threads)
    b = sess.io_binding()
    b.bind_cpu_input("q", rng.randn(1, Q_HEADS, 1, HEAD_DIM).astype(np.float32))
    b.bind_cpu_input("write", np.array([past], dtype=np.int64))
    b.bind_cpu_input("valid", np.array([past + 1], dtype=np.int64))
    for i in range(layers):
        for name, out in ((f"bk{i}", f"ok{i}"), (f"bv{i}", f"ov{i}")):
            buf = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, KV_HEADS, size, HEAD_DIM), np.float32))
            b.bind_ortvalue_input(name, buf)
            b.bind_ortvalue_output(out, buf)  # same OrtValue: TensorScatter writes in place
        for name in (f"nk{i}", f"nv{i}"):
            b.bind_cpu_input(name, rng.randn(1, KV_HEADS, 1, HEAD_DIM).astype(np.float32))
        b.bind_output(f"y{i}")
    return sess, b


def _stats(times: list[float]) -> dict[str, float]:
    ms = [t * 1e3 for t in times]
    return {"median_ms": round(statistics.median(ms), 3), "min_ms": round(min(ms), 3), "max_ms": round(max(ms), 3)}


def session_steps(model_dir: str, contexts: list[int], rounds: int, threads: int, new_tokens: int = 32) -> list[dict]:
    """Median decode ms per step of the runtime with each KV layout, side by side."""
    from aapp_runtime import Session

    sessions = {k: Session(model_dir, provider="cpu", threads=threads, kv_cache=k) for k in ("buffer", "concat")}
    vocab = int(sessions["buffer"].manifest.dims["vocab_size"])
    rows = []
    for context in contexts:
        ids = [int(t) for t in np.random.RandomState(context).randint(10, vocab, context)]
        per_round: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(rounds + 1):
            for name, session in sessions.items():
                r = session.generate(ids, max_new_tokens=new_tokens + 1, ignore_eos=True)
                per_round[name].append(statistics.median(r.decode_ms) / 1e3)
        row = {"context": context, **{k: _stats(v[1:]) for k, v in per_round.items()}}  # round 0: warm-up
        row["ratio_buffer_vs_concat"] = round(row["buffer"]["median_ms"] / row["concat"]["median_ms"], 2)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model dir exported with --attention gqa: compare the runtime's KV layouts")
    ap.add_argument("--contexts", default="128,1024,3000", help="prompt lengths (with --model)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds (with --model)")
    ap.add_argument("--layers", type=int, default=18)
    ap.add_argument("--past", type=int, default=128, help="tokens already in the cache")
    ap.add_argument("--buffers", default="256,1024,4096", help="preallocated buffer lengths to try")
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    from aapp_export.bench import machine_info

    machine = {"threads": args.threads, **machine_info()}
    if args.model:
        from aapp_runtime.errors import AappRuntimeError

        try:
            rows = session_steps(args.model, [int(c) for c in args.contexts.split(",")], args.rounds, args.threads)
        except AappRuntimeError as exc:
            print(f"bench_kv_cache: {exc}", file=sys.stderr)
            return 2
        print(json.dumps({"model": args.model, **machine, "results": rows}, indent=1))
        return 0
    rng = np.random.RandomState(0)
    report = {"layers": args.layers, "past": args.past, "q_heads": Q_HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM,
              **machine, "results": []}
    for size in [int(s) for s in args.buffers.split(",")]:
        runs = {"concat": concat_step(args.layers, args.past, args.threads, rng),
                "buffer": buffer_step(args.layers, args.past, size, args.threads, rng)}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for i in range(args.repeats + 5):
            for name, (sess, binding) in runs.items():
                t0 = time.perf_counter()
                sess.run_with_iobinding(binding)
                if i >= 5:  # warm-up
                    times[name].append(time.perf_counter() - t0)
        row = {"buffer": size, "concat": _stats(times["concat"]), "buffer_in_place": _stats(times["buffer"])}
        row["ratio_buffer_vs_concat"] = round(row["buffer_in_place"]["median_ms"] / row["concat"]["median_ms"], 2)
        report["results"].append(row)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
