"""Device tensors in the model's dtype (fp32, fp16 or bf16) and their host copies.

numpy has no bfloat16, so a bf16 model dir (Gemma 3's own dtype, for CUDA) cannot go through
``OrtValue.numpy()`` or ``ortvalue_from_numpy``. This module owns the few places the runtime touches
tensor memory: it allocates ``OrtValue``s of the model's ONNX element type on the session's device
(KV buffers, kept-weight buffers), moves data between host and device as raw bytes (bf16 as its
16-bit patterns in ``uint16`` arrays) with ``onnxruntime.copy_tensors`` when the device is not the
CPU, and turns logits of any dtype into float32 for sampling.
"""

from __future__ import annotations

import ctypes
from typing import Sequence

import numpy as np
import onnxruntime as ort

ELEMENT_TYPES = {"fp32": 1, "fp16": 10, "bf16": 16}  # onnx.TensorProto: FLOAT, FLOAT16, BFLOAT16
HOST_DTYPES = {"fp32": np.float32, "fp16": np.float16, "bf16": np.uint16}  # bf16: raw bit patterns
_BY_ELEMENT = {v: k for k, v in ELEMENT_TYPES.items()}


def empty(shape: Sequence[int], dtype: str, device: str) -> ort.OrtValue:
    """An uninitialised tensor of the model's ``dtype`` on ``device`` ("cpu" or "cuda")."""
    return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), ELEMENT_TYPES[dtype], device, 0)


def from_host(array: np.ndarray, dtype: str, device: str) -> ort.OrtValue:
    """A tensor of ``dtype`` on ``device`` holding ``array`` (for bf16: ``uint16`` bit patterns)."""
    host = np.ascontiguousarray(array, dtype=HOST_DTYPES[dtype])
    if dtype != "bf16":
        return ort.OrtValue.ortvalue_from_numpy(host, device, 0)
    staged = empty(host.shape, dtype, "cpu")
    if host.nbytes:
        ctypes.memmove(staged.data_ptr(), host.ctypes.data, host.nbytes)
    if device == "cpu":
        return staged
    value = empty(host.shape, dtype, device)
    ort.copy_tensors([staged], [value])
    return value


def to_host(value: ort.OrtValue) -> np.ndarray:
    """A host copy of ``value`` (bf16 as ``uint16`` bit patterns)."""
    dtype = _BY_ELEMENT.get(value.element_type())
    if dtype != "bf16":
        return np.array(value.numpy())
    if value.device_name().lower() != "cpu":
        staged = empty(value.shape(), dtype, "cpu")
        ort.copy_tensors([value], [staged])
        value = staged
    out = np.empty(value.shape(), np.uint16)
    if out.nbytes:
        ctypes.memmove(out.ctypes.data, value.data_ptr(), out.nbytes)
    return out


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bf16 bit patterns (exact: bf16 is float32's upper half)."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(values: np.ndarray) -> np.ndarray:
    """bf16 bit patterns of float32 values, rounded to nearest even (NaN stays NaN)."""
    bits = np.asarray(values, np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(values), np.uint16(0x7FC0), rounded)


def as_float32(value: ort.OrtValue) -> np.ndarray:
    """``value`` on the host as float32, whatever the model's dtype (logits for sampling)."""
    host = to_host(value)
    if _BY_ELEMENT.get(value.element_type()) == "bf16":
        return bf16_to_float32(host)
    return host.astype(np.float32, copy=False)


__all__ = ["ELEMENT_TYPES", "HOST_DTYPES", "empty", "from_host", "to_host", "as_float32", "bf16_to_float32",
           "float32_to_bf16"]
