"""Reproduce the paper's comparison on the demo model: refusal, over-refusal, perplexity, FLOPs.

    python scripts/reproduce_table.py [--model demo] [--sparsities 0.2,0.4,0.5] [--limit N] [--out docs/results]
        [--methods aapp-adaptive [--adaptive-path restart] --update]

Runs dense once and PP, AAPP, aapp-adaptive, Wanda-sp, FLAP and random at each sparsity on the model card's
held-out files (calibration on the card's calibration files, cached), and writes ``table.md``,
``table.json`` and ``table.png`` (strict refusal rate vs FLOPs ratio per method). Refusal is counted
twice: a marker anywhere (``refusal``) and the strict detector (``aapp_export.refusal``: the marker
opens the answer and its first clause is likely under the dense model).

``--update`` re-runs only ``--methods`` (and dense, a check that nothing else moved) into an existing
``table.json``: their rows replace the old ones, the other rows stay, and the command is added to the
file's ``meta.updates``; the calibration's scorer and budget must be the file's (``merge_rows``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from aapp_export.choices import ADAPTIVE_PATHS
from aapp_export.circuits import SCORERS

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("pp", "aapp", "aapp-adaptive", "wanda-sp", "flap", "random")


def pinned_threshold(row: dict) -> bool:
    """Whether an aapp-adaptive row ran at a threshold its command named, not the calibration's. Rows written
    before the calibration chose one (no ``adaptive_threshold_pinned``) ran the default 0.5 unless named."""
    return row.get("adaptive_threshold_pinned", row.get("adaptive_threshold", 0.5) != 0.5)


def row_key(row: dict) -> tuple:
    """What makes a results row the same measurement again: split, engine, method, sparsity, the gate
    threshold a command named (None: the calibration's, whatever its value, so a row at a new calibration's
    threshold replaces the one at the old) and aapp-adaptive's path (``choices.ADAPTIVE_PATHS``; rows without
    one took the restart path)."""
    return (row.get("split"), row.get("engine"), row["method"], row["sparsity"],
            row.get("adaptive_threshold") if pinned_threshold(row) else None, row.get("adaptive_path", "restart"))


def merge_rows(path: Path, rows: list[dict], meta: dict, calibration: dict) -> tuple[list[dict], dict]:
    """``rows`` merged into the results file at ``path`` (``--update``): a new row replaces the old one of
    the same ``row_key``, in place; the other old rows stay; new keys are appended. ``calibration`` (scorer,
    budget) must equal the file's, else the rows would mix protected sets. Returns the rows and the file's
    metadata with ``meta`` added to its ``updates``."""
    if not path.is_file():
        raise SystemExit(f"--update: {path} does not exist; run without --update first")
    old = json.loads(path.read_text())
    old_meta = old.get("meta") or {k: v for k, v in old.items() if k != "rows"}
    mismatch = {k: (old_meta.get(k), v) for k, v in calibration.items() if old_meta.get(k) != v}
    if mismatch:
        raise SystemExit(f"--update: {path} was measured with another calibration {mismatch} (file, now); "
                         "re-run every method instead")
    new = {row_key(r): r for r in rows}
    merged = [new.pop(row_key(r), r) for r in old["rows"]] + list(new.values())
    return merged, {**old_meta, "updates": old_meta.get("updates", []) + [meta]}


def method_label(row: dict) -> str:
    """A row's method, with aapp-adaptive's path (rows without one took the restart)."""
    return row["method"] + (f" ({row.get('adaptive_path', 'restart')})" if row["method"] == "aapp-adaptive" else "")


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label in dict.fromkeys(method_label(r) for r in rows):
        pts = sorted((r["flops_ratio"], r["strict_refusal_rate"]) for r in rows if method_label(r) == label)
        ax.plot(*zip(*pts), marker="o" if label != "dense" else "*", markersize=10 if label == "dense" else 6,
                label=label)
    ax.set_xlabel("FLOPs per request relative to dense (probe included)")
    ax.set_ylabel("strict refusal rate on held-out harmful prompts")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows: list[dict]) -> str:
    lines = ["| method | sparsity | refusal (harmful) | strict refusal | over-refusal (harmless) | strict over-refusal "
             "| perplexity | FLOPs ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {method_label(r)} | {r['sparsity']:.1f} | {r['refusal_rate']:.1%} | {r['strict_refusal_rate']:.1%} | "
                     f"{r['over_refusal_rate']:.1%} | {r['strict_over_refusal_rate']:.1%} | "
                     f"{r['perplexity']:.2f} | {r['flops_ratio']:.3f} |")
    return "\n".join(lines) + "\n"


def prompt_files(ckpt) -> dict[tuple[str, str], Path]:
    """Calibration and evaluation files of ``ckpt`` (card, its own data/ dir, else the demo card's)."""
    from aapp_export.cards import default_prompt_file

    return {(section, key): default_prompt_file(ckpt.card, ckpt.path, section, key)
            for section, keys in (("calibration", CALIBRATION_KEYS), ("evaluation", ("harmful", "harmless", "text")))
            for key in keys}


CALIBRATION_KEYS = ("harmful", "harmless", "text", "check", "check_harmless")  # cached_calibration's prompt files


def card_calibration(ckpt, model, tokenizer, files: dict[tuple[str, str], Path], **options):
    """``(stats, circuits)`` of ``ckpt`` from its card's calibration files (``prompt_files``), cached as
    ``aapp-export`` caches them; ``options`` (``scorer``, ``budget``) pin the choice. Progress on stderr."""
    from aapp_export.calibration import cached_calibration

    return cached_calibration(ckpt.path, model, tokenizer, **{k: files["calibration", k] for k in CALIBRATION_KEYS},
                              log=lambda m: print(m, file=sys.stderr), **options)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--sparsities", default="0.2,0.4,0.5")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    ap.add_argument("--scorer", choices=SCORERS, default=None,
                    help="alignment scorer AAPP protects by (default: the calibration causal check's choice)")
    ap.add_argument("--adaptive-path", choices=ADAPTIVE_PATHS, default=None,
                    help="aapp-adaptive's path for a flagged request (default: choices.DEFAULT_ADAPTIVE_PATH)")
    ap.add_argument("--update", action="store_true",
                    help="replace only these methods' rows (and dense) in the existing --out/table.json")
    args = ap.parse_args(argv)

    from aapp_export.calibration import load_model, read_lines
    from aapp_export.checkpoint import resolve_checkpoint
    from aapp_export.evaluate import run_eval

    ckpt = resolve_checkpoint(args.model)
    files = prompt_files(ckpt)
    ev = {k: read_lines(files["evaluation", k]) for k in ("harmful", "harmless", "text")}
    if args.limit:
        ev = {k: v[: args.limit] for k, v in ev.items()}
    model, tok = load_model(ckpt.path)
    t0 = time.time()
    stats, circuits = card_calibration(ckpt, model, tok, files, scorer=args.scorer)
    rows = [run_eval(model, tok, "dense", 0.0, ev["harmful"], ev["harmless"], ev["text"],
                     max_new_tokens=args.max_new_tokens).to_json()]
    for sparsity in (float(s) for s in args.sparsities.split(",")):
        for method in args.methods.split(","):
            row = run_eval(model, tok, method, sparsity, ev["harmful"], ev["harmless"], ev["text"], stats, circuits,
                           args.max_new_tokens, adaptive_path=args.adaptive_path).to_json()
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/reproduce_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
    minutes = round((time.time() - t0) / 60, 1)
    if args.update:
        rows, meta = merge_rows(args.out / "table.json", rows, {"command": command, "minutes": minutes},
                                {"scorer": circuits.scorer, "budget": circuits.budget,
                                 "max_new_tokens": args.max_new_tokens, "limit": args.limit})
    else:
        meta = {"model": ckpt.source, "scorer": circuits.scorer, "budget": circuits.budget,
                "causal_check": circuits.check, "max_new_tokens": args.max_new_tokens,
                "limit": args.limit, "minutes": minutes, "command": command}
    (args.out / "table.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (args.out / "table.md").write_text(markdown(rows))
    plot(rows, args.out / "table.png", f"{ckpt.source}: refusal vs compute ({len(ev['harmful'])} harmful prompts)")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
