"""Static structured pruning baselines: Wanda-sp, FLAP and random, fixed kept units per layer.

Scores are functions of one layer's weights and its calibration statistics (``pruning.LayerStats``);
the kept units are the top ones (``probe.top_units``) at ``probe.kept_counts``. Used by the PyTorch
reference (``pruning.Pruner``) and by ``aapp-export --static``, which writes an ordinary, smaller
dense model with these units (``graph.decoder.LayerUnits``).

- ``wanda-sp``: ``sum_out |W_out,k| * ||X_k||_2`` (``||X_k||`` from the mean of ``X^2``), heads summed;
- ``flap``: the fluctuation ``Var(X_k) * ||W[:, k]||^2``, heads summed;
- ``random``: seeded uniform scores (``seed * 1000 + layer``).
"""

from __future__ import annotations

import torch

from . import probe as pp
from .choices import STATIC_METHODS  # noqa: F401 (re-exported)



def static_scores(method: str, w_o: torch.Tensor, w_down: torch.Tensor, stats, n_heads: int, layer: int,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Head scores ``[n_heads]`` and channel scores ``[I]`` of one layer (``w_o`` ``[H, heads*D]``,
    ``w_down`` ``[H, I]`` as in the checkpoint)."""
    nc = w_down.shape[1]
    if method == "random":
        g = torch.Generator().manual_seed(seed * 1000 + layer)
        return torch.rand(n_heads, generator=g), torch.rand(nc, generator=g)
    w_o, w_down = w_o.detach().float(), w_down.detach().float()
    if method == "wanda-sp":
        return ((w_o.abs() * stats.sq_attn.sqrt()[None]).sum(0).view(n_heads, -1).sum(1),
                (w_down.abs() * stats.sq_mlp.sqrt()[None]).sum(0))
    if method == "flap":
        return ((stats.var_attn * w_o.pow(2).sum(0)).view(n_heads, -1).sum(1),
                stats.var_mlp * w_down.pow(2).sum(0))
    raise ValueError(f"static method {method!r} is not one of {', '.join(STATIC_METHODS)}")


def static_units(method: str, w_o: torch.Tensor, w_down: torch.Tensor, stats, n_heads: int, keep_heads: int,
                 keep_channels: int, layer: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept heads and channels of one layer, ascending."""
    heads, channels = static_scores(method, w_o, w_down, stats, n_heads, layer, seed)
    return pp.top_units(heads, keep_heads), pp.top_units(channels, keep_channels)


__all__ = ["STATIC_METHODS", "static_scores", "static_units"]
