"""``aapp-run MODEL_DIR [--prompt TEXT]``: generate with an exported model from the command line; without
``--prompt``, an interactive chat in the terminal that keeps the conversation's KV cache."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import AappRuntimeError, InputError, report
from .providers import PROVIDER_CHOICES
from .session import ADAPTIVE_PATHS, METHODS
from .thread_pool import THREAD_POOLS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aapp-run", description="Generate text with an AAPP-exported model dir.")
    p.add_argument("model_dir", help="directory written by aapp-export (holds aapp.json)")
    p.add_argument("--prompt", default=None,
                   help="user message (chat-formatted unless --raw); without it, an interactive chat (Ctrl-D ends it)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="default: the model's generation_config.json, else 64")
    p.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto")
    p.add_argument("--thread-pool", choices=THREAD_POOLS, default="shared",
                   help="shared (default): one intra-op pool for the process; auto, session: pools per graph")
    p.add_argument("--temperature", type=float, default=None,
                   help="0 = greedy; default: the model's generation_config.json (greedy unless it samples)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--min-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--timeout", type=float, default=None, help="seconds: stop a generation past this deadline")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="dense, pp (Probe Pruning), aapp (PP keeping the protected alignment units) or aapp-adaptive "
                        "(AAPP whose risk gate runs requests that look harmful dense); default: aapp when "
                        "--sparsity > 0, else dense")
    p.add_argument("--adaptive-path", choices=ADAPTIVE_PATHS, default=None,
                   help="aapp-adaptive: a flagged request runs the rest of its prefill dense and decodes pruned "
                        "unless it opens with the refusal (dense-prefill, the default where the model dir has the "
                        "split prefill) or starts again dense (restart)")
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

        session = Session(args.model_dir, provider=args.provider, thread_pool=args.thread_pool)
        method = args.method or ("aapp" if args.sparsity else "dense")
        sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                        repetition_penalty=args.repetition_penalty, stop=args.stop, seed=args.seed,
                        timeout_s=args.timeout)
        if args.prompt is None:
            return _interactive(session, args, method, sampling)
        kwargs = dict(sampling, chat=False if args.raw else None, sparsity=args.sparsity, method=method,
                      adaptive_path=args.adaptive_path)
        if args.json:
            result = session.generate(args.prompt, args.max_new_tokens, **kwargs)
            print(json.dumps(result.to_json(), ensure_ascii=False))
        else:
            print(f"[provider: {session.provider} — {session.provider_reason}]", file=sys.stderr)
            for chunk in session.stream(args.prompt, args.max_new_tokens, **kwargs):
                print(chunk.text, end="", flush=True)
            print()
        return 0
    except AappRuntimeError as exc:
        return report("aapp-run", exc, args.debug)
    except BrokenPipeError:  # `aapp-run ... | head`: the reader went away, stop quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except KeyboardInterrupt:
        print("aapp-run: interrupted", file=sys.stderr)
        return 130


def _interactive(session, args: argparse.Namespace, method: str, sampling: dict) -> int:
    """A terminal chat: one Conversation, each reply streamed; Ctrl-C stops a reply, Ctrl-D ends."""
    if args.raw or args.json:
        raise InputError("--raw and --json need --prompt (the interactive chat uses the chat template)")
    conversation = session.chat(sparsity=args.sparsity, method=method, overflow="drop_oldest")
    print(f"[{session.manifest.directory.name} on {session.provider}; {method}"
          f"{f' at sparsity {args.sparsity:g}' if args.sparsity else ''}; Ctrl-C stops a reply, Ctrl-D quits]",
          file=sys.stderr)
    while True:
        try:
            text = input("> ")
        except EOFError:
            print()
            return 0
        if not text.strip():
            continue
        generation = conversation.start(text, args.max_new_tokens, **sampling)
        try:
            for chunk in generation:
                print(chunk.text, end="", flush=True)
                if chunk.finish_reason:
                    t = chunk.timings or {}
                    print(f"\n[{chunk.finish_reason}; {chunk.usage['completion_tokens']} tokens; first token "
                          f"{t.get('prefill_ms', 0):.0f} ms, {chunk.usage['cached_tokens']} prompt tokens cached]",
                          file=sys.stderr)
        except KeyboardInterrupt:
            generation.cancel()
            for _ in generation:  # ends at once, recording what the reply had
                pass
            print("\n[stopped]", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
