"""First-token latency by conversation turn, with the conversation's KV cache (``Session.chat``) and
without it (every turn prefills the whole history again), on one exported model dir. Prints JSON.

    python scripts/bench_chat_turns.py exported/demo --turns 10 --rounds 3

Each round alternates the two ways turn by turn on the same history (the replies of the cached
conversation, greedy), so both see the same prompts; medians over rounds, min-max beside them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics


from aapp_runtime import Session

QUESTIONS = ["How do I bake bread at home?", "What flour should I use?", "How long should the dough rise?",
             "Can I add seeds to it?", "What temperature should the oven be?", "How do I know it is done?",
             "How should I store the bread?", "Can I freeze it?", "What about sourdough?",
             "Which mistakes do beginners make?", "Can I bake it in a pot?", "What should I bake next?"]


def run(model_dir: str, turns: int, rounds: int, new_tokens: int, threads: int | None) -> dict:
    session = Session(model_dir, provider="cpu", threads=threads)
    cached: list[list[float]] = [[] for _ in range(turns)]
    fresh: list[list[float]] = [[] for _ in range(turns)]
    prompt_tokens, cached_tokens = [0] * turns, [0] * turns
    session.generate("Hello", 2)  # warm-up
    for _ in range(rounds):
        chat = session.chat(overflow="error")
        for t in range(turns):
            r = chat.send(QUESTIONS[t % len(QUESTIONS)], new_tokens)
            history = chat.messages[:-1]
            f = session.generate(history, new_tokens)
            assert f.tokens == r.tokens, "the cached turn and the fresh prefill generated different tokens"
            cached[t].append(r.prefill_ms)
            fresh[t].append(f.prefill_ms)
            prompt_tokens[t], cached_tokens[t] = r.prompt_tokens, r.cached_tokens
        chat.close()

    def summary(xs: list[float]) -> dict:
        return {"median": round(statistics.median(xs), 2), "min": round(min(xs), 2), "max": round(max(xs), 2)}

    rows = [{"turn": t + 1, "prompt_tokens": prompt_tokens[t], "cached_tokens": cached_tokens[t],
             "first_token_ms_cached": summary(cached[t]), "first_token_ms_fresh": summary(fresh[t])}
            for t in range(turns)]
    last, first = rows[-1], rows[0]
    return {"model_dir": str(model_dir), "machine": {"cpu": platform.processor() or platform.machine(),
                                                     "python": platform.python_version()},
            "provider": session.provider, "threads": threads, "new_tokens": new_tokens, "rounds": rounds,
            "rows": rows,
            "turn_last_over_turn_1_cached": round(last["first_token_ms_cached"]["median"]
                                                  / first["first_token_ms_cached"]["median"], 3),
            "turn_last_over_turn_1_fresh": round(last["first_token_ms_fresh"]["median"]
                                                 / first["first_token_ms_fresh"]["median"], 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    print(json.dumps(run(args.model_dir, args.turns, args.rounds, args.new_tokens, args.threads), indent=1))


if __name__ == "__main__":
    main()
