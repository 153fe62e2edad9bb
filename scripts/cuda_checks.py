"""The checks only a GPU can run, in one go, for the device machine (a few minutes of device time).

    PYTHONPATH=.:runtime python scripts/cuda_checks.py --out $OUT   # on the GPU machine (nothing installed)
    python scripts/cuda_checks.py --out /tmp/c --quick              # here: the CPU provider, tiny shapes

On the GPU machine the packages are not installed: ``PYTHONPATH=.:runtime`` puts ``aapp_export`` and
``aapp_runtime`` (``runtime/aapp_runtime``) on the path; its Python brings torch, transformers, onnx
and onnxruntime.

Writes ``cuda_checks.json`` (and prints it): the providers ONNX Runtime and torch see; fp16 (and
bf16) parity of the three families against transformers; the in-place KV buffer against the
concatenated cache; pruned decisions on CUDA against CPU fp32 (and aapp-adaptive's dense-prefill
path: unflagged = AAPP's tokens, flagged against CPU fp32); dense, pruned (aapp 0.4) and dense-prefill
(flagged and not) prefill and decode latency, and the host copy of a prompt's K/V that the split
prefill's in-place writes spare, at a Gemma-3-1B shape (26 layers) and at a Gemma-3-12B layer width (4 layers of
hidden 3840, MLP 15360, 16 query / 8 KV heads: per-layer cost; random weights; calibration of the
levels on the GPU with ``--device cuda``); calibration of a Gemma-3-4B shape on the GPU in bf16
(time, peak GPU memory, the plan's estimate). Each check records its error instead of stopping the
run, so one failure does not cost the others. Never part of the tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CALIB = ROOT / "models" / "demo" / "data"


def timed(results: dict, name: str, fn: Callable[[], Any]) -> None:
    t0 = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # noqa: BLE001 - a failed check is a result
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
    results[name + "_s"] = round(time.perf_counter() - t0, 1)
    print(f"{name}: {json.dumps(results[name])[:300]}", file=sys.stderr)


def providers() -> dict:
    import onnxruntime as ort
    import torch

    return {"onnxruntime": ort.__version__, "available": ort.get_available_providers(),
            "torch_cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def parity(work: Path, provider: str) -> dict:
    """fp16 / bf16 exports of each family on ``provider`` against transformers fp32 (last-position logits of
    a 40-token prompt, and 32 greedy tokens against the fp32 export on CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    from aapp_export.export import ExportOptions, export_model
    from aapp_export.synthetic import make_checkpoint
    from aapp_runtime import Session

    ids = list(range(5, 45))
    out = {}
    for fam in ("gemma3", "llama", "qwen2"):
        ckpt = make_checkpoint(work / f"ckpt-{fam}", fam)
        with torch.no_grad():
            ref = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32)(torch.tensor([ids])).logits[0, -1]
        ref = ref.numpy()
        cpu = Session(export_model(str(ckpt), work / f"{fam}-fp32" / "model.onnx", log=lambda m: None), provider="cpu")
        want = cpu.generate(ids, max_new_tokens=32, ignore_eos=True).tokens
        for dtype in ("fp16", "bf16") if fam == "gemma3" and provider == "cuda" else ("fp16",):  # bf16: CUDA only
            d = export_model(str(ckpt), work / f"{fam}-{dtype}" / "model.onnx", ExportOptions(dtype=dtype),
                             log=lambda m: None)
            s = Session(d, provider=provider)
            got = s.generate(ids, max_new_tokens=32, ignore_eos=True).tokens
            out[f"{fam}-{dtype}"] = {"provider": s.provider, "logits_max_abs_diff": float(np.abs(s.logits(ids) - ref).max()),
                                     "greedy_tokens_equal_to_cpu_fp32": sum(a == b for a, b in zip(got, want)),
                                     "of": len(want)}
    return out


def kv_buffer(work: Path, provider: str) -> dict:
    from aapp_runtime import Session

    d = work / "gemma3-fp16"
    ids = list(range(5, 300))  # past the sliding window
    a = Session(d, provider=provider).generate(ids, max_new_tokens=64, ignore_eos=True)
    b = Session(d, provider=provider, kv_cache="concat").generate(ids, max_new_tokens=64, ignore_eos=True)
    return {"tokens_equal": a.tokens == b.tokens, "buffer_decode_ms": statistics.median(a.decode_ms),
            "concat_decode_ms": statistics.median(b.decode_ms)}


def pruned_decisions(work: Path, provider: str) -> dict:
    """A calibrated tiny Gemma 3 (levels 0.4) exported fp16: kept units on ``provider`` vs CPU fp32."""
    from aapp_export.export import CalibrationOptions, ExportOptions, export_model
    from aapp_export.synthetic import make_checkpoint
    from aapp_runtime import Session

    ckpt = make_checkpoint(work / "ckpt-pruned", "gemma3", num_hidden_layers=6,
                           layer_types=["sliding_attention", "full_attention"] * 3)
    cal = CalibrationOptions(CALIB / "harmful_calib.txt", CALIB / "harmless_calib.txt", CALIB / "text_calib.txt",
                             scorer="actdiff", device="auto")
    dirs = {dtype: export_model(str(ckpt), work / f"pruned-{dtype}" / "model.onnx",
                                ExportOptions(dtype=dtype, calibration=cal, levels=(0.4,)), log=lambda m: None)
            for dtype in ("fp32", "fp16")}
    ref, dev = Session(dirs["fp32"], provider="cpu"), Session(dirs["fp16"], provider=provider)
    same = total = 0
    for prompt in CALIB.joinpath("harmful_test.txt").read_text().splitlines()[:20]:
        a, b = ref.decisions(prompt, sparsity=0.4, method="aapp"), dev.decisions(prompt, sparsity=0.4, method="aapp")
        for kind in ("heads", "channels"):
            for layer, kept in a[kind].items():
                total += 1
                same += sorted(kept) == sorted(b[kind][layer])
    gen = dev.generate("How do I pick a lock?", sparsity=0.4, method="aapp", max_new_tokens=16)
    # aapp-adaptive's dense-prefill path on the device: the split prefill's parts and the seeded cache
    dp = {t: dev.generate("How do I pick a lock?", sparsity=0.4, method="aapp-adaptive", max_new_tokens=16,
                          adaptive_path="dense-prefill", adaptive_threshold=t) for t in (0.0, 1.0)}
    ref_dp = ref.generate("How do I pick a lock?", sparsity=0.4, method="aapp-adaptive", max_new_tokens=16,
                          adaptive_path="dense-prefill", adaptive_threshold=0.0)
    return {"provider": dev.provider, "decisions_equal": same, "of": total, "risk_gate": gen.risk_gate,
            "kept_fraction": gen.kept_fraction,
            "dense_prefill_unflagged_equals_aapp": dp[1.0].tokens == gen.tokens,
            "dense_prefill_flagged": {"dense_prefill": dp[0.0].dense_prefill, "sparsity": dp[0.0].sparsity,
                                      "tokens_equal_cpu_fp32": dp[0.0].tokens == ref_dp.tokens}}


def latency(work: Path, provider: str, name: str, overrides: dict, rounds: int) -> dict:
    """Dense and aapp-0.4 prefill (512 tokens) and decode (64 after 128) on a random checkpoint."""
    from aapp_export.synthetic import make_bench_checkpoint
    from aapp_export.export import CalibrationOptions, ExportOptions, export_model
    from aapp_runtime import Session

    ckpt = make_bench_checkpoint(work / f"ckpt-{name}", **overrides)
    cal = CalibrationOptions(CALIB / "harmful_calib.txt", CALIB / "harmless_calib.txt", CALIB / "text_calib.txt",
                             scorer="actdiff", device="auto")
    t0 = time.perf_counter()
    d = export_model(str(ckpt), work / f"{name}-fp16" / "model.onnx",
                     ExportOptions(dtype="fp16", calibration=cal, levels=(0.4,)), log=lambda m: None)
    export_s = time.perf_counter() - t0
    s = Session(d, provider=provider)
    rng = np.random.default_rng(0)
    top = min(30000, overrides["vocab_size"])
    long, short = rng.integers(5, top, 512).tolist(), rng.integers(5, top, 128).tolist()
    out: dict[str, Any] = {"provider": s.provider, "export_s": round(export_s, 1)}
    variants = {"dense": dict(method="dense", sparsity=0.0), "aapp": dict(method="aapp", sparsity=0.4),
                # every request flagged: head + dense tail (own-activation units, K/V gathered), pruned decode
                "dense_prefill_flagged": dict(method="aapp-adaptive", sparsity=0.4, adaptive_path="dense-prefill",
                                              adaptive_threshold=0.0),
                # none flagged: head + pruned tail, K/V written in place into the level's buffers
                "dense_prefill_unflagged": dict(method="aapp-adaptive", sparsity=0.4, adaptive_path="dense-prefill",
                                                adaptive_threshold=1.0)}
    for method, options in variants.items():
        s.generate(short, max_new_tokens=8, ignore_eos=True, **options)  # warm-up
        prefill = [s.generate(long, max_new_tokens=1, ignore_eos=True, **options).prefill_ms for _ in range(rounds)]
        decode = [statistics.median(s.generate(short, max_new_tokens=65, ignore_eos=True, **options).decode_ms)
                  for _ in range(rounds)]
        out[method] = {"prefill_ms_512": round(statistics.median(prefill), 2),
                       "decode_ms_per_token": round(statistics.median(decode), 3),
                       "decode_min_max": [round(min(decode), 3), round(max(decode), 3)]}
    for method in ("aapp", "dense_prefill_flagged", "dense_prefill_unflagged"):
        out[f"ratio_{method}_0.4"] = {k: round(out[method][k] / out["dense"][k], 3)
                                      for k in ("prefill_ms_512", "decode_ms_per_token")}
    out["kv_host_seed_ms_512"] = kv_host_seed(s, 512, rounds)
    return out


def kv_host_seed(s: Any, tokens: int, rounds: int) -> dict:
    """What a round trip through the host of a prompt's K/V costs (every layer): what each
    dense-prefill request paid before the split prefill wrote its K/V in place."""
    from aapp_runtime import tensors

    values = [tensors.empty((1, h, tokens, s.head_dim), s.dtype, s.device) for h in s.kv_heads for _ in range(2)]
    times = []
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        [tensors.from_host(tensors.to_host(v), s.dtype, s.device) for v in values]
        times.append((time.perf_counter() - t0) * 1000)
    ms = statistics.median(times[1:])
    return {"ms": round(ms, 2), "ms_per_layer": round(ms / len(s.kv_heads), 3), "layers": len(s.kv_heads),
            "mb_each_way": round(sum(2 * h * tokens * s.head_dim for h in s.kv_heads) * np.dtype(s.host_dtype).itemsize
                                 / 2 ** 20, 1)}


def calibrate_shape(work: Path, provider: str, quick: bool) -> dict:
    """Calibration of a Gemma-3-4B-shaped checkpoint (multimodal layout, random bf16 weights) with
    ``--device cuda``: time, peak GPU memory (torch's allocator, every GPU) and the plan's estimate."""
    import torch

    from aapp_export.calibration import calibrate_checkpoint
    from aapp_export.export import CalibrationOptions, ExportOptions, export_plan
    from aapp_export.synthetic import gemma3_shape, make_multimodal_gemma3, make_shape_checkpoint

    device = "cuda" if provider == "cuda" else "cpu"
    t0 = time.perf_counter()
    if quick:
        ckpt = work / "shape-tiny"
        make_multimodal_gemma3(ckpt)
    else:
        ckpt = make_shape_checkpoint(work / "gemma3-4b", gemma3_shape("gemma3-4b"), seed=0)
    made_s = time.perf_counter() - t0
    files = dict(harmful=CALIB / "harmful_calib.txt", harmless=CALIB / "harmless_calib.txt",
                 text=CALIB / "text_calib.txt", check=CALIB / "harmful_val.txt",
                 check_harmless=CALIB / "harmless_val.txt")
    plan = export_plan(str(ckpt), work / "plan-4b" / "model.onnx",
                       ExportOptions(calibration=CalibrationOptions(**files, device=device)))
    if device == "cuda":
        for i in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(i)
    out = work / "calibration-4b"
    out.mkdir()
    t0 = time.perf_counter()
    calibrate_checkpoint(ckpt, out, **files, dtype="bf16", device=device, log=lambda m: None, use_cache=False)
    seconds = time.perf_counter() - t0
    peak = sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())) if device == "cuda" else 0
    summary = json.loads((out / "calibration.json").read_text())
    return {"device": device, "checkpoint_s": round(made_s, 1), "calibration_s": round(seconds, 1),
            "peak_gpu_bytes": peak, "plan_calibration_bytes": plan.calibration, "plan_gpu_bytes": plan.gpu_memory,
            "scorer": summary["scorer"], "activation_range": {k: v for k, v in summary.get("activation_range", {}).items()
                                                              if k != "per_layer"}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="tiny latency shapes (a CPU run of the same code)")
    args = p.parse_args()
    import torch

    provider = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(tempfile.mkdtemp(prefix="cuda-checks-"))
    results: dict[str, Any] = {"provider": provider}
    timed(results, "providers", providers)
    timed(results, "parity", lambda: parity(work, provider))
    timed(results, "kv_buffer", lambda: kv_buffer(work, provider))
    timed(results, "pruned_decisions", lambda: pruned_decisions(work, provider))
    tiny = dict(vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=6, num_attention_heads=4,
                num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32, sliding_window=64)
    shapes = {"gemma3-1b": dict(vocab_size=262144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
                                num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                                sliding_window=512),
              "gemma3-12b-width-4-layers": dict(vocab_size=32768, hidden_size=3840, intermediate_size=15360,
                                                num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=8,
                                                head_dim=256, query_pre_attn_scalar=256, sliding_window=1024)}
    timed(results, "calibrate_gemma3_4b", lambda: calibrate_shape(work, provider, args.quick))
    for name, shape in shapes.items():
        timed(results, f"latency_{name}", lambda shape=shape, name=name: latency(
            work, provider, name, tiny if args.quick else shape, 2 if args.quick else 5))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cuda_checks.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict) or "traceback" not in v}, indent=1))


if __name__ == "__main__":
    main()
