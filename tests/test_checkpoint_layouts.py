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
from aapp_export.synthetic import gemma3_config, make_checkpoint, save_tokenizer

IDS = list(range(5, 45))


def _ref_logits(model, ids=IDS) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float().numpy()


def test_gemma3_multimodal_checkpoint_exports_its_text_tower(tmp_path):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    config = Gemma3Config(text_config=gemma3_config().to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                          image_token_index=383, boi_token_index=381, eoi_token_index=382)
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "language_model" in name and p.ndim == 2:
                p.normal_(0, 0.08)
    model.save_pretrained(tmp_path / "mm")
    save_tokenizer(tmp_path / "mm")
    spec = load_model_spec(tmp_path / "mm")
    assert spec.family == "gemma3" and spec.num_layers == 4 and "language_model" in spec.weight_prefix
    out = export_model(str(tmp_path / "mm"), tmp_path / "out" / "model.onnx", log=lambda m: None)
    got = Session(out, provider="cpu").logits(IDS)
    assert np.abs(got - _ref_logits(model)).max() <= 1e-4


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
