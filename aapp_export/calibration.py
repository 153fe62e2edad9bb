"""Offline calibration: PP history statistics on general text, and the export-time entry point.

``collect_stats`` runs the dense model over calibration text (batched, padding-aware) and records,
per layer, at the inputs of o_proj and down_proj: the per-position running mean of X^2 (PP's
history H), the mean of X^2 over all tokens (Wanda-sp) and the variance over tokens (FLAP).

``calibrate`` adds the alignment circuits (with their causal check); ``calibrate_checkpoint`` is what
``aapp-export`` calls: tensors to ``calibration.safetensors`` (never pickle), the summary to
``calibration.json`` and into the manifest; ``cached_calibration`` serves ``aapp-eval``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from aapp_runtime.memory import trim_heap

from .choices import DEFAULT_LEVELS
from .errors import InputError
from .placement import load_causal_lm, to_model
from .pruning import LayerStats
from .recorder import activation_range, decoder_layers, unit_inputs

MAX_POSITIONS = 256
CALIBRATION_FILE = "calibration.safetensors"
CACHE_VERSION = 12  # 3: the causal check on a held-out file; 4: scorer chosen by sufficiency; 5: and the budget;
# 6: aapp-adaptive's confirmation gate per level; 7: the pruned-grad-act scorer; 8: choices net of over-refusal; 9: the pruned-grad-opening scorer, choices by strict refusal;
# 10: AAPP's gate dead zone (the causal check's AAPP runs force nothing below choices.GATE_DEAD_ZONE);
# 11: the forcing ramp above the zone, budgets 0.3 and 0.4 in the check; 12: aapp-adaptive's threshold read on the check split


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a prompt/text file (one item a line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompt file {path} does not exist: pass a text file with one prompt a line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"prompt file {path} is not UTF-8 text (byte {exc.start}): pass a text file with one prompt "
                         "a line") from exc
    if "\0" in text:
        raise InputError(f"prompt file {path} holds NUL bytes, so it is binary: pass a text file with one prompt a line")
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    if not lines:
        raise InputError(f"prompt file {path} is empty: it needs at least one prompt a line")
    return lines


def sha256_text(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@torch.no_grad()
def collect_stats(model, tokenizer, texts: list[str], max_positions: int = MAX_POSITIONS,
                  batch_size: int = 16) -> list[LayerStats]:
    """Per-layer activation statistics at the o_proj and down_proj inputs over ``texts``."""
    n = len(decoder_layers(model))
    acc: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    valid_now: list[torch.Tensor] = []

    def record(i: int, kind: str, x: torch.Tensor) -> None:
        x = x.detach().float()  # [B, T, K], on the device of the layer (sums stay there until the end)
        v = valid_now[0].to(x.device)  # [B, T]
        t = min(x.shape[1], max_positions)
        z = {"device": x.device}
        a = acc.setdefault((i, kind), {
            "pos_sum": torch.zeros(max_positions, x.shape[-1], **z), "pos_n": torch.zeros(max_positions, 1, **z),
            "sum": torch.zeros(x.shape[-1], **z), "sq": torch.zeros(x.shape[-1], **z), "n": torch.zeros(1, **z)})
        xv = x * v[..., None]
        a["pos_sum"][:t] += xv[:, :t].pow(2).sum(0)
        a["pos_n"][:t] += v[:, :t].sum(0)[:, None]
        a["sum"] += xv.sum((0, 1))
        a["sq"] += xv.pow(2).sum((0, 1))
        a["n"] += v.sum()

    side = tokenizer.padding_side
    tokenizer.padding_side = "right"  # positions count from the first token, as at inference
    try:
        with unit_inputs(model, record):
            for s in tqdm(range(0, len(texts), batch_size), desc="calibration statistics", unit="batch",
                          disable=None):
                enc = tokenizer(texts[s:s + batch_size], return_tensors="pt", padding=True, truncation=True,
                                max_length=max_positions)
                valid_now[:] = [enc["attention_mask"].float()]
                enc = to_model(enc, model)
                model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], logits_to_keep=1)
    finally:
        tokenizer.padding_side = side
    stats = []
    for i in range(n):
        parts = {}
        for kind in ("attn", "mlp"):
            a = {k: v.cpu() for k, v in acc[(i, kind)].items()}
            pos_mean = a["pos_sum"] / a["pos_n"].clamp(min=1)
            seen = int((a["pos_n"] > 0).sum())
            pos_mean[seen:] = a["sq"] / a["n"]  # positions past the calibration text: overall mean
            mean, sq = a["sum"] / a["n"], a["sq"] / a["n"]
            parts[kind] = (pos_mean, sq, (sq - mean.pow(2)).clamp(min=0))
        stats.append(LayerStats(parts["attn"][0], parts["mlp"][0], parts["attn"][1], parts["mlp"][1],
                                parts["attn"][2], parts["mlp"][2]))
    return stats


def stats_tensors(stats: list[LayerStats]) -> dict[str, torch.Tensor]:
    out = {}
    for i, s in enumerate(stats):
        for name in ("hist_attn", "hist_mlp", "sq_attn", "sq_mlp", "var_attn", "var_mlp"):
            out[f"layers.{i}.{name}"] = getattr(s, name).contiguous()
    return out


def stats_from_tensors(tensors: dict[str, torch.Tensor], n_layers: int) -> list[LayerStats]:
    return [LayerStats(*(tensors[f"layers.{i}.{name}"] for name in
                         ("hist_attn", "hist_mlp", "sq_attn", "sq_mlp", "var_attn", "var_mlp")))
            for i in range(n_layers)]


def load_model(checkpoint: Path, dtype: str = "fp32", device: str = "cpu", max_memory=None):
    """transformers model (eval; weights in ``dtype``: "fp32" or "bf16", placed on ``device`` as
    ``placement.load_causal_lm`` does) and tokenizer of a local checkpoint dir. Statistics and scores
    accumulate in fp32 whatever the weights' dtype."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(checkpoint))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return load_causal_lm(checkpoint, dtype, device, max_memory), tok


def calibrate(model, tokenizer, *, harmful: Path, harmless: Path, text: Path, budget: float | None = None,
              scorer: str | None = None, check_prompts: int = 48, log=print, ranges: dict | None = None,
              check: Path | None = None, levels: Sequence[float] = DEFAULT_LEVELS,
              check_harmless: Path | None = None):
    """History statistics and alignment circuits of a loaded model: ``(stats, circuits)``; ``ranges``
    (a dict) is filled with the activation range of the statistics pass (``recorder.activation_range``);
    ``check`` holds the held-out harmful prompts of the causal check (None: the ``harmful`` prompts);
    ``check_harmless`` held-out harmless prompts whose over-refusal the choices weigh (None: refusal alone);
    aapp-adaptive's confirmation gate is calibrated at each sparsity of ``levels`` (``confirm_gate.py``)."""
    from .circuits import identify_circuits
    from .confirm_gate import calibrate_confirm_gates

    # every prompt file is read before the first pass, so that a wrong path fails in seconds, not after
    # the history statistics
    texts, harmful_prompts, harmless_prompts = read_lines(text), read_lines(harmful), read_lines(harmless)
    held_out = {k: read_lines(f) if f is not None else None for k, f in (("check", check),
                                                                         ("check_harmless", check_harmless))}
    with activation_range(model, ranges) if ranges is not None else nullcontext():
        stats = collect_stats(model, tokenizer, texts)
    circuits = identify_circuits(model, tokenizer, harmful_prompts, harmless_prompts, stats, budget=budget,
                                 scorer=scorer, check_prompts=check_prompts, log=log, **held_out)
    circuits.confirm = calibrate_confirm_gates(model, tokenizer, harmful_prompts, harmless_prompts, stats,
                                               circuits.protection(), levels)
    return stats, circuits


def calibration_summary(circuits, *, harmful: Path, harmless: Path, text: Path,
                        ranges: dict | None = None, check: Path | None = None,
                        check_harmless: Path | None = None) -> dict[str, Any]:
    return {
        "file": CALIBRATION_FILE,
        "history": {"text": Path(text).name, "sha256": sha256_text(text), "items": len(read_lines(text)),
                    "max_positions": MAX_POSITIONS},
        "prompts": {"harmful": Path(harmful).name, "harmful_sha256": sha256_text(harmful),
                    "harmless": Path(harmless).name, "harmless_sha256": sha256_text(harmless),
                    **({"check": Path(check).name, "check_sha256": sha256_text(check)} if check is not None
                       else {"check": "harmful (no held-out check file)"}),
                    **({"check_harmless": Path(check_harmless).name,
                        "check_harmless_sha256": sha256_text(check_harmless)} if check_harmless is not None else {})},
        **circuits.summary(),
        **({"activation_range": ranges} if ranges else {}),
    }


def save_calibration(out_dir: Path, stats: list[LayerStats], circuits, summary: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    save_file(stats_tensors(stats) | circuits.tensors(), str(Path(out_dir) / CALIBRATION_FILE))
    (Path(out_dir) / "calibration.json").write_text(json.dumps(summary, indent=1) + "\n")


def load_calibration(directory: Path, n_layers: int):
    """``(stats, circuits)`` saved by ``save_calibration`` (or an exported model dir)."""
    from safetensors.torch import load_file

    from .circuits import circuits_from_tensors

    tensors = load_file(str(Path(directory) / CALIBRATION_FILE))
    summary = json.loads((Path(directory) / "calibration.json").read_text())
    return stats_from_tensors(tensors, n_layers), circuits_from_tensors(tensors, summary, n_layers)


TORCH_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def calibration_cache_dir(checkpoint: Path, *, harmful: Path, harmless: Path, text: Path, check: Path | None,
                          check_harmless: Path | None, budget: float | None, scorer: str | None, dtype: str,
                          device: str, check_prompts: int, levels: Sequence[float]) -> Path:
    """Where the calibration of these inputs is cached: ``$AAPP_CACHE/calibration/<key>`` (default
    ``~/.cache/aapp-export``). The key is everything the result depends on: the checkpoint's weights and
    config (name, size, mtime), the prompt files' contents, the pinned choices, the weights' dtype and the
    device kind it ran on, the causal check's size, the levels of the confirmation gates, and the code's
    ``CACHE_VERSION``. ``aapp-export`` and ``aapp-eval`` (and the scripts) share it."""
    key = hashlib.sha256()
    for f in sorted(Path(checkpoint).glob("*.safetensors")) + [Path(checkpoint) / "config.json"]:
        key.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    for f in (harmful, harmless, text):
        key.update(sha256_text(f).encode())
    for role, f in (("check", check), ("check_harmless", check_harmless)):
        key.update(f"{role}:{sha256_text(f) if f is not None else '-'}".encode())
    levels_key = ",".join(f"{float(v):g}" for v in sorted(levels))
    key.update(f"{budget}:{scorer}:{dtype}:{device}:{check_prompts}:{levels_key}:{CACHE_VERSION}".encode())
    root = Path(os.environ.get("AAPP_CACHE") or Path.home() / ".cache" / "aapp-export")
    return root / "calibration" / key.hexdigest()[:20]


def _store_in_cache(cache: Path, stats: list[LayerStats], circuits, summary: dict[str, Any]) -> None:
    """Write the entry next to its place and rename it there: a process stopped half-way, or two writing
    the same entry, never leave a partial one that a later run would read."""
    partial = cache.parent / f".{cache.name}.partial-{os.getpid()}"
    partial.mkdir(parents=True, exist_ok=True)
    save_calibration(partial, stats, circuits, summary)
    try:
        partial.rename(cache)
    except OSError:  # another process stored the same entry first: theirs is as good
        shutil.rmtree(partial, ignore_errors=True)


def _calibrate_and_summarise(model, tokenizer, *, harmful: Path, harmless: Path, text: Path, check: Path | None,
                             check_harmless: Path | None, budget: float | None, scorer: str | None,
                             check_prompts: int, levels: Sequence[float], log):
    """``calibrate`` with the activation range recorded, and the summary ``calibration.json`` holds."""
    ranges: dict = {}
    stats, circuits = calibrate(model, tokenizer, harmful=harmful, harmless=harmless, text=text, budget=budget,
                                scorer=scorer, check_prompts=check_prompts, log=log, ranges=ranges, check=check,
                                levels=levels, check_harmless=check_harmless)
    return stats, circuits, calibration_summary(circuits, harmful=harmful, harmless=harmless, text=text, ranges=ranges,
                                                check=check, check_harmless=check_harmless)


def _model_device_kind(model) -> str:
    return "cuda" if any(p.is_cuda for p in model.parameters()) else "cpu"


def cached_calibration(checkpoint: Path, model, tokenizer, *, harmful: Path, harmless: Path, text: Path,
                       budget: float | None = None, scorer: str | None = None, log=print, check: Path | None = None,
                       check_harmless: Path | None = None, check_prompts: int = 48,
                       levels: Sequence[float] = DEFAULT_LEVELS):
    """``calibrate`` of a loaded model, once per ``calibration_cache_dir`` key: the same entry that
    ``aapp-export`` writes for the same checkpoint, files, dtype and device, so an evaluation after an
    export (or the reverse) does not calibrate again."""
    inputs = dict(harmful=harmful, harmless=harmless, text=text, check=check, check_harmless=check_harmless,
                  budget=budget, scorer=scorer, check_prompts=check_prompts, levels=levels)
    cache = calibration_cache_dir(checkpoint, **inputs, device=_model_device_kind(model),
                                  dtype=TORCH_DTYPE_NAMES.get(next(model.parameters()).dtype, "other"))
    n_layers = len(decoder_layers(model))
    if (cache / "calibration.json").is_file():
        log(f"calibration: cached in {cache}")
        return load_calibration(cache, n_layers)
    stats, circuits, summary = _calibrate_and_summarise(model, tokenizer, **inputs, log=log)
    _store_in_cache(cache, stats, circuits, summary)
    return stats, circuits


def calibrate_checkpoint(checkpoint: Path, out_dir: Path, *, harmful: Path, harmless: Path, text: Path,
                         budget: float | None = None, scorer: str | None = None, dtype: str = "fp32",
                         device: str = "cpu", max_memory=None, check_prompts: int = 48,
                         log=print, check: Path | None = None, levels: Sequence[float] = DEFAULT_LEVELS,
                         check_harmless: Path | None = None, use_cache: bool = True) -> dict[str, Any]:
    """What ``aapp-export`` calls: calibration of ``checkpoint`` (weights in ``dtype`` on ``device``) into
    ``out_dir`` (``calibration.safetensors`` + ``calibration.json``); returns the manifest's section.
    With ``use_cache`` the result is looked up in, and stored to, ``calibration_cache_dir``'s entry, which
    ``aapp-eval`` shares: a second export of the same inputs copies it instead of calibrating again."""
    inputs = dict(harmful=harmful, harmless=harmless, text=text, check=check, check_harmless=check_harmless,
                  budget=budget, scorer=scorer, check_prompts=check_prompts, levels=levels)
    kind = torch.device(device).type
    cache = calibration_cache_dir(checkpoint, **inputs, dtype=dtype, device=kind)
    if use_cache and (cache / "calibration.json").is_file():
        log(f"calibration: reusing {cache} (same checkpoint, prompt files, choices, {dtype} on {kind}; delete it, "
            "or pass --no-calibration-cache, to calibrate again)")
        for name in (CALIBRATION_FILE, "calibration.json"):
            shutil.copyfile(cache / name, Path(out_dir) / name)
        return json.loads((cache / "calibration.json").read_text())
    model, tok = load_model(checkpoint, dtype, device, max_memory)
    try:
        stats, circuits, summary = _calibrate_and_summarise(model, tok, **inputs, log=log)
    finally:
        # the graph build comes next in the same process: give the model's memory back first (transformers
        # models hold reference cycles, and malloc keeps what it served from its heap)
        del model
        gc.collect()
        trim_heap()
    save_calibration(out_dir, stats, circuits, summary)
    if use_cache:
        _store_in_cache(cache, stats, circuits, summary)
    return summary
