"""The PyTorch reference of dynamic and static structured pruning on a transformers causal LM.

``Pruner`` runs one lifecycle per request on a Gemma 3 / Llama / Qwen 2 model, the one the ONNX
graphs mirror (``graph/pruned.py``):

- **record** (prefill only): each layer's input residual (the probe ranks tokens by it) and its
  normed inputs to attention and MLP; AAPP reads its risk gate at the gate layer's input;
- **decide** (prefill only): at each layer's attention and MLP, the method chooses the kept query
  heads and MLP channels, per batch row (a row is a request);
- **apply** (prefill and every decode step): the pruned units' inputs to o_proj / down_proj are
  zeroed (``recorder.unit_inputs``), which is exactly what removing the q rows and o columns
  (heads) or the gate/up rows and down columns (channels) computes. The decisions are held until
  ``new_request``, so the KV cache stays consistent.

The prefill ends when the model's first forward returns (a forward hook), not inside a layer.
``aapp-adaptive`` has two paths for a request its risk gate flags (``PruneConfig.adaptive_path``). The
default, "dense-prefill", screens nothing: a flagged row computes its prefill with every unit, picks
its decode's units from its own unit inputs (``Pruner.decide_from_activations``) and decodes dense only
when the dense prefill's first token is the refusal's (``RiskAdaptive``); the graphs run it through the
split prefill. "restart", with a confirmation gate for its sparsity (``Protection.confirm``), screens
each prefill first: the same prefill runs under AAPP (no KV cache kept), the gate reads the final
residual stream at the last prompt token, and the real prefill then decides with both gates known (a
row runs at the low sparsity when both flag it). The graphs do the same in one pass (the level's AAPP
prefill emits both gates; the runtime starts a flagged request again dense), so the screening prefill
is counted in the flagged rows' FLOPs.

Methods (``METHODS``), all at the same number of kept units per layer (``probe.kept_counts``), are
small classes with ``heads`` and ``channels`` decisions: ``ProbePruning`` (``pp``: probe + history
fusion + PPsp, formulas in ``probe.py``), ``AlignmentAware`` (``aapp``: PP with the protected set
forced in by the risk gate), ``StaticUnits`` (``wanda-sp``, ``flap``, ``random``: ``static.py``; and
``ablate``, everything but a given set, for causal checks). Family differences (the MLP's norm, q/k
norms, soft-capping, sliding windows, widths) come from ``families.ModelSpec``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from . import probe as pp
from .errors import InputError
from .families import ModelSpec, spec_of_model
from .choices import (ADAPTIVE_LOW_SPARSITY, ADAPTIVE_PATHS, ADAPTIVE_THRESHOLD, CONFIRM_THRESHOLD,  # noqa: F401
                      DEFAULT_ADAPTIVE_PATH, METHODS, SKIP_FIRST, check_sparsity)  # ADAPTIVE_*, SKIP_FIRST: re-exported
from .placement import weight_in_place
from .recorder import decoder_layers, final_norm, unit_inputs
from .static import static_units



def mlp_norm_name(spec: ModelSpec) -> str:
    """The norm whose input is the residual feeding the MLP."""
    return "pre_feedforward_layernorm" if spec.sandwich_norms else "post_attention_layernorm"


def unit_counts(model: nn.Module) -> tuple[list[int], list[int]]:
    """Query heads and MLP channels per layer."""
    spec = spec_of_model(model)
    return [l.num_heads for l in spec.layers], [l.intermediate_size for l in spec.layers]


@dataclass
class LayerStats:
    """Calibration statistics of one layer (tensors on CPU, float32)."""

    hist_attn: torch.Tensor  # [T_max, heads*D] running mean of X^2 at the o_proj input, per position
    hist_mlp: torch.Tensor  # [T_max, I] same at the down_proj input
    sq_attn: torch.Tensor | None = None  # [heads*D] mean X^2 over all tokens (Wanda-sp)
    sq_mlp: torch.Tensor | None = None
    var_attn: torch.Tensor | None = None  # [heads*D] variance over tokens (FLAP fluctuation)
    var_mlp: torch.Tensor | None = None


@dataclass
class Protection:
    """AAPP's offline alignment circuit: protected units per layer (best first) and the risk gate."""

    heads: list[torch.Tensor]  # per layer, LongTensor of protected head ids ordered by score
    channels: list[torch.Tensor]
    direction: torch.Tensor  # [hidden] unit refusal direction at the gate layer's input
    gate_layer: int
    threshold: float
    temperature: float
    confirm: dict[float, pp.GateParams] = field(default_factory=dict)  # aapp-adaptive: per sparsity (rounded to 4)
    refusal_token: int | None = None  # the refusal's first token (the causal check's): the dense-prefill path reads it
    adaptive_threshold: float = ADAPTIVE_THRESHOLD  # aapp-adaptive's, from the calibration (``probe.routing_threshold``)


@dataclass
class PruneConfig:
    method: str = "dense"
    sparsity: float = 0.0
    skip_first: int = SKIP_FIRST
    token_ratio: float = 0.5
    probe_max_tokens: int = pp.PROBE_MAX_TOKENS  # probe budget for long prompts (``probe.probe_token_count``)
    seed: int = 0
    mlp_multiple: int = 1
    # aapp-adaptive: gate at which a request runs at ... (None: the protection's, the calibration's choice)
    adaptive_threshold: float | None = None
    adaptive_low: float = ADAPTIVE_LOW_SPARSITY  # ... this sparsity instead of ``sparsity``
    # aapp-adaptive: how a flagged request runs (``choices.ADAPTIVE_PATHS``); None: ``DEFAULT_ADAPTIVE_PATH``,
    # or "restart" when ``adaptive_low`` is above 0 (only the restart runs a flagged request pruned)
    adaptive_path: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS + ("ablate",):
            raise InputError(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        check_sparsity(self.sparsity, "sparsity")
        check_sparsity(self.adaptive_low, "adaptive_low")
        if self.adaptive_low > self.sparsity:
            raise InputError(f"adaptive_low={self.adaptive_low} is above sparsity={self.sparsity}: requests that look "
                             "harmful run at the lower sparsity")
        if self.adaptive_path is None:
            self.adaptive_path = DEFAULT_ADAPTIVE_PATH if self.adaptive_low == 0 else "restart"
        if self.adaptive_path not in ADAPTIVE_PATHS:
            raise InputError(f"adaptive_path {self.adaptive_path!r} is not one of {', '.join(ADAPTIVE_PATHS)}")
        if self.adaptive_threshold is not None and (isinstance(self.adaptive_threshold, bool)
                                                    or not 0 <= self.adaptive_threshold <= 1):
            raise InputError(f"adaptive_threshold={self.adaptive_threshold!r} is not a gate value in [0, 1]; pass one "
                             "there, or None for the calibration's")
        if self.adaptive_path == "dense-prefill" and self.adaptive_low != 0:
            raise InputError(f"adaptive_path 'dense-prefill' runs flagged prefills dense; adaptive_low="
                             f"{self.adaptive_low} needs adaptive_path 'restart'")


@dataclass
class RequestLog:
    """What the pruner decided for the current batch (for tests and FLOPs accounting)."""

    heads: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # layer -> per row kept heads
    channels: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    probe_tokens: dict[int, list[int]] = field(default_factory=dict)  # layer -> per row probe size
    gate: list[float] = field(default_factory=list)
    low: list[bool] = field(default_factory=list)  # aapp-adaptive: per row, ran at the low sparsity
    confirm: list[float] = field(default_factory=list)  # aapp-adaptive: per row, the confirmation gate
    screened: bool = False  # aapp-adaptive: an AAPP prefill ran first (its FLOPs count for the low rows)
    dense_prefill: list[bool] = field(default_factory=list)  # aapp-adaptive "dense-prefill": per row, prefill ran dense


@dataclass
class Recorded:
    """What the record step keeps for the decisions of the current prefill."""

    valid: torch.Tensor | None = None  # [B, T] real tokens
    residual: dict[int, torch.Tensor] = field(default_factory=dict)  # layer input
    residual_mlp: dict[int, torch.Tensor] = field(default_factory=dict)  # MLP norm input
    gate: torch.Tensor | None = None  # [B] AAPP's risk gate
    confirm: torch.Tensor | None = None  # [B] aapp-adaptive's confirmation gate (from the screening prefill)

    def valid_for(self, h: torch.Tensor) -> torch.Tensor:
        if self.valid is not None and self.valid.shape == h.shape[:2]:
            return self.valid
        return torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


# -- methods: how the kept units are decided ------------------------------------------------------
class Method:
    """A pruning method's decisions; ``heads``/``channels`` return the kept units per batch row."""

    def __init__(self, pruner: "Pruner") -> None:
        self.p = pruner

    def record_layer_input(self, i: int, h: torch.Tensor) -> None:
        """Called with each layer's input at prefill (AAPP reads its gate here)."""

    def heads(self, i: int, attn: nn.Module, normed: torch.Tensor, pos_emb) -> list[torch.Tensor]:
        raise NotImplementedError

    def channels(self, i: int, mlp: nn.Module, normed: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError


class StaticUnits(Method):
    """Fixed units for every request: Wanda-sp, FLAP, random (``static.py``), or ``ablate``."""

    def __init__(self, pruner: "Pruner", ablate: tuple[list[torch.Tensor], list[torch.Tensor]] | None) -> None:
        super().__init__(pruner)
        self.ablate = ablate
        self.units = {i: self._units(i) for i in range(len(pruner.layers))}

    def _units(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.p
        nh, nc = p.n_heads[i], p.n_channels[i]
        if p.cfg.method == "ablate":
            keep_h, keep_c = torch.ones(nh, dtype=torch.bool), torch.ones(nc, dtype=torch.bool)
            keep_h[self.ablate[0][i]] = False
            keep_c[self.ablate[1][i]] = False
            return torch.nonzero(keep_h).flatten(), torch.nonzero(keep_c).flatten()
        if i < p.cfg.skip_first:
            return torch.arange(nh), torch.arange(nc)
        layer = p.layers[i]
        stats = p.stats[i] if p.stats is not None else None
        w_o, w_down = weight_in_place(layer.self_attn.o_proj), weight_in_place(layer.mlp.down_proj)
        return static_units(p.cfg.method, w_o, w_down, stats, nh,
                            p.keep_heads[i], p.keep_channels[i], i, p.cfg.seed)

    def heads(self, i, attn, normed, pos_emb):
        return [self.units[i][0]] * normed.shape[0]

    def channels(self, i, mlp, normed):
        return [self.units[i][1]] * normed.shape[0]


class ProbePruning(Method):
    """PP: per row, a probe of the top-norm tokens through the layer, its statistic fused with the
    calibration history, PPsp scores, the top units kept."""

    def heads(self, i, attn, normed, pos_emb):
        p = self.p
        w_o = p.score_weights(i, "heads", attn.o_proj, normed.device)
        cos, sin = pos_emb
        keep, sizes = [], []
        own = set(p.dense_rows(normed.shape[0]))
        for b, pos, pos_ids in p.probe_rows(p.recorded.residual[i]):
            if b in own:  # its dense prefill is its probe (Pruner.decide_from_activations)
                keep.append(None)
                sizes.append(0)
                continue
            rb = min(b, cos.shape[0] - 1)  # position embeddings may be shared across the batch
            x = p.probe_attention(i, attn, normed[b, pos], cos[rb, pos], sin[rb, pos], pos_ids)
            s = _fused(pp.probe_statistic(x[None]), p.stats[i].hist_attn, pos_ids)
            keep.append(self.select(pp.head_scores(s, w_o, p.n_heads[i]), p.keep_heads[i], i, b, "heads"))
            sizes.append(len(pos))
        p.log.probe_tokens[i] = sizes
        return keep

    def channels(self, i, mlp, normed):
        p = self.p
        w_down = p.score_weights(i, "channels", mlp.down_proj, normed.device)
        keep = []
        own = set(p.dense_rows(normed.shape[0]))
        for b, pos, pos_ids in p.probe_rows(p.recorded.residual_mlp[i]):
            if b in own:
                keep.append(None)
                continue
            x = normed[b, pos]
            s = _fused(pp.probe_statistic((mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))[None].detach()),
                       p.stats[i].hist_mlp, pos_ids)
            keep.append(self.select(pp.channel_scores(s, w_down), p.keep_channels[i], i, b, "channels"))
        return keep

    def select(self, scores: torch.Tensor, n_keep: int, i: int, b: int, kind: str) -> torch.Tensor:
        return pp.top_units(scores, n_keep)


class AlignmentAware(ProbePruning):
    """AAPP: PP whose selection forces the first ``probe.forced_count`` protected units in (none while
    the gate reads below ``GATE_DEAD_ZONE``, all at gate 1, a ramp between); the
    risk gate is read at the gate layer's input (before it: fully open)."""

    def record_layer_input(self, i, h):
        prot = self.p.protection
        if i == prot.gate_layer:
            valid = self.p.recorded.valid_for(h)
            last = valid.long().cumsum(1).argmax(1)
            proj = (h[torch.arange(h.shape[0], device=h.device), last].float() @ prot.direction.to(h.device).float()).cpu()
            self.p.recorded.gate = pp.risk_gate(proj, prot.threshold, prot.temperature)

    def select(self, scores, n_keep, i, b, kind):
        gate_t = self.p.recorded.gate
        gate = float(gate_t[b]) if gate_t is not None else 1.0
        log = self.p.log.gate  # per row; a dense-prefill row may decide after the rows below it
        log.extend([None] * (b + 1 - len(log)))
        if log[b] is None:
            log[b] = gate
        return pp.aapp_select(scores, getattr(self.p.protection, kind)[i], gate, n_keep)


class RiskAdaptive(AlignmentAware):
    """aapp-adaptive: AAPP whose risk gate also sets the request's sparsity. A row whose gate reaches
    the pruner's ``adaptive_threshold`` (the config's, else the calibration's; and, when the sparsity has
    one, whose confirmation gate reaches ``CONFIRM_THRESHOLD``) keeps the counts of ``adaptive_low`` (dense
    by default: every unit, no selection needed), the others AAPP's at ``sparsity``. The risk gate is read before the first pruned
    layer and the confirmation gate by the screening prefill, so every pruned layer knows the row's counts.

    With ``adaptive_path="dense-prefill"`` there is no screening and no confirmation gate. A row whose
    risk gate stays below the threshold is plain AAPP. A row that reaches it computes its prefill with
    every unit, and its dense prefill is its own probe: at each pruned layer, AAPP's selection reads
    the statistic of that layer's real o_proj / down_proj inputs over every prompt token, fused with the
    calibration history (``Pruner.decide_from_activations``), instead of a probe pass. At the end of the
    dense prefill its greedy first token decides: the refusal's first token keeps the row dense for the
    decode (its answer is the dense model's), any other token decodes it with those units over the
    dense prompt's KV cache."""

    def select(self, scores, n_keep, i, b, kind):
        p = self.p
        if p.screening or p.cfg.adaptive_path == "dense-prefill":  # AAPP's units (the decode's, on that path)
            return super().select(scores, n_keep, i, b, kind)
        gate_t, confirm_t = p.recorded.gate, p.recorded.confirm
        gate = float(gate_t[b]) if gate_t is not None else 1.0
        confirm = float(confirm_t[b]) if confirm_t is not None else 1.0
        low = gate >= p.adaptive_threshold and confirm >= CONFIRM_THRESHOLD
        if b >= len(p.log.low):
            p.log.low.append(low)
        if low:
            n_keep = (p.low_heads if kind == "heads" else p.low_channels)[i]
        return super().select(scores, n_keep, i, b, kind)


def _fused(p: torch.Tensor, hist: torch.Tensor, pos_ids: torch.Tensor) -> torch.Tensor:
    hist = hist.to(p.device)
    return pp.fuse_history(p, hist[pos_ids.to(p.device).clamp(max=hist.shape[0] - 1)]).sum(0)


# -- the lifecycle --------------------------------------------------------------------------------
class Pruner:
    """Hooks that prune a model per request. Use as a context manager around generation:

        with Pruner(model, PruneConfig("pp", 0.4), stats) as pruner:
            pruner.new_request()
            model.generate(...)
    """

    def __init__(self, model: nn.Module, config: PruneConfig, stats: list[LayerStats] | None = None,
                 protection: Protection | None = None, ablate: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None):
        self.model, self.cfg, self.stats, self.protection = model, config, stats, protection
        self.spec = spec_of_model(model)
        self.layers = decoder_layers(model)
        self.n_heads = [l.num_heads for l in self.spec.layers]
        self.n_channels = [l.intermediate_size for l in self.spec.layers]
        self.keep_heads = pp.kept_counts(self.n_heads, config.sparsity, config.skip_first)
        self.keep_channels = pp.kept_counts(self.n_channels, config.sparsity, config.skip_first, config.mlp_multiple)
        if config.method in ("pp", "aapp", "aapp-adaptive", "wanda-sp", "flap") and stats is None:
            raise InputError(f"method {config.method!r} needs calibration statistics (run calibration first)")
        if config.method in ("aapp", "aapp-adaptive") and protection is None:
            raise InputError(f"method {config.method!r} needs the protected set (run alignment-circuit identification "
                             "first)")
        # aapp-adaptive's threshold on the risk gate: the config's, else the calibration's
        self.adaptive_threshold = config.adaptive_threshold if config.adaptive_threshold is not None else \
            protection.adaptive_threshold if protection is not None else ADAPTIVE_THRESHOLD
        self.low_heads = pp.kept_counts(self.n_heads, config.adaptive_low, config.skip_first)
        self.low_channels = pp.kept_counts(self.n_channels, config.adaptive_low, config.skip_first, config.mlp_multiple)
        # aapp-adaptive's confirmation gate at this sparsity (None: the risk gate alone decides)
        self.confirm = protection.confirm.get(round(config.sparsity, 4)) \
            if config.method == "aapp-adaptive" and protection is not None and config.adaptive_path == "restart" else None
        self.dense_prefill = config.method == "aapp-adaptive" and config.adaptive_path == "dense-prefill"
        if self.dense_prefill and protection.refusal_token is None:
            raise InputError("adaptive_path 'dense-prefill' needs the refusal's first token in the protected set "
                             "(Protection.refusal_token; circuits from an alignment-circuit run carry it), or "
                             "adaptive_path 'restart'")
        self.screening = False
        self._final: torch.Tensor | None = None
        self.method: Method | None = None
        if config.method in ("pp", "aapp", "aapp-adaptive"):
            self.method = {"pp": ProbePruning, "aapp": AlignmentAware, "aapp-adaptive": RiskAdaptive}[config.method](self)
        elif config.method != "dense":
            self.method = StaticUnits(self, ablate)
        self._hooks: list = []
        self._masking = None
        self._weights: dict[tuple[int, str], torch.Tensor] = {}
        self.finished: list[RequestLog] = []
        self.new_request()

    def request_logs(self) -> list[RequestLog]:
        """Every batch decided since this pruner was made (the current one last, if decided)."""
        return self.finished + ([self.log] if self.log.heads or self.log.channels else [])

    @property
    def active(self) -> bool:
        return self.method is not None and (self.cfg.sparsity > 0 or self.cfg.method == "ablate")

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "Pruner":
        if not self.active:
            return self
        base = getattr(self.model, "model", self.model)
        self._hooks.append(base.register_forward_pre_hook(self._record_request, with_kwargs=True))
        self._hooks.append(base.register_forward_hook(self._prefill_done))
        if self.confirm is not None:
            self._hooks.append(final_norm(self.model).register_forward_pre_hook(self._record_final))
        norm = mlp_norm_name(self.spec)
        for i, layer in enumerate(self.layers):
            self._hooks.append(layer.register_forward_pre_hook(self._record_layer(i), with_kwargs=True))
            self._hooks.append(getattr(layer, norm).register_forward_pre_hook(self._record_mlp(i)))
            self._hooks.append(layer.self_attn.register_forward_pre_hook(self._decide_heads(i), with_kwargs=True))
            self._hooks.append(layer.mlp.register_forward_pre_hook(self._decide_channels(i)))
        self._masking = unit_inputs(self.model, self._apply)
        self._masking.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        if self._masking is not None:
            self._masking.__exit__(None, None, None)
            self._masking = None

    def new_request(self) -> None:
        """Forget the previous decisions: the next forward is a prefill that decides again."""
        if getattr(self, "log", None) is not None and (self.log.heads or self.log.channels):
            self.finished.append(self.log)  # the requests decided so far (FLOPs accounting per request)
        self.decided = False
        self.head_mask: dict[int, torch.Tensor] = {}  # layer -> [B, heads*D]
        self.channel_mask: dict[int, torch.Tensor] = {}  # layer -> [B, I]
        # dense-prefill: (kind, layer) -> (the decode's mask, rows whose prefill runs dense), and the keys whose
        # rows have decided from their own activations
        self._decode_masks: dict[tuple[str, int], tuple[torch.Tensor, list[int]]] = {}
        self._decided_from: set[tuple[str, int]] = set()
        self.log = RequestLog()
        self.recorded = Recorded()

    # -- record ---------------------------------------------------------------------------------
    def _record_request(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if not self.decided and ids is not None:
            self.recorded.valid = mask.bool() if mask is not None else torch.ones(ids.shape, dtype=torch.bool)
            if self.confirm is not None and not self.screening:
                self._screen(module, args, kwargs)
        return None

    def _screen(self, module, args, kwargs) -> None:
        """aapp-adaptive: the prefill under AAPP first (no KV cache kept), for the confirmation gate on
        its final residual; then the decisions start again for the real prefill."""
        from transformers import Cache

        valid = self.recorded.valid
        uncached = {k: v for k, v in kwargs.items() if k != "use_cache" and not isinstance(v, Cache)}
        self.screening = True
        try:
            with torch.no_grad():
                module(*args, **uncached, use_cache=False)
        finally:
            self.screening = False
        self.head_mask, self.channel_mask = {}, {}
        confirm = self.confirm(self._final)
        self.log = RequestLog(confirm=[float(g) for g in confirm], screened=True)
        self.recorded = Recorded(valid=valid, confirm=confirm)

    def _record_final(self, module, args):
        if self.screening:
            h = args[0]
            last = self.recorded.valid_for(h).long().cumsum(1).argmax(1)
            self._final = h[torch.arange(h.shape[0], device=h.device), last].detach()
        return None

    def _prefill_done(self, module, args, output):
        if not self.screening and not self.decided:
            self.decided = True
            if self.dense_prefill:
                self._decode_after_dense_prefill(output)
        return None

    def _flagged_rows(self, n: int) -> list[int]:
        """dense-prefill: the rows whose risk gate reaches the threshold (all rows before the gate is read)."""
        gate = self.recorded.gate
        return [b for b in range(n) if gate is None or float(gate[b]) >= self.adaptive_threshold]

    def dense_rows(self, n: int) -> list[int]:
        """The rows of the current prefill that run every unit and pick their decode's units from their own
        activations (``decide_from_activations``): the flagged rows on the dense-prefill path, else none."""
        return self._flagged_rows(n) if self.dense_prefill and not self.decided else []

    @torch.no_grad()
    def decide_from_activations(self, kind: str, i: int, x: torch.Tensor) -> None:
        """dense-prefill: the decode's units of the rows waiting in ``_decode_masks[kind, i]``, by AAPP's
        selection on PP's scores of their real unit inputs ``x`` (o_proj's or down_proj's, every prompt
        token; the statistic fused with the calibration history per position, as the probe's is)."""
        mask, rows = self._decode_masks[kind, i]
        valid = self.recorded.valid_for(x)
        layer, d = self.layers[i], self.spec.head_dim
        kept = self.log.heads[i] if kind == "heads" else self.log.channels[i]
        for b in rows:
            own = x[b, valid[b]]
            hist = self.stats[i].hist_attn if kind == "heads" else self.stats[i].hist_mlp
            s = _fused(pp.probe_statistic(own[None]), hist, torch.arange(own.shape[0]))
            if kind == "heads":
                scores = pp.head_scores(s, self.score_weights(i, kind, layer.self_attn.o_proj, x.device), self.n_heads[i])
                keep = self.method.select(scores, self.keep_heads[i], i, b, kind)
                mask[b] = 0.0
                mask[b].view(-1, d)[keep] = 1.0
            else:
                scores = pp.channel_scores(s, self.score_weights(i, kind, layer.mlp.down_proj, x.device))
                keep = self.method.select(scores, self.keep_channels[i], i, b, kind)
                mask[b] = 0.0
                mask[b, keep] = 1.0
            kept[b] = keep
        self._decided_from.add((kind, i))

    @torch.no_grad()
    def _decode_after_dense_prefill(self, output) -> None:
        """dense-prefill: the flagged rows whose dense greedy first token is the refusal's stay dense; the
        others decode with the units ``decide_from_activations`` picked."""
        h = output[0] if isinstance(output, tuple) else output.last_hidden_state
        n = h.shape[0]
        flagged = set(self._flagged_rows(n)) if self.log.heads or self.log.channels else set()
        refusing: set[int] = set()
        if flagged:
            last = self.recorded.valid_for(h).long().cumsum(1).argmax(1)
            head = self.model.get_output_embeddings()
            first = head(h[torch.arange(n, device=h.device), last]).argmax(-1).tolist()
            refusing = {b for b in flagged if first[b] == self.protection.refusal_token}
        for (kind, i), (mask, rows) in self._decode_masks.items():
            applied = self.head_mask if kind == "heads" else self.channel_mask
            back = [b for b in rows if b not in refusing]
            if back:
                applied[i][back] = mask[back]
        self._decode_masks, self._decided_from = {}, set()
        self.log.dense_prefill = [b in flagged for b in range(n)]
        self.log.low = [b in refusing for b in range(n)]

    def _record_layer(self, i: int):
        def hook(module, args, kwargs):
            if not self.decided:
                h = kwargs.get("hidden_states", args[0] if args else None).detach()
                self.recorded.residual[i] = h
                self.method.record_layer_input(i, h)
            return None

        return hook

    def _record_mlp(self, i: int):
        def hook(module, args):
            if not self.decided:
                self.recorded.residual_mlp[i] = args[0].detach()
            return None

        return hook

    # -- decide ---------------------------------------------------------------------------------
    def _pruned(self, i: int) -> bool:
        return i >= self.cfg.skip_first or self.cfg.method == "ablate"

    def _decide_heads(self, i: int):
        def hook(module, args, kwargs):
            if self.decided or not self._pruned(i):
                return None
            h = kwargs.get("hidden_states", args[0] if args else None)
            keep = self.method.heads(i, module, h, kwargs.get("position_embeddings"))
            d = self.spec.head_dim
            mask = torch.zeros(h.shape[0], self.n_heads[i] * d, device=h.device)
            for b, heads in enumerate(keep):
                if heads is not None:
                    mask[b].view(-1, d)[heads] = 1.0
            self.head_mask[i], self.log.heads[i] = self._dense_for_now("heads", i, mask, keep), keep
            return None

        return hook

    def _decide_channels(self, i: int):
        def hook(module, args):
            if self.decided or not self._pruned(i):
                return None
            x = args[0]
            keep = self.method.channels(i, module, x)
            mask = torch.zeros(x.shape[0], self.n_channels[i], device=x.device)
            for b, ch in enumerate(keep):
                if ch is not None:
                    mask[b, ch] = 1.0
            self.channel_mask[i], self.log.channels[i] = self._dense_for_now("channels", i, mask, keep), keep
            return None

        return hook

    def _dense_for_now(self, kind: str, i: int, mask: torch.Tensor, keep: list) -> torch.Tensor:
        """The prefill's mask: rows without a decision yet (``None``: dense-prefill rows) run every unit; their
        decode's mask waits in ``_decode_masks`` for ``decide_from_activations``."""
        rows = [b for b, k in enumerate(keep) if k is None]
        if not rows:
            return mask
        self._decode_masks[kind, i] = (mask.clone(), rows)
        mask[rows] = 1.0
        return mask

    # -- apply ----------------------------------------------------------------------------------
    def _apply(self, i: int, kind: str, x: torch.Tensor) -> torch.Tensor | None:
        key = ("heads" if kind == "attn" else "channels", i)
        if not self.decided and key in self._decode_masks and key not in self._decided_from:
            self.decide_from_activations(*key, x)
        m = (self.head_mask if kind == "attn" else self.channel_mask).get(i)
        return None if m is None else x * m[:, None, :].to(device=x.device, dtype=x.dtype)

    # -- shared pieces of the probe methods -------------------------------------------------------
    def probe_rows(self, h: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Per batch row: row index, probe positions (indices into T), position ids of those."""
        valid = self.recorded.valid_for(h)
        for b in range(h.shape[0]):
            pos = pp.probe_positions(h[b:b + 1], valid[b:b + 1], self.cfg.token_ratio,
                                     max_tokens=self.cfg.probe_max_tokens)
            yield b, pos, (valid[b].long().cumsum(0) - 1)[pos]

    def score_weights(self, i: int, kind: str, proj: nn.Module, device: torch.device) -> torch.Tensor:
        """The weights' part of PPsp's scores (``probe.head_score_weights`` / ``channel_score_weights``) of
        ``proj`` (o_proj / down_proj) on ``device``, once per layer; offloaded weights are read from their hook."""
        key = (i, kind)
        if key not in self._weights:
            fn = pp.head_score_weights if kind == "heads" else pp.channel_score_weights
            self._weights[key] = fn(weight_in_place(proj)).to(device)
        return self._weights[key]

    @torch.no_grad()
    def probe_attention(self, i: int, attn: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                        pos_ids: torch.Tensor) -> torch.Tensor:
        """The o_proj input for the probe tokens only: q/k/v, RoPE at their original positions,
        causal (and sliding-window) attention among the probe tokens. Returns [n, heads*D]."""
        spec, d, n = self.spec, self.spec.head_dim, x.shape[0]
        q = attn.q_proj(x).view(n, -1, d).transpose(0, 1)
        k = attn.k_proj(x).view(n, -1, d).transpose(0, 1)
        v = attn.v_proj(x).view(n, -1, d).transpose(0, 1)
        if spec.qk_norm:
            q, k = attn.q_norm(q), attn.k_norm(k)
        q = q * cos[None] + _rotate_half(q) * sin[None]
        k = k * cos[None] + _rotate_half(k) * sin[None]
        groups = q.shape[0] // k.shape[0]
        k, v = k.repeat_interleave(groups, 0), v.repeat_interleave(groups, 0)
        scores = q @ k.transpose(1, 2) * spec.attention_scale
        if spec.attn_logit_softcapping:
            scores = torch.tanh(scores / spec.attn_logit_softcapping) * spec.attn_logit_softcapping
        allowed = pos_ids[None, :] <= pos_ids[:, None]
        window = spec.layers[i].sliding_window
        if window:
            allowed &= pos_ids[:, None] - pos_ids[None, :] < window
        scores = scores.masked_fill(~allowed, float("-inf"))
        out = torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v  # [heads, n, D]
        return out.transpose(0, 1).reshape(n, -1)


__all__ = ["METHODS", "Pruner", "PruneConfig", "Protection", "LayerStats", "RequestLog", "Method", "StaticUnits",
           "ProbePruning", "AlignmentAware", "decoder_layers", "unit_counts", "mlp_norm_name"]
