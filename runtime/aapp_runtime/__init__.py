"""aapp_runtime: run AAPP-exported ONNX models on ONNX Runtime (CUDA first, CPU fallback), without torch.

    from aapp_runtime import Session
    session = Session("exported/demo")            # provider="auto" | "cuda" | "cpu"
    print(session.generate("Hello!", max_new_tokens=32).text)
    for chunk in session.stream("Hello!", stop="\n\n", timeout_s=10):
        print(chunk.text, end="")                  # the last chunk: finish_reason, usage, timings
    chat = session.chat()                          # keeps the KV cache of its turns
    chat.send("Hi"); chat.send("And then?")
"""

from .errors import AappRuntimeError, InputError, ModelDirError, ProviderError
from .manifest import MANIFEST_VERSION, Manifest
from .conversation import Conversation
from .generation import Chunk, Generation, GenerationResult
from .session import Session

__all__ = ["Session", "Generation", "Chunk", "GenerationResult", "Conversation", "Manifest", "MANIFEST_VERSION", "AappRuntimeError", "InputError",
           "ModelDirError", "ProviderError"]
__version__ = "0.1.0"
