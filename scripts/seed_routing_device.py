"""The seed study of aapp-adaptive's routing in one device call: train the demo recipe's seeds on the
GPU, bring their checkpoints back, and measure routing on each there (``measure_routing.py``).

Why a device call: the seeds' checkpoints need a GPU (about 5 minutes a seed on one H200, the three
at once; this project's CPUs have no bf16 units and take about 16 hours a seed). Right after training
the checkpoints are packed into parts under the 16 MiB a file back from a device call may have
(``seed_checkpoints.pack``), so that every later measurement of the seeds (test tables, phrasing
shift, calibration stability) runs here on the CPU without device time:
``python scripts/seed_checkpoints.py --from <the call's files> --to models/seeds``. Everything a
routing rule needs is in ``routing_seeds.json`` (per seed: per-prompt gates, first-token
probability, and the dense / AAPP / aapp-adaptive verdicts), so rules can be compared afterwards
without the checkpoints (``measure_routing.simulate``).

    PYTHONPATH=.:runtime PYTHONUNBUFFERED=1 python3 scripts/seed_routing_device.py --out $OUT   # GPU machine
    python scripts/seed_routing_device.py --smoke --limit 4 --device cpu --out /tmp/seed_routing  # the plumbing

Writes to ``--out`` the 8 files a device call brings back at most: ``checkpoints.json`` and
``checkpoints.tar.gz.part00``-``03`` (the seed folders, 16 MB gzip'd each, with every part's and
every weights file's sha256), ``routing_seeds.json`` (seed -> ``measure_routing`` report),
``summary.json`` (always: each seed's training record with its weights' sha256, which tells whether
the GPU reproduced ``docs/results/seeds/gpu_seedN``; then each rule's val and val2 figures, per seed
and mean, each rule family's setting chosen on val per seed with its val2 mean, the dense-prefill
path's figures per seed and mean, and the perplexity on the evaluation text of dense, PP, AAPP and
both aapp-adaptive paths per seed and mean) and ``log.txt`` (each step's output tail).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from seed_checkpoints import pack

ROOT = Path(__file__).resolve().parents[1]


def run_all(commands: dict[str, list[str]], env: dict[str, str], logs: Path, deadline: float) -> dict[str, dict]:
    """Run ``commands`` at once; per name its exit status (``None``: killed at ``deadline``, a
    ``time.time()``), seconds and output tail."""
    procs = {}
    for name, cmd in commands.items():
        out = (logs / f"{name}.log").open("w")
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT), out, time.time())
    done = {}
    for name, (proc, out, t0) in procs.items():
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        out.close()
        tail = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
        done[name] = {"rc": rc, "seconds": round(time.time() - t0, 1), "tail": tail}
        print(f"{name}: {'killed at the deadline' if rc is None else f'rc {rc}'} in {done[name]['seconds']} s", flush=True)
    return done


def _mean(cells: list[dict]) -> dict:
    """Field-wise mean of figures dicts, each field over the dicts that have it."""
    keys = dict.fromkeys(k for c in cells for k in c)
    return {m: round(sum(c[m] for c in cells if m in c) / sum(m in c for c in cells), 4) for m in keys}


def summarise(reports: dict[int, dict]) -> dict:
    """Each rule's figures on val and val2 per seed and their mean, and each rule family's setting
    chosen on val per seed (``measure_routing.choose_on_val``) with its val2 mean."""
    first = next(iter(reports.values()))
    rows = []
    for i, rule in enumerate(first["rules"]):
        row = {"rule": rule["rule"], "t": rule["t"]}
        for key in ("harmful_val", "harmless_val", "harmful_val2", "harmless_val2", "borderline_val2"):
            per_seed = {seed: r["rules"][i][key] for seed, r in reports.items() if key in r["rules"][i]}
            if per_seed:
                row[key] = {"per_seed": per_seed, "mean": _mean(list(per_seed.values()))}
        rows.append(row)
    chosen = {}
    for name in first.get("chosen_on_val", {}):
        picks = {seed: r["chosen_on_val"][name] for seed, r in reports.items()}
        mean = None
        if all(picks.values()):
            mean = {key: _mean([p[key] for p in picks.values()]) for key in ("harmful_val2", "harmless_val2")
                    if all(key in p for p in picks.values())}
        chosen[name] = {"per_seed": picks, "mean_val2": mean}
    paths = {}  # the dense-prefill path, generated on each seed (measure_routing's dense_prefill_path)
    for key in first.get("dense_prefill_path", {}):
        per_seed = {seed: r["dense_prefill_path"][key] for seed, r in reports.items() if key in r.get("dense_prefill_path", {})}
        paths[key] = {"per_seed": per_seed, "mean": _mean(list(per_seed.values()))}
    ppl = {seed: r["perplexity"] for seed, r in reports.items() if "perplexity" in r}  # the evaluation text's
    return {"seeds": sorted(reports), "rules": rows, "chosen_on_val": chosen, "dense_prefill_path": paths,
            "perplexity": {"per_seed": ppl, "mean": _mean(list(ppl.values()))} if ppl else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--work", type=Path, default=Path("/tmp/seed_routing_work"), help="checkpoints and caches")
    p.add_argument("--smoke", action="store_true", help="train_demo_model.py --smoke (tiny model, a few steps)")
    p.add_argument("--limit", type=int, default=None, help="measure_routing.py --limit")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--deadline", type=float, default=560,
                   help="seconds after which unfinished steps are stopped and what finished is written (a device "
                        "call ends at 600)")
    p.add_argument("--splits", default="val,val2",
                   help="measure_routing.py --splits (test adds 319 prompts to val and val2's 448)")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    deadline = time.time() + args.deadline
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    (args.work / "logs").mkdir(parents=True)
    env = {**os.environ, "AAPP_CACHE": str(args.work / "cache"), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "runtime"), os.environ.get("PYTHONPATH")]))}
    py = sys.executable
    train = {f"train_seed{s}": [py, "scripts/train_demo_model.py", "--device", args.device, "--train-seed", str(s),
                                "--out", str(args.work / f"seed{s}")] + (["--smoke"] if args.smoke else [])
             for s in seeds}
    log = {"train": run_all(train, env, args.work / "logs", deadline)}
    trained = [s for s in seeds if log["train"][f"train_seed{s}"]["rc"] == 0]
    training = {s: json.loads((args.work / f"seed{s}" / "training.json").read_text()) for s in trained}
    if trained:  # first, so that the checkpoints come back even if a measurement outlasts the call
        t0 = time.time()
        packed = pack({f"seed{s}": args.work / f"seed{s}" for s in trained}, args.out)
        for s in trained:
            training[s]["model_safetensors_sha256"] = packed["weights_sha256"][f"seed{s}"]
        log["pack"] = {"parts": len(packed["parts"]), "bytes": sum(p["bytes"] for p in packed["parts"]),
                       "seconds": round(time.time() - t0, 1)}
    summary = {"training": training}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    results = args.work / "routing"
    results.mkdir()
    measure = {f"routing_seed{s}": [py, "scripts/measure_routing.py", "--model", str(args.work / f"seed{s}"),
                                    "--device", args.device, "--splits", args.splits,
                                    "--out", str(results / f"seed{s}.json")]
               + (["--limit", str(args.limit)] if args.limit else []) for s in trained}
    log["routing"] = run_all(measure, env, args.work / "logs", deadline)
    reports = {s: json.loads((results / f"seed{s}.json").read_text())
               for s in trained if log["routing"][f"routing_seed{s}"]["rc"] == 0}
    if reports:
        (args.out / "routing_seeds.json").write_text(json.dumps(reports) + "\n")
        summary.update(summarise(reports))
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "log.txt").write_text(json.dumps(log, indent=1) + "\n")
    ok = len(reports) == len(seeds)
    print("seed routing:", "done" if ok else f"{len(reports)} of {len(seeds)} seeds measured (log.txt)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
