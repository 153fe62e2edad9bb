"""aapp-adaptive's confirmation gate: a second risk gate read at the end of the AAPP prefill.

AAPP's risk gate (``circuits.identify_circuits``) is read at the input of the first pruned layer, so
that every pruned layer knows it; there the residual stream separates harmful from harmless requests
less well than at the end (on the demo seeds, ROC AUC 0.93-0.999 at layer 3 against 0.97-0.999 at the
final residual, ``docs/results/README.md``), and held-out harmless requests it flags run dense for
nothing. aapp-adaptive runs a request dense only when the confirmation gate agrees: the projection of
the final residual stream (the input of the model's last norm) at the last prompt token, computed by
the level's own AAPP prefill, on a refusal direction fitted the same way (harmful minus harmless
calibration means under that prefill, unit norm; threshold and temperature from ``probe.fit_gate``).
It depends on the sparsity (the prefill that computes it is pruned), so it is calibrated per level:
the export's levels (``choices.DEFAULT_LEVELS`` unless ``--levels``).

The graphs emit it from the level's prefill graph (``confirm_gate``) next to ``risk_gate``; a request
both flag starts again on the dense graph, as the reference's screening prefill (``pruning.Pruner``)
decides it.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .evaluate import chat_inputs
from .placement import to_model
from .probe import GateParams, fit_gate
from .pruning import LayerStats, Protection, PruneConfig, Pruner
from .recorder import final_norm


@torch.no_grad()
def final_residuals(model, tokenizer, prompts: list[str], pruner: Pruner, batch_size: int = 16) -> torch.Tensor:
    """[len(prompts), hidden] float32: the final residual stream at each chat-formatted prompt's last
    token, under ``pruner``'s prefill (left padding: the last position is the prompt's)."""
    out: list[torch.Tensor] = []
    hook = final_norm(model).register_forward_pre_hook(lambda m, args: out.append(args[0][:, -1].float().cpu()))
    try:
        with pruner:
            for s in range(0, len(prompts), batch_size):
                pruner.new_request()
                model(**to_model(chat_inputs(tokenizer, prompts[s:s + batch_size]), model), logits_to_keep=1)
    finally:
        hook.remove()
    return torch.cat(out)


def calibrate_confirm_gates(model, tokenizer, harmful: list[str], harmless: list[str], stats: list[LayerStats],
                            protection: Protection, levels: Sequence[float]) -> dict[float, GateParams]:
    """The confirmation gate of each sparsity in ``levels`` from the calibration prompts."""
    gates = {}
    for level in levels:
        level = round(float(level), 4)
        harm, safe = (final_residuals(model, tokenizer, prompts, Pruner(model, PruneConfig("aapp", level), stats,
                                                                        protection))
                      for prompts in (harmful, harmless))
        direction = harm.mean(0) - safe.mean(0)
        direction = direction / direction.norm().clamp(min=1e-8)
        gates[level] = GateParams(direction, *fit_gate(harm @ direction, safe @ direction))
    return gates


__all__ = ["final_residuals", "calibrate_confirm_gates"]
