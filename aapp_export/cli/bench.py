"""``aapp-bench``: latency of our runtime vs transformers eager, onnxruntime-genai and optimum on one checkpoint.

``aapp-bench [MODEL_DIR_OR_CHECKPOINT] [--json] [--out DIR] [--repeats N] [--rounds R]
[--engines ours,ours-onnx,transformers,genai,genai-last,optimum] [--params-target 120M]``

``aapp-bench [MODEL_DIR_OR_CHECKPOINT] --sparsity 0,0.2,0.4,0.5 [--json]``: the pruned graphs against
the dense graph and the static Wanda-sp ceiling, side by side (``bench.pruned``).

Without a model it makes (once, under ``--out``) a random Gemma-3-shaped fp32 checkpoint of about
``--params-target`` parameters. Prints a table (or the JSON report with ``--json``) and writes
``bench.json`` and ``bench.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..choices import MAX_SPARSITY
from .common import add_calibration_args, run_cli


def build_parser() -> argparse.ArgumentParser:
    from ..bench import DEFAULT_ENGINES

    p = argparse.ArgumentParser(prog="aapp-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", nargs="?", default=None,
                   help="checkpoint dir, alias or hub id (default: a random Gemma-3-shaped checkpoint of "
                        "--params-target parameters, made under --out)")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="work dir for the models, bench.json, bench.png")
    p.add_argument("--engines", default=",".join(DEFAULT_ENGINES),
                   help="comma-separated: ours, ours-onnx (the standard Attention op), transformers, genai (its "
                        "builder's defaults), genai-last (its builder with prune_lm_head=true), optimum (our "
                        "model dir under optimum's ORTModelForCausalLM, in .venv-optimum); engines whose "
                        "package is missing are skipped and named in the report")
    p.add_argument("--repeats", type=int, default=5, help="measured runs per engine per round (after --warmup)")
    p.add_argument("--rounds", type=int, default=1, help="fresh worker processes per engine, engine order rotated")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--prompt-lengths", default="128,512", help="prefill lengths; decode follows the first one")
    p.add_argument("--new-tokens", type=int, default=64, help="decode steps measured per run")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads of every engine")
    p.add_argument("--params-target", default="120M",
                   help="size of the generated checkpoint (120M: Gemma-3-270M's shape, 18 layers; above 200M "
                        "Gemma-3-1B's width); ignored with MODEL")
    p.add_argument("--sparsity", default=None,
                   help="time the pruned graphs instead: dense (0) and aapp at these levels, e.g. 0,0.2,0.4,0.5, with "
                        "our runtime only; MODEL may then be an exported model dir (its built levels)")
    p.add_argument("--static-sparsity", type=float, default=0.4,
                   help="with --sparsity: also time the static Wanda-sp export at this sparsity (the ceiling; 0: skip; "
                        "needs a checkpoint, not a model dir)")
    add_calibration_args(p)  # --sparsity: the calibration of the export it makes (default: the model card's files)
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def format_table(report: dict[str, Any]) -> str:
    """Medians (min-max) per engine, then the ratios and the agreement summary."""
    lengths = report["plan"]["prompt_lengths"]
    cols = [f"prefill@{n} ms" for n in lengths] + ["decode ms/tok", "peak RSS MB"]
    lines = [f"{'engine':14s}" + "".join(f"{c:>26s}" for c in cols)]
    for name, r in report["engines"].items():
        cells = [r[f"prefill_ms@{n}"] for n in lengths] + [r["decode_ms_per_token"]]
        text = [f"{c['median']:.1f} ({c['min']:.1f}-{c['max']:.1f})" for c in cells] + [f"{r['peak_rss_mb']:.0f}"]
        lines.append(f"{name:14s}" + "".join(f"{t:>26s}" for t in text))
    for pair, vals in report["ratios"].items():
        lines.append(f"{pair:22s} " + "  ".join(f"{k.replace('_ms', '')}={v:.2f}" for k, v in vals.items()))
    ag = report["agreement"]
    for pair, entry in ag.items():
        if isinstance(entry, dict):
            diffs = [f"{v:.1e}" for k, v in entry.items() if k.startswith("prefill_logits_max_abs_diff")]
            lines.append(f"{pair:28s} greedy tokens {'identical' if entry['tokens_identical'] else 'DIFFER at ' + str(entry['first_divergence'])}"
                         f", prefill logits max|diff| {', '.join(diffs) or 'n/a'}")
    m = report["machine"]
    lines.append(f"{report['family']} {report['parameters'] / 1e6:.1f}M params fp32, {m['cpu']} x{m['cores']}, "
                 f"ORT {m['onnxruntime']}, onnxruntime-genai {m['onnxruntime_genai']}, "
                 f"load average {m['load_average_start']} -> {m['load_average_end']}")
    if report["skipped"]:
        lines.append(f"skipped: {report['skipped']}")
    return "\n".join(lines)


def _pruned(args) -> int:
    """``--sparsity``: the pruned graphs against dense and the static ceiling (``bench.pruned``)."""
    from ..bench import DEFAULT_ENGINES
    from ..errors import InputError
    from ..bench.pruned import PrunedBenchPlan, format_table, plot, prepare, run_pruned_bench

    if args.engines not in ("ours", ",".join(DEFAULT_ENGINES)):
        raise InputError(f"--sparsity times our runtime only: drop --engines {args.engines!r} or pass --engines ours")
    try:
        levels = tuple(sorted({float(x) for x in args.sparsity.split(",") if x.strip()}))
        lengths = [int(x) for x in args.prompt_lengths.split(",")]
    except ValueError as exc:
        raise InputError(f"--sparsity {args.sparsity!r} / --prompt-lengths: {exc}; e.g. --sparsity 0,0.4") from exc
    if not levels or any(not 0 <= s <= MAX_SPARSITY for s in levels) or min(lengths) < 1:
        raise InputError(f"--sparsity {args.sparsity!r}: pass levels in [0, {MAX_SPARSITY}], e.g. 0,0.2,0.4,0.5")
    plan = PrunedBenchPlan(sparsities=levels if 0.0 in levels else (0.0, *levels),
                           static_sparsity=args.static_sparsity or None, rounds=max(args.rounds, 3),
                           prefill=max(lengths), decode_prompt=min(lengths), new_tokens=args.new_tokens,
                           threads=args.threads)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    calib = [x for flag, value in (("--calib-harmful", args.calib_harmful), ("--calib-harmless", args.calib_harmless),
                                   ("--calib-text", args.calib_text), ("--scorer", args.scorer))
             if value is not None for x in (flag, str(value))]
    model_dir, static_dir = prepare(args.model, args.out, args.params_target, plan, log, calib)
    report = run_pruned_bench(model_dir, static_dir, plan, args.out, log)
    (args.out / "bench_pruned.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, args.out / "bench_pruned.png")
    print(json.dumps(report, indent=1) if args.json else format_table(report))
    log(f"wrote {args.out / 'bench_pruned.json'} and {args.out / 'bench_pruned.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from ..bench import ENGINES, BenchPlan, parse_count, plot, run_benchmark
        from ..synthetic import make_bench_checkpoint
        from ..checkpoint import resolve_checkpoint
        from ..errors import InputError

        if args.sparsity is not None:
            return _pruned(args)
        engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
        bad = [e for e in engines if e not in ENGINES]
        if bad or not engines:
            raise InputError(f"--engines {args.engines!r}: unknown or no engine; choose from {', '.join(ENGINES)}")
        try:
            lengths = tuple(int(x) for x in args.prompt_lengths.split(","))
            target = parse_count(args.params_target)
        except ValueError as exc:
            raise InputError(f"--prompt-lengths / --params-target: {exc}; e.g. --prompt-lengths 128,512 "
                             "--params-target 120M") from exc
        if min(lengths) < 1 or args.repeats < 1 or args.rounds < 1 or args.new_tokens < 1 or args.threads < 1:
            raise InputError("--prompt-lengths, --repeats, --rounds, --new-tokens and --threads must be positive")
        log = lambda m: print(m, file=sys.stderr)  # noqa: E731
        if args.model is None:
            checkpoint = args.out / f"gemma3-bench-{args.params_target.strip().lower()}"
            if not (checkpoint / "config.json").is_file():
                log(f"creating a random Gemma-3-shaped checkpoint of ~{target / 1e6:.0f}M parameters in {checkpoint}")
                make_bench_checkpoint(checkpoint, target)
        else:
            checkpoint = resolve_checkpoint(args.model).path
        plan = BenchPlan(prompt_lengths=lengths, decode_prompt=lengths[0], new_tokens=args.new_tokens,
                         repeats=args.repeats, rounds=args.rounds, warmup=args.warmup, threads=args.threads)
        report = run_benchmark(checkpoint, args.out, plan, engines, log)
        (args.out / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
        plot(report, args.out / "bench.png")
        print(json.dumps(report, indent=1) if args.json else format_table(report))
        log(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}")
        return 0

    return run_cli("aapp-bench", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
