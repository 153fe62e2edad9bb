"""Probe Pruning's decisions as pure tensor functions (Le et al., ICLR 2025; DESIGN.md formulas).

Everything here is a function of plain tensors, so the PyTorch reference (``pruning.py``) and the
ONNX graphs built later make the same decisions from the same numbers:

- ``probe_positions``: top ``ceil(token_ratio*T)`` positions by residual norm, at most ``max_tokens``
  (the long-prompt budget, ``probe_token_count``) and at least 2; position 0 forced in when T <= 10;
- ``probe_rows``: top ``ceil(batch_ratio*B)`` batch rows;
- ``fuse_history``: ``a = P/(P+H+eps)``, ``F = a*P + (1-a)*H``;
- ``channel_scores`` / ``head_scores``: PPsp importance from the fused statistic and the output
  weights (down_proj columns, o_proj columns grouped by head), factored so that the weights enter
  through a per-unit constant computed once (``channel_score_weights``, ``head_score_weights``):
  ``||S_k W[:, k]^2||_2 = S_k sqrt(sum_i W_ik^4)`` since ``S_k >= 0``;
- ``kept_counts``: units kept per layer for a model-wide sparsity with the first layers dense;
- ``top_units`` and ``aapp_select``: which units to keep, PP alone or with the protected set
  enforced through the risk gate (same number kept either way; ``forced_count`` protected units,
  none while the gate reads below ``choices.GATE_DEAD_ZONE``, all of them at gate 1, a ramp between);
- ``risk_gate`` and ``fit_gate``: a sigmoid on a projection, its threshold and temperature fitted on
  the calibration prompts (AAPP's risk gate and aapp-adaptive's confirmation gate);
- ``routing_threshold``: aapp-adaptive's threshold on a fitted gate, read at the midpoint of held-out
  projections' class means (never below ``choices.ADAPTIVE_THRESHOLD``).

The ONNX graphs emit the same formulas op for op (``aapp_export/graph/probe_ops.py``), and the tests
compare the two on hand-made tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .choices import ADAPTIVE_THRESHOLD, GATE_DEAD_ZONE, PROBE_MAX_TOKENS, SKIP_FIRST, check_sparsity  # noqa: F401 (PROBE_MAX_TOKENS: re-exported)

EPS = 1e-6


def probe_positions(residual: torch.Tensor, valid: torch.Tensor | None = None, token_ratio: float = 0.5,
                    min_tokens: int = 2, force_first_below: int = 10,
                    max_tokens: int = PROBE_MAX_TOKENS) -> torch.Tensor:
    """Sorted positions of the probe tokens.

    ``residual``: [B, T, H] residual stream before the norm; ``valid``: [B, T] bool (padding False).
    Importance of position t is ``||r[:, t]||_2`` with ``r[b, t] = ||h[b, t, :]||_2``.
    """
    r = residual.float().norm(dim=-1)  # [B, T]
    if valid is not None:
        r = r * valid
    importance = r.norm(dim=0)  # [T]
    n_valid = int(valid.any(0).sum()) if valid is not None else residual.shape[1]
    k = probe_token_count(n_valid, token_ratio, min_tokens, max_tokens)
    if valid is not None:
        importance = importance.masked_fill(~valid.any(0), -1.0)
    if n_valid <= force_first_below:
        first = int(torch.nonzero(valid.any(0))[0]) if valid is not None else 0
        importance = importance.clone()
        importance[first] = float("inf")
    return torch.topk(importance, k).indices.sort().values


def probe_token_count(n_tokens: int, token_ratio: float = 0.5, min_tokens: int = 2,
                      max_tokens: int = PROBE_MAX_TOKENS) -> int:
    """Probe size for a prompt of ``n_tokens``: ``ceil(token_ratio * n)``, at most ``max_tokens`` (0: no
    budget), at least ``min_tokens``, at most n.

    The budget keeps the probe's cost flat for long prompts: at batch 1 the probe runs its tokens
    through every unit of a pruned layer, so half of a 512-token prompt costs half a dense layer before
    the pruned pass starts. Prompts up to ``2 * max_tokens`` tokens are probed exactly as PP's default.
    """
    k = math.ceil(token_ratio * n_tokens)
    if max_tokens:
        k = min(k, max_tokens)
    return min(n_tokens, max(min_tokens, k))


def probe_rows(residual: torch.Tensor, valid: torch.Tensor | None = None, batch_ratio: float = 0.05) -> torch.Tensor:
    """Sorted batch rows of the probe: top ``ceil(batch_ratio*B)`` by ``||r[b, :]||_2``."""
    r = residual.float().norm(dim=-1)
    if valid is not None:
        r = r * valid
    k = max(1, math.ceil(batch_ratio * residual.shape[0]))
    return torch.topk(r.norm(dim=1), k).indices.sort().values


def probe_statistic(x: torch.Tensor) -> torch.Tensor:
    """``P[t, k] = ||X[:, t, k]||^2 / n_probe_rows`` from probe activations X [n, t, K]."""
    return x.float().pow(2).sum(0) / x.shape[0]


def fuse_history(p: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """History fusion: ``a = P/(P+H+1e-6)``, ``F = a*P + (1-a)*H`` (element-wise)."""
    a = p / (p + h + EPS)
    return a * p + (1 - a) * h


def channel_score_weights(w_down: torch.Tensor) -> torch.Tensor:
    """``sqrt(sum_i W_down[i, k]^4)`` per channel k (W_down: [hidden, K]), the weights' part of the channel score."""
    return w_down.float().pow(4).sum(0).sqrt()


def channel_scores(s: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """PPsp MLP channel importance ``I_k = || S_k * W_down[:, k]^2 ||_2 = S_k * weights_k``
    (``weights = channel_score_weights(W_down)``; ``S >= 0``)."""
    return s * weights


def head_score_weights(w_o: torch.Tensor) -> torch.Tensor:
    """``sum_i W_o[i, k]^4`` per o_proj input channel k (W_o: [hidden, heads*D]), the weights' part of the head score."""
    return w_o.float().pow(4).sum(0)


def head_scores(s: torch.Tensor, weights: torch.Tensor, num_heads: int) -> torch.Tensor:
    """PPsp head importance ``I_h = sqrt(sum_i sum_{k in h} (S_k * W_o[i, k]^2)^2) = sqrt(sum_{k in h} S_k^2 weights_k)``
    (``weights = head_score_weights(W_o)``)."""
    return (s.pow(2) * weights).reshape(num_heads, -1).sum(1).sqrt()


def kept_counts(units: list[int], sparsity: float, skip_first: int = SKIP_FIRST, multiple: int = 1) -> list[int]:
    """Units kept per layer so that the model-wide fraction pruned equals ``sparsity``.

    The first ``skip_first`` layers stay dense; the ratio on the others is rescaled so the average
    over all layers is the target (capped at pruning everything but one unit). ``multiple`` rounds
    kept counts (e.g. 64 for tensor-core friendly MLP widths on large models).
    """
    check_sparsity(sparsity, "sparsity")
    total = sum(units)
    prunable = sum(units[skip_first:])
    if prunable == 0 or sparsity == 0:
        return list(units)
    ratio = min(sparsity * total / prunable, 1.0)
    kept = []
    for i, n in enumerate(units):
        if i < skip_first:
            kept.append(n)
            continue
        k = max(1, round(n * (1 - ratio)))
        if multiple > 1 and n >= multiple:
            k = max(multiple, int(round(k / multiple)) * multiple)
        kept.append(min(n, k))
    return kept


def top_units(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Indices of the ``n_keep`` highest scores, sorted (ties broken by lower index)."""
    order = torch.argsort(scores, descending=True, stable=True)
    return order[:n_keep].sort().values


def aapp_select(scores: torch.Tensor, protected: torch.Tensor, gate: float, n_keep: int) -> torch.Tensor:
    """AAPP: enforce the first ``forced_count`` protected units (none while the gate reads below
    ``GATE_DEAD_ZONE``, all at gate 1; ``protected`` is ordered by alignment score, best first), fill
    the rest of ``n_keep`` by PP ``scores``.

    The number kept is ``n_keep`` whatever the gate says: compute is matched by construction.
    """
    n_force = forced_count(gate, len(protected), n_keep)
    forced = protected[:n_force]
    rest = scores.clone().float()
    rest[forced] = -float("inf")
    fill = torch.argsort(rest, descending=True, stable=True)[: n_keep - n_force]
    return torch.cat([forced, fill]).sort().values


def forced_count(gate: float, n_protected: int, n_keep: int, dead_zone: float = GATE_DEAD_ZONE) -> int:
    """Protected units AAPP enforces: ``round(clip((gate - dead_zone) / (1 - dead_zone), 0, 1) *
    n_protected)`` (half to even, as ONNX ``Round``), at most ``n_keep``: none while the gate reads
    below ``dead_zone``, all at gate 1, a linear ramp between (``dead_zone`` 0: ``round(gate *
    n_protected)``, the rule before the zone); computed in float32 op for op like the graph."""
    if not 0.0 <= dead_zone < 1.0:
        raise ValueError(f"dead_zone {dead_zone}: must be in [0, 1)")
    g = torch.tensor(gate, dtype=torch.float32)
    ramp = ((g - torch.tensor(dead_zone, dtype=torch.float32)) / torch.tensor(1.0 - dead_zone, dtype=torch.float32))
    return min(n_keep, int(torch.round(ramp.clamp(0.0, 1.0) * n_protected)))


def risk_gate(projection: torch.Tensor | float, threshold: float, temperature: float) -> torch.Tensor:
    """Sigmoid gate on the projection of the last prompt token onto the refusal direction (1 = looks
    harmful): ``sigmoid((projection - threshold) / max(temperature, 1e-6))``."""
    return torch.sigmoid((torch.as_tensor(projection, dtype=torch.float32) - threshold) / max(temperature, EPS))


def fit_gate(harmful: torch.Tensor, harmless: torch.Tensor) -> tuple[float, float]:
    """Threshold and temperature of a risk gate from calibration projections of each class: the midpoint
    of the class means, and a quarter of the sum of the class standard deviations (plus ``1e-6``)."""
    harmful, harmless = harmful.float(), harmless.float()
    return (float((harmful.mean() + harmless.mean()) / 2),
            float((harmful.std() + harmless.std()) / 4 + EPS))


def routing_threshold(harmful: torch.Tensor, harmless: torch.Tensor, threshold: float, temperature: float,
                      floor: float = ADAPTIVE_THRESHOLD) -> float:
    """aapp-adaptive's threshold on the risk gate ``(threshold, temperature)``: the gate read at the midpoint
    of the class means of held-out projections (``harmful`` / ``harmless``, prompts neither the direction
    nor the gate was fitted on), at least ``floor``. The fitted gate is centred on the scored prompts, the
    ones its direction was fitted on; where held-out harmless prompts sit above that centre (48-63% of
    ``harmless_val`` on two of three seeds), this moves the point from which a request runs dense up to the
    middle of the held-out classes (docs/results/README.md, "the gate's centre")."""
    mid = (harmful.float().mean() + harmless.float().mean()) / 2
    return max(floor, float(risk_gate(mid, threshold, temperature)))


@dataclass(frozen=True)
class GateParams:
    """A risk gate read on one residual vector: unit ``direction`` [hidden], ``threshold``, ``temperature``."""

    direction: torch.Tensor
    threshold: float
    temperature: float

    def __call__(self, residual: torch.Tensor) -> torch.Tensor:
        """Gate of each row of ``residual`` [B, hidden] (float32, on the CPU)."""
        proj = residual.float().cpu() @ self.direction.float().cpu()
        return risk_gate(proj, self.threshold, self.temperature)
