"""AAPP export: offline side (checkpoint loading, calibration, pruning reference, ONNX graph builder, CLIs)."""

__version__ = "0.1.0"
