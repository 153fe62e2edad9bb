"""Measure the demo model's alignment figures with transformers: refusal rates per prompt file.

    python scripts/eval_demo_model.py [--model models/demo] [--limit N] [--samples 10]

Greedy decoding, 48 new tokens, chat-formatted prompts, refusal detected by
``aapp_export.refusal.is_refusal`` (documented substring list). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from aapp_export.refusal import REFUSAL_MARKERS, is_refusal  # noqa: E402

SPLITS = ("harmful_test", "harmless_test", "borderline_test")


def load(model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    return tok, model


def generate(tok, model, prompts: list[str], max_new_tokens: int = 48, batch_size: int = 32) -> list[str]:
    """Greedy answers to chat-formatted ``prompts`` (left-padded batches)."""
    out: list[str] = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="generating", unit="batch", disable=None):
        chunk = prompts[i:i + batch_size]
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                 for p in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def read_prompts(path: Path, limit: int | None = None) -> list[str]:
    lines = [l.strip() for l in path.read_text().splitlines() if l.strip()]
    return lines[:limit] if limit else lines


def evaluate(model_dir: Path, limit: int | None = None, samples: int = 0) -> dict:
    tok, model = load(model_dir)
    result: dict = {"model": str(model_dir), "max_new_tokens": 48, "decoding": "greedy",
                    "refusal_markers": list(REFUSAL_MARKERS)}
    for split in SPLITS:
        prompts = read_prompts(model_dir / "data" / f"{split}.txt", limit)
        answers = generate(tok, model, prompts)
        refused = [is_refusal(a) for a in answers]
        result[split] = {"n": len(prompts), "refusal_rate": round(sum(refused) / len(prompts), 4)}
        if samples:
            result[split]["samples"] = [{"prompt": p, "answer": a.strip()} for p, a in list(zip(prompts, answers))[:samples]]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "demo")
    ap.add_argument("--limit", type=int, default=None, help="first N prompts of each file")
    ap.add_argument("--samples", type=int, default=0, help="include the first N prompt/answer pairs per split")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    print(json.dumps(evaluate(args.model, args.limit, args.samples), indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
