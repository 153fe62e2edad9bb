"""Shared fixtures: tiny checkpoints of each family and their exports, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aapp_export.synthetic import FAMILIES, make_checkpoint


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """The calibration cache and the runtime's verification stamps of this test session live in its own
    temporary directory, never in the user's ~/.cache (tests that need an empty one set their own)."""
    old = os.environ.get("AAPP_CACHE")
    os.environ["AAPP_CACHE"] = str(tmp_path_factory.mktemp("aapp-cache"))
    yield
    if old is None:
        os.environ.pop("AAPP_CACHE", None)
    else:
        os.environ["AAPP_CACHE"] = old


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {fam: make_checkpoint(root / fam, fam) for fam in FAMILIES}


@pytest.fixture(scope="session")
def exports(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """Each family exported three times: last-position logits (the default, GroupQueryAttention),
    all-position logits, and all-position logits with the standard ONNX Attention op."""
    from aapp_export.export import ExportOptions, export_model

    root = tmp_path_factory.mktemp("export")
    out = {}
    for fam, ckpt in checkpoints.items():
        out[fam] = export_model(str(ckpt), root / fam / "model.onnx", log=lambda m: None)
        out[f"{fam}-all"] = export_model(str(ckpt), root / f"{fam}-all" / "model.onnx",
                                         ExportOptions(last_logits_only=False), log=lambda m: None)
        out[f"{fam}-onnx"] = export_model(str(ckpt), root / f"{fam}-onnx" / "model.onnx",
                                          ExportOptions(last_logits_only=False, attention="onnx"), log=lambda m: None)
    return out
