"""The exported graphs reproduce transformers: prefill logits, decode through the KV cache, greedy text."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModelForCausalLM

from aapp_export.synthetic import FAMILIES
from aapp_runtime import Session

TOL = 1e-4


def _hf(ckpt):
    return AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32, attn_implementation="eager").eval()


def _feeds(session: ort.InferenceSession, ids: np.ndarray, past: dict | None, start: int) -> dict:
    b, n = ids.shape
    feeds = {"input_ids": ids, "attention_mask": np.ones((b, start + n), np.int64),
             "position_ids": np.tile(np.arange(start, start + n), (b, 1))}
    for inp in session.get_inputs():
        if inp.name.startswith("past_key_values"):
            feeds[inp.name] = past[inp.name] if past else np.zeros((b, inp.shape[1], 0, inp.shape[3]), np.float32)
    return feeds


KERNELS = {"gqa": "all", "onnx": "onnx"}  # attention kernel -> export key suffix (all-position logits)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("family", FAMILIES)
def test_prefill_logits_match_transformers_past_sliding_window(family, kernel, checkpoints, exports):
    ids = torch.randint(5, 384, (2, 45), generator=torch.Generator().manual_seed(1))  # window is 16
    with torch.no_grad():
        ref = _hf(checkpoints[family])(ids).logits.numpy()
    model_dir = exports[f"{family}-{KERNELS[kernel]}"]
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(model_dir / "model.onnx"), load_external_data=False).graph.node}
    assert ("GroupQueryAttention" if kernel == "gqa" else "Attention") in ops
    got = sess.run(["logits"], _feeds(sess, ids.numpy(), None, 0))[0]
    assert got.shape == ref.shape
    assert np.abs(ref).max() > 1.0  # logits span real values, so the tolerance means something
    assert np.abs(got - ref).max() <= TOL


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("family", ["gemma3", "qwen2"])
def test_padded_batch_matches_transformers(family, kernel, checkpoints, exports):
    """A padded row gives the logits of the same prompt alone (transformers on the real tokens):
    left padding through the standard op's additive mask, right padding for GroupQueryAttention,
    which reads each row's length from ``attention_mask``."""
    ids = torch.randint(5, 384, (2, 30), generator=torch.Generator().manual_seed(5))
    pad, n = 7, 30 - 7
    real = slice(pad, None) if kernel == "onnx" else slice(0, n)
    mask = np.zeros((2, 30), np.int64)
    mask[0], mask[1, real] = 1, 1
    ids[1][mask[1] == 0] = 0
    positions = np.stack([np.arange(30), np.cumsum(mask[1]).clip(1) - 1])
    sess = ort.InferenceSession(str(exports[f"{family}-{KERNELS[kernel]}"] / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    feeds = _feeds(sess, ids.numpy(), None, 0) | {"attention_mask": mask, "position_ids": positions}
    got = sess.run(["logits"], feeds)[0]
    with torch.no_grad():
        hf = _hf(checkpoints[family])
        full = hf(ids[:1]).logits[0].numpy()
        short = hf(ids[1:, real]).logits[0].numpy()
    assert np.abs(got[0] - full).max() <= TOL
    assert np.abs(got[1, real] - short).max() <= TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_steps_through_kv_cache_match_transformers(family, checkpoints, exports):
    ids = torch.randint(5, 384, (1, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = _hf(checkpoints[family])(ids).logits[0].numpy()
    sess = ort.InferenceSession(str(exports[family] / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    prefill = 12
    outs = dict(zip(names, sess.run(None, _feeds(sess, ids[:, :prefill].numpy(), None, 0))))
    worst = np.abs(outs["logits"][0, -1] - ref[prefill - 1]).max()
    for pos in range(prefill, 40):  # crosses the sliding window (16) of the local layers
        past = {n.replace("present", "past_key_values"): v for n, v in outs.items() if n.startswith("present")}
        outs = dict(zip(names, sess.run(None, _feeds(sess, ids[:, pos:pos + 1].numpy(), past, pos))))
        worst = max(worst, np.abs(outs["logits"][0, -1] - ref[pos]).max())
    assert worst <= TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_64_greedy_tokens_identical_to_transformers_generate(family, checkpoints, exports):
    ids = torch.randint(5, 384, (1, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = _hf(checkpoints[family]).generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False,
                                                 eos_token_id=None, pad_token_id=0)[0, 24:].tolist()
    for name in (family, f"{family}-all"):  # last-position logits (default) and every position's (its
        session = Session(exports[name], provider="cpu")  # prefill and step logits differ in shape)
        result = session.generate(ids[0].tolist(), max_new_tokens=64, ignore_eos=True)  # as transformers was told
        assert len(result.tokens) == 64
        assert result.tokens == ref, name


@pytest.mark.parametrize("family", FAMILIES)
def test_session_logits_match_transformers(family, checkpoints, exports):
    ids = torch.randint(5, 384, (1, 30), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = _hf(checkpoints[family])(ids).logits[0, -1].numpy()
    got = Session(exports[family], provider="cpu").logits(ids[0].tolist())
    assert np.abs(got - ref).max() <= TOL


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_kv_buffer_and_concat_caches_agree(family, exports):
    """The preallocated in-place KV buffer (GroupQueryAttention graphs) and the concatenated cache give
    the same greedy tokens and step logits, past the sliding window (16)."""
    ids = torch.randint(5, 384, (30,), generator=torch.Generator().manual_seed(6)).tolist()
    buffered = Session(exports[family], provider="cpu")
    concat = Session(exports[family], provider="cpu", kv_cache="concat")
    assert buffered.kv_cache == "buffer" and concat.kv_cache == "concat"
    a = buffered.generate(ids, max_new_tokens=24, ignore_eos=True)
    b = concat.generate(ids, max_new_tokens=24, ignore_eos=True)
    assert a.tokens == b.tokens and len(a.tokens) == 24
    longer = ids + a.tokens[:20]  # prefill logits after the generated tokens agree too
    assert np.abs(buffered.logits(longer) - concat.logits(longer)).max() <= TOL


def test_kv_buffer_grows_without_changing_the_answer(exports, monkeypatch):
    """A buffer that starts 3 tokens past the prompt and doubles four times gives the concatenated
    cache's tokens."""
    from aapp_runtime import session as session_module

    monkeypatch.setattr(session_module._BufferCache, "KV_BLOCK", 3)
    ids = torch.randint(5, 384, (20,), generator=torch.Generator().manual_seed(7)).tolist()
    buffered = Session(exports["gemma3"], provider="cpu")
    grown = buffered.generate(ids, max_new_tokens=40, ignore_eos=True)
    ref = Session(exports["gemma3"], provider="cpu", kv_cache="concat").generate(ids, max_new_tokens=40, ignore_eos=True)
    assert grown.tokens == ref.tokens and len(grown.tokens) == 40
    cache = buffered._new_cache(buffered.kv_heads, len(ids), 40)
    assert cache.capacity == 23
    cache.binding(buffered._dense, 23, 1)  # one step past it: doubles, capped at prompt + max_new_tokens
    assert cache.capacity == 46 and cache.binding(buffered._dense, 46, 1) and cache.capacity == 60


def test_kv_buffer_needs_a_gqa_graph(exports):
    from aapp_runtime.errors import InputError

    assert Session(exports["qwen2-onnx"], provider="cpu").kv_cache == "concat"
    with pytest.raises(InputError, match="--attention gqa"):
        Session(exports["qwen2-onnx"], provider="cpu", kv_cache="buffer")


@pytest.mark.parametrize("attention", ["gqa", "onnx"])
def test_graph_with_a_subset_of_heads_and_channels_matches_the_masked_model(attention, checkpoints, tmp_path):
    """``LayerUnits`` builds only some query heads and MLP channels of a layer: the graph equals
    transformers with the other heads' o_proj columns and the other channels' down_proj columns zeroed.
    Heads 0 and 1 share KV group 0 (4 query heads, 2 KV heads): each kept head gets its group's K/V."""
    from aapp_export.checkpoint import WeightReader
    from aapp_export.errors import ExportError
    from aapp_export.families import load_model_spec
    from aapp_export.graph.decoder import DecoderOptions, LayerUnits, build_decoder

    ckpt = checkpoints["gemma3"]  # 4 query heads, 2 KV heads, MLP 128, 4 layers
    reader = WeightReader(ckpt)
    spec = load_model_spec(ckpt, reader)
    keep_heads, keep_channels = [1, 2], sorted(np.random.default_rng(0).choice(128, 48, replace=False).tolist())
    units = [LayerUnits(), LayerUnits(heads=keep_heads, channels=keep_channels), LayerUnits(channels=keep_channels),
             LayerUnits(heads=[0, 1])]
    path = tmp_path / "model.onnx"
    onnx.save(build_decoder(spec, reader, path, DecoderOptions(last_logits_only=False, attention=attention), units),
              str(path))
    ids = torch.randint(5, 384, (1, 30), generator=torch.Generator().manual_seed(8))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], _feeds(sess, ids.numpy(), None, 0))[0]

    hf = _hf(ckpt)
    d = spec.head_dim
    with torch.no_grad():
        for i, u in enumerate(units):
            layer = hf.model.layers[i]
            if u.heads is not None:
                cols = torch.ones(layer.self_attn.o_proj.weight.shape[1], dtype=torch.bool)
                for h in u.heads:
                    cols[h * d:(h + 1) * d] = False
                layer.self_attn.o_proj.weight[:, cols] = 0
            if u.channels is not None:
                cols = torch.ones(layer.mlp.down_proj.weight.shape[1], dtype=torch.bool)
                cols[u.channels] = False
                layer.mlp.down_proj.weight[:, cols] = 0
        ref = hf(ids).logits.numpy()
        dense = _hf(ckpt)(ids).logits.numpy()
    assert np.abs(ref - dense).max() > 1e-2  # the pruning changes the model, so the match means something
    assert np.abs(got - ref).max() <= TOL
    with pytest.raises(ExportError, match="distinct heads"):
        build_decoder(spec, reader, tmp_path / "bad.onnx", DecoderOptions(attention=attention),
                      [LayerUnits(heads=[0, 4])] + [LayerUnits()] * 3)
