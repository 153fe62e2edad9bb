"""Names and limits that the CLIs (argparse choices, defaults), the library's checks and the graph
builder all read, so that each is defined once. Torch-free: a CLI builds its parser from it without
importing torch. The runtime (a separate distribution that never imports this package) keeps its own
copy of what a model dir runs (``aapp_runtime.session.METHODS``); a test checks they agree.
"""

from __future__ import annotations

from .errors import InputError

SKIP_FIRST = 3  # the first layers are never pruned (PP's choice; the risk gate reads the input of the next)
MAX_SPARSITY = 0.9  # the largest fraction of a layer's prunable units a request may remove
CHECK_TOKENS = 24  # new tokens of each greedy answer in the causal check (a refusal shows in its first words)
SUFFICIENCY_SPARSITY = 0.4  # the causal check's AAPP run prunes the rest at this sparsity (the headline target)
BUDGETS = (0.05, 0.02, 0.1, 0.2, 0.3, 0.4)  # protected fractions the check tries without --budget; scorers are compared at the first
PROBE_MAX_TOKENS = 64  # the probe's token budget for long prompts (docs/DESIGN.md: why 64)

ADAPTIVE_METHODS = ("aapp-adaptive",)  # the risk gate also picks the request's sparsity
RUNTIME_METHODS = ("dense", "pp", "aapp") + ADAPTIVE_METHODS  # what an exported model dir runs per request
STATIC_METHODS = ("wanda-sp", "flap", "random")  # fixed kept units (the reference, --static exports)
METHODS = RUNTIME_METHODS + STATIC_METHODS  # what the PyTorch reference and aapp-eval run
# aapp-adaptive: a request whose risk gate reaches its threshold runs at the low sparsity. The calibration reads
# the threshold on its held-out check split (probe.routing_threshold), never below this; without a check split,
# and for model dirs exported before it did, it is this
ADAPTIVE_THRESHOLD = 0.5
# AAPP forces no protected unit while the risk gate reads below this (a dead zone: text that does not look
# harmful runs PP's selection, so AAPP's perplexity is PP's); from it on a ramp, round((gate - zone) / (1 - zone)
# x |protected|), all of the set at gate 1, so that an ambiguous request (gate 0.6-0.8) is pushed less than one
# that plainly looks harmful. 0.5: the calibration's own text reads at most 0.46 on the demo (docs/results/
# README.md, "a dead zone in the gate"); the ramp: "a forcing ramp" there
GATE_DEAD_ZONE = 0.5
ADAPTIVE_LOW_SPARSITY = 0.0  # ... which is dense by default (refusals are short, so they cost little)
CONFIRM_THRESHOLD = 0.5  # ... when its confirmation gate (read at the end of the AAPP prefill) reaches this too
# aapp-adaptive's path for a flagged request: "dense-prefill" (the default: the risk gate alone sends the
# rest of the prefill dense; the decode stays dense only when the dense prefill's first token opens the
# refusal) or "restart" (both gates, then dense from the start; the only path that can run a flagged
# request at a pruned ``adaptive_low``). The default meets the harmless-FLOPs target where the restart
# does not (docs/results/README.md, "The dense-prefill path")
ADAPTIVE_PATHS = ("restart", "dense-prefill")
DEFAULT_ADAPTIVE_PATH = "dense-prefill"
DEFAULT_LEVELS = (0.2, 0.3, 0.4, 0.5)  # sparsity levels an export builds graphs for (and calibrates the confirmation gate at)
SCORERS = ("actdiff", "refusal-dir", "grad-act", "pruned-grad-act", "pruned-grad-opening")  # alignment-circuit scorers (circuits.py)
ATTENTION_KERNELS = ("gqa", "onnx")  # com.microsoft.GroupQueryAttention, or the standard Attention op
EXPORT_DTYPES = ("auto", "fp32", "fp16", "bf16")  # auto: precision.choose_export_dtype
CALIBRATION_DTYPES = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


def check_sparsity(value: float, flag: str, *, zero: bool = True) -> float:
    """``value`` as a float in [0, MAX_SPARSITY] ((0, MAX_SPARSITY] when ``zero`` is False), else a
    one-line ``InputError`` naming ``flag``."""
    low = "[0" if zero else "(0"
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not (0 <= number <= MAX_SPARSITY) or (not zero and number == 0):
        raise InputError(f"{flag} {value!r} is outside {low}, {MAX_SPARSITY}]: pass a fraction such as 0.4")
    return number


__all__ = ["SKIP_FIRST", "CHECK_TOKENS", "SUFFICIENCY_SPARSITY", "BUDGETS", "MAX_SPARSITY", "PROBE_MAX_TOKENS", "RUNTIME_METHODS", "STATIC_METHODS", "METHODS", "SCORERS",
           "ADAPTIVE_METHODS", "ADAPTIVE_THRESHOLD", "GATE_DEAD_ZONE", "ADAPTIVE_LOW_SPARSITY", "CONFIRM_THRESHOLD", "ADAPTIVE_PATHS",
           "DEFAULT_ADAPTIVE_PATH",
           "DEFAULT_LEVELS",
           "ATTENTION_KERNELS", "EXPORT_DTYPES", "CALIBRATION_DTYPES", "DEVICES", "check_sparsity"]
