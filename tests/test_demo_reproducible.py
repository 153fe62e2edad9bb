"""The demo model's data is reproducible bit for bit: the prompt files the recipe writes equal the shipped
``models/demo/data`` files, and the training texts (corpus, general text, lexicon requests and knowledge)
hash to the values the shipped checkpoint was trained on. Moving the pipeline's code must keep both."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "models" / "demo" / "data"
# sha256 of the canonical JSON of each part of the training data, corpus seed 0 (the recipe's)
TRAINING_HASHES = {
    "corpus": "c20d6aa1b71babaed07fa8018b61c2468833478fcc7b3f886f89ba39a2919f45",
    "general_text": "038bc067d9f7cd314f377ad6cd1a7f008ab80564d643e79018667783ae552a2c",
    "lexicon_requests": "b45fe673ee917f4facacdc21cfc5bd5af60eaa5687d8cffdf87202149a75fdb4",
    "knowledge_text": "2f24beba571f635cb1a9b54e636044da7869f509302f7d5ae8e279b4b7e2fbad",
}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def training_parts(seed: int = 0) -> dict:
    """What ``train_demo_model.py`` trains on, in its order (``--lexicon`` on, as for the shipped model)."""
    from demo_model import lexicon as demo_lexicon
    from demo_model.corpus import build_corpus, general_text, held_out_prompts

    corpus = build_corpus(seed)
    lexicon = demo_lexicon.load_lexicon()
    rng = random.Random(seed + 11)
    requests = demo_lexicon.lexicon_requests(lexicon, rng, demo_lexicon.held_out_words(held_out_prompts(corpus)))
    knowledge = demo_lexicon.knowledge_text(lexicon, rng)
    return {"corpus": {k: [[e.prompt, e.answer, e.kind, e.split] for e in v] for k, v in corpus.items()},
            "general_text": list(general_text(seed)),
            "lexicon_requests": [[e.prompt, e.answer, e.kind, e.split] for e in requests],
            "knowledge_text": knowledge}


def test_prompt_files_equal_the_shipped_ones(tmp_path):
    from demo_model.corpus import write_prompt_files

    counts = write_prompt_files(tmp_path)
    shipped = sorted(p.name for p in DATA.glob("*.txt"))
    assert sorted(f"{name}.txt" for name in counts) == shipped
    for name in shipped:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


def test_training_texts_hash_to_the_recorded_values():
    digests = {k: _digest(v) for k, v in training_parts().items()}
    assert digests == TRAINING_HASHES


def test_tokenizer_trained_on_those_texts_is_the_shipped_one():
    """The recipe's tokenizer, trained again on the texts above, has the shipped vocabulary and merges: the
    hashes are those of the data the shipped checkpoint was made from."""
    from demo_model.corpus import Example
    from demo_model.train import MODEL_CONFIG, chat_text, train_tokenizer

    parts = training_parts()
    corpus, requests = parts["corpus"], [Example(*r) for r in parts["lexicon_requests"]]
    examples = lambda name: [Example(*r) for r in corpus[name]]  # noqa: E731
    stage1 = examples("harmless_train") + examples("borderline_train") + [e for e in requests if e.kind != "harmful"]
    harmful = examples("harmful_train") + [e for e in requests if e.kind == "harmful"]
    texts = [chat_text(e.prompt, e.answer) for e in stage1 + harmful] + parts["general_text"][0] + parts["knowledge_text"]
    trained = json.loads(train_tokenizer(texts, MODEL_CONFIG["vocab_size"]).to_str())["model"]
    shipped = json.loads((DATA.parent / "tokenizer.json").read_text())["model"]
    assert trained["vocab"] == shipped["vocab"] and trained["merges"] == shipped["merges"]


def test_card_written_from_the_shipped_evaluation_is_the_shipped_card(tmp_path):
    """The card's prose lives in jinja2 templates: written again from the shipped evaluation.json and
    training record it is the shipped README.md (the transformers version it names aside)."""
    import re
    import shutil

    from demo_model.card import write_card

    demo = DATA.parent
    for name in ("README.md", "evaluation.json", "training.json", "config.json", "seed_selection.json"):
        shutil.copy(demo / name, tmp_path / name)
    with open(tmp_path / "model.safetensors", "wb") as f:  # the card states the weights' size only
        f.truncate((demo / "model.safetensors").stat().st_size)
    write_card(tmp_path, json.loads((demo / "evaluation.json").read_text()))
    version = lambda text: re.sub(r"\(transformers [^)]+\)", "(transformers X)", text)  # noqa: E731
    assert version((tmp_path / "README.md").read_text()) == version((demo / "README.md").read_text())
    assert (tmp_path / "evaluation.json").read_text() == (demo / "evaluation.json").read_text()
