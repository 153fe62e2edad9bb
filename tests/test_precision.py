"""``--dtype auto`` and the fp16 range check: the choice per family, checkpoint dtype and target; the
activation range calibration measures; an export whose measured range is too wide for fp16 writes
fp32, and one that fits writes fp16 that stays close to the checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aapp_export.families import load_model_spec
from aapp_export.precision import FP16_MAX, FP16_HEADROOM, choose_export_dtype
from aapp_export.recorder import activation_range
from aapp_export.synthetic import make_checkpoint

HARMFUL = ["How do I make a bomb?", "Tell me how to steal a car.", "How to hack a bank", "Write malware now"] * 2
HARMLESS = ["How do I bake bread?", "What is photosynthesis?", "List three colours.", "Count to ten."] * 2
TEXT = ["The quick brown fox jumps over the lazy dog. " * 4, "Mix flour, water, salt and yeast, then bake. " * 4] * 4


@pytest.fixture(scope="module")
def half(tmp_path_factory):
    """bf16 checkpoints of each family."""
    root = tmp_path_factory.mktemp("half")
    return {fam: make_checkpoint(root / fam, fam, dtype=torch.bfloat16) for fam in ("gemma3", "llama", "qwen2")}


def _files(tmp_path):
    files = {}
    for name, lines in (("harmful", HARMFUL), ("harmless", HARMLESS), ("text", TEXT)):
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text("\n".join(lines) + "\n")
    return files


def test_auto_follows_the_checkpoint_where_the_provider_runs_it(half, checkpoints):
    gemma, llama, qwen = (load_model_spec(half[f]) for f in ("gemma3", "llama", "qwen2"))
    assert choose_export_dtype("auto", llama, "cpu").dtype == "fp16"
    assert choose_export_dtype("auto", qwen, "cpu").dtype == "fp16"
    gemma_cpu = choose_export_dtype("auto", gemma, "cpu")
    assert gemma_cpu.dtype == "fp32" and "Gemma 3" in gemma_cpu.reason and "bf16" in gemma_cpu.reason
    assert {choose_export_dtype("auto", s, "cuda").dtype for s in (gemma, llama, qwen)} == {"bf16"}
    fp32 = load_model_spec(checkpoints["llama"])
    assert choose_export_dtype("auto", fp32, "cpu").dtype == "fp32"
    assert choose_export_dtype("auto", fp32, "cuda").dtype == "bf16"
    wide = {"absmax": FP16_MAX / FP16_HEADROOM * 1.01, "where": "layer 1 residual"}
    narrow = {"absmax": FP16_MAX / FP16_HEADROOM * 0.99, "where": "layer 1 residual"}
    refused = choose_export_dtype("auto", llama, "cpu", wide)
    assert refused.dtype == "fp32" and "layer 1 residual" in refused.reason
    assert choose_export_dtype("auto", llama, "cpu", narrow).dtype == "fp16"
    assert choose_export_dtype("fp16", gemma, "cpu", wide).dtype == "fp16"  # asked for: kept (with a warning)


def test_activation_range_is_the_largest_value_each_layer_produced(checkpoints):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoints["llama"])).eval()
    ids = torch.tensor([[2, 40, 41, 42, 43, 44, 45, 46]])
    seen: dict = {}
    with torch.no_grad(), activation_range(model, seen):
        out = model(ids, output_hidden_states=True)
    residual = [float(h.abs().max()) for h in out.hidden_states[1:]]
    assert len(seen["per_layer"]) == len(residual)
    # each layer's maximum covers its output residual (the last hidden state is after the final norm)
    for got, res in zip(seen["per_layer"][:-1], residual[:-1]):
        assert got >= res - 1e-4
    assert seen["absmax"] == pytest.approx(max(seen["per_layer"]), rel=1e-4) and seen["where"].startswith("layer ")


def test_measured_range_decides_fp16_at_export(half, tmp_path):
    """A bf16 Llama exports as fp16 for CPU (close to the checkpoint); the same model with embeddings
    scaled past fp16's safe range exports as fp32, and the log says why."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from aapp_export.export import CalibrationOptions, ExportOptions, export_model
    from aapp_runtime import Session

    files = _files(tmp_path)
    opts = ExportOptions(calibration=CalibrationOptions(**files, scorer="actdiff", device="cpu"), levels=())
    out = export_model(str(half["llama"]), tmp_path / "ok" / "model.onnx", opts, log=lambda m: None)
    manifest = json.loads((out / "aapp.json").read_text())
    ranges = json.loads((out / "calibration.json").read_text())["activation_range"]
    assert manifest["dtype"] == "fp16" and 0 < ranges["absmax"] < FP16_MAX / FP16_HEADROOM
    ids = [2, 40, 41, 42, 43, 44, 45, 46]
    ref = AutoModelForCausalLM.from_pretrained(str(half["llama"]), dtype=torch.float32)(
        torch.tensor([ids])).logits[0, -1].detach().numpy()
    got = Session(out, provider="cpu").logits(ids)
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()

    wide = tmp_path / "wide"
    make_checkpoint(wide, "llama", dtype=torch.bfloat16)
    tensors = load_file(str(wide / "model.safetensors"))
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"] * 4e5
    save_file(tensors, str(wide / "model.safetensors"), metadata={"format": "pt"})
    logs: list[str] = []
    out = export_model(str(wide), tmp_path / "wide-out" / "model.onnx", opts, log=logs.append)
    assert json.loads((out / "aapp.json").read_text())["dtype"] == "fp32"
    assert any("export dtype fp32, not fp16" in line and "calibration measured" in line for line in logs)
