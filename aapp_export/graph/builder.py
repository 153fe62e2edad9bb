"""A small ONNX graph builder that streams weights to an external data file shared by several graphs.

``WeightStore`` owns ``<model>.onnx.data``: every large initializer is written there (page-aligned, so
ONNX Runtime can memory-map it) as soon as it is added, so the process holds one weight at a time,
never the whole model. A weight added with a ``key`` is written once: every later graph that asks for
the same key (the dense graph, then the pruned prefill and decode graphs of each sparsity level)
points at the same bytes (ONNX external data is file + offset), under the same initializer name
(``shared_name``): the store's ``index`` lists these names with their file, offset and shape, the
manifest carries it, and the runtime maps each once and hands the same memory to every ONNX Runtime
session (``aapp_runtime.weights``). ``GraphBuilder`` emits the nodes of one graph with
``onnx.helper``; small constants stay inline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

OPSET = 23
INLINE_LIMIT = 1024  # bytes; larger tensors go to the external data file
ALIGN = 4096

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ONNX_DTYPES = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}


@dataclass(frozen=True)
class ExternalTensor:
    """Where a tensor's bytes live: a file in the model dir, an offset and a length."""

    location: str
    offset: int
    length: int
    data_type: int
    dims: tuple[int, ...]

    def proto(self, name: str) -> onnx.TensorProto:
        tensor = TensorProto()
        tensor.name = name
        tensor.data_type = self.data_type
        tensor.dims.extend(self.dims)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(self.offset)), ("length", str(self.length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        return tensor


def shared_name(entry: ExternalTensor) -> str:
    """The initializer name of stored bytes, the same in every graph that reads them."""
    return f"{entry.location}@{entry.offset}"


class WeightStore:
    """The external data file of a model dir, shared by all its graphs; weights with a key are written once.
    ``index``: every tensor more than one graph may read, by ``shared_name``."""

    def __init__(self, data_file: Path) -> None:
        self.path = Path(data_file)
        self._file: BinaryIO | None = None
        self._offset = 0
        self._keyed: dict[str, ExternalTensor] = {}
        self.index: dict[str, ExternalTensor] = {}

    def index_json(self) -> dict[str, list]:
        """``index`` for the manifest: name -> [file, offset, length, onnx data type, shape]."""
        return {name: [e.location, e.offset, e.length, e.data_type, list(e.dims)] for name, e in self.index.items()}

    def get(self, key: str | None) -> ExternalTensor | None:
        return self._keyed.get(key) if key is not None else None

    def write(self, raw: bytes, data_type: int, dims: Sequence[int], key: str | None = None) -> ExternalTensor:
        if self._file is None:
            self._file = open(self.path, "wb")
        pad = (-self._offset) % ALIGN
        if pad:
            self._file.write(b"\0" * pad)
            self._offset += pad
        self._file.write(raw)
        entry = ExternalTensor(self.path.name, self._offset, len(raw), data_type, tuple(int(d) for d in dims))
        self._offset += len(raw)
        if key is not None:
            self._keyed[key] = entry
        return entry

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class GraphBuilder:
    """Accumulates nodes, inputs, outputs and initializers of one graph; its weights go to ``store``
    (a ``WeightStore`` shared with other graphs, or a path for a store of this graph alone)."""

    def __init__(self, store: WeightStore | Path, dtype: str = "fp32") -> None:
        self.owns_store = not isinstance(store, WeightStore)
        self.store = WeightStore(store) if self.owns_store else store
        self.dtype = dtype
        self.onnx_dtype = ONNX_DTYPES[dtype]
        self.torch_dtype = TORCH_DTYPES[dtype]
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._names: dict[str, int] = {}
        self._shared: set[str] = set()  # shared initializers already in this graph
        self.scope = ""

    # -- names ---------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        base = f"{self.scope}{base}"
        n = self._names.get(base, 0)
        self._names[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    # -- weights and constants -----------------------------------------------------------------
    def _write_external(self, name: str, raw: bytes, onnx_type: int, dims: Sequence[int]) -> None:
        self.initializers.append(self.store.write(raw, onnx_type, dims).proto(name))

    def external(self, entry: ExternalTensor) -> str:
        """An initializer whose bytes already lie in a file of the model dir (a stored weight, calibration
        statistics), named ``shared_name(entry)`` so that every graph reading them names them alike."""
        name = shared_name(entry)
        if name not in self._shared:
            self._shared.add(name)
            self.initializers.append(entry.proto(name))
            self.store.index[name] = entry
        return name

    def weight(self, name: str, tensor: torch.Tensor | Callable[[], torch.Tensor], *, dtype: str | None = None,
               key: str | None = None) -> str:
        """Add a weight (cast to the graph dtype, or ``dtype``) and return its name. With ``key``, a weight
        already in the store under that key is reused (``tensor`` may then be a callable, never called)."""
        dtype = dtype or self.dtype
        if key is not None:
            key = f"{key}:{dtype}"
            found = self.store.get(key)
            if found is not None:
                return self.external(found)
        t = (tensor() if callable(tensor) else tensor).detach().to(TORCH_DTYPES[dtype]).contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        name = self.fresh(name)
        if len(raw) <= INLINE_LIMIT:
            proto = TensorProto()
            proto.name, proto.data_type = name, ONNX_DTYPES[dtype]
            proto.dims.extend(t.shape)
            proto.raw_data = raw
            self.initializers.append(proto)
        elif key is not None:
            return self.external(self.store.write(raw, ONNX_DTYPES[dtype], t.shape, key))
        else:
            self._write_external(name, raw, ONNX_DTYPES[dtype], t.shape)
        return name

    def const(self, name: str, value: np.ndarray | Sequence | float | int, np_dtype=None) -> str:
        """A constant initializer from numpy data (int64 for shapes, float32 by default)."""
        arr = np.asarray(value, dtype=np_dtype)
        name = self.fresh(name)
        if arr.nbytes > INLINE_LIMIT:
            self._write_external(name, arr.tobytes(), helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape)
        else:
            self.initializers.append(onnx.numpy_helper.from_array(arr, name))
        return name

    def ints(self, name: str, values: Sequence[int]) -> str:
        return self.const(name, np.asarray(values, dtype=np.int64))

    def scalar(self, name: str, value: float) -> str:
        """A scalar in the graph's compute dtype."""
        return self.weight(name, torch.tensor(value, dtype=torch.float64))

    # -- nodes ---------------------------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, *, name: str | None = None,
           domain: str = "", unused: Sequence[int] = (), **attrs) -> str | list[str]:
        """Add a node; returns its output name (or list of names when ``n_out > 1``; the optional
        outputs at positions ``unused`` are left out, named "")."""
        base = name or op_type
        outs = ["" if i in unused else self.fresh(f"{base}_out{i}" if n_out > 1 else base) for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.fresh(f"{base}_node"),
                                           domain=domain or None, **attrs))
        return outs[0] if n_out == 1 else outs

    def add_input(self, name: str, elem_type: int, shape: Sequence) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def add_output(self, value: str, name: str, elem_type: int, shape: Sequence, *, first: bool = False) -> str:
        """Make ``value`` a graph output called ``name``; returns ``name``, which later nodes must use. The
        node that computes ``value`` is renamed (an ``Identity`` would copy it, weights included), unless
        ``value`` is a graph input or initializer."""
        if value != name and not self._rename(value, name):
            self.nodes.append(helper.make_node("Identity", [value], [name], name=f"{name}_identity"))
        info = helper.make_tensor_value_info(name, elem_type, list(shape))
        self.outputs.insert(0, info) if first else self.outputs.append(info)
        return name

    def _rename(self, value: str, name: str) -> bool:
        if not any(value in node.output for node in self.nodes):
            return False
        for node in self.nodes:
            for field in (node.input, node.output):
                for j, tensor in enumerate(field):
                    if tensor == value:
                        field[j] = name
        return True

    def finish(self, graph_name: str, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
        """Return the model proto (weights stay external); a store of this graph alone is closed."""
        if self.owns_store:
            self.store.close()
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.initializers)
        domains = sorted({n.domain for n in self.nodes if n.domain})  # com.microsoft contrib ops: version 1
        opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, 1) for d in domains]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="aapp-export")
        model.ir_version = 10
        for key, value in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        return model
