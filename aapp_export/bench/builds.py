"""Each engine's model, prepared from one checkpoint and cached while its inputs are unchanged: our
export (keyed by the checkpoint and the exporter's source) and onnxruntime-genai's own builder's
(``python -m aapp_export.bench.builds`` runs the builder in a child process).

onnxruntime-genai 0.18's builder expects transformers-4.x flat rope fields, which transformers 5.x
re-nests when it loads any ``config.json``, so the builder's loaded config is flattened before the
build (:func:`flatten_rope_parameters`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from ..errors import BenchmarkError
from .machine import package_version
from .worker import last_line

Log = Callable[[str], None]
PACKAGE = Path(__file__).resolve().parents[1]  # aapp_export/: the exporter whose source keys our builds


def flatten_rope_parameters(config: Any) -> None:
    """Give a transformers-5.x Gemma 3 config the flat rope fields onnxruntime-genai 0.18's builder reads.

    5.x nests the rope per layer type (``rope_parameters[layer_type]``) and re-nests flat fields
    when it loads a ``config.json``; the builder expects ``rope_parameters["rope_type"]`` plus
    ``rope_theta`` / ``rope_local_base_freq`` as in 4.x, so the loaded object is patched.
    """
    text = getattr(config, "text_config", None) or config
    rope = getattr(text, "rope_parameters", None)
    if isinstance(rope, dict) and "full_attention" in rope:
        full, local = dict(rope["full_attention"]), dict(rope.get("sliding_attention") or {})
        text.rope_parameters = full
        text.rope_theta = full.get("rope_theta", 1_000_000.0)
        text.rope_local_base_freq = local.get("rope_theta", 10_000.0)
        if full.get("rope_type", "default") != "default":
            text.rope_scaling = {k: v for k, v in full.items() if k != "rope_theta"}


def build_genai_here(checkpoint: Path, out: Path, extra: dict[str, str]) -> None:
    """Run the onnxruntime-genai builder in this process on a normalised config."""
    from onnxruntime_genai.models import builder

    cache = str(out.parent / "genai-cache")
    opts = builder.parse_extra_options(None, str(checkpoint), str(out), "fp32", "cpu", cache,
                                       [f"{k}={v}" for k, v in extra.items()])
    flatten_rope_parameters(opts["hf_details"]["hf_config"])
    builder.create_model(None, str(checkpoint), str(out), "fp32", "cpu", cache, **opts)


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_key(checkpoint: Path) -> list[Any]:
    return sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in checkpoint.iterdir() if p.is_file())


def cached(out: Path, key: str, marker: str) -> bool:
    return (out / marker).is_file() and (out / ".bench-key").is_file() and (out / ".bench-key").read_text() == key


def build_ours(checkpoint: Path, out: Path, log: Log, attention: str = "gqa") -> Path:
    """Export ``checkpoint`` with our exporter and ``attention`` kernel (reused while the checkpoint and
    the exporter's source are unchanged)."""
    from ..export import ExportOptions, export_model

    src = PACKAGE
    code = [(str(p.relative_to(src)), hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted([*src.glob("graph/*.py"), src / "export.py", src / "families.py"])]
    key = fingerprint(checkpoint_key(checkpoint), code, attention)
    if cached(out, key, "aapp.json"):
        return out
    shutil.rmtree(out, ignore_errors=True)
    export_model(str(checkpoint), out / "model.onnx", ExportOptions(attention=attention), log=log)
    (out / ".bench-key").write_text(key)
    return out


def build_genai(checkpoint: Path, out: Path, log: Log, extra: dict[str, str] | None = None) -> Path:
    """Build the onnxruntime-genai fp32 CPU model of ``checkpoint`` with its own builder (subprocess)."""
    extra = dict(extra or {})
    key = fingerprint(checkpoint_key(checkpoint), extra, package_version("onnxruntime-genai"))
    if cached(out, key, "genai_config.json"):
        return out
    shutil.rmtree(out, ignore_errors=True)
    log(f"building the onnxruntime-genai model of {checkpoint} into {out} (extra options {extra or 'none'})")
    proc = subprocess.run([sys.executable, "-m", "aapp_export.bench.builds", str(checkpoint), str(out), json.dumps(extra)], capture_output=True, text=True)
    if proc.returncode != 0 or not (out / "genai_config.json").is_file():
        log_file = out.parent / f"{out.name}-build.log"
        log_file.write_text(proc.stdout + proc.stderr)
        raise BenchmarkError(f"the onnxruntime-genai builder failed on {checkpoint} (exit {proc.returncode}): "
                             f"{last_line(proc.stderr)}; full log in {log_file}")
    (out / ".bench-key").write_text(key)
    return out


def genai_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime_genai") is not None


def graph_stats(model_file: Path) -> dict[str, Any]:
    """Node count and op-type histogram of an ONNX graph (weights not loaded)."""
    import collections

    import onnx

    m = onnx.load(str(model_file), load_external_data=False)
    ops = collections.Counter((f"{n.domain}." if n.domain and n.domain != "ai.onnx" else "") + n.op_type
                              for n in m.graph.node)
    data = sum(p.stat().st_size for p in model_file.parent.glob(model_file.name + "*"))
    return {"nodes": len(m.graph.node), "op_types": dict(ops.most_common()), "file_mb": round(data / 2**20, 1)}


def count_params(checkpoint: Path) -> int:
    from ..checkpoint import WeightReader

    reader = WeightReader(checkpoint)
    return int(sum(reader.get(k).numel() for k in reader.keys()))


if __name__ == "__main__":  # python -m aapp_export.bench.builds CHECKPOINT OUT [EXTRA_JSON]
    build_genai_here(Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
