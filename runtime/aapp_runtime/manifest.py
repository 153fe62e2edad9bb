"""The model-directory contract: ``aapp.json``, its schema version and its checksums.

The exporter writes the manifest through ``write_manifest``; the runtime reads it with
``Manifest.load``, which refuses another major version, missing files and files whose size or
checksum changed since export.

What is checked when (``verify="fast"``, the default): every file's size at every load; files up to
64 MB are hashed at every load; a larger file (the weights) is hashed in full the first time it is
loaded, and the result is remembered in a verification stamp keyed by the file's path, size, inode
and modification time (``$AAPP_CACHE`` or ``~/.cache/aapp-runtime/verified.json``). Later loads of
an unchanged file skip the hash; any write to it (a copy, an edit, a truncation) changes its
modification time, so the next load hashes it again and a damaged byte is caught there. A damaged
byte that leaves the modification time alone (bit rot under the file system) is caught by
``verify="full"``, which hashes everything at every load; ``"none"`` checks nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelDirError

MANIFEST_NAME = "aapp.json"
MANIFEST_FORMAT = "aapp-model"
MANIFEST_VERSION = 2  # 2: the "pruning" section lists the pruned graphs of each sparsity level
READABLE_VERSIONS = (1, 2)  # version 1 dirs run dense only
LARGE_FILE = 64 * 1024 * 1024  # files above this are hashed once, then trusted while their stamp holds


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _stamp_file() -> Path:
    root = os.environ.get("AAPP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "aapp-runtime")
    return Path(root) / "verified.json"


def _stamp_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_ino}|{st.st_mtime_ns}"


def _stamps() -> dict[str, str]:
    try:
        data = json.loads(_stamp_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember(key: str, digest: str) -> None:
    """Record a verified large file (best effort: a read-only home only costs a hash next time)."""
    path = _stamp_file()
    stamps = _stamps()
    stamps[key] = digest
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stamps))
        tmp.replace(path)
    except OSError:
        pass


def _check_schema(path: Path, data: dict[str, Any]) -> None:
    """The fields the runtime reads, with the types it reads them as (a tampered manifest is one error)."""
    def bad(field: str, want: str) -> ModelDirError:
        return ModelDirError(f"{path}: field {field} is not {want}; the manifest was edited or damaged: re-export "
                             "the model")

    def whole(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    for key in ("graph", "dims", "tokens", "files"):
        if not isinstance(data.get(key), dict):
            raise bad(f"'{key}'", "an object")
    dims = data["dims"]
    for key in ("vocab_size", "hidden_size", "head_dim", "num_layers", "max_position_embeddings"):
        if not whole(dims.get(key)) or dims.get(key) == 0:
            raise bad(f"dims.{key}", "a whole number >= 1")
    n = dims["num_layers"]
    for key in ("num_heads", "num_kv_heads", "intermediate_size"):
        value = dims.get(key)
        if not isinstance(value, list) or len(value) != n or not all(whole(v) and v > 0 for v in value):
            raise bad(f"dims.{key}", f"a list of {n} whole numbers >= 1")
    for key in ("file", "logits", "past_key", "past_value", "present_key", "present_value"):
        if not isinstance(data["graph"].get(key), str):
            raise bad(f"graph.{key}", "a string")
    for name, record in data["files"].items():
        if not isinstance(record, dict) or not whole(record.get("bytes")) or not isinstance(record.get("sha256"), str):
            raise bad(f"files[{name!r}]", "{'sha256': ..., 'bytes': ...}")
    pruning = data.get("pruning")
    if pruning is not None and (not isinstance(pruning, dict) or not isinstance(pruning.get("levels", {}), dict)):
        raise bad("'pruning'", "an object with a 'levels' object")


def file_record(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_manifest(directory: Path, data: dict[str, Any], checksum_files: list[str]) -> Path:
    """Write ``aapp.json`` with format/version and the checksums of ``checksum_files``."""
    directory = Path(directory)
    body = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, **data}
    body["files"] = {name: file_record(directory / name) for name in checksum_files}
    path = directory / MANIFEST_NAME
    path.write_text(json.dumps(body, indent=2, sort_keys=False) + "\n")
    return path


@dataclass(frozen=True)
class Manifest:
    """A validated ``aapp.json``; ``data`` is the parsed JSON."""

    directory: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, directory: str | Path, verify: str = "fast") -> "Manifest":
        """Read and check a model directory. ``verify``: "none", "fast" (default) or "full"."""
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        if not directory.is_dir():
            raise ModelDirError(f"model dir {directory} does not exist: export one with `aapp-export --out {directory}/model.onnx`")
        if not path.is_file():
            raise ModelDirError(f"{path} is missing: {directory} is not an exported model dir (run aapp-export)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelDirError(f"{path} is not valid JSON ({exc}): re-export the model") from exc
        if data.get("format") != MANIFEST_FORMAT:
            raise ModelDirError(f"{path}: field 'format' is {data.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        version = data.get("version")
        if version not in READABLE_VERSIONS:
            raise ModelDirError(
                f"{path}: manifest version {version!r} but this runtime reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}; "
                "re-export the model with the matching aapp-export, or install the matching aapp-runtime"
            )
        for key in ("family", "graph", "dims", "tokens", "files"):
            if key not in data:
                raise ModelDirError(f"{path}: required field {key!r} is missing; re-export the model")
        _check_schema(path, data)
        manifest = cls(directory, data)
        if verify != "none":
            manifest.verify(full=verify == "full")
        return manifest

    @property
    def optional_files(self) -> set[str]:
        """Files an app may leave out: what only the pruned levels read (their graphs, the split prefill's,
        the history statistics in ``calibration.safetensors``), what only the exporter reads
        (``calibration.json``) and the Hugging Face ``config.json`` written for other tools (optimum).
        A level whose files are absent is refused when asked for (``Session``)."""
        pruning = self.data.get("pruning") or {}
        files = {"calibration.json", "config.json", (pruning.get("history") or {}).get("file", "calibration.safetensors")}
        for entry in (pruning.get("levels") or {}).values():
            files |= {entry.get("prefill"), entry.get("decode"), entry.get("tail"), entry.get("dense_tail")}
        files.add((pruning.get("split_prefill") or {}).get("head"))  # aapp-adaptive's dense-prefill path
        return {f for f in files if isinstance(f, str)}

    def absent(self) -> set[str]:
        """Optional files (``optional_files``) this model dir was shipped without."""
        return {name for name in self.optional_files & set(self.data["files"]) if not (self.directory / name).exists()}

    def verify(self, full: bool = False) -> None:
        absent = self.absent()
        for name, record in self.data["files"].items():
            f = self.directory / name
            if name in absent:
                continue  # checked when a level that needs it is asked for
            if not f.is_file():
                raise ModelDirError(f"{f} is listed in {MANIFEST_NAME} but missing: copy the whole model dir")
            size = f.stat().st_size
            if size != record["bytes"]:
                raise ModelDirError(
                    f"{f} has {size} bytes but {MANIFEST_NAME} records {record['bytes']}: the file is truncated "
                    "or from another export; re-export or re-copy the model dir"
                )
            stamp = _stamp_key(f)
            if not full and size > LARGE_FILE and _stamps().get(stamp) == record["sha256"]:
                continue  # hashed before, unchanged since
            if sha256_file(f) != record["sha256"]:
                raise ModelDirError(
                    f"{f} does not match the checksum in {MANIFEST_NAME}: the file was changed or corrupted; "
                    "re-export or re-copy the model dir"
                )
            if size > LARGE_FILE:
                _remember(stamp, record["sha256"])

    # -- convenient views --------------------------------------------------------------------------
    @property
    def graph(self) -> dict[str, Any]:
        return self.data["graph"]

    @property
    def dims(self) -> dict[str, Any]:
        return self.data["dims"]

    @property
    def tokens(self) -> dict[str, Any]:
        return self.data["tokens"]

    @property
    def model_path(self) -> Path:
        return self.directory / self.graph["file"]

    @property
    def dtype(self) -> str:
        return self.data.get("dtype", "fp32")
