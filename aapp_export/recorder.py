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


def final_norm(model: nn.Module) -> nn.Module:
    """The norm after the last decoder layer (its input is the final residual stream)."""
    base = getattr(model, "model", model)
    return getattr(base, "language_model", base).norm


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


@contextmanager
def activation_range(model: nn.Module, out: dict) -> Iterator[None]:
    """Fill ``out`` with the largest |value| seen during the forwards inside: ``absmax``, ``where`` it was
    (layer and tensor), and ``per_layer`` maxima, over every decoder layer's output (the residual stream)
    and every linear layer's input and output in it. Finite values only (a NaN is another problem)."""
    best: list[float] = []
    where: list[str] = []

    def watch(i: int, name: str, x) -> None:
        if isinstance(x, tuple):
            x = x[0]
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
            return
        value = float(torch.nan_to_num(x.detach().abs(), nan=0.0, posinf=0.0).max())
        if value > best[i]:
            best[i], where[i] = value, name

    def hook(i: int, name: str | None):
        def seen(module, args, output) -> None:  # returns None: the forward is not changed
            if name is None:
                watch(i, "residual", output)
            else:
                watch(i, f"{name} input", args)
                watch(i, f"{name} output", output)

        return seen

    handles = []
    try:
        for i, layer in enumerate(decoder_layers(model)):
            best.append(0.0)
            where.append("")
            handles.append(layer.register_forward_hook(hook(i, None)))
            for name, module in layer.named_modules():
                if isinstance(module, nn.Linear):
                    handles.append(module.register_forward_hook(hook(i, name)))
        yield
    finally:
        for h in handles:
            h.remove()
        if best:
            top = max(range(len(best)), key=best.__getitem__)
            out.update({"absmax": best[top], "where": f"layer {top} {where[top]}",
                        "per_layer": [round(b, 4) for b in best]})


__all__ = ["decoder_layers", "final_norm", "unit_inputs", "activation_range"]
