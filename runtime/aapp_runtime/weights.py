"""Weights mapped once and shared by every ONNX Runtime session of a model dir.

The dense, prefill and decode graphs of a model dir read the same stored tensors (one data file;
``aapp.json``'s ``shared_weights`` lists them: name -> file, offset, length, ONNX type, shape, and
each graph names them alike). Left to itself, every ``InferenceSession`` reads its own copy of its
initializers and pre-packs another: with the nine sessions of a four-level export the process held
14x the weights (measured on a 60M bench model). Instead the files are memory-mapped read-only once, each tensor becomes an
``OrtValue`` over the mapped bytes, and every session is given those values
(``SessionOptions.add_initializer``) with pre-packing off, so all sessions read one copy that the
kernel pages in on demand. Pre-packing buys little here: at decode (one row) ONNX Runtime's
unpacked MatMul is as fast, at prefill within a few percent (``docs/benchmarks.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .errors import ModelDirError

ONNX_NUMPY = {1: np.float32, 10: np.float16, 11: np.float64, 6: np.int32, 7: np.int64, 9: np.bool_}


class SharedWeights:
    """``OrtValue``s over memory maps of a model dir's weight files (keep this object alive as long as
    any session that was given them)."""

    def __init__(self, directory: Path, table: dict[str, Any], absent: set[str] = frozenset()) -> None:
        self.values: dict[str, ort.OrtValue] = {}
        self._maps: dict[str, np.memmap] = {}
        self._arrays: list[np.ndarray] = []
        for name, entry in (table or {}).items():
            try:
                location, offset, length, onnx_type, dims = entry
                offset, length, dims = int(offset), int(length), [int(d) for d in dims]
            except (TypeError, ValueError) as exc:
                raise ModelDirError(f"{directory}/aapp.json: shared_weights[{name!r}] is not "
                                    "[file, offset, length, type, shape]; re-export the model") from exc
            if str(location) in absent:
                continue  # a file the app left out (the pruned levels' history statistics)
            dtype = ONNX_NUMPY.get(int(onnx_type))
            if dtype is None or offset % np.dtype(dtype).itemsize:
                continue  # a type numpy lacks (bf16) or an unaligned tensor: ONNX Runtime loads it itself
            mapped = self._map(directory, str(location))
            if length != int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize or offset + length > len(mapped):
                raise ModelDirError(f"{directory}/{location}: tensor {name!r} (offset {offset}, {length} bytes) does not "
                                    f"fit the file ({len(mapped)} bytes) or its shape {dims}; re-export the model")
            array = np.ndarray(dims, dtype=dtype, buffer=mapped, offset=offset)
            self._arrays.append(array)
            self.values[name] = ort.OrtValue.ortvalue_from_numpy(array)

    def _map(self, directory: Path, location: str) -> np.memmap:
        if location not in self._maps:
            path = (Path(directory) / location).resolve()
            if path.parent != Path(directory).resolve() or not path.is_file():
                raise ModelDirError(f"{directory}/aapp.json: shared weights name {location!r}, which is not a file "
                                    "of the model dir; re-export the model")
            self._maps[location] = np.memmap(path, dtype=np.uint8, mode="r")
        return self._maps[location]

    def give_to(self, options: ort.SessionOptions) -> None:
        """Let a session read the shared values instead of loading (and pre-packing) its own copies."""
        if not self.values:
            return
        for name, value in self.values.items():
            options.add_initializer(name, value)
        options.add_session_config_entry("session.disable_prepacking", "1")


__all__ = ["SharedWeights"]
