"""Checkpoint layouts the loader must accept: multimodal Gemma 3, sharded, bf16/fp16, 4.x configs, fp16 export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from aapp_export.checkpoint import WeightReader
from aapp_export.export import ExportOptions, export_model
from aapp_export.families import load_model_spec
from aapp_runtime import Session
from aapp_export.synthetic import make_checkpoint, make_multimodal_gemma3

IDS = list(range(5, 45))


def _ref_logits(model, ids=IDS) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float().numpy()


def test_gemma3_multimodal_checkpoint_exports_its_text_tower(tmp_path):
    model = make_multimodal_gemma3(tmp_path / "mm")
    spec = load_model_spec(tmp_path / "mm")
    assert spec.family == "gemma3" and spec.num_layers == 4 and "language_model" in spec.weight_prefix
    out = export_model(str(tmp_path / "mm"), tmp_path / "out" / "model.onnx", log=lambda m: None)
    got = Session(out, provider="cpu").logits(IDS)
    assert np.abs(got - _ref_logits(model)).max() <= 1e-4
    # config.json for Hugging Face tools (optimum) is the text tower's, in full; the runtime does not need it
    hf = json.loads((out / "config.json").read_text())
    assert hf["model_type"] == "gemma3_text" and hf["architectures"] == ["Gemma3ForCausalLM"]
    assert hf["num_hidden_layers"] == 4 and hf["num_key_value_heads"] == 2 and "vision_config" not in hf
    assert "config.json" in json.loads((out / "aapp.json").read_text())["files"]
    (out / "config.json").unlink()
    assert np.array_equal(Session(out, provider="cpu").logits(IDS), got)


def test_sharded_checkpoint_with_index_loads(tmp_path):
    ckpt = make_checkpoint(tmp_path / "sharded", "llama", max_shard_size="100KB")
    assert (ckpt / "model.safetensors.index.json").is_file()
    assert len(list(ckpt.glob("model-*.safetensors"))) > 2
    out = export_model(str(ckpt), tmp_path / "out" / "model.onnx", log=lambda m: None)
    ref = _ref_logits(AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32))
    assert np.abs(Session(out, provider="cpu").logits(IDS) - ref).max() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_checkpoint_exports_to_fp32(tmp_path, dtype):
    ckpt = make_checkpoint(tmp_path / "half", "gemma3", dtype=dtype)
    assert WeightReader(ckpt).dtype() == dtype
    out = export_model(str(ckpt), tmp_path / "out" / "model.onnx", log=lambda m: None)
    ref = _ref_logits(AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32))
    assert np.abs(Session(out, provider="cpu").logits(IDS) - ref).max() <= 1e-4


def test_transformers_4x_flat_rope_config_gives_the_same_spec(tmp_path):
    ckpt = make_checkpoint(tmp_path / "v5", "gemma3")
    spec5 = load_model_spec(ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope["full_attention"]["rope_theta"]
    cfg["rope_local_base_freq"] = rope["sliding_attention"]["rope_theta"]
    cfg["rope_scaling"] = {"rope_type": "linear", "factor": rope["full_attention"]["factor"]}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    spec4 = load_model_spec(ckpt)
    for a, b in zip(spec4.layers, spec5.layers):
        assert a.kind == b.kind
        np.testing.assert_array_equal(a.rope.inv_freq, b.rope.inv_freq)
        assert a.rope.rope_type == b.rope.rope_type
    # RoPE scaling on global layers only
    kinds = {l.kind: l.rope.rope_type for l in spec4.layers}
    assert kinds == {"sliding_attention": "default", "full_attention": "linear"}


def test_fp16_export_runs_and_stays_close(checkpoints, tmp_path):
    out = export_model(str(checkpoints["gemma3"]), tmp_path / "fp16" / "model.onnx", ExportOptions(dtype="fp16"),
                       log=lambda m: None)
    ref = _ref_logits(AutoModelForCausalLM.from_pretrained(str(checkpoints["gemma3"]), dtype=torch.float32))
    session = Session(out, provider="cpu")
    assert session.manifest.dtype == "fp16"
    assert np.abs(session.logits(IDS) - ref).max() < 2e-2


def test_shape_checkpoints_store_a_tied_lm_head_once_as_the_hub_does(tmp_path):
    """``make_shape_checkpoint`` (random or sparse zeros) writes a tied LM head once, as the embedding,
    so a measurement on it reads what a hub checkpoint holds; transformers loads it tied."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    from aapp_export.synthetic import make_shape_checkpoint

    cfg = Gemma3TextConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32, tie_word_embeddings=True)
    for seed in (0, None):
        ckpt = make_shape_checkpoint(tmp_path / f"seed{seed}", cfg, seed=seed)
        with safe_open(str(ckpt / "model.safetensors"), "np") as f:
            keys = set(f.keys())
        assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
        model = AutoModelForCausalLM.from_pretrained(str(ckpt))
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
