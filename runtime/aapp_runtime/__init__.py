"""aapp_runtime: run AAPP-exported ONNX models on ONNX Runtime (CUDA first, CPU fallback), without torch.

    from aapp_runtime import Session
    session = Session("exported/demo")            # provider="auto" | "cuda" | "cpu"
    print(session.generate("Hello!", max_new_tokens=32).text)
"""

from .errors import AappRuntimeError, InputError, ModelDirError, ProviderError
from .manifest import MANIFEST_VERSION, Manifest
from .session import GenerationResult, Session

__all__ = ["Session", "GenerationResult", "Manifest", "MANIFEST_VERSION", "AappRuntimeError", "InputError",
           "ModelDirError", "ProviderError"]
__version__ = "0.1.0"
