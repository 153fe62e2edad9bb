"""The seed checkpoints' trip back from a device call: packed into parts under a size limit, rebuilt
byte for byte, and a damaged or missing part named in the error."""

from __future__ import annotations

import json
import os

import pytest

from aapp_runtime.manifest import sha256_file
from seed_checkpoints import MANIFEST, CheckpointPartsError, main, pack, unpack


def _seed_folder(root, name: str, size: int):
    folder = root / name
    (folder / "data").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(size))  # random: gzip cannot shrink it
    (folder / "config.json").write_text(json.dumps({"name": name}))
    (folder / "data" / "harmful_val2.txt").write_text("a request\n")
    return folder


@pytest.fixture()
def packed(tmp_path):
    folders = {n: _seed_folder(tmp_path / "work", n, 5000) for n in ("seed0", "seed1")}
    manifest = pack(folders, tmp_path / "out", part_bytes=4096)
    return folders, manifest, tmp_path / "out"


def test_parts_respect_the_limit_and_rebuild_every_file(packed, tmp_path):
    folders, manifest, out = packed
    assert len(manifest["parts"]) == 3  # 10,000 random bytes gzip'd, in 4096-byte parts
    assert all(p["bytes"] <= 4096 for p in manifest["parts"])
    assert sorted(f.name for f in out.iterdir()) == [MANIFEST] + [p["file"] for p in manifest["parts"]]
    rebuilt = unpack(out, tmp_path / "here")
    assert sorted(rebuilt) == ["seed0", "seed1"]
    for name, folder in folders.items():
        for rel in ("model.safetensors", "config.json", "data/harmful_val2.txt"):
            assert (rebuilt[name] / rel).read_bytes() == (folder / rel).read_bytes()
        assert manifest["weights_sha256"][name] == sha256_file(folder / "model.safetensors")


def test_a_damaged_part_is_named(packed, tmp_path):
    _, manifest, out = packed
    part = out / manifest["parts"][1]["file"]
    part.write_bytes(part.read_bytes()[:-10])  # cut short in transfer
    with pytest.raises(CheckpointPartsError, match=part.name):
        unpack(out, tmp_path / "here")
    assert not (tmp_path / "here").exists()  # nothing half-written


def test_a_missing_part_or_manifest_is_an_error_that_says_what(packed, tmp_path, capsys):
    _, manifest, out = packed
    (out / manifest["parts"][2]["file"]).unlink()
    with pytest.raises(CheckpointPartsError, match="missing"):
        unpack(out, tmp_path / "here")
    assert main(["--from", str(tmp_path), "--to", str(tmp_path / "here")]) == 2
    assert f"no {MANIFEST}" in capsys.readouterr().err
