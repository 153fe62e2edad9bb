"""aapp-adaptive's two paths through the exported graphs, timed per request beside dense and AAPP.

    python scripts/bench_adaptive_paths.py exported/demo [--split val2] [--limit 32] [--sparsity 0.4]
        [--max-new-tokens 48] [--rounds 3] [--provider cpu] [--pools stop|spin|global]
        [--out docs/results/adaptive/bench_paths.json]

For the harmful and the harmless prompts of a split (``models/demo/data/{harmful,harmless}_S.txt``, or
``--data``), each round generates every prompt (greedy, stopping at end-of-sequence as an app would)
with: dense; AAPP at ``--sparsity``; aapp-adaptive on the restart path (the level's AAPP prefill, and a
dense request from the start when both gates flag it); aapp-adaptive on the dense-prefill path (the
split prefill: head and risk gate, then the pruned or the dense tail; the decode dense only when the
dense model opens with the refusal). The four alternate prompt by prompt, so they see the same machine
state. Per class and variant: the mean wall time per request (ms) of each round, their median and
range, the median's ratio to dense's, mean prefill ms, decode ms per step, tokens per request (answers
end where the model ends them, so they differ), and the paths taken (share run dense, share prefilled
dense). Then a ``--long-prompt`` of random ids, prefill only: dense, AAPP, and the dense-prefill path
with every request flagged and with none (the result's ``prefill_ms`` and the wall time of the whole
call, which also counts setting up the request's caches and kept-weight buffers). Prints JSON (and
writes it to ``--out``) with the machine, the provider and the thread-pool setting (``--pools``:
``bench_thread_pool.THREAD_POOL``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from bench_thread_pool import THREAD_POOL

VARIANTS = {"dense": {"method": "dense"},
            "aapp": {"method": "aapp"},
            "aapp-adaptive restart": {"method": "aapp-adaptive", "adaptive_path": "restart"},
            "aapp-adaptive dense-prefill": {"method": "aapp-adaptive", "adaptive_path": "dense-prefill"}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--data", type=Path, default=Path("models/demo/data"), help="folder of {harmful,harmless}_S.txt")
    ap.add_argument("--split", default="val2")
    ap.add_argument("--limit", type=int, default=32, help="first N prompts of each file")
    ap.add_argument("--sparsity", type=float, default=0.4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--provider", default="cpu")
    ap.add_argument("--pools", choices=tuple(THREAD_POOL), default="stop",
                    help="intra-op pools: Session(thread_pool=) auto (stop spinning after a run), session "
                         "(ONNX Runtime's default: spin on) or shared (one for the process)")
    ap.add_argument("--long-prompt", type=int, default=512, help="tokens of the long prefill timed on its own")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import onnxruntime as ort

    from aapp_runtime import Session

    session = Session(args.model_dir, provider=args.provider, thread_pool=THREAD_POOL[args.pools])
    prompts = {c: [line for line in (args.data / f"{c}_{args.split}.txt").read_text().splitlines() if line.strip()]
               [:args.limit] for c in ("harmful", "harmless")}

    def run(name: str, prompt: str):
        options = dict(VARIANTS[name])
        sparsity = 0.0 if options["method"] == "dense" else args.sparsity
        t0 = time.perf_counter()
        result = session.generate(prompt, args.max_new_tokens, temperature=0, sparsity=sparsity, **options)
        return (time.perf_counter() - t0) * 1000, result

    for c in prompts:  # warm-up: open every graph, fill the arenas
        for name in VARIANTS:
            run(name, prompts[c][0])
    out: dict = {"model_dir": str(args.model_dir), "split": args.split, "sparsity": args.sparsity,
                 "max_new_tokens": args.max_new_tokens, "rounds": args.rounds,
                 "prompts": {c: len(p) for c, p in prompts.items()}, "provider": session.provider,
                 "pools": args.pools, "onnxruntime": ort.__version__,
                 "machine": platform.processor() or platform.machine(),
                 "cpu_count": __import__("os").cpu_count(), "command": "python scripts/bench_adaptive_paths.py "
                 + " ".join(argv or sys.argv[1:]), "classes": {}}
    for c, texts in prompts.items():
        per_round = {name: [] for name in VARIANTS}
        results = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            spent = {name: [] for name in VARIANTS}
            for k, prompt in enumerate(texts):
                names = list(VARIANTS)
                names = names[k % len(names):] + names[:k % len(names)]  # rotate the order prompt by prompt
                for name in names:
                    ms, result = run(name, prompt)
                    spent[name].append(ms)
                    results[name].append(result)
            for name in VARIANTS:
                per_round[name].append(statistics.fmean(spent[name]))
        dense_ms = statistics.median(per_round["dense"])
        rows = {}
        for name in VARIANTS:
            rs = results[name]
            ms = statistics.median(per_round[name])
            rows[name] = {"ms_per_request": round(ms, 2), "min_ms": round(min(per_round[name]), 2),
                          "max_ms": round(max(per_round[name]), 2), "ratio_to_dense": round(ms / dense_ms, 4),
                          "prefill_ms": round(statistics.fmean(r.prefill_ms for r in rs), 2),
                          "tokens_per_request": round(statistics.fmean(len(r.tokens) for r in rs), 2),
                          "decode_ms_per_token": round(sum(sum(r.decode_ms) for r in rs)
                                                       / max(1, sum(len(r.decode_ms) for r in rs)), 3),
                          "share_run_dense": round(sum(r.sparsity == 0 for r in rs) / len(rs), 4)}
            if name.endswith("dense-prefill"):
                rows[name]["share_prefilled_dense"] = round(sum(bool(r.dense_prefill) for r in rs) / len(rs), 4)
        out["classes"][c] = rows
    # one long prompt (random ids), prefill only: the split prefill's cost with every request flagged
    # (head, dense tail, its own-activation statistic) and with none (head, pruned tail)
    import numpy as np

    ids = np.random.default_rng(0).integers(5, min(30000, int(session.manifest.dims["vocab_size"])),
                                            args.long_prompt).tolist()
    long_variants = {"dense": dict(method="dense", sparsity=0.0), "aapp": dict(method="aapp", sparsity=args.sparsity),
                     "dense-prefill, flagged": dict(method="aapp-adaptive", sparsity=args.sparsity,
                                                    adaptive_path="dense-prefill", adaptive_threshold=0.0),
                     "dense-prefill, not flagged": dict(method="aapp-adaptive", sparsity=args.sparsity,
                                                        adaptive_path="dense-prefill", adaptive_threshold=1.0)}
    spent = {name: [] for name in long_variants}
    wall = {name: [] for name in long_variants}  # the whole call: level buffers, caches, release included
    for r in range(2 + 3 * args.rounds):
        for name, options in long_variants.items():
            t0 = time.perf_counter()
            ms = session.generate(ids, 1, ignore_eos=True, **options).prefill_ms
            if r >= 2:  # two warm-up rounds
                spent[name].append(ms)
                wall[name].append((time.perf_counter() - t0) * 1000)
    dense_ms, dense_wall = statistics.median(spent["dense"]), statistics.median(wall["dense"])
    out["prefill_long"] = {"tokens": args.long_prompt, **{
        name: {"prefill_ms": round(statistics.median(v), 2), "min_ms": round(min(v), 2), "max_ms": round(max(v), 2),
               "ratio_to_dense": round(statistics.median(v) / dense_ms, 4),
               "wall_ms": round(statistics.median(wall[name]), 2),
               "wall_ratio_to_dense": round(statistics.median(wall[name]) / dense_wall, 4)} for name, v in spent.items()}}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
