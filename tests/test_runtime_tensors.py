"""The runtime's tensors in every model dtype, on CPU: bf16 (which numpy lacks) allocated, filled,
read back and turned into float32 exactly; KV buffers that grow or are truncated keep their rows in
bf16; a bf16 model dir on the CPU provider is a one-line error naming the fix (ONNX Runtime's CPU
provider has no bf16 kernels for these graphs). The CUDA side runs the same code with
``onnxruntime.copy_tensors`` between host and device, checked when a GPU is lent."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aapp_runtime import tensors
from aapp_runtime.session import _BufferCache, _ConcatCache


def _bits(values: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.asarray(values, np.float32)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def test_float32_to_bf16_rounds_as_torch_does_and_back_is_exact():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(4096).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 4096),
                             np.array([0.0, -0.0, 1.0, -2.5, np.inf, -np.inf, 3.0e38, 1e-40], np.float32)])
    ties = (np.arange(64, dtype=np.uint32) << 16 | 0x8000).view(np.float32)  # exactly half-way: to even
    values = np.concatenate([values, ties])
    assert np.array_equal(tensors.float32_to_bf16(values), _bits(values))
    back = tensors.bf16_to_float32(_bits(values))
    ref = torch.from_numpy(values).to(torch.bfloat16).float().numpy()
    assert np.array_equal(back, ref)
    assert np.isnan(tensors.bf16_to_float32(tensors.float32_to_bf16(np.array([np.nan], np.float32)))).all()


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_host_round_trip_and_float32_view(dtype):
    x = np.linspace(-3, 3, 2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    host = tensors.float32_to_bf16(x) if dtype == "bf16" else x.astype(tensors.HOST_DTYPES[dtype])
    value = tensors.from_host(host, dtype, "cpu")
    assert value.element_type() == tensors.ELEMENT_TYPES[dtype] and value.shape() == [2, 3, 5]
    assert np.array_equal(tensors.to_host(value), host)
    expected = tensors.bf16_to_float32(host) if dtype == "bf16" else host.astype(np.float32)
    got = tensors.as_float32(value)
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    assert np.abs(got - x).max() <= (0.02 if dtype == "bf16" else 2e-3)
    empty = tensors.empty([1, 2, 0, 4], dtype, "cpu")
    assert empty.shape() == [1, 2, 0, 4] and tensors.to_host(empty).size == 0


def _fake_session(dtype: str) -> SimpleNamespace:
    return SimpleNamespace(dtype=dtype, device="cpu", head_dim=4)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_kv_buffers_grow_and_truncate_in_the_model_dtype(dtype, monkeypatch):
    monkeypatch.setattr(_BufferCache, "KV_BLOCK", 2)
    cache = _BufferCache(_fake_session(dtype), [1, 2], prompt=3, limit=20)
    assert cache.capacity == 5 and len(cache.buffers) == 4
    assert all(b.element_type() == tensors.ELEMENT_TYPES[dtype] for b in cache.buffers)
    rows = []
    for j, heads in enumerate([1, 1, 2, 2]):
        x = np.random.default_rng(j).standard_normal((1, heads, 5, 4)).astype(np.float32)
        host = tensors.float32_to_bf16(x) if dtype == "bf16" else x.astype(np.float16)
        cache.buffers[j] = tensors.from_host(host, dtype, "cpu")
        rows.append(host)
    cache._allocate(12, filled=5)  # what a step past the capacity does
    assert cache.capacity == 12
    for buf, host in zip(cache.buffers, rows):
        got = tensors.to_host(buf)
        assert buf.element_type() == tensors.ELEMENT_TYPES[dtype] and got.shape[2] == 12
        assert np.array_equal(got[:, :, :5], host)
    concat = _ConcatCache(_fake_session(dtype), [1, 2])
    assert [v.shape() for pair in concat.past for v in pair] == [[1, 1, 0, 4]] * 2 + [[1, 2, 0, 4]] * 2
    concat.past = [(tensors.from_host(rows[0], dtype, "cpu"), tensors.from_host(rows[1], dtype, "cpu"))]
    concat.truncate(3)
    assert np.array_equal(tensors.to_host(concat.past[0][1]), rows[1][:, :, :3])
    assert concat.past[0][0].element_type() == tensors.ELEMENT_TYPES[dtype]


def test_a_bf16_model_dir_on_cpu_is_a_one_line_error(checkpoints, tmp_path):
    from aapp_export.export import ExportOptions, export_model
    from aapp_runtime import ProviderError, Session

    out = export_model(str(checkpoints["gemma3"]), tmp_path / "bf16" / "model.onnx", ExportOptions(dtype="bf16"),
                       log=lambda m: None)
    with pytest.raises(ProviderError) as info:
        Session(out, provider="cpu")
    assert "bf16" in str(info.value) and "CUDA" in str(info.value) and "\n" not in str(info.value)
