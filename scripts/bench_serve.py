"""Throughput and latency of ``aapp-serve`` under concurrent clients (the official ``openai`` client,
non-streaming chat completions, greedy). Starts the server in this process on a free loopback port,
warms it up, then each of ``--clients`` threads sends ``--requests`` requests. Prints JSON.

    python scripts/bench_serve.py exported/demo --clients 8 --requests 4 --parallel 1

``--methods dense,aapp`` alternates the requests' method (``--sparsity`` for the pruned ones; the
request's ``sparsity`` and ``method`` fields), so that requests of several graphs run side by side;
``--thread-pool`` is the session's ``thread_pool`` setting (one per process: "shared" is imposed on
the whole process).

The same prompts are also run sequentially through ``Session.generate`` in the same process first,
as the baseline (requests/s with no server and no concurrency).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor


import openai
import uvicorn

from aapp_runtime import Session
from aapp_runtime.serve import App, Limits

PROMPTS = ["How do I bake bread at home?", "What is a river?", "Tell me about clouds.", "How do plants grow?",
           "What is a good breakfast?", "Why is the sky blue?", "How do I learn to swim?", "What is a poem?"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=4, help="requests per client")
    p.add_argument("--parallel", type=int, default=1, help="the server's --parallel")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", default="dense", help="comma-separated; the requests take them in turn")
    p.add_argument("--sparsity", type=float, default=0.4, help="of the requests whose method is not dense")
    p.add_argument("--thread-pool", default="auto", help="Session(thread_pool=...): auto, session or shared")
    args = p.parse_args()

    session = Session(args.model_dir, provider="cpu", threads=args.threads, thread_pool=args.thread_pool)
    methods = args.methods.split(",")

    def options(c: int, r: int) -> dict:
        method = methods[(c * args.requests + r) % len(methods)]
        return {} if method == "dense" else {"method": method, "sparsity": args.sparsity}

    jobs = [(PROMPTS[(c + r) % len(PROMPTS)], options(c, r)) for c in range(args.clients) for r in range(args.requests)]
    for _, o in jobs[:len(methods)]:  # open every graph the requests use
        session.generate(PROMPTS[0], 4, **o)
    t0 = time.perf_counter()
    tokens = sum(len(session.generate([{"role": "user", "content": q}], args.max_tokens, **o).tokens) for q, o in jobs)
    sequential_s = time.perf_counter() - t0

    app = App(session, "model", Limits(parallel=args.parallel, queue=args.clients * args.requests))
    server = uvicorn.Server(uvicorn.Config(app.asgi, host="127.0.0.1", port=_port(), log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.config.port}/v1", api_key="none", max_retries=0)
    client.chat.completions.create(model="model", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)

    latencies: list[float] = []
    completion_tokens: list[int] = []
    lock = threading.Lock()

    def one_client(c: int) -> None:
        for r in range(args.requests):
            q = PROMPTS[(c + r) % len(PROMPTS)]
            s = time.perf_counter()
            reply = client.chat.completions.create(model="model", messages=[{"role": "user", "content": q}],
                                                   max_tokens=args.max_tokens, temperature=0,
                                                   extra_body=options(c, r))
            with lock:
                latencies.append(time.perf_counter() - s)
                completion_tokens.append(reply.usage.completion_tokens)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(one_client, range(args.clients)))
    wall = time.perf_counter() - t0
    server.should_exit = True
    n = len(latencies)
    latencies.sort()
    print(json.dumps({
        "model_dir": args.model_dir, "provider": session.provider, "threads": args.threads, "cores": os.cpu_count(),
        "clients": args.clients, "requests": n, "server_parallel": args.parallel, "max_tokens": args.max_tokens,
        "methods": methods, "sparsity": args.sparsity, "thread_pool": session.thread_pool,
        "server": {"wall_s": round(wall, 2), "requests_per_s": round(n / wall, 3),
                   "completion_tokens_per_s": round(sum(completion_tokens) / wall, 1),
                   "latency_s": {"median": round(statistics.median(latencies), 3),
                                 "p90": round(latencies[int(0.9 * (n - 1))], 3), "max": round(latencies[-1], 3)}},
        "baseline_sequential_session": {"wall_s": round(sequential_s, 2), "requests_per_s": round(n / sequential_s, 3),
                                        "completion_tokens_per_s": round(tokens / sequential_s, 1)},
    }, indent=1))


if __name__ == "__main__":
    main()
