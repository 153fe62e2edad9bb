"""Checkpoint resolution and lazy weight reading.

``--model`` accepts an alias from a model card, a local directory, or a Hugging Face hub id (the
local HF cache first, a download when online, a one-line error when offline and not cached).
Weights are read tensor by tensor from memory-mapped safetensors (single file or sharded with an
index), so exporting a 12B model never holds two copies in RAM. ``.bin`` pickles are refused
unless explicitly allowed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

import torch

from .cards import ModelCard, available_aliases, load_card
from .errors import CheckpointError, OfflineError, UnknownModelError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt"]
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where a ``--model`` argument led: a local directory plus how it was found."""

    path: Path
    source: str  # "bundled:demo", "hub:org/name", "local:/abs/dir"
    card: ModelCard | None = None


def resolve_checkpoint(model: str, *, allow_download: bool = True) -> ResolvedCheckpoint:
    """Turn an alias, local directory or hub id into a local checkpoint directory."""
    if not model or not model.strip():
        raise UnknownModelError("--model is empty: pass an alias (e.g. demo), a hub id or a local directory")
    local = Path(model).expanduser()
    if local.exists():
        if not local.is_dir():
            raise UnknownModelError(f"{local} is a file: pass the checkpoint directory that holds config.json")
        return ResolvedCheckpoint(local.resolve(), f"local:{local.resolve()}")
    if model in available_aliases():
        card = load_card(model)
        if card.bundled_path is not None:
            if not (card.bundled_path / "config.json").is_file():
                raise CheckpointError(
                    f"alias {model!r} points to the bundled checkpoint {card.bundled_path}, which has no "
                    "config.json; restore models/ from git or rebuild it (scripts/train_demo_model.py)"
                )
            return ResolvedCheckpoint(card.bundled_path, card.source, card)
        if card.hub_id is None:
            raise UnknownModelError(f"model card {model!r} has source {card.source!r}: use hub:<id> or bundled:<dir>")
        return ResolvedCheckpoint(_hub_snapshot(card.hub_id, allow_download), card.source, card)
    if HUB_ID.match(model):
        return ResolvedCheckpoint(_hub_snapshot(model, allow_download), f"hub:{model}")
    raise UnknownModelError(
        f"--model {model!r} is neither a known alias ({', '.join(available_aliases())}), an existing "
        "directory, nor a hub id of the form org/name"
    )


def _hub_snapshot(repo_id: str, allow_download: bool) -> Path:
    """A local snapshot of ``repo_id``: the HF cache first, then the hub."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    if not allow_download:
        raise OfflineError(f"hub model {repo_id} is not in the local Hugging Face cache and downloads are disabled")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except GatedRepoError as exc:
        raise CheckpointError(
            f"hub model {repo_id} is gated: accept its licence on the hub and log in (`hf auth login`) or set HF_TOKEN"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise UnknownModelError(f"hub model {repo_id} does not exist (or is private): check the id") from exc
    except Exception as exc:  # connection errors come in many types across huggingface_hub versions
        raise OfflineError(
            f"hub model {repo_id} is not in the Hugging Face cache and the hub cannot be reached "
            f"({type(exc).__name__}); download it on a connected machine (`hf download {repo_id}`) "
            "and copy the cache, or pass a local checkpoint directory"
        ) from exc


class WeightReader:
    """Lazy, memory-mapped access to the tensors of one checkpoint directory."""

    def __init__(self, directory: Path, *, allow_pickle: bool = False) -> None:
        self.directory = Path(directory)
        self.allow_pickle = allow_pickle
        self._handles: dict[Path, object] = {}
        self._pickled: dict[str, torch.Tensor] | None = None
        self._finite: set[str] = set()

    @cached_property
    def _where(self) -> dict[str, Path]:
        """Tensor name -> safetensors file holding it."""
        d = self.directory
        index = d / SAFETENSORS_INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise CheckpointError(f"{index} is not a valid safetensors index (no weight_map): {exc}") from exc
            files = sorted({d / f for f in weight_map.values()})
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(
                    f"partial checkpoint {d}: {index.name} lists shards that are missing: "
                    f"{', '.join(missing)}; finish the download or copy the missing shards"
                )
            return {name: d / f for name, f in weight_map.items()}
        singles = sorted(d.glob("*.safetensors"))
        if singles:
            where: dict[str, Path] = {}
            for f in singles:
                for name in self._open(f).keys():
                    where[name] = f
            return where
        pickles = [p for p in PICKLE_NAMES if (d / p).exists()] + [p.name for p in d.glob("pytorch_model-*.bin")]
        if pickles:
            if not self.allow_pickle:
                raise CheckpointError(
                    f"{d / pickles[0]} is a pickle (.bin) checkpoint, which can run arbitrary code when loaded; "
                    "convert it to safetensors, or pass --allow-pickle if you trust its origin"
                )
            return {name: Path("<pickle>") for name in self._load_pickles(pickles)}
        raise CheckpointError(f"no weights in {d}: expected model.safetensors or {SAFETENSORS_INDEX} with shards")

    def _load_pickles(self, names: list[str]) -> dict[str, torch.Tensor]:
        if self._pickled is None:
            self._pickled = {}
            files = [self.directory / n for n in names if n.endswith(".bin")]
            for f in sorted(set(files)):
                self._pickled.update(torch.load(f, map_location="cpu", weights_only=True, mmap=True))
        return self._pickled

    def _open(self, file: Path):
        from safetensors import safe_open

        if file not in self._handles:
            try:
                self._handles[file] = safe_open(str(file), framework="pt")
            except Exception as exc:
                raise CheckpointError(f"{file} is not a readable safetensors file ({exc}); re-download it") from exc
        return self._handles[file]

    def keys(self) -> Iterator[str]:
        return iter(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str) -> torch.Tensor:
        """One tensor, read on demand (no copy beyond the mmap until a dtype change)."""
        file = self._where.get(name)
        if file is None:
            raise CheckpointError(
                f"tensor {name!r} is missing from the checkpoint in {self.directory}; "
                "the checkpoint is partial or of another architecture"
            )
        if self._pickled is not None and name in self._pickled:
            t = self._pickled[name]
        else:
            t = self._open(file).get_tensor(name)
        if name not in self._finite and t.is_floating_point():  # a scan while streaming, once per tensor
            if not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"tensor {name!r} in {self.directory} holds NaN or infinite values; the "
                                      "checkpoint is damaged: re-download it or export another one")
            self._finite.add(name)
        return t

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape without reading its data."""
        file = self._where.get(name)
        if file is None:
            raise CheckpointError(f"tensor {name!r} is missing from the checkpoint in {self.directory}; "
                                  "the checkpoint is partial or of another architecture")
        if self._pickled is not None and name in self._pickled:
            return tuple(self._pickled[name].shape)
        return tuple(self._open(file).get_slice(name).get_shape())

    def dtype(self) -> torch.dtype:
        """Dtype of the checkpoint's floating-point weights (from its first matrix)."""
        for name in self._where:
            t = self.get(name)
            if t.is_floating_point() and t.ndim == 2:
                return t.dtype
        return torch.float32
