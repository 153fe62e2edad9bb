"""Bad input never loses a file, never passes silently, never shows a traceback (issue 17's test plan,
the cases done so far): exports that would delete files they did not write, leftovers of killed
exports, SIGTERM, symlinked --out; runtime arguments of every wrong type; non-finite logits; a
broken pipe."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time

from pathlib import Path

import numpy as np
import pytest

from aapp_export.cli.export import main as export_main
from aapp_export.errors import ExportError
from aapp_export.export import ExportOptions, export_model


def _export(ckpt, out, **kw):
    return export_model(str(ckpt), out, ExportOptions(**kw), log=lambda m: None)


# -- exports never delete what they did not write ---------------------------------------------------
def test_reexport_refuses_a_model_dir_with_foreign_files_unless_forced(checkpoints, tmp_path, capsys):
    out = tmp_path / "m" / "model.onnx"
    _export(checkpoints["llama"], out)
    (tmp_path / "m" / "notes.txt").write_text("mine")
    (tmp_path / "m" / "runs").mkdir()
    assert export_main(["--model", str(checkpoints["llama"]), "--out", str(out), "--no-calibrate"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "runs" in err and "--force" in err and err.count("\n") == 1
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"
    (tmp_path / "m" / "runs").rmdir()
    (tmp_path / "m" / "notes.txt").rename(tmp_path / "notes.txt")
    _export(checkpoints["llama"], out)  # the refusal is for foreign files only: a clean model dir is replaced
    (tmp_path / "notes.txt").rename(tmp_path / "m" / "notes.txt")
    with pytest.raises(ExportError, match="notes.txt"):
        _export(checkpoints["llama"], out)
    _export(checkpoints["llama"], out, force=True)  # only when the user says so
    assert not (tmp_path / "m" / "notes.txt").exists() and (tmp_path / "m" / "aapp.json").is_file()


def test_out_holding_the_checkpoint_or_the_working_dir_or_a_mount_is_refused_before_the_build(
        checkpoints, tmp_path, monkeypatch):
    import shutil

    from aapp_export import outdir

    ckpt = tmp_path / "work" / "ckpt"
    shutil.copytree(checkpoints["qwen2"], ckpt)
    before = sorted(p.name for p in ckpt.iterdir())
    with pytest.raises(ExportError, match="the checkpoint .* is inside it"):  # even --force must not delete it
        _export(ckpt, tmp_path / "work" / "model.onnx", force=True)
    assert sorted(p.name for p in ckpt.iterdir()) == before
    out = _export(checkpoints["qwen2"], tmp_path / "m" / "model.onnx")
    monkeypatch.chdir(out)
    with pytest.raises(ExportError, match="the working directory .* is inside it"):
        _export(checkpoints["qwen2"], out / "model.onnx")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(outdir.os.path, "ismount", lambda p: Path(p) == out)  # as a docker volume would be
    with pytest.raises(ExportError, match="mount point"):
        _export(checkpoints["qwen2"], out / "model.onnx")
    assert not [p for p in (tmp_path / "m").parent.iterdir() if p.name.startswith(".m.")]


def test_stale_partial_dirs_of_dead_exports_are_removed_live_ones_kept(checkpoints, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".m.partial-{dead.pid}"
    live = tmp_path / f".m.partial-{os.getppid()}"
    other = tmp_path / f".other.partial-{dead.pid}"
    for d in (stale, live, other):
        d.mkdir()
        (d / "model.onnx.data").write_bytes(b"\0" * 1000)
    _export(checkpoints["qwen2"], tmp_path / "m" / "model.onnx")
    assert not stale.exists() and live.exists() and other.exists()


def test_sigterm_during_an_export_leaves_nothing_behind(checkpoints, tmp_path):
    code = ("import sys, time\nimport aapp_export.export as e\n"
            "e._copy_tokenizer = lambda *a, **k: time.sleep(120)\n"
            "from aapp_export.cli.export import main\n"
            f"sys.exit(main(['--model', {str(checkpoints['gemma3'])!r}, '--out', {str(tmp_path / 'm' / 'model.onnx')!r}, "
            "'--no-calibrate']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    partial = tmp_path / f".m.partial-{proc.pid}"
    deadline = time.time() + 120
    while not (partial / "model.onnx").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (partial / "model.onnx").exists()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err
    assert not partial.exists() and not (tmp_path / "m").exists()


def test_a_symlinked_out_stays_a_link_to_the_new_export(checkpoints, tmp_path):
    real = tmp_path / "real"
    _export(checkpoints["llama"], real / "model.onnx")
    link = tmp_path / "link"
    link.symlink_to(real)
    _export(checkpoints["llama"], link / "model.onnx")
    assert link.is_symlink() and (link / "aapp.json").is_file() and (real / "aapp.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# -- the runtime checks what it is handed -------------------------------------------------------------
@pytest.fixture(scope="module")
def session(exports):
    from aapp_runtime import Session

    return Session(exports["gemma3"], provider="cpu")


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt=b"hello"), "bytes"), (dict(prompt=[True, False]), "prompt must be"), (dict(prompt=None), "NoneType"),
    (dict(prompt="hi\udc80"), "not valid Unicode"), (dict(temperature=float("nan")), "temperature"),
    (dict(temperature=float("inf")), "temperature"), (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"),
    (dict(max_new_tokens=5.0), "max_new_tokens"), (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(max_new_tokens=True), "max_new_tokens"), (dict(top_k=2.5), "top_k"), (dict(top_p=float("nan")), "top_p"),
    (dict(stop=3), "stop"), (dict(stop=[b"x"]), "stop"), (dict(method=None, sparsity=0.4), "method"),
    (dict(chat="yes"), "chat"), (dict(min_p=1.0), "min_p"), (dict(repetition_penalty=0), "repetition_penalty"),
    (dict(timeout_s=-1), "timeout_s"), (dict(ignore_eos="yes"), "ignore_eos"),
    (dict(prompt=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), "image_url"),
    (dict(prompt=[{"role": "user", "content": 5}]), "content"),
])
def test_wrong_arguments_are_typed_one_line_errors(session, kwargs, message):
    from aapp_runtime import InputError

    kwargs = {"prompt": "hello", **kwargs}
    prompt = kwargs.pop("prompt")
    for call in (session.generate, lambda *a, **k: list(session.stream(*a, **k))):
        with pytest.raises(InputError, match=message) as info:
            call(prompt, **{"max_new_tokens": 2, **kwargs})
        assert "\n" not in str(info.value)


def test_stop_string_content_parts_and_none(session):
    plain = session.generate("Tell me about bread", 12)
    assert session.generate("Tell me about bread", 12, stop=None).tokens == plain.tokens
    parts = [{"role": "user", "content": [{"type": "text", "text": "Tell me "}, {"type": "text", "text": "about bread"}]}]
    assert session.generate(parts, 12).tokens == plain.tokens
    if len(plain.text) > 3:
        word = plain.text[1:3]
        one, listed = session.generate("Tell me about bread", 12, stop=word), session.generate(
            "Tell me about bread", 12, stop=[word])
        assert one.text == listed.text and one.finish_reason == "stop"


def test_random_arguments_fail_only_with_runtime_errors(session):
    """Property-style: any value in any argument either works or raises the runtime's typed error."""
    from aapp_runtime import AappRuntimeError

    rng = random.Random(0)
    values = [None, -1, 0, 1, 2.5, -0.5, float("nan"), float("inf"), True, "x", b"x", [], [1], {"a": 1}, 10**9, 0.9]
    names = ["max_new_tokens", "temperature", "top_k", "top_p", "seed", "stop", "sparsity", "method", "chat"]
    for _ in range(120):
        kwargs = {name: rng.choice(values) for name in rng.sample(names, 3)}
        if isinstance(kwargs.get("max_new_tokens"), int) and not isinstance(kwargs["max_new_tokens"], bool):
            kwargs["max_new_tokens"] = min(kwargs["max_new_tokens"], 3)
        try:
            session.generate("hi", **kwargs)
        except AappRuntimeError:
            pass


def _copy_checkpoint(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_nan_in_a_checkpoint_stops_the_export_naming_the_tensor(checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    from aapp_export.errors import CheckpointError

    ckpt = _copy_checkpoint(checkpoints["llama"], tmp_path / "nan-ckpt")
    tensors = load_file(str(ckpt / "model.safetensors"))
    name = next(n for n in tensors if n.endswith("layers.1.mlp.down_proj.weight"))
    tensors[name][0, 0] = math.nan
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"{name}.*NaN or infinite"):
        _export(ckpt, tmp_path / "nan" / "model.onnx")
    assert not (tmp_path / "nan").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_non_finite_logits_stop_generation_with_an_error_naming_the_weights(checkpoints, tmp_path):
    from aapp_runtime import ModelDirError, Session

    out = _export(checkpoints["llama"], tmp_path / "m" / "model.onnx")
    data = out / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[4096 * 2: 4096 * 6] = np.full(4096, np.nan, np.float32).tobytes()  # damage a stored weight
    data.write_bytes(bytes(raw))
    with pytest.raises(ModelDirError, match="not finite.*weights"):
        Session(out, provider="cpu", verify="none").generate("hello", 3)


@pytest.mark.parametrize("field, value, message", [
    ("intermediate_size", 200, "implies"), ("vocab_size", 100000, "vocab_size"), ("num_hidden_layers", 3, "layers up to"),
    ("hidden_size", 96, "implies"),
])
def test_a_config_that_disagrees_with_the_weights_stops_the_export(checkpoints, tmp_path, field, value, message,
                                                                   capsys):
    ckpt = _copy_checkpoint(checkpoints["qwen2"], tmp_path / "bad-ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    config[field] = value if field != "num_hidden_layers" else config[field] - 1
    if field == "num_hidden_layers" and "layer_types" in config:
        config["layer_types"] = config["layer_types"][:config[field]]
    (ckpt / "config.json").write_text(json.dumps(config))
    assert export_main(["--model", str(ckpt), "--out", str(tmp_path / "o" / "model.onnx"), "--no-calibrate"]) != 0
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_aapp_run_into_a_closed_pipe_exits_quietly(exports):
    proc = subprocess.Popen([sys.executable, "-m", "aapp_runtime.cli", str(exports["llama"]), "--prompt", "hi",
                             "--max-new-tokens", "40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head -c 0`
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_eval_limit_must_be_positive(capsys):
    from aapp_export.cli.eval import main as eval_main

    for bad in ("0", "-1"):
        with pytest.raises(SystemExit) as info:
            eval_main(["--limit", bad])
        assert info.value.code == 2
        assert "not a whole number >= 1" in capsys.readouterr().err


def test_json_of_a_result_round_trips(session):
    assert json.loads(json.dumps(session.generate("hi", 2).to_json()))["tokens"] is not None
    assert np.isfinite(session.logits([5, 6, 7])).all()


def test_a_damaged_large_file_is_caught_at_the_next_load_and_unchanged_ones_hash_once(checkpoints, tmp_path,
                                                                                      monkeypatch):
    import aapp_runtime.manifest as mf
    from aapp_runtime import ModelDirError, Session

    monkeypatch.setenv("AAPP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mf, "LARGE_FILE", 10_000)  # the weight file counts as large
    out = _export(checkpoints["gemma3"], tmp_path / "m" / "model.onnx")
    hashed = []
    real = mf.sha256_file
    monkeypatch.setattr(mf, "sha256_file", lambda p, *a: hashed.append(p.name) or real(p, *a))
    Session(out, provider="cpu")
    assert "model.onnx.data" in hashed and (tmp_path / "cache" / "verified.json").is_file()
    hashed.clear()
    Session(out, provider="cpu")
    assert "model.onnx.data" not in hashed  # stamp: unchanged since it was hashed
    data = out / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[5000] ^= 0xFF
    time.sleep(0.01)
    data.write_bytes(bytes(raw))  # same size, new mtime
    with pytest.raises(ModelDirError, match="model.onnx.data does not match the checksum"):
        Session(out, provider="cpu")


@pytest.mark.parametrize("damage", ["truncated", "string_hidden", "zero_heads", "list_vocab"])
def test_a_damaged_config_is_a_one_line_error(checkpoints, tmp_path, damage, capsys):
    ckpt = _copy_checkpoint(checkpoints["llama"], tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    config.update({"string_hidden": {"hidden_size": "sixty"}, "zero_heads": {"num_attention_heads": 0},
                   "list_vocab": {"vocab_size": [1, 2]}}.get(damage, {}))
    text = json.dumps(config)
    (ckpt / "config.json").write_text(text[: len(text) // 2] if damage == "truncated" else text)
    assert export_main(["--model", str(ckpt), "--out", str(tmp_path / "o" / "model.onnx"), "--no-calibrate"]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("tamper", ["dims_list", "head_dim_string", "kv_heads_short", "graph_not_dict",
                                    "kv_heads_wrong", "vocab_wrong", "context_longer"])
def test_a_tampered_manifest_is_a_one_line_error(exports, tmp_path, tamper):
    import shutil

    from aapp_runtime import ModelDirError, Session

    d = tmp_path / "m"
    shutil.copytree(exports["gemma3"], d)
    m = json.loads((d / "aapp.json").read_text())
    if tamper == "dims_list":
        m["dims"] = [1, 2]
    elif tamper == "head_dim_string":
        m["dims"]["head_dim"] = "16"
    elif tamper == "kv_heads_short":
        m["dims"]["num_kv_heads"] = m["dims"]["num_kv_heads"][:1]
    elif tamper == "graph_not_dict":
        m["graph"] = "model.onnx"
    elif tamper == "vocab_wrong":
        m["dims"]["vocab_size"] += 7
    elif tamper == "context_longer":  # generation would run past the positions the model knows
        m["dims"]["max_position_embeddings"] *= 2
    else:
        m["dims"]["num_kv_heads"] = [k + 1 for k in m["dims"]["num_kv_heads"]]
    (d / "aapp.json").write_text(json.dumps(m))
    with pytest.raises(ModelDirError) as info:
        Session(d, provider="cpu").generate("hi", 2)
    assert "\n" not in str(info.value) and "aapp.json" in str(info.value)


def test_a_binary_prompt_file_is_a_one_line_error(tmp_path):
    from aapp_export.calibration import read_lines
    from aapp_export.errors import InputError

    for raw in (b"\xff\xfe\x00bad", b"ok\x00\x01"):
        (tmp_path / "bin.txt").write_bytes(raw)
        with pytest.raises(InputError, match="not UTF-8|binary"):
            read_lines(tmp_path / "bin.txt")


def test_an_unwritable_out_is_a_one_line_error_and_leaves_nothing(checkpoints, tmp_path, monkeypatch):
    import aapp_export.export as ex

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "m" / "model.onnx.data"))

    monkeypatch.setattr(ex, "write_manifest", full_disk)
    with pytest.raises(ExportError, match="No space left on device.*nothing was left behind"):
        _export(checkpoints["llama"], tmp_path / "m" / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_the_joined_stream_equals_generate_with_multi_token_stop_strings(session):
    """A stop string's first tokens are held back until it either completes (dropped) or does not."""
    full = session.generate("Tell me about bread", 24, ignore_eos=True)
    text = full.text
    assert len(text) > 12
    for stop in (text[4:12], text[6:9] + "#never#", "#never#", [text[10:15], "zz"]):
        streamed = "".join(c.text for c in session.stream("Tell me about bread", 24, stop=stop, ignore_eos=True))
        assert streamed == session.generate("Tell me about bread", 24, stop=stop, ignore_eos=True).text, stop
