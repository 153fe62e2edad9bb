"""Where calibration and the PyTorch reference run: the device (``--device auto|cpu|cuda``), loading a
transformers model there, and moving a batch to the model.

- ``cpu``: the whole model in host memory (fp32 or bf16 weights).
- ``cuda``: ``device_map="auto"`` (accelerate, as transformers does for big models): the layers are
  spread over the visible GPUs and, past their memory, offloaded to host memory. Weights in the
  checkpoint's half precision by default (Gemma 3: bf16; fp16 overflows it).
- ``max_memory`` (any device): a ``device_map="auto"`` placement under these limits, offloading what
  does not fit to disk (``offload_dir``); this is how the placement is exercised without a GPU.

Statistics and scores always accumulate in fp32 on the device of the activations they read, and come
back to the host at the end (``calibration``, ``circuits``, ``pruning``).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import InputError
from .choices import DEVICES

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cuda_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def resolve_device(device: str, flag: str = "--device") -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    if device not in DEVICES:
        raise InputError(f"{flag} {device!r} is not one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise InputError(f"{flag} cuda: torch sees no CUDA device (torch {torch.__version__}, built for CUDA "
                         f"{torch.version.cuda or 'none'}); install a CUDA build of torch on a GPU machine, or pass "
                         f"{flag} cpu")
    return device


def gpu_memory() -> int:
    """Free memory over every visible GPU (bytes; 0 without CUDA)."""
    if not cuda_available():
        return 0
    return sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))


def load_causal_lm(checkpoint: Path, dtype: str = "fp32", device: str = "cpu",
                   max_memory: Mapping[Any, int | str] | None = None, offload_dir: Path | None = None):
    """A transformers causal LM of ``checkpoint`` in eval mode, its weights in ``dtype`` on ``device``."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": TORCH_DTYPES[dtype]}
    scratch = None
    if device == "cuda" or max_memory is not None:
        kwargs["device_map"] = "auto"
        if max_memory is not None:
            kwargs["max_memory"] = dict(max_memory)
        if offload_dir is None:  # ours: removed with the model (or at exit)
            offload_dir = scratch = Path(tempfile.mkdtemp(prefix="aapp-offload-"))
        kwargs["offload_folder"] = str(offload_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint), **kwargs).eval()
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    if scratch is not None:
        weakref.finalize(model, shutil.rmtree, scratch, ignore_errors=True)
    return model


def input_device(model) -> torch.device:
    """Where a batch's ids go: the embedding's device (host memory when it is offloaded)."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        embed = next((v for k, v in device_map.items() if k.endswith("embed_tokens") or k == ""), None)
        if embed is None:
            embed = next(iter(device_map.values()))
        return torch.device(f"cuda:{embed}" if isinstance(embed, int) else "cuda" if embed == "cuda" else "cpu")
    return model.get_input_embeddings().weight.device


def weight_of(module) -> torch.Tensor:
    """``module.weight`` as a host fp32 tensor, also when accelerate has offloaded it (to disk or host
    memory: the parameter is then a meta tensor and its hook holds the values)."""
    try:
        from accelerate.utils import align_module_device
    except ImportError:  # no accelerate: no offloading either
        return module.weight.detach().float().cpu()
    with align_module_device(module):
        return module.weight.detach().float().cpu()


def weight_in_place(module) -> torch.Tensor:
    """``module.weight`` on its own device and dtype; ``weight_of`` (host fp32) when accelerate has
    offloaded it (a meta tensor)."""
    w = module.weight.detach()
    return weight_of(module) if w.is_meta else w


def to_model(batch: Mapping[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """``batch`` (a tokenizer's output) on the model's input device."""
    device = input_device(model)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


__all__ = ["DEVICES", "resolve_device", "gpu_memory", "load_causal_lm", "input_device", "to_model", "weight_of", "weight_in_place",
           "cuda_available"]
