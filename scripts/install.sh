#!/usr/bin/env bash
# Create .venv and install the toolkit, the runtime (CPU) and the test tools. Idempotent.
# torch is pinned to the CPU wheel (an unpinned torch pulls a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e "./runtime[cpu,serve]" -e ".[dev,bench]"
echo "installed into .venv: $(.venv/bin/python -c 'import torch, onnxruntime, transformers; print("torch", torch.__version__, "| onnxruntime", onnxruntime.__version__, "| transformers", transformers.__version__)')"
