"""Every bad input in DESIGN.md gets a typed error whose message names the input and the fix."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from aapp_export import export as export_mod
from aapp_export.checkpoint import resolve_checkpoint
from aapp_export.errors import CheckpointError, ExportError, OfflineError, UnknownModelError, UnsupportedModelError
from aapp_export.export import export_model
from aapp_runtime import InputError, ModelDirError, ProviderError, Session
from aapp_runtime.providers import open_session

QUIET = dict(log=lambda m: None)


def test_unknown_alias_lists_the_known_ones():
    with pytest.raises(UnknownModelError, match=r"known alias.*demo.*gemma3"):
        resolve_checkpoint("gemma-nine")


def test_missing_directory_is_not_mistaken_for_a_model(tmp_path):
    with pytest.raises(UnknownModelError, match="neither a known alias"):
        resolve_checkpoint(str(tmp_path / "nope" / "deeper"))


def test_offline_hub_id_not_in_cache_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(OfflineError, match="aapp-test/not-a-model.*not in the Hugging Face cache"):
        resolve_checkpoint("aapp-test/not-a-model")


def test_partial_sharded_checkpoint_names_the_missing_shard(checkpoints, tmp_path):
    from aapp_export.synthetic import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "sharded", "llama", max_shard_size="100KB")
    victim = sorted(ckpt.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"missing: {victim.name}"):
        export_model(str(ckpt), tmp_path / "out" / "model.onnx", **QUIET)


def test_pickle_checkpoint_is_refused_unless_allowed(checkpoints, tmp_path):
    src = checkpoints["llama"]
    ckpt = tmp_path / "pickle"
    ckpt.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, ckpt / f)
    from safetensors.torch import load_file

    torch.save(load_file(src / "model.safetensors"), ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin is a pickle.*--allow-pickle"):
        export_model(str(ckpt), tmp_path / "out" / "model.onnx", **QUIET)
    from aapp_export.export import ExportOptions

    out = export_model(str(ckpt), tmp_path / "out" / "model.onnx", ExportOptions(allow_pickle=True), **QUIET)
    assert (out / "aapp.json").is_file()


def test_unsupported_architecture(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UnsupportedModelError, match="model_type 'gpt2' is not supported"):
        export_model(str(tmp_path / "gpt2"), tmp_path / "out" / "model.onnx", **QUIET)


def test_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no config.json"):
        export_model(str(tmp_path / "empty"), tmp_path / "out" / "model.onnx", **QUIET)


def test_crashed_export_leaves_no_half_written_model_dir(checkpoints, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_mod, "write_manifest", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(str(checkpoints["qwen2"]), tmp_path / "out" / "model.onnx", **QUIET)
    assert list(tmp_path.iterdir()) == []  # neither the model dir nor the temporary dir is left


def test_export_refuses_to_overwrite_a_foreign_directory(checkpoints, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a model dir"):
        export_model(str(checkpoints["qwen2"]), tmp_path / "mine" / "model.onnx", **QUIET)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.fixture()
def model_copy(exports, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(exports["gemma3"], dst)
    return dst


def test_manifest_version_mismatch(model_copy):
    data = json.loads((model_copy / "aapp.json").read_text())
    data["version"] = 99
    (model_copy / "aapp.json").write_text(json.dumps(data))
    with pytest.raises(ModelDirError, match="manifest version 99.*re-export"):
        Session(model_copy, provider="cpu")


def test_corrupt_weights_fail_the_checksum(model_copy):
    data = model_copy / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[5000] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ModelDirError, match="does not match the checksum"):
        Session(model_copy, provider="cpu")


def test_truncated_weights_fail_the_size_check(model_copy):
    data = model_copy / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(ModelDirError, match="truncated"):
        Session(model_copy, provider="cpu")


def test_missing_model_dir(tmp_path):
    with pytest.raises(ModelDirError, match="does not exist"):
        Session(tmp_path / "nothing-here")


def test_empty_prompt_and_too_long_prompt(exports):
    session = Session(exports["llama"], provider="cpu")
    with pytest.raises(InputError, match="empty"):
        session.generate("   ")
    with pytest.raises(InputError, match="empty"):
        session.generate([])
    with pytest.raises(InputError, match="context is 1024"):
        session.generate([5] * 1024)
    with pytest.raises(InputError, match="outside the vocabulary"):
        session.generate([5, 100000])
    with pytest.raises(InputError, match="top_p"):
        session.generate("hello", top_p=0.0)


NO_CUDA = pytest.mark.skipif("CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
                             reason="this machine has the CUDA provider")


@NO_CUDA
def test_cuda_requested_without_cuda_names_what_is_missing(exports):
    with pytest.raises(ProviderError, match="provider 'cuda' was requested but .*onnxruntime-gpu"):
        open_session(exports["llama"] / "model.onnx", "cuda")


@NO_CUDA
def test_auto_falls_back_to_cpu_and_says_why(exports):
    session = Session(exports["llama"], provider="auto")
    assert session.provider == "cpu"
    assert "CUDA not usable" in session.provider_reason
