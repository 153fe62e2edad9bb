"""The CLIs: aapp-export writes a model dir, aapp-run --json prints the documented object, errors are one line."""

from __future__ import annotations

import json

from aapp_export.cli.export import main as export_main
from aapp_runtime.cli import main as run_main


def test_export_then_run_json(checkpoints, tmp_path, capsys):
    assert export_main(["--model", str(checkpoints["qwen2"]), "--out", str(tmp_path / "m" / "model.onnx")]) == 0
    manifest = json.loads((tmp_path / "m" / "aapp.json").read_text())
    assert manifest["family"] == "qwen2" and manifest["graph"]["opset"] == 23
    assert manifest["producer"]["onnxruntime"] and set(manifest["files"]) >= {"model.onnx", "model.onnx.data"}
    capsys.readouterr()
    assert run_main([str(tmp_path / "m"), "--prompt", "Count to ten", "--max-new-tokens", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"text", "tokens", "provider", "prefill_ms", "decode_ms_per_token"}
    assert out["provider"] == "cpu" and 1 <= len(out["tokens"]) <= 6 and out["prefill_ms"] > 0


def test_run_streams_text(exports, capsys):
    assert run_main([str(exports["gemma3"]), "--prompt", "hello", "--max-new-tokens", "5", "--provider", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "provider: cpu" in captured.err


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert export_main(["--model", "no-such-alias", "--out", str(tmp_path / "x" / "model.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aapp-export: error: --model 'no-such-alias' is neither a known alias") and err.count("\n") == 1
    assert "Traceback" not in err
    assert run_main([str(tmp_path / "missing"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aapp-run: error:") and err.count("\n") == 1
