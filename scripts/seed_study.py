"""Every per-seed measurement of issue 21 for the seed checkpoints, on this CPU, in one resumable command.

    python scripts/seed_checkpoints.py --from <a device call's files> --to models/seeds
    python scripts/seed_study.py [--seeds-dir models/seeds] [--out docs/results/seeds] [--steps a,b] [--plan] [--force]
    python scripts/seed_study.py --kind fp32 --train 0,1,2   # train the seeds on this CPU first (fp32)

``--kind`` says where the checkpoints came from. ``gpu`` (the default): a device call trained them with
the recipe's bf16 autocast and ``seed_checkpoints.py`` unpacked them into ``models/seeds/seedN``.
``fp32``: ``--train`` trains them here, ``train_demo_model.py --no-bf16`` into ``models/seeds/fp32/seedN``,
the recipe with fp32 instead of bf16 autocast (this CPU has no bf16 units: about 16 hours a seed with
autocast, about 1.6 hours without: seed 0 took 96 minutes). Each seed is trained right before its study; a stopped training
resumes from its stage 1 (``--stage1-cache``), a finished one is never trained again.

For each checkpoint folder ``seedN`` it runs these steps, in this order, each writing one file into
``--out/<kind>_seedN/`` (beside the checkpoint's ``training.json``, copied with the weights' sha256, since
the checkpoints themselves are not committed):

- ``table``: ``reproduce_table.py`` (the test files, every method and sparsity) -> ``table.json``;
- ``eval_val2``: ``eval_splits.py --splits val2`` -> ``eval_val2.json`` (what issue 21's targets read);
- ``routing``: ``measure_routing.py`` (the gates' routing rules and the perplexities) -> ``routing.json``;
- ``risk_gate``: ``measure_risk_gate.py`` (AUCs per split) -> ``risk_gate.json``;
- ``phrasing_shift``: ``phrasing_shift.py`` -> ``phrasing_shift.json``;
- ``calibration_stability``: ``calibration_stability.py`` -> ``calibration_stability.json``.

Every step of a seed reads the same calibration: the first calibrates and stores it in the cache that
``aapp-export`` and ``aapp-eval`` share (``calibration.calibration_cache_dir``), the others read it.
A step is done when ``<kind>_seedN/seed_study.json`` records it for this checkpoint's weights (sha256) and
this code's calibration ``CACHE_VERSION``, and its file exists: a rerun skips it, so a session stopped
part-way resumes at the step it stood at, and results of an older calibration or of another checkpoint
are measured again (``--force`` reruns everything asked for). Each step's output goes to
``--logs/seedN/STEP.log``. When every seed has its table and val2 rows, ``seed_summary.py`` pools
them with the shipped model's (``docs/results``) into ``summary.md`` and ``summary.json`` (``--out``
for ``gpu``, ``--out/fp32_summary`` for ``fp32``); beside them ``budget_rule.py`` compares budget rules on
their calibration-stability reports (``budget_rule.md`` / ``.json``) and ``gate_center.py`` reads their
routing reports with the risk gate centred on the check split (``gate_center.md`` / ``.json``).
Prints one JSON line per step and, at the end, the whole record.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from collections.abc import Iterable
from pathlib import Path

from aapp_runtime.manifest import sha256_file

ROOT = Path(__file__).resolve().parents[1]
STAMP = "seed_study.json"
WEIGHTS = "model.safetensors"
STEPS = ("table", "eval_val2", "routing", "risk_gate", "phrasing_shift", "calibration_stability")


@dataclass(frozen=True)
class Kind:
    """Where a set of seed checkpoints came from, and where its results go."""

    prefix: str  # results of seed N go to OUT/<prefix>N
    label: str  # the run's name in the pooled summary: "N (<label>)"
    seeds_dir: Path  # where its checkpoints are by default
    summary_dir: str  # the summary's folder under OUT ("" = OUT itself)


KINDS = {"gpu": Kind("gpu_seed", "GPU", ROOT / "models" / "seeds", ""),
         "fp32": Kind("fp32_seed", "CPU fp32", ROOT / "models" / "seeds" / "fp32", "fp32_summary")}


class SeedStudyError(Exception):
    """No checkpoint to study, or a step asked for that does not exist."""


def step_command(step: str, checkpoint: Path, out: Path) -> tuple[list[str], Path]:
    """The script call of ``step`` for ``checkpoint`` and the file it writes under ``out``."""
    ck = str(checkpoint)
    files = {"table": out / "table.json", "eval_val2": out / "eval_val2.json", "routing": out / "routing.json",
             "risk_gate": out / "risk_gate.json", "phrasing_shift": out / "phrasing_shift.json",
             "calibration_stability": out / "calibration_stability.json"}
    args = {"table": ["scripts/reproduce_table.py", "--model", ck, "--out", str(out)],
            "eval_val2": ["scripts/eval_splits.py", "--model", ck, "--splits", "val2", "--out", str(files["eval_val2"])],
            "routing": ["scripts/measure_routing.py", "--model", ck, "--device", "cpu", "--out", str(files["routing"])],
            "risk_gate": ["scripts/measure_risk_gate.py", "--model", ck, "--out", str(files["risk_gate"])],
            "phrasing_shift": ["scripts/phrasing_shift.py", "--model", ck, "--out", str(files["phrasing_shift"])],
            "calibration_stability": ["scripts/calibration_stability.py", "--model", ck,
                                      "--out", str(files["calibration_stability"])]}
    return [sys.executable, *args[step]], files[step]


def find_seeds(seeds_dir: Path, required: bool = True) -> dict[str, Path]:
    """``{"N": folder}`` for every ``seedN`` folder holding a checkpoint (config and weights)."""
    found = {p.name.removeprefix("seed"): p for p in sorted(Path(seeds_dir).glob("seed*"))
             if p.is_dir() and p.name.removeprefix("seed").isdigit()
             and (p / "config.json").is_file() and (p / WEIGHTS).is_file()}
    if not found and required:
        raise SeedStudyError(f"{seeds_dir}: no seedN folder with config.json and {WEIGHTS}; unpack a device call's "
                             "checkpoints first (python scripts/seed_checkpoints.py --from <its files> --to "
                             "models/seeds) or train them here (--kind fp32 --train 0,1,2)")
    return found


def train_command(seed: str, seeds_dir: Path) -> tuple[list[str], Path]:
    """The fp32 training of train seed ``seed`` on this CPU, and the folder it writes before it is renamed."""
    partial = seeds_dir / f"seed{seed}.partial"
    return [sys.executable, "scripts/train_demo_model.py", "--no-bf16", "--device", "cpu", "--train-seed", seed,
            "--stage1-cache", str(seeds_dir / "stage1_cache"), "--out", str(partial)], partial


def train_seed(seed: str, seeds_dir: Path, logs: Path, *, plan: bool, report=print) -> dict:
    """Train ``seedN`` unless its checkpoint is there; renamed into place only once the training finished."""
    command, partial = train_command(seed, seeds_dir)
    target = seeds_dir / f"seed{seed}"
    if find_seeds(seeds_dir, required=False).get(seed):
        record = {"seed": seed, "step": "train", "skipped": True, "output": str(target)}
    elif plan:
        record = {"seed": seed, "step": "train", "would_run": " ".join(command[1:]), "output": str(target)}
    else:
        log = logs / f"seed{seed}" / "train.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with log.open("w") as f:
            rc = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc == 0:
            partial.rename(target)
        record = {"seed": seed, "step": "train", "command": " ".join(command[1:]), "rc": rc,
                  "seconds": round(time.time() - t0, 1), "log": str(log), "output": str(target)}
    report(json.dumps(record))
    return record


def weights_sha256(checkpoint: Path) -> str:
    return sha256_file(checkpoint / WEIGHTS)


def is_done(stamp: dict, step: str, output: Path, sha: str, cache_version: int) -> bool:
    """Whether ``step``'s record in ``stamp`` is of this checkpoint and this calibration code, with its file."""
    record = stamp.get("steps", {}).get(step)
    return (record is not None and stamp.get("weights_sha256") == sha and record.get("cache_version") == cache_version
            and record.get("rc") == 0 and output.is_file())


def keep_training_record(checkpoint: Path, out: Path, sha: str) -> None:
    """Copy the checkpoint's ``training.json`` beside its results with the weights' sha256: the checkpoints
    are not committed, their record is."""
    source = checkpoint / "training.json"
    if source.is_file():
        record = json.loads(source.read_text())
        (out / "training.json").write_text(json.dumps(dict(record, weights_sha256=sha), indent=1) + "\n")


def run_seed(name: str, checkpoint: Path, out: Path, logs: Path, steps: list[str], *, force: bool, plan: bool,
             cache_version: int, report=print) -> dict[str, dict]:
    """Run ``steps`` for one checkpoint; ``{step: record}`` (``skipped`` where the stamp says it is done)."""
    out.mkdir(parents=True, exist_ok=True)
    stamp_path = out / STAMP
    stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    sha = weights_sha256(checkpoint)
    if stamp.get("weights_sha256") != sha:  # another checkpoint (or none yet): nothing recorded counts
        stamp = {"checkpoint": str(checkpoint), "weights_sha256": sha, "steps": {}}
    if not plan:
        keep_training_record(checkpoint, out, sha)
    done = {}
    for step in steps:
        command, output = step_command(step, checkpoint, out)
        if not force and is_done(stamp, step, output, sha, cache_version):
            done[step] = {"seed": name, "step": step, "skipped": True, "output": str(output)}
        elif plan:
            done[step] = {"seed": name, "step": step, "would_run": " ".join(command[1:]), "output": str(output)}
        else:
            log = logs / f"seed{name}" / f"{step}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            with log.open("w") as f:
                rc = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
            record = {"command": " ".join(command[1:]), "rc": rc, "seconds": round(time.time() - t0, 1),
                      "cache_version": cache_version, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "log": str(log)}
            stamp["steps"][step] = record
            stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")
            done[step] = {"seed": name, "step": step, **record, "output": str(output)}
        report(json.dumps(done[step]))
    return done


def studied_seeds(out: Path, kind: Kind) -> list[str]:
    """Seed numbers with a results folder ``OUT/<prefix>N`` (a seed studied in an earlier session counts
    in the pooled summary even when its checkpoint, which is not committed, is no longer on this machine)."""
    return sorted((p.name.removeprefix(kind.prefix) for p in Path(out).glob(f"{kind.prefix}*")
                   if p.is_dir() and p.name.removeprefix(kind.prefix).isdigit()), key=int)


def summary_command(seeds: Iterable[str], out: Path, shipped: Path, kind: Kind = KINDS["gpu"]) -> list[str] | None:
    """``seed_summary.py`` over the shipped model and the seeds named, once each has its test and val2 rows."""
    folders = {n: out / f"{kind.prefix}{n}" for n in seeds}
    if not all((f / "table.json").is_file() and (f / "eval_val2.json").is_file() for f in folders.values()):
        return None
    runs = [f"2 (shipped, CPU)={shipped}"] + [f"{n} ({kind.label})={f}" for n, f in folders.items()]
    return [sys.executable, "scripts/seed_summary.py", *[a for r in runs for a in ("--run", r)],
            "--mean", ",".join(f"{n} ({kind.label})" for n in folders), "--out", str(out / kind.summary_dir)]


# the comparisons run over the seeds' reports when they are pooled: script -> (its flag, the report it reads)
POOLED_STUDIES = {"budget_rule.py": ("--stability", "calibration_stability.json"),
                  "gate_center.py": ("--routing", "routing.json")}


def pooled_study_command(script: str, seeds: Iterable[str], out: Path, shipped: Path,
                         kind: Kind = KINDS["gpu"]) -> list[str] | None:
    """``script`` (a key of ``POOLED_STUDIES``) over its reports of the shipped model and the seeds named (those
    that have one), into the summary's folder; None without any seed's report."""
    flag, name = POOLED_STUDIES[script]
    reports = [r for r in (out / f"{kind.prefix}{n}" / name for n in seeds) if r.is_file()]
    if not reports:
        return None
    shipped_report = [shipped / name] if (shipped / name).is_file() else []
    return [sys.executable, f"scripts/{script}", flag, *map(str, shipped_report + reports),
            "--out", str(out / kind.summary_dir)]


def _comma_list(text: str | None) -> list[str]:
    return [] if text is None else [s.strip() for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=sorted(KINDS), default="gpu",
                    help="gpu: checkpoints a device call trained (bf16 autocast); fp32: trained on this CPU (--train)")
    ap.add_argument("--seeds-dir", type=Path, default=None,
                    help="the checkpoints, seedN/ each (default: models/seeds for gpu, models/seeds/fp32 for fp32)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "seeds",
                    help="results go to OUT/<kind>_seedN/, the pooled summary to OUT (gpu) or OUT/fp32_summary")
    ap.add_argument("--shipped", type=Path, default=ROOT / "docs" / "results",
                    help="the shipped model's results folder, pooled beside the seeds (not in their mean)")
    ap.add_argument("--logs", type=Path, default=ROOT / "models" / "seeds" / "logs")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma list of {', '.join(STEPS)}")
    ap.add_argument("--seeds", default=None, help="comma list of seed numbers (default: every seedN folder)")
    ap.add_argument("--train", default=None, metavar="SEEDS",
                    help="--kind fp32 only: train these seed numbers here first where their checkpoint is missing")
    ap.add_argument("--force", action="store_true", help="rerun steps the stamp records as done")
    ap.add_argument("--plan", action="store_true", help="print what would run and what is done; run nothing")
    args = ap.parse_args(argv)
    from aapp_export.calibration import CACHE_VERSION

    kind = KINDS[args.kind]
    seeds_dir = args.seeds_dir or kind.seeds_dir
    try:
        steps = _comma_list(args.steps)
        unknown = [s for s in steps if s not in STEPS]
        if unknown:
            raise SeedStudyError(f"--steps {args.steps}: {unknown} are not steps; pass some of {', '.join(STEPS)}")
        train = _comma_list(args.train)
        if train and args.kind != "fp32":
            raise SeedStudyError(f"--train {args.train} with --kind {args.kind}: only --kind fp32 trains here "
                                 "(gpu checkpoints come from a device call); pass --kind fp32")
        if any(not t.isdigit() for t in train):
            raise SeedStudyError(f"--train {args.train}: not a comma list of seed numbers; pass e.g. --train 0,1,2")
        found = find_seeds(seeds_dir, required=not train)
        wanted = _comma_list(args.seeds) if args.seeds is not None else sorted(set(found) | set(train), key=int)
        missing = [s for s in wanted if s not in found and s not in train]
        if missing:
            raise SeedStudyError(f"--seeds {args.seeds}: no checkpoint for {missing} in {seeds_dir} "
                                 f"(it has {', '.join(found) or 'none'}); train them with --kind fp32 --train")
    except SeedStudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    record: dict[str, dict[str, dict]] = {}
    for name in wanted:
        record[name] = {}
        if name in train:
            record[name]["train"] = trained = train_seed(name, seeds_dir, args.logs, plan=args.plan)
            if trained.get("rc") not in (None, 0) or "would_run" in trained:
                continue  # no checkpoint to study yet
        record[name].update(run_seed(name, seeds_dir / f"seed{name}", args.out / f"{kind.prefix}{name}", args.logs,
                                     steps, force=args.force, plan=args.plan, cache_version=CACHE_VERSION))
    failed = [f"seed{n}/{s}" for n, r in record.items() for s, v in r.items() if v.get("rc") not in (None, 0)]
    every_seed = sorted(set(find_seeds(seeds_dir, required=False)) | set(train) | set(studied_seeds(args.out, kind)),
                        key=int)
    summary = summary_command(every_seed, args.out, args.shipped, kind)  # all, not only --seeds
    if summary is None or failed:
        outcome = "not pooled: " + ("failed steps " + ", ".join(failed) if failed else
                                    "a seed lacks table.json or eval_val2.json")
    elif args.plan:
        outcome = "would pool: " + " ".join(summary[1:])
    else:
        rc = subprocess.run(summary, cwd=ROOT, capture_output=True, text=True).returncode
        where = args.out / kind.summary_dir / "summary.md"
        outcome = f"pooled into {where}" if rc == 0 else f"seed_summary.py failed (rc {rc})"
        for script in POOLED_STUDIES:
            command = pooled_study_command(script, every_seed, args.out, args.shipped, kind)
            if rc == 0 and command is not None:
                done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True).returncode
                outcome += f", {script.removesuffix('.py')}.md" if done == 0 else f"; {script} failed (rc {done})"
    print(json.dumps({"seeds": record, "summary": outcome}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
