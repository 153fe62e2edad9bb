#!/usr/bin/env bash
# Create .venv-optimum: Hugging Face optimum-onnx (ORTModelForCausalLM) in its own environment, since
# it pins transformers < 4.58 and this project uses transformers 5. The interop tests and the
# `optimum` engine of aapp-bench use it (AAPP_OPTIMUM_PYTHON points elsewhere); they skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-optimum/bin/python ] || "$PY" -m venv .venv-optimum
.venv-optimum/bin/python -m pip install -q --upgrade pip
.venv-optimum/bin/python -m pip install -q "torch==2.13.0"
.venv-optimum/bin/python -m pip install -q "optimum-onnx[onnxruntime]==0.1.0"
echo "installed into .venv-optimum: $(.venv-optimum/bin/python -c 'import optimum.onnxruntime, transformers, onnxruntime; print("transformers", transformers.__version__, "| onnxruntime", onnxruntime.__version__)')"
