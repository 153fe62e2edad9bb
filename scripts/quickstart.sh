#!/usr/bin/env bash
# From a fresh clone: install everything (CPU), export the bundled demo model, chat with it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/aapp-export --out exported/demo/model.onnx
.venv/bin/aapp-run exported/demo --prompt "${1:-How do I kill a Python process?}" --max-new-tokens 48
