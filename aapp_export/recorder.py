"""Hooks on a transformers decoder's prunable units, written once for calibration, circuits and pruning.

The units AAPP prunes are attention heads and MLP channels; their activations are the inputs of
each layer's ``o_proj`` (``"attn"``, ``[B, T, heads*D]``) and ``down_proj`` (``"mlp"``,
``[B, T, I]``). ``unit_inputs(model, fn)`` calls ``fn(i, kind, x)`` with each of them during the
forwards run inside it: calibration accumulates statistics, circuit identification averages
activations and gradients, the pruner masks (a tensor returned by ``fn`` replaces the input).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

UnitFn = Callable[[int, str, torch.Tensor], torch.Tensor | None]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Gemma 3 / Llama / Qwen 2 causal LM (multimodal Gemma 3 included)."""
    base = getattr(model, "model", model)
    base = getattr(base, "language_model", base)
    return base.layers


@contextmanager
def unit_inputs(model: nn.Module, fn: UnitFn) -> Iterator[None]:
    """Call ``fn(layer, kind, x)`` on every layer's o_proj (``"attn"``) and down_proj (``"mlp"``) input."""

    def hook(i: int, kind: str):
        def pre(module, args):
            out = fn(i, kind, args[0])
            return None if out is None else (out,)

        return pre

    handles = []
    try:
        for i, layer in enumerate(decoder_layers(model)):
            handles.append(layer.self_attn.o_proj.register_forward_pre_hook(hook(i, "attn")))
            handles.append(layer.mlp.down_proj.register_forward_pre_hook(hook(i, "mlp")))
        yield
    finally:
        for h in handles:
            h.remove()


__all__ = ["decoder_layers", "unit_inputs"]
