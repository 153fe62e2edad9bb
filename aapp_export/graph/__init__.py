"""ONNX graph construction from checkpoint weights (no tracing)."""
