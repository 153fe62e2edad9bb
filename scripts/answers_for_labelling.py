"""Greedy answers of the demo model under several pruning methods, with each answer's mean per-token
NLL under the dense model: the material for a stricter refusal detector (issue 21) and its hand labels.

    python scripts/answers_for_labelling.py --out answers.json

Writes one row per (method, sparsity, split, prompt): the answer, whether the substring detector calls
it a refusal, where the first refusal marker starts, and ``dense_nll`` (nats per answer token).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = [("dense", 0.0), ("pp", 0.5), ("aapp", 0.5), ("random", 0.5), ("wanda-sp", 0.5), ("pp", 0.7), ("random", 0.7)]


def marker_start(text: str) -> int | None:
    """Where the first refusal marker starts in the answer (leading spaces and quotes dropped)."""
    from aapp_export.refusal import REFUSAL_MARKERS

    t = text.replace("\u2019", "'").lower().lstrip(" \"'*-\n")
    found = [t.find(m.lower()) for m in REFUSAL_MARKERS if m.lower() in t]
    return min(found) if found else None


@torch.no_grad()
def dense_nll(model, tok, prompt: str, answer: str) -> float | None:
    from aapp_export.evaluate import chat_inputs

    ids = chat_inputs(tok, [prompt])["input_ids"][0]
    aid = tok(answer, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    if len(aid) == 0:
        return None
    logits = model(torch.cat([ids, aid])[None]).logits[0, len(ids) - 1:-1].float()
    return float(-torch.log_softmax(logits, -1).gather(-1, aid[:, None]).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--harmless-limit", type=int, default=60)
    args = p.parse_args()
    from aapp_export.calibration import cached_calibration, load_model, read_lines
    from aapp_export.evaluate import generate_answers
    from aapp_export.pruning import Pruner, PruneConfig
    from aapp_export.refusal import is_refusal

    demo = ROOT / "models" / "demo"
    data = demo / "data"
    model, tok = load_model(demo)
    stats, circuits = cached_calibration(demo, model, tok, harmful=data / "harmful_calib.txt",
                                         harmless=data / "harmless_calib.txt", text=data / "text_calib.txt",
                                         log=lambda m: None)
    splits = {"harmful": read_lines(data / "harmful_val2.txt"),
              "harmless": read_lines(data / "harmless_val2.txt")[:args.harmless_limit]}
    rows = []
    for method, sparsity in CONFIGS:
        for split, prompts in splits.items():
            pruner = None if method == "dense" else Pruner(model, PruneConfig(method, sparsity), stats,
                                                           circuits.protection() if method == "aapp" else None)
            for prompt, answer in zip(prompts, generate_answers(model, tok, prompts, 48, pruner,
                                                                desc=f"{method} {sparsity}")):
                rows.append({"method": method, "sparsity": sparsity, "split": split, "prompt": prompt,
                             "answer": answer, "substring_refusal": is_refusal(answer),
                             "marker_start": marker_start(answer), "dense_nll": dense_nll(model, tok, prompt, answer)})
    args.out.write_text(json.dumps(rows, indent=0) + "\n")
    print(f"{len(rows)} answers -> {args.out}")


if __name__ == "__main__":
    main()
