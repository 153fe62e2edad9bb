"""Execution-provider choice: CUDA when it is really usable, CPU otherwise, and why.

``onnxruntime`` silently falls back to CPU when the CUDA provider's libraries cannot load, so
"available" is not "usable": ``open_session`` creates the session and then checks which provider
ORT actually kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import onnxruntime as ort

from . import thread_pool as pools
from .errors import ModelDirError, ProviderError

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
PROVIDER_CHOICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class ProviderChoice:
    name: str  # "cuda" | "cpu"
    reason: str


if TYPE_CHECKING:
    from .weights import SharedWeights


def cuda_unavailable_reason() -> str | None:
    """None when ORT offers the CUDA provider, else what is missing."""
    available = ort.get_available_providers()
    if CUDA in available:
        return None
    return (f"the installed onnxruntime {ort.__version__} has no CUDA provider (providers: {', '.join(available)}); "
            "install aapp-runtime[gpu] (onnxruntime-gpu) instead of aapp-runtime[cpu], with CUDA 12 and cuDNN 9")


def session_options(threads: int | None = None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return so


def open_session(model_path: Path, provider: str = "auto", threads: int | None = None,
                 shared: "SharedWeights | None" = None, spin: bool = True, thread_pool: str = "session",
                 several_graphs: bool = False) -> tuple[ort.InferenceSession, ProviderChoice]:
    """Create the ORT session on the requested provider; raises ProviderError when "cuda" cannot run.
    ``shared``: weights mapped once for all sessions of the model dir (``weights.SharedWeights``).
    ``thread_pool`` ("auto", "session", "shared") and ``several_graphs`` (the model dir runs more
    than one session): the ``thread_pool`` module. ``spin=False``: with pools of its own the session's
    workers never spin, not even within a run (a graph that runs once per request, a prefill:
    measured on 2 cores, docs/results/README.md)."""
    if provider not in PROVIDER_CHOICES:
        raise ProviderError(f"provider {provider!r} is not one of {', '.join(PROVIDER_CHOICES)}")
    so = session_options(threads)
    pools.configure(so, threads, thread_pool, several_graphs)
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if shared is not None:
        shared.give_to(so)
    missing = cuda_unavailable_reason()
    if provider in ("auto", "cuda") and missing is None:
        try:
            sess = _create(model_path, so, [CUDA, CPU])
            if sess.get_providers()[0] == CUDA:
                return sess, ProviderChoice("cuda", "CUDA provider loaded")
            missing = ("onnxruntime-gpu is installed but its CUDA provider did not load (CUDA 12 / cuDNN 9 "
                       "libraries or a GPU missing); see onnxruntime's warning above")
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001 - ORT raises plain RuntimeError/Fail here
            missing = f"the CUDA provider failed to start: {str(exc).splitlines()[0]}"
    if provider == "cuda":
        raise ProviderError(f"provider 'cuda' was requested but {missing}; or pass provider='auto'/'cpu' to run on CPU")
    reason = "requested" if provider == "cpu" else f"CUDA not usable: {missing}"
    return _create(model_path, so, [CPU]), ProviderChoice("cpu", reason)


def _create(model_path: Path, so: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(model_path), sess_options=so, providers=providers)
    except Exception as exc:  # noqa: BLE001
        if so.use_per_session_threads and pools.refused_own_pools(exc):
            so.use_per_session_threads = False
            return _create(model_path, so, providers)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "NOT_IMPLEMENTED" in first or "Could not find an implementation" in first:
            raise ProviderError(f"{model_path}: an operator of this model has no kernel on {providers[0]} "
                                f"({first}); bf16 models need the CUDA provider, export fp32/fp16 for CPU") from exc
        raise ModelDirError(f"{model_path} could not be loaded by onnxruntime ({first}); re-export the model") from exc
