"""What a pruning-capable export adds to the dense one: a ``PruningPlan`` per sparsity level (from the
calibration written into the model dir), the level's prefill and decode graphs, the split prefill of
aapp-adaptive's dense-prefill path (when the calibration has the refusal token), and the manifest's
``pruning`` section that tells the runtime what it may ask for.

The calibration statistics are not copied: the graphs' history initializers point into
``calibration.safetensors`` (ONNX external data is file + offset; safetensors stores raw
little-endian tensors after a JSON header), so the model dir grows by the graphs only.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from onnx import TensorProto

from .calibration import CALIBRATION_FILE
from .checkpoint import WeightReader
from .errors import InputError
from .families import ModelSpec
from .graph.builder import ExternalTensor, WeightStore
from .graph.decoder import HIDDEN, DecoderOptions
from .graph.pruned import (AAPP_INPUT, CONFIRM_GATE, RISK_GATE, PruningPlan, build_level, build_split, kept_counts,
                           level_name)
from .choices import DEFAULT_LEVELS, GATE_DEAD_ZONE, MAX_SPARSITY, PROBE_MAX_TOKENS, SKIP_FIRST
SAFETENSORS_TYPES = {"F32": TensorProto.FLOAT, "F16": TensorProto.FLOAT16, "BF16": TensorProto.BFLOAT16,
                     "I64": TensorProto.INT64}


def parse_levels(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.2,0.4"`` -> ``(0.2, 0.4)``, each in (0, MAX_SPARSITY], sorted, no repeats."""
    try:
        values = [float(x) for x in (text.split(",") if isinstance(text, str) else text) if str(x).strip()]
    except ValueError as exc:
        raise InputError(f"--levels {text!r}: not a comma-separated list of fractions (e.g. 0.2,0.4)") from exc
    bad = [v for v in values if not 0 < v <= MAX_SPARSITY]
    if bad or not values:
        raise InputError(f"--levels {text!r}: every level must be in (0, {MAX_SPARSITY}] (e.g. 0.2,0.4); 0 is the "
                         "dense graph")
    return tuple(sorted({round(v, 4) for v in values}))


def safetensors_index(path: Path) -> dict[str, ExternalTensor]:
    """Where each tensor of a safetensors file lies (file name, byte offset, length, type, shape)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in SAFETENSORS_TYPES:
            continue
        begin, end = info["data_offsets"]
        out[name] = ExternalTensor(Path(path).name, 8 + n + begin, end - begin, SAFETENSORS_TYPES[info["dtype"]],
                                   tuple(info["shape"]))
    return out


def _protected(tensors_dir: Path, n_layers: int) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray,
                                                          dict[str, np.ndarray]]:
    """Protected units per layer, the risk gate's direction and the confirmation gates' (by level name)."""
    from safetensors.numpy import load_file

    t = load_file(str(tensors_dir / CALIBRATION_FILE))
    heads = [t[f"circuits.layers.{i}.protected_heads"].astype(np.int64) for i in range(n_layers)]
    channels = [t[f"circuits.layers.{i}.protected_channels"].astype(np.int64) for i in range(n_layers)]
    confirm = {k.split(".", 1)[1].rsplit(".", 1)[0]: v.astype(np.float32) for k, v in t.items()
               if k.startswith("confirm_gate.")}
    return heads, channels, t["circuits.direction"].astype(np.float32), confirm


def plan_for(spec: ModelSpec, model_dir: Path, calibration: dict[str, Any], sparsity: float,
             skip_first: int = SKIP_FIRST, probe_max_tokens: int = PROBE_MAX_TOKENS) -> PruningPlan:
    """The ``PruningPlan`` of one level from the calibration files in ``model_dir``."""
    index = safetensors_index(Path(model_dir) / CALIBRATION_FILE)
    heads, channels, direction, confirm_directions = _protected(Path(model_dir), spec.num_layers)
    kh, kc = kept_counts(spec, sparsity, skip_first)
    gate = calibration["risk_gate"]
    level = f"{round(sparsity, 4):g}"
    confirm = calibration.get("confirm_gate", {}).get(level)
    return PruningPlan(sparsity, tuple(kh), tuple(kc),
                       tuple(index.get(f"layers.{i}.hist_attn") for i in range(spec.num_layers)),
                       tuple(index.get(f"layers.{i}.hist_mlp") for i in range(spec.num_layers)),
                       tuple(heads), tuple(channels), direction, int(gate["layer"]), float(gate["threshold"]),
                       float(gate["temperature"]), skip_first=skip_first, max_tokens=probe_max_tokens,
                       confirm=None if confirm is None else (confirm_directions[level], float(confirm["threshold"]),
                                                             float(confirm["temperature"])))


def refusal_token(calibration: dict[str, Any]) -> int | None:
    """The refusal's first token (the causal check's, for the chosen scorer), or None."""
    check = (calibration.get("causal_check") or {}).get("by_scorer", {}).get(calibration.get("scorer"), {})
    token = check.get("refusal_token")
    return int(token) if token is not None else None


def decode_weight_bytes(spec: ModelSpec, heads: Sequence[int], kv_heads: Sequence[int], channels: Sequence[int],
                        bytes_per_value: int) -> int:
    """Bytes of weights one decode step reads: every layer's projections at its widths, the LM head
    (the embedding row gather is negligible)."""
    h, d = spec.hidden_size, spec.head_dim
    total = spec.vocab_size * h
    for q, kv, c in zip(heads, kv_heads, channels):
        total += h * (2 * q + 2 * kv) * d + 3 * h * c
    return total * bytes_per_value


def export_levels(spec: ModelSpec, reader: WeightReader, store: WeightStore, options: DecoderOptions,
                  model_dir: Path, calibration: dict[str, Any], levels: Sequence[float],
                  metadata: dict[str, str] | None = None, log=print,
                  probe_max_tokens: int = PROBE_MAX_TOKENS) -> dict[str, Any]:
    """Write every level's graphs into ``model_dir``; returns the manifest's ``pruning`` section."""
    dense_heads = [l.num_heads for l in spec.layers]
    dense_kv = [l.num_kv_heads for l in spec.layers]
    dense_channels = [l.intermediate_size for l in spec.layers]
    value_bytes = 4 if options.dtype == "fp32" else 2
    dense_bytes = decode_weight_bytes(spec, dense_heads, dense_kv, dense_channels, value_bytes)
    out: dict[str, Any] = {}
    refusal = refusal_token(calibration)
    head = None
    plans = [plan_for(spec, model_dir, calibration, sparsity, probe_max_tokens=probe_max_tokens) for sparsity in levels]
    split = refusal is not None and plans[0].skip_first > 0
    for sparsity, plan in zip(levels, plans):
        log(f"writing the pruned graphs of sparsity {sparsity} (prefill decides, decode reuses)")
        files = build_level(spec, reader, store, options, plan, model_dir, metadata)
        if split:  # aapp-adaptive's dense-prefill path: the head (once), the level's two tails
            files.update(build_split(spec, reader, store, options, plan, model_dir, metadata, head=plan is plans[0]))
            head = files.pop("head", head)
        kv = [plan.kv_heads(l) for l in spec.layers]
        out[level_name(sparsity)] = {
            "sparsity": sparsity, **files,
            "kept_heads": list(plan.kept_heads), "kept_channels": list(plan.kept_channels), "kv_heads": kv,
            "kept_fraction": round(decode_weight_bytes(spec, plan.kept_heads, kv, plan.kept_channels, value_bytes)
                                   / dense_bytes, 4),
        }
    any_plan = plans[0]
    return {
        "mode": "dynamic",
        "methods": ["dense", "pp", "aapp"],
        "levels": out,
        "skip_first": any_plan.skip_first,
        "probe": {"token_ratio": any_plan.token_ratio, "min_tokens": any_plan.min_tokens,
                  "force_first_below": any_plan.force_first_below, "max_tokens": any_plan.max_tokens},
        "kept_count_rule": "aapp_export.probe.kept_counts: first skip_first layers dense, the ratio on the others "
                           "rescaled so the model-wide fraction pruned equals the sparsity",
        "kv_rule": "one KV head: shared by the kept query heads; several: each kept query head gets its group's K/V",
        "history": {"file": CALIBRATION_FILE, "tensors": "layers.{i}.hist_attn, layers.{i}.hist_mlp"},
        "risk_gate": calibration["risk_gate"],
        "aapp_forcing": {"rule": "aapp_export.probe.forced_count: round(clip((gate - dead_zone) / (1 - dead_zone), "
                                 "0, 1) x |protected|) protected units forced in: none while the risk gate reads "
                                 "below dead_zone, all of them at gate 1", "dead_zone": GATE_DEAD_ZONE},
        "confirm_gate": {level_name(p.sparsity): {"threshold": p.confirm[1], "temperature": p.confirm[2]}
                         for p in plans if p.confirm is not None},
        # aapp-adaptive's dense-prefill path (docs/DESIGN.md): absent when the calibration has no refusal token
        **({"split_prefill": {"head": head, "layers": any_plan.skip_first, "refusal_token": refusal,
                              "outputs": {"hidden": HIDDEN, "present_kept": "present_kept.{i}.key|value"}}}
           if split else {}),
        "protected_units": calibration["protected_units"],
        "graph_io": {"aapp": AAPP_INPUT, "risk_gate": RISK_GATE, "confirm_gate": CONFIRM_GATE, "kept_heads": "kept_heads.{i}",
                     "kept_channels": "kept_channels.{i}", "kept": "kept.{i}.{part}"},
    }


__all__ = ["DEFAULT_LEVELS", "parse_levels", "plan_for", "export_levels", "refusal_token", "safetensors_index", "decode_weight_bytes"]
