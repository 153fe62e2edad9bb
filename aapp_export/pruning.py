"""The PyTorch reference of dynamic and static structured pruning on a transformers causal LM.

``Pruner`` attaches hooks to a Gemma 3 / Llama / Qwen 2 model (the module names are the same in
transformers for the three families). At the first forward of a request (the prefill) each layer
decides which query heads and MLP channels it keeps, per batch row (a row is a request), and the
decision is held for the decode steps, so the KV cache stays consistent. Pruned units are removed
by zeroing their inputs to o_proj / down_proj, which is exactly what removing the q rows and o
columns (heads) or the gate/up rows and down columns (channels) computes.

Methods, all at the same number of kept units per layer (``probe.kept_counts``):
``dense``, ``pp`` (probe + history fusion + PPsp), ``aapp`` (PP with the protected set enforced
through the risk gate), ``wanda-sp`` and ``flap`` (static, from calibration statistics),
``random`` (static, seeded), and ``ablate`` (everything but a given set, for causal checks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from . import probe as pp
from .errors import InputError
from .static import static_units

METHODS = ("dense", "pp", "aapp", "wanda-sp", "flap", "random")


def mlp_norm_name(model: nn.Module) -> str:
    """The norm whose input is the residual feeding the MLP (family difference, in one place)."""
    layer = decoder_layers(model)[0]
    return "pre_feedforward_layernorm" if hasattr(layer, "pre_feedforward_layernorm") else "post_attention_layernorm"


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    base = getattr(model, "model", model)
    base = getattr(base, "language_model", base)
    return base.layers


def unit_counts(model: nn.Module) -> tuple[list[int], list[int]]:
    """Query heads and MLP channels per layer."""
    heads, channels = [], []
    for layer in decoder_layers(model):
        attn = layer.self_attn
        heads.append(attn.o_proj.in_features // attn.head_dim)
        channels.append(layer.mlp.down_proj.in_features)
    return heads, channels


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


@dataclass
class PruneConfig:
    method: str = "dense"
    sparsity: float = 0.0
    skip_first: int = 3
    token_ratio: float = 0.5
    seed: int = 0
    mlp_multiple: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS + ("ablate",):
            raise InputError(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        if not 0 <= self.sparsity <= 0.9:
            raise InputError(f"sparsity={self.sparsity} is outside [0, 0.9]: pass a fraction such as 0.4")


@dataclass
class RequestLog:
    """What the pruner decided for the current batch (for tests and FLOPs accounting)."""

    heads: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # layer -> per row kept heads
    channels: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    probe_tokens: dict[int, list[int]] = field(default_factory=dict)  # layer -> per row probe size
    gate: list[float] = field(default_factory=list)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Pruner:
    """Hooks that prune a model per request. Use as a context manager around generation:

        with Pruner(model, PruneConfig("pp", 0.4), stats) as pruner:
            pruner.new_request()
            model.generate(...)
    """

    def __init__(self, model: nn.Module, config: PruneConfig, stats: list[LayerStats] | None = None,
                 protection: Protection | None = None, ablate: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None):
        self.model, self.cfg, self.stats, self.protection = model, config, stats, protection
        self.layers = decoder_layers(model)
        self.n_heads, self.n_channels = unit_counts(model)
        self.keep_heads = pp.kept_counts(self.n_heads, config.sparsity, config.skip_first)
        self.keep_channels = pp.kept_counts(self.n_channels, config.sparsity, config.skip_first, config.mlp_multiple)
        if config.method in ("pp", "aapp", "wanda-sp", "flap") and stats is None:
            raise InputError(f"method {config.method!r} needs calibration statistics (run calibration first)")
        if config.method == "aapp" and protection is None:
            raise InputError("method 'aapp' needs the protected set (run alignment-circuit identification first)")
        self.mlp_norm = mlp_norm_name(model)
        self.ablate = ablate
        self._handles: list = []
        self._static: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.head_mask: dict[int, torch.Tensor] = {}  # layer -> [B, heads*D]
        self.channel_mask: dict[int, torch.Tensor] = {}  # layer -> [B, I]
        self.decided = False
        self.log = RequestLog()
        self._valid: torch.Tensor | None = None
        self._gate: torch.Tensor | None = None
        self._residual: dict[int, torch.Tensor] = {}
        self._weights: dict[tuple[int, str], torch.Tensor] = {}
        if config.method in ("wanda-sp", "flap", "random", "ablate"):
            self._static = {i: self._static_units(i) for i in range(len(self.layers))}

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "Pruner":
        if self.cfg.method == "dense" or self.cfg.sparsity == 0 and self.cfg.method != "ablate":
            return self
        base = getattr(self.model, "model", self.model)
        self._handles.append(base.register_forward_pre_hook(self._model_pre, with_kwargs=True))
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_pre_hook(self._layer_pre(i), with_kwargs=True))
            self._handles.append(layer.self_attn.register_forward_pre_hook(self._attn_pre(i), with_kwargs=True))
            self._handles.append(getattr(layer, self.mlp_norm).register_forward_pre_hook(self._mlp_norm_pre(i)))
            self._handles.append(layer.mlp.register_forward_pre_hook(self._mlp_pre(i)))
            self._handles.append(layer.self_attn.o_proj.register_forward_pre_hook(self._mask_pre(self.head_mask, i)))
            self._handles.append(layer.mlp.down_proj.register_forward_pre_hook(self._mask_pre(self.channel_mask, i)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def new_request(self) -> None:
        """Forget the previous decisions: the next forward is a prefill that decides again."""
        self.decided = False
        self.head_mask.clear()
        self.channel_mask.clear()
        self.log = RequestLog()
        self._gate = None

    # -- hooks ----------------------------------------------------------------------------------
    def _model_pre(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if not self.decided and ids is not None:
            self._valid = mask.bool() if mask is not None else torch.ones(ids.shape, dtype=torch.bool)
        return None

    def _layer_pre(self, i: int):
        def hook(module, args, kwargs):
            if self.decided:
                return None
            h = kwargs.get("hidden_states", args[0] if args else None)
            self._residual[i] = h.detach()
            if self.cfg.method == "aapp" and i == self.protection.gate_layer:
                self._gate = self._risk_gate(h)
            return None

        return hook

    def _mlp_norm_pre(self, i: int):
        def hook(module, args):
            if not self.decided:
                self._residual[(i, "mlp")] = args[0].detach()
            return None

        return hook

    def _mask_pre(self, masks: dict[int, torch.Tensor], i: int):
        def hook(module, args):
            m = masks.get(i)
            if m is None:
                return None
            x = args[0]
            return (x * m[:, None, :].to(x.dtype),)

        return hook

    def _attn_pre(self, i: int):
        def hook(module, args, kwargs):
            if self.decided or i < self.cfg.skip_first and self.cfg.method != "ablate":
                return None
            h = kwargs.get("hidden_states", args[0] if args else None)
            keep = self._decide_heads(i, module, h, kwargs.get("position_embeddings"))
            if keep is not None:
                d = module.head_dim
                mask = torch.zeros(h.shape[0], self.n_heads[i] * d)
                for b, heads in enumerate(keep):
                    mask[b].view(-1, d)[heads] = 1.0
                self.head_mask[i] = mask
                self.log.heads[i] = keep
            return None

        return hook

    def _mlp_pre(self, i: int):
        def hook(module, args):
            if self.decided or i < self.cfg.skip_first and self.cfg.method != "ablate":
                if i == len(self.layers) - 1 and not self.decided:
                    self.decided = True
                return None
            x = args[0]
            keep = self._decide_channels(i, module, x)
            if keep is not None:
                mask = torch.zeros(x.shape[0], self.n_channels[i])
                for b, ch in enumerate(keep):
                    mask[b, ch] = 1.0
                self.channel_mask[i] = mask
                self.log.channels[i] = keep
            if i == len(self.layers) - 1:
                self.decided = True
            return None

        return hook

    # -- decisions ------------------------------------------------------------------------------
    def _rows(self, h: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Per batch row: row index, probe positions (indices into T), position ids of those."""
        valid = self._valid if self._valid is not None and self._valid.shape == h.shape[:2] else \
            torch.ones(h.shape[:2], dtype=torch.bool)
        for b in range(h.shape[0]):
            pos = pp.probe_positions(h[b:b + 1], valid[b:b + 1], self.cfg.token_ratio)
            pos_ids = (valid[b].long().cumsum(0) - 1)[pos]
            yield b, pos, pos_ids

    def _decide_heads(self, i: int, attn: nn.Module, normed: torch.Tensor, pos_emb) -> list[torch.Tensor] | None:
        method, n_keep = self.cfg.method, self.keep_heads[i]
        if method in self._static_methods():
            return [self._static[i][0]] * normed.shape[0]
        residual = self._residual[i]
        keep, sizes = [], []
        w_o = self._score_weights(i, "heads", attn.o_proj.weight)
        cos, sin = pos_emb
        for b, pos, pos_ids in self._rows(residual):
            rb = min(b, cos.shape[0] - 1)  # position embeddings may be shared across the batch
            x = self._probe_attention(attn, normed[b, pos], cos[rb, pos], sin[rb, pos], pos_ids)
            s = self._fused_scores(pp.probe_statistic(x[None]), self.stats[i].hist_attn, pos_ids)
            scores = pp.head_scores(s, w_o, self.n_heads[i])
            keep.append(self._select(scores, n_keep, i, b, "heads"))
            sizes.append(len(pos))
        self.log.probe_tokens[i] = sizes
        return keep

    def _decide_channels(self, i: int, mlp: nn.Module, normed: torch.Tensor) -> list[torch.Tensor] | None:
        method, n_keep = self.cfg.method, self.keep_channels[i]
        if method in self._static_methods():
            return [self._static[i][1]] * normed.shape[0]
        residual = self._residual[(i, "mlp")]
        keep = []
        w_down = self._score_weights(i, "channels", mlp.down_proj.weight)
        for b, pos, pos_ids in self._rows(residual):
            p = normed[b, pos]
            x = mlp.act_fn(mlp.gate_proj(p)) * mlp.up_proj(p)
            s = self._fused_scores(pp.probe_statistic(x[None].detach()), self.stats[i].hist_mlp, pos_ids)
            keep.append(self._select(pp.channel_scores(s, w_down), n_keep, i, b, "channels"))
        return keep

    def _select(self, scores: torch.Tensor, n_keep: int, i: int, b: int, kind: str) -> torch.Tensor:
        if self.cfg.method == "aapp":
            protected = getattr(self.protection, kind)[i]
            gate = float(self._gate[b]) if self._gate is not None else 1.0
            if b >= len(self.log.gate):
                self.log.gate.append(gate)
            return pp.aapp_select(scores, protected, gate, n_keep)
        return pp.top_units(scores, n_keep)

    def _score_weights(self, i: int, kind: str, w: torch.Tensor) -> torch.Tensor:
        """The weights' part of PPsp's scores (``probe.head_score_weights`` / ``channel_score_weights``), once per layer."""
        key = (i, kind)
        if key not in self._weights:
            fn = pp.head_score_weights if kind == "heads" else pp.channel_score_weights
            self._weights[key] = fn(w.detach())
        return self._weights[key]

    @staticmethod
    def _fused_scores(p: torch.Tensor, hist: torch.Tensor, pos_ids: torch.Tensor) -> torch.Tensor:
        h = hist[pos_ids.clamp(max=hist.shape[0] - 1)]
        return pp.fuse_history(p, h).sum(0)

    @torch.no_grad()
    def _probe_attention(self, attn: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         pos_ids: torch.Tensor) -> torch.Tensor:
        """The o_proj input for the probe tokens only: q/k/v, RoPE at their original positions,
        causal (and sliding-window) attention among the probe tokens. Returns [n, heads*D]."""
        d = attn.head_dim
        n = x.shape[0]
        q = attn.q_proj(x).view(n, -1, d).transpose(0, 1)
        k = attn.k_proj(x).view(n, -1, d).transpose(0, 1)
        v = attn.v_proj(x).view(n, -1, d).transpose(0, 1)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        q = q * cos[None] + _rotate_half(q) * sin[None]
        k = k * cos[None] + _rotate_half(k) * sin[None]
        groups = q.shape[0] // k.shape[0]
        k, v = k.repeat_interleave(groups, 0), v.repeat_interleave(groups, 0)
        scores = q @ k.transpose(1, 2) * attn.scaling
        cap = getattr(attn, "attn_logit_softcapping", None)
        if cap:
            scores = torch.tanh(scores / cap) * cap
        allowed = pos_ids[None, :] <= pos_ids[:, None]
        window = getattr(attn, "sliding_window", None)
        if window:
            allowed &= pos_ids[:, None] - pos_ids[None, :] < window
        scores = scores.masked_fill(~allowed, float("-inf"))
        out = torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v  # [heads, n, D]
        return out.transpose(0, 1).reshape(n, -1)

    def _risk_gate(self, h: torch.Tensor) -> torch.Tensor:
        """Per row: sigmoid of the last real token's projection on the refusal direction."""
        prot = self.protection
        valid = self._valid if self._valid is not None and self._valid.shape == h.shape[:2] else \
            torch.ones(h.shape[:2], dtype=torch.bool)
        last = valid.long().cumsum(1).argmax(1)
        proj = h[torch.arange(h.shape[0]), last].float() @ prot.direction.float()
        return pp.risk_gate(proj, prot.threshold, prot.temperature)

    # -- static methods -------------------------------------------------------------------------
    def _static_methods(self) -> tuple[str, ...]:
        return ("wanda-sp", "flap", "random", "ablate")

    def _static_units(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.layers[i]
        nh, nc = self.n_heads[i], self.n_channels[i]
        if self.cfg.method == "ablate":
            heads_off, ch_off = self.ablate[0][i], self.ablate[1][i]
            keep_h = torch.ones(nh, dtype=torch.bool)
            keep_h[heads_off] = False
            keep_c = torch.ones(nc, dtype=torch.bool)
            keep_c[ch_off] = False
            return torch.nonzero(keep_h).flatten(), torch.nonzero(keep_c).flatten()
        if i < self.cfg.skip_first:
            return torch.arange(nh), torch.arange(nc)
        stats = self.stats[i] if self.stats is not None else None
        return static_units(self.cfg.method, layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight, stats, nh,
                            self.keep_heads[i], self.keep_channels[i], i, self.cfg.seed)
