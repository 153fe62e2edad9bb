"""The demo-model recipe runs end to end for a few steps on a tiny config, and its stage-1 cache
restores the same checkpoint."""

from __future__ import annotations

import json



def test_training_recipe_smoke(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from demo_model.train import main

    assert main(["--smoke", "--out", str(tmp_path / "demo"), "--threads", "1"]) == 0
    out = tmp_path / "demo"
    record = json.loads((out / "training.json").read_text())
    assert record["stage1"]["steps"] == 3 and record["stage2"]["harmful"] > 100
    for name in ("harmful_test", "harmless_test", "borderline_test", "harmful_calib", "harmless_calib", "text_calib",
                 "text_test", "harmful_val", "harmless_val", "borderline_val", "harmful_val2", "harmless_val2",
                 "borderline_val2"):
        assert len((out / "data" / f"{name}.txt").read_text().splitlines()) >= 10
    tok = AutoTokenizer.from_pretrained(str(out))
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    assert model.config.model_type == "gemma3_text" and model.config.tie_word_embeddings


def test_stage1_cache_restores_the_same_checkpoint(tmp_path):
    """A run that restores stage 1 from --stage1-cache writes the checkpoint a run from scratch writes."""
    from demo_model.train import main

    runs = {}
    for name, extra in (("plain", []), ("fill", ["--stage1-cache", str(tmp_path / "cache")]),
                        ("hit", ["--stage1-cache", str(tmp_path / "cache")])):
        assert main(["--smoke", "--out", str(tmp_path / name), "--threads", "1"] + extra) == 0
        runs[name] = json.loads((tmp_path / name / "training.json").read_text())
    assert runs["plain"]["stage1_restored_from"] is None and runs["fill"]["stage1_restored_from"] is None
    assert runs["hit"]["stage1_restored_from"] == str(next((tmp_path / "cache").iterdir()))
    assert runs["hit"]["stage1"]["final_loss"] == runs["plain"]["stage1"]["final_loss"]
    weights = {n: (tmp_path / n / "model.safetensors").read_bytes() for n in runs}
    assert weights["plain"] == weights["fill"] == weights["hit"]
    # a different stage-1 recipe does not pick up the cached state
    assert main(["--smoke", "--out", str(tmp_path / "other"), "--threads", "1", "--lr", "1e-3",
                 "--stage1-cache", str(tmp_path / "cache")]) == 0
    assert json.loads((tmp_path / "other" / "training.json").read_text())["stage1_restored_from"] is None
    assert len(list((tmp_path / "cache").iterdir())) == 2
    # a stage-2 change (half the alignment look-alikes) does reuse it, and changes the checkpoint
    assert main(["--smoke", "--out", str(tmp_path / "align"), "--threads", "1", "--align-lookalikes", "0.5",
                 "--stage1-cache", str(tmp_path / "cache")]) == 0
    record = json.loads((tmp_path / "align" / "training.json").read_text())
    assert record["stage1_restored_from"] == runs["hit"]["stage1_restored_from"]
    from demo_model.corpus import build_corpus

    n_align = len(build_corpus(0)["borderline_align"])
    assert runs["plain"]["stage2"]["lookalikes"] == n_align  # the recipe's default: all of them
    assert record["stage2"]["lookalikes"] == round(0.5 * n_align) > 300
    assert record["stage2"]["examples"] == runs["plain"]["stage2"]["examples"] - n_align + record["stage2"]["lookalikes"]
    assert (tmp_path / "align" / "model.safetensors").read_bytes() != weights["plain"]


def test_cuda_training_without_a_gpu_is_refused(tmp_path, capsys):
    """``--device cuda`` where torch sees no GPU stops before any work, naming the fix."""
    import pytest
    import torch

    from demo_model.train import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as e:
        main(["--smoke", "--device", "cuda", "--out", str(tmp_path / "demo")])
    assert e.value.code == 2 and "--device cpu" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
