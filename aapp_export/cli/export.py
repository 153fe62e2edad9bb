"""``aapp-export``: checkpoint (alias | hub id | local dir) -> model dir with ONNX graph and manifest."""

from __future__ import annotations

import argparse
import sys

from ..choices import (ATTENTION_KERNELS, CALIBRATION_DTYPES, EXPORT_DTYPES, PROBE_MAX_TOKENS,
                       STATIC_METHODS)
from .common import add_calibration_args, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aapp-export", description="Export an LLM checkpoint to an AAPP model dir.")
    p.add_argument("--model", default="demo",
                   help="alias (demo, gemma3, gemma3-1b, llama2, qwen2.5), hub id (org/name) or local directory "
                        "(default: demo, the bundled model)")
    p.add_argument("--out", required=True, help="output graph path DIR/model.onnx (or DIR); DIR becomes the model dir "
                   "(an earlier export there is replaced; a directory holding anything else is refused unless --force)")
    p.add_argument("--force", action="store_true", help="replace --out even when it holds files the export did not write")
    p.add_argument("--dtype", choices=EXPORT_DTYPES, default="auto",
                   help="weights and activations of the graphs; auto: the checkpoint's precision where the "
                        "provider runs it: bf16 for CUDA (a GPU machine or --device cuda); for CPU fp32, or fp16 "
                        "for a half-precision checkpoint whose family stays in fp16's range (checked on the "
                        "calibration text; never Gemma 3)")
    p.add_argument("--attention", choices=ATTENTION_KERNELS, default="gqa",
                   help="attention kernel: gqa = ONNX Runtime's GroupQueryAttention (fastest on CPU; fp32/fp16 on "
                        "CPU, fp16/bf16 on CUDA), onnx = the standard opset-23 Attention op (any ONNX backend)")
    p.add_argument("--all-logits", action="store_true", help="output logits for every position, not only the last")
    p.add_argument("--allow-pickle", action="store_true", help="accept .bin (pickle) checkpoints you trust")
    p.add_argument("--no-check", action="store_true", help="skip onnx.checker")
    p.add_argument("--no-calibrate", action="store_true",
                   help="skip calibration (PP history statistics, alignment circuits, causal check)")
    add_calibration_args(p)
    p.add_argument("--levels", default="0.2,0.3,0.4,0.5",
                   help="sparsity levels whose pruned graphs (probe + decisions in ONNX, prefill and decode) are "
                        "written; the runtime accepts exactly these (default 0.2,0.3,0.4,0.5; 'none' for a dense-only "
                        "export). Needs calibration")
    p.add_argument("--calib-dtype", choices=CALIBRATION_DTYPES, default="auto",
                   help="weights during calibration (statistics always sum in fp32); auto: bf16 on cuda; on cpu "
                        "fp32 when the memory plan fits, else bf16")
    p.add_argument("--check-prompts", type=int, default=48,
                   help="harmful calibration prompts the causal check answers (each scorer: dense, protected and 5 "
                        "random ablations); most of calibration's time on CPU, so fewer is quicker (default 48)")
    p.add_argument("--no-calibration-cache", action="store_true",
                   help="calibrate even when $AAPP_CACHE (default ~/.cache/aapp-export) holds the calibration of the "
                        "same checkpoint, prompt files, choices, dtype and device (which aapp-eval shares), and do "
                        "not store this one")
    p.add_argument("--plan", action="store_true",
                   help="print the memory and disk plan (graph build, each calibration step, model dir) against "
                        "this machine, and change nothing")
    p.add_argument("--probe-max-tokens", type=int, default=PROBE_MAX_TOKENS,
                   help="the probe's token budget: it runs min(ceil(0.5 * prompt), this) tokens through every unit "
                        "of a pruned layer (0: no budget, PP's ceil(0.5 * prompt) at any length)")
    p.add_argument("--static", choices=STATIC_METHODS, default=None,
                   help="instead of pruned graphs, write a smaller dense model whose kept heads and channels are "
                        "fixed by this static method at --sparsity (wanda-sp and flap use the calibration statistics)")
    p.add_argument("--sparsity", type=float, default=None, help="with --static: the fraction of prunable units removed")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from ..export import CalibrationOptions, ExportOptions, export_model
        from ..pruned_export import parse_levels

        from ..errors import InputError

        if args.probe_max_tokens < 0:
            raise InputError(f"--probe-max-tokens {args.probe_max_tokens}: pass a token count >= 1, or 0 for no budget")
        if (args.static is None) != (args.sparsity is None):
            raise InputError("--static and --sparsity go together: e.g. --static wanda-sp --sparsity 0.4 (the dynamic "
                             "levels are chosen with --levels)")
        static = (args.static, args.sparsity) if args.static else None
        levels = () if static or args.levels.strip().lower() == "none" or args.no_calibrate else parse_levels(args.levels)
        calibration = None if args.no_calibrate else CalibrationOptions(
            args.calib_harmful, args.calib_harmless, args.calib_text, args.budget, args.scorer, args.calib_dtype,
            args.device, args.check_prompts, args.calib_check, args.calib_check_harmless,
            use_cache=not args.no_calibration_cache)
        opts = ExportOptions(dtype=args.dtype, last_logits_only=not args.all_logits, attention=args.attention,
                             allow_pickle=args.allow_pickle, check=not args.no_check, calibration=calibration,
                             levels=levels, probe_max_tokens=args.probe_max_tokens, static=static, force=args.force)
        if args.plan:
            from ..export import export_plan

            plan = export_plan(args.model, args.out, opts)
            print("\n".join(plan.lines()))
            return 0
        export_model(args.model, args.out, opts, log=lambda m: print(m, file=sys.stderr))
        return 0

    return run_cli("aapp-export", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
