"""Greedy answers of the demo model under several pruning methods, scored for the strict refusal
detector (``aapp_export.refusal``): the material for its threshold and its hand labels (issue 21).

    python scripts/answers_for_labelling.py --out answers.json

Writes one row per (method, sparsity, split, prompt): the answer, the substring detector's verdict,
where the first refusal marker starts, whether it is anchored, the first clause and its mean NLL under
the dense model (``clause_nll``, nats per token). Besides the held-out ``*_val2`` prompts, the dense
model answers the second held-out set (``*_val``): the answers the threshold is fitted on (held out
like val2, so the dense model is as unsure there, but not the split the tables report).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = [("dense", 0.0), ("pp", 0.4), ("aapp", 0.4), ("pp", 0.5), ("aapp", 0.5), ("random", 0.5),
           ("wanda-sp", 0.5), ("pp", 0.7), ("random", 0.7)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--harmless-limit", type=int, default=60)
    args = p.parse_args()
    from aapp_export.calibration import cached_calibration, load_model, read_lines
    from aapp_export.evaluate import clause_nll, generate_answers
    from aapp_export.pruning import Pruner, PruneConfig
    from aapp_export.refusal import first_clause, is_anchored_refusal, is_refusal, marker_start

    demo = ROOT / "models" / "demo"
    data = demo / "data"
    model, tok = load_model(demo)
    stats, circuits = cached_calibration(demo, model, tok, harmful=data / "harmful_calib.txt",
                                         harmless=data / "harmless_calib.txt", text=data / "text_calib.txt",
                                         check=data / "harmful_val.txt", check_harmless=data / "harmless_val.txt",
                                         log=lambda m: None)
    splits = {"harmful_val2": read_lines(data / "harmful_val2.txt"),
              "harmless_val2": read_lines(data / "harmless_val2.txt")[:args.harmless_limit]}
    calib = {"harmful_val": read_lines(data / "harmful_val.txt"), "harmless_val": read_lines(data / "harmless_val.txt")}
    rows = []
    for method, sparsity in CONFIGS:
        for split, prompts in (splits | calib if method == "dense" else splits).items():
            pruner = None if method == "dense" else Pruner(model, PruneConfig(method, sparsity), stats,
                                                           circuits.protection() if method == "aapp" else None)
            for prompt, answer in zip(prompts, generate_answers(model, tok, prompts, 48, pruner,
                                                                desc=f"{method} {sparsity} {split}")):
                rows.append({"method": method, "sparsity": sparsity, "split": split, "prompt": prompt,
                             "answer": answer, "substring_refusal": is_refusal(answer),
                             "marker_start": marker_start(answer), "anchored": is_anchored_refusal(answer),
                             "clause": first_clause(answer), "clause_nll": clause_nll(model, tok, prompt, answer)})
    args.out.write_text(json.dumps(rows, indent=0) + "\n")
    print(f"{len(rows)} answers -> {args.out}")


if __name__ == "__main__":
    main()
