"""``aapp-eval``: refusal, over-refusal, perplexity and compute of a pruning method on a model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..choices import (ADAPTIVE_PATHS, ADAPTIVE_THRESHOLD, CALIBRATION_DTYPES, MAX_SPARSITY, METHODS, PROBE_MAX_TOKENS, RUNTIME_METHODS, STATIC_METHODS,
                       check_sparsity)
from .common import add_calibration_args, run_cli


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aapp-eval", description=__doc__)
    p.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                   help="torch: the PyTorch reference on a checkpoint; onnx: an exported model dir through the runtime")
    p.add_argument("--model", default="demo", help="alias, hub id or checkpoint dir (default: demo); with "
                   "--engine onnx, an exported model dir")
    p.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="cpu", help="--engine onnx: provider")
    p.add_argument("--dtype", choices=CALIBRATION_DTYPES, default="auto",
                   help="--engine torch: the model's weights (auto: bf16 on cuda; on cpu fp32 when the memory "
                        "plan fits, else bf16)")
    p.add_argument("--method", default="aapp", choices=METHODS)
    p.add_argument("--sparsity", type=float, default=0.4,
                   help=f"fraction of prunable units removed, in [0, {MAX_SPARSITY}]")
    p.add_argument("--harmful", type=Path, help="harmful prompts, one a line (default: the card's held-out file)")
    p.add_argument("--harmless", type=Path, help="harmless prompts, one a line (default: the card's held-out file)")
    p.add_argument("--text", type=Path, help="held-out text for perplexity, one paragraph a line")
    add_calibration_args(p)
    p.add_argument("--probe-max-tokens", type=int, default=PROBE_MAX_TOKENS,
                   help="--engine torch: the probe's token budget (0: none); the onnx engine uses the export's")
    p.add_argument("--adaptive-threshold", type=float, default=None,
                   help="aapp-adaptive: the risk gate from which a request runs dense (default: the calibration's, "
                        "read on its held-out check split, at least %s)" % ADAPTIVE_THRESHOLD)
    p.add_argument("--adaptive-path", choices=ADAPTIVE_PATHS, default=None,
                   help="aapp-adaptive: how a flagged request runs (dense-prefill, the default: the risk gate "
                        "alone, the rest of the prefill dense, the decode dense only when it opens with the refusal; "
                        "restart: both gates, then dense from the start; --engine onnx defaults to restart on a model "
                        "dir exported without the split prefill; docs/DESIGN.md)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--limit", type=_positive, default=None, help="use the first N (>= 1) prompts of each file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--debug", action="store_true")
    return p


def _default(arg: Path | None, ckpt, section: str, key: str, flag: str) -> Path:
    from ..cards import default_prompt_file
    from ..errors import InputError

    if arg is not None:
        return arg
    path = default_prompt_file(ckpt.card, ckpt.path, section, key)
    if path is None or not path.is_file():
        raise InputError(f"{flag} is not given and no default file exists ({path}); pass {flag} FILE")
    return path


def _print(out: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(out))
        return
    ppl = "n/a" if out["perplexity"] is None else f"{out['perplexity']:.2f}"
    print(f"{out['method']} at sparsity {out['sparsity']}: refusal {out['refusal_rate']:.1%} "
          f"(n={out['n_harmful']}), over-refusal {out['over_refusal_rate']:.1%} (n={out['n_harmless']}), "
          f"perplexity {ppl}, FLOPs {out['flops_ratio']:.3f} of dense (probe included)")


def _prompts(args, ckpt) -> dict[str, list[str]]:
    from ..calibration import read_lines

    files = {
        "harmful": _default(args.harmful, ckpt, "evaluation", "harmful", "--harmful"),
        "harmless": _default(args.harmless, ckpt, "evaluation", "harmless", "--harmless"),
        "text": _default(args.text, ckpt, "evaluation", "text", "--text"),
    }
    return {k: read_lines(v)[:args.limit] if args.limit else read_lines(v) for k, v in files.items()}


def _onnx(args) -> int:
    """``--engine onnx``: the exported model dir through ``aapp_runtime.Session``."""
    from aapp_runtime import Session

    from ..cards import available_aliases, load_card
    from ..errors import InputError
    from ..evaluate_onnx import run_eval_onnx

    if args.method not in RUNTIME_METHODS:
        kind = "a static baseline" if args.method in STATIC_METHODS else "not in the exported graphs yet"
        raise InputError(f"--engine onnx runs {', '.join(RUNTIME_METHODS)}; {args.method!r} is {kind}: evaluate it "
                         "with --engine torch")
    session = Session(args.model, provider=args.provider)
    source = str(session.manifest.data.get("source", ""))
    card = next((load_card(a) for a in available_aliases() if load_card(a).source == source), None)
    prompts = _prompts(args, _Found(card))
    result = run_eval_onnx(session, args.method, args.sparsity, prompts["harmful"], prompts["harmless"],
                           prompts["text"], args.max_new_tokens, adaptive_threshold=args.adaptive_threshold,
                           adaptive_path=args.adaptive_path)
    _print(result.to_json(), args.json)
    return 0


def _torch_dtype(args, ckpt, device: str) -> str:
    """The torch engine's weights, chosen as the export chooses calibration's (``--dtype auto``: bf16 on
    cuda; on cpu fp32 when the memory plan fits, else bf16); a model this machine cannot hold stops
    here, before loading, in one line."""
    from ..checkpoint import WeightReader
    from ..errors import InputError
    from ..families import load_model_spec
    from ..plan import choose_calibration_dtype, plan_export
    from ..precision import SOURCE_DTYPES

    spec = load_model_spec(ckpt.path, WeightReader(ckpt.path))
    # the calibration's steps bound the evaluation's (forwards, greedy answers; no backward for dense)
    scorer = "refusal-dir" if args.method == "dense" else args.scorer
    dtype, plan = choose_calibration_dtype(args.dtype, device, lambda d: plan_export(
        spec, SOURCE_DTYPES.get(spec.source_dtype, "fp32"), "fp32", d, scorer, Path.cwd(), calibration_device=device))
    memory = [p for p in plan.problems() if not p.startswith("the model dir")]
    if memory:
        advice = memory[0].replace("--calib-dtype", "--dtype").replace("--no-calibrate (dense only)", "--method dense")
        raise InputError(f"aapp-eval --model {args.model} does not fit this machine: {advice}")
    return dtype


class _Found:
    """A checkpoint-less stand-in for ``resolve_checkpoint``'s result (card only)."""

    def __init__(self, card) -> None:
        self.card, self.path = card, None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from ..calibration import cached_calibration, load_model
        from ..checkpoint import resolve_checkpoint
        from ..errors import InputError
        from ..evaluate import run_eval
        from ..placement import resolve_device

        check_sparsity(args.sparsity, "--sparsity")
        if args.adaptive_threshold is not None and not 0.0 <= args.adaptive_threshold <= 1.0:
            raise InputError(f"--adaptive-threshold {args.adaptive_threshold}: the gate is in [0, 1]; pass a value there")
        if args.probe_max_tokens < 0:
            raise InputError(f"--probe-max-tokens {args.probe_max_tokens}: pass a token count >= 1, or 0 for no budget")
        if args.engine == "onnx":
            return _onnx(args)
        ckpt = resolve_checkpoint(args.model)
        prompts = _prompts(args, ckpt)
        log = lambda m: print(m, file=sys.stderr)  # noqa: E731
        device = resolve_device(args.device)
        dtype = _torch_dtype(args, ckpt, device)
        model, tok = load_model(ckpt.path, dtype, device)
        stats = circuits = None
        if args.method != "dense":
            stats, circuits = cached_calibration(
                ckpt.path, model, tok,
                harmful=_default(args.calib_harmful, ckpt, "calibration", "harmful", "--calib-harmful"),
                harmless=_default(args.calib_harmless, ckpt, "calibration", "harmless", "--calib-harmless"),
                text=_default(args.calib_text, ckpt, "calibration", "text", "--calib-text"),
                check=_default(args.calib_check, ckpt, "calibration", "check", "--calib-check"),
                check_harmless=_default(args.calib_check_harmless, ckpt, "calibration", "check_harmless",
                                        "--calib-check-harmless"),
                budget=args.budget, scorer=args.scorer, log=log)
        result = run_eval(model, tok, args.method, args.sparsity, prompts["harmful"], prompts["harmless"],
                          prompts["text"], stats, circuits, args.max_new_tokens, args.probe_max_tokens,
                          adaptive_threshold=args.adaptive_threshold, adaptive_path=args.adaptive_path)
        _print({"engine": "torch", **result.to_json()}, args.json)
        return 0

    return run_cli("aapp-eval", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
