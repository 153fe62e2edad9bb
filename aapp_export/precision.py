"""Which dtype an export writes: ``--dtype auto`` and the fp16 range check.

``auto`` follows the checkpoint where the provider runs it:

- **CUDA** (the export runs where torch sees a GPU, or ``--device cuda``): the checkpoint's half
  precision, bf16 for a bf16 or fp32 checkpoint (GroupQueryAttention runs fp16/bf16 on CUDA; bf16 has
  fp32's range), fp16 for an fp16 one.
- **CPU**: ONNX Runtime's CPU kernels have no bf16, so fp32 for an fp32 checkpoint, and for a half
  precision one fp16 only where the family stays inside fp16's range (65504), else fp32.

Whether a family stays inside fp16 is checked, not assumed: calibration records the largest
activation of every decoder layer (residual stream, each linear layer's input and output) over its
general text (``recorder.activation_range``), and fp16 is refused when that maximum comes within
``FP16_HEADROOM`` of 65504 (unseen prompts go further than calibration text). Gemma 3 is trained in
bf16 and is known to outgrow fp16 (large residual activations); it is never given fp16 by ``auto``, and
an explicit ``--dtype fp16`` whose calibration crosses the limit is told so.
"""

from __future__ import annotations

from dataclasses import dataclass

from .families import ModelSpec

FP16_MAX = 65504.0
FP16_HEADROOM = 4.0  # fp16 when calibration's largest activation stays below FP16_MAX / this
FAMILY_FP16_OVERFLOW = {
    "gemma3": "Gemma 3 is trained in bf16 and its residual activations outgrow fp16's range",
}
SOURCE_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype an export writes and why (one clause, for the export's log and the manifest)."""

    dtype: str
    reason: str


def fp16_limit() -> float:
    return FP16_MAX / FP16_HEADROOM


def fp16_problem(spec: ModelSpec, activation_range: dict | None) -> str | None:
    """Why fp16 is unsafe for this model (measured range first, then the family), or None."""
    if activation_range is not None and activation_range.get("absmax", 0.0) > fp16_limit():
        return (f"calibration measured activations up to {activation_range['absmax']:.4g} ({activation_range['where']}), "
                f"past fp16's safe range {fp16_limit():.4g} (65504 / {FP16_HEADROOM:g})")
    return FAMILY_FP16_OVERFLOW.get(spec.family)


def choose_export_dtype(requested: str, spec: ModelSpec, target: str,
                        activation_range: dict | None = None) -> DtypeChoice:
    """The dtype of an export of ``spec`` for a provider on ``target`` ("cpu" | "cuda")."""
    source = SOURCE_DTYPES.get(spec.source_dtype, "fp32")
    if requested != "auto":
        return DtypeChoice(requested, "--dtype " + requested)
    if target == "cuda":
        dtype = "fp16" if source == "fp16" and fp16_problem(spec, activation_range) is None else "bf16"
        return DtypeChoice(dtype, f"auto: {dtype} for CUDA (checkpoint {source})")
    if source == "fp32":
        return DtypeChoice("fp32", "auto: the checkpoint is fp32")
    problem = fp16_problem(spec, activation_range)
    if problem is None:
        measured = "" if activation_range is None else \
            f", activations up to {activation_range['absmax']:.4g} on calibration text"
        return DtypeChoice("fp16", f"auto: fp16 for CPU (checkpoint {source}{measured})")
    return DtypeChoice("fp32", f"auto: fp32 for CPU, not fp16: {problem} (ONNX Runtime's CPU kernels have no bf16; "
                               "on a GPU machine --dtype bf16 halves the model dir)")


__all__ = ["FP16_MAX", "FP16_HEADROOM", "DtypeChoice", "choose_export_dtype", "fp16_problem", "fp16_limit",
           "SOURCE_DTYPES"]
