"""AAPP export: offline side (checkpoint loading, calibration, pruning reference, ONNX graph builder, CLIs)."""
