"""``aapp-run MODEL_DIR --prompt TEXT``: generate with an exported model from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import AappRuntimeError
from .providers import PROVIDER_CHOICES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aapp-run", description="Generate text with an AAPP-exported model dir.")
    p.add_argument("model_dir", help="directory written by aapp-export (holds aapp.json)")
    p.add_argument("--prompt", required=True, help="user message (chat-formatted unless --raw)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--method", choices=["dense", "pp", "aapp"], default=None,
                   help="dense, pp (Probe Pruning) or aapp (PP keeping the protected alignment units); default: aapp "
                        "when --sparsity > 0, else dense")
    p.add_argument("--sparsity", type=float, default=0.0,
                   help="fraction of prunable heads/channels pruned per request, one of the levels the export built")
    p.add_argument("--raw", action="store_true", help="send the prompt as plain text, without the chat template")
    p.add_argument("--json", action="store_true", help="print one JSON object with text, tokens and timings")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from .session import Session

        session = Session(args.model_dir, provider=args.provider)
        method = args.method or ("aapp" if args.sparsity else "dense")
        kwargs = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, stop=args.stop,
                      seed=args.seed, chat=False if args.raw else None, sparsity=args.sparsity, method=method)
        if args.json:
            result = session.generate(args.prompt, args.max_new_tokens, **kwargs)
            print(json.dumps(result.to_json(), ensure_ascii=False))
        else:
            print(f"[provider: {session.provider} — {session.provider_reason}]", file=sys.stderr)
            for piece in session.stream(args.prompt, args.max_new_tokens, **kwargs):
                print(piece, end="", flush=True)
            print()
        return 0
    except AappRuntimeError as exc:
        if args.debug:
            raise
        print(f"aapp-run: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `aapp-run ... | head`: the reader went away, stop quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except KeyboardInterrupt:
        print("aapp-run: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
