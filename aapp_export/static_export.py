"""``aapp-export --static METHOD --sparsity R``: an ordinary dense model with fixed kept units.

The units come from ``static.static_units`` (Wanda-sp or FLAP on the calibration statistics the
export writes first, or random), at the reference's kept counts (``probe.kept_counts``); the graph
is the dense builder's with ``LayerUnits`` (q|k|v, o, gate, up and down of the kept units only,
stored once). The manifest's dims describe the graph as built (heads, KV heads and MLP widths per
layer) and its ``pruning`` section (mode ``static``) records the method, the sparsity and the kept
units, so the runtime runs it as any dense model: the speed ceiling of the dynamic levels at the
same kept counts, and a product on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checkpoint import WeightReader
from .choices import SKIP_FIRST, check_sparsity
from .errors import InputError
from .families import ModelSpec
from .graph.decoder import LayerUnits, kv_heads_kept
from .graph.pruned import kept_counts
from .pruned_export import decode_weight_bytes
from .static import STATIC_METHODS, static_units


def check_static(options) -> None:
    """Typed one-line errors for an impossible ``--static`` request (before anything is loaded)."""
    method, sparsity = options.static
    if method not in STATIC_METHODS:
        raise InputError(f"--static {method!r} is not one of {', '.join(STATIC_METHODS)}")
    check_sparsity(sparsity, f"--static {method} --sparsity", zero=False)
    if method != "random" and options.calibration is None:
        raise InputError(f"--static {method} scores units with calibration statistics: drop --no-calibrate")


def static_layer_units(spec: ModelSpec, reader: WeightReader, calibration_dir: Path | None, method: str,
                       sparsity: float) -> list[LayerUnits]:
    """The kept heads and channels of every layer (the first ``SKIP_FIRST`` layers whole)."""
    stats = None
    if calibration_dir is not None:
        from .calibration import load_calibration

        stats, _ = load_calibration(calibration_dir, spec.num_layers)
    heads, channels = kept_counts(spec, sparsity, SKIP_FIRST)
    units = []
    for layer in spec.layers:
        i = layer.index
        if i < SKIP_FIRST:
            units.append(LayerUnits())
            continue
        w_o = reader.get(spec.layer_tensor(i, "self_attn.o_proj.weight"))
        w_down = reader.get(spec.layer_tensor(i, "mlp.down_proj.weight"))
        h, c = static_units(method, w_o, w_down, stats[i] if stats else None, layer.num_heads, heads[i], channels[i], i)
        units.append(LayerUnits(h.tolist(), c.tolist()))
    return units


def _kept(spec: ModelSpec, units: list[LayerUnits]) -> tuple[list[int], list[int], list[int]]:
    heads, kv, channels = [], [], []
    for layer, u in zip(spec.layers, units):
        n = layer.num_heads if u.heads is None else len(u.heads)
        heads.append(n)
        kv.append(kv_heads_kept(layer, None if u.heads is None else n))
        channels.append(layer.intermediate_size if u.channels is None else len(u.channels))
    return heads, kv, channels


def static_dims(spec: ModelSpec, units: list[LayerUnits]) -> dict[str, Any]:
    """The manifest dims that differ from the checkpoint's: per-layer widths of the graph as built."""
    heads, kv, channels = _kept(spec, units)
    return {"num_heads": heads, "num_kv_heads": kv, "intermediate_size": channels}


def static_section(spec: ModelSpec, units: list[LayerUnits], method: str, sparsity: float) -> dict[str, Any]:
    """The manifest's ``pruning`` section of a static export."""
    heads, kv, channels = _kept(spec, units)
    dense = [l.num_heads for l in spec.layers], [l.intermediate_size for l in spec.layers]
    return {"mode": "static", "method": method, "sparsity": float(sparsity), "levels": {},
            "methods": ["dense"], "skip_first": SKIP_FIRST,
            "dense_heads": dense[0], "dense_channels": dense[1],
            "kept_heads": [list(u.heads) if u.heads is not None else None for u in units],
            "kept_channels": [list(u.channels) if u.channels is not None else None for u in units],
            "kept_counts": {"heads": heads, "kv_heads": kv, "channels": channels},
            "kept_fraction": round(decode_weight_bytes(spec, heads, kv, channels, 1)
                                   / decode_weight_bytes(spec, *dense[:1], [l.num_kv_heads for l in spec.layers],
                                                         dense[1], 1), 4)}


__all__ = ["check_static", "static_layer_units", "static_dims", "static_section"]
