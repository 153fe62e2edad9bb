"""A dense model dir loads in Hugging Face optimum's ``ORTModelForCausalLM`` and computes what our
runtime computes: the same greedy tokens and last-position logits, for each family, a multimodal
Gemma 3 (its text tower's config) and a static (pruned, narrower) export. optimum-onnx pins
transformers < 4.58, so it runs in its own environment (``bash scripts/optimum_env.sh``); the
module skips where that environment was not built."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from aapp_export.bench import engine_command, optimum_python
from aapp_export.export import ExportOptions, export_model
from aapp_export.synthetic import make_multimodal_gemma3
from aapp_runtime import Session

pytestmark = pytest.mark.skipif(optimum_python() is None, reason="no optimum environment (scripts/optimum_env.sh)")
IDS = list(range(5, 45))
N = 12
# runs in the optimum environment: our benchmark's optimum engine on each model dir
OPTIMUM = """
import json, sys
from pathlib import Path
from aapp_export.bench import open_engine
out = {}
for d in json.loads(sys.argv[1]):
    eng = open_engine("optimum", Path(d), 1)
    out[d] = {"tokens": eng.run(IDS, N).tokens, "logits": eng.logits(IDS).tolist()}
print(json.dumps(out))
"""


def _optimum(dirs: list[str]) -> dict:
    python, env = engine_command("optimum")
    code = f"IDS = {IDS}\nN = {N}\n" + OPTIMUM
    proc = subprocess.run(python + ["-c", code, json.dumps(dirs)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model_dirs(exports, checkpoints, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("optimum")
    dirs = {fam: str(exports[fam]) for fam in ("gemma3", "llama", "qwen2")}
    dirs["gemma3-all-logits"] = str(exports["gemma3-all"])
    make_multimodal_gemma3(root / "mm")
    dirs["gemma3-multimodal"] = str(export_model(str(root / "mm"), root / "mm-out" / "model.onnx", log=lambda m: None))
    dirs["qwen2-static"] = str(export_model(str(checkpoints["qwen2"]), root / "static" / "model.onnx",
                                            ExportOptions(static=("random", 0.4)), log=lambda m: None))
    return dirs


def test_optimum_generates_what_our_runtime_generates(model_dirs):
    got = _optimum(list(model_dirs.values()))
    for name, d in model_dirs.items():
        session = Session(d, provider="cpu")
        ours = session.generate(IDS, max_new_tokens=N + 1, ignore_eos=True).tokens
        assert got[d]["tokens"] == ours, name
        assert len(set(ours)) > 1 or name == "gemma3-multimodal", name  # not one token repeated (its logits differ)
        diff = np.abs(np.asarray(got[d]["logits"], np.float32) - np.asarray(session.logits(IDS), np.float32)).max()
        assert diff < 1e-5, (name, diff)

