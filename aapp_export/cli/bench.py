"""``aapp-bench``: latency of our runtime vs transformers and onnxruntime-genai on one checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aapp-bench", description=__doc__)
    p.add_argument("model", nargs="?", default=None,
                   help="checkpoint dir, alias or hub id (default: a random Gemma-3-270M-shaped checkpoint, ~120M params)")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="work dir for models, JSON and PNG")
    p.add_argument("--engines", default="ours,transformers,genai")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--prompt-lengths", default="128,512")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for every engine (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the JSON report")
    p.add_argument("--debug", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from ..benchmark import ENGINES, BenchPlan, plot, run_benchmark
        from ..checkpoint import resolve_checkpoint
        from ..errors import InputError

        engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
        bad = [e for e in engines if e not in ENGINES]
        if bad:
            raise InputError(f"--engines: unknown engine(s) {', '.join(bad)}; choose from {', '.join(ENGINES)}")
        log = lambda m: print(m, file=sys.stderr)  # noqa: E731
        if args.model is None:
            from ..synthetic import make_checkpoint

            checkpoint = args.out / "gemma3-bench-checkpoint"
            if not (checkpoint / "config.json").is_file():
                log(f"creating a random Gemma-3-shaped checkpoint in {checkpoint}")
                make_checkpoint(checkpoint, "gemma3-bench")
        else:
            checkpoint = resolve_checkpoint(args.model).path
        lengths = tuple(int(x) for x in args.prompt_lengths.split(","))
        plan = BenchPlan(prompt_lengths=lengths, decode_prompt=lengths[0], new_tokens=args.new_tokens,
                         repeats=args.repeats, threads=args.threads)
        report = run_benchmark(checkpoint, args.out, plan, engines, log)
        (args.out / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
        plot(report, args.out / "bench.png")
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print(f"{'engine':14s} " + " ".join(f"{k:>22s}" for k in ("prefill@" + str(n) for n in lengths)) +
                  f" {'decode ms/token':>18s} {'peak RSS MB':>12s}")
            for name, r in report["engines"].items():
                cells = " ".join(f"{r[f'prefill_ms@{n}']['median']:>22.1f}" for n in lengths)
                print(f"{name:14s} {cells} {r['decode_ms_per_token']['median']:>18.2f} {r['peak_rss_mb']:>12.0f}")
            print(json.dumps({"ratios": report["ratios"], "greedy_agreement": report["greedy_agreement"],
                              "skipped": report["skipped"]}, indent=1))
            print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}", file=sys.stderr)
        return 0

    return run_cli("aapp-bench", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
