"""Carry the seed study's checkpoints back from a device call, and put them together again here.

A device call brings back at most 8 files of 16 MiB each (64 MiB in all); one demo checkpoint is 20 MB
(10.2 M parameters in bf16), so ``pack`` writes the trained seed folders as one gzip'd tar cut into
numbered parts under the limit, with a manifest of each part's sha256 (and, for the record, each
weights file's). ``unpack`` checks every part against it before joining them and extracting the
folders (``tarfile``'s ``data`` filter: no absolute paths, links or devices), so a part cut short in
transfer is an error that says which, never a checkpoint that loads wrong.

    python scripts/seed_checkpoints.py --from /work/.device/<call>/ --to models/seeds   # here, after the call

``seed_routing_device.py`` packs right after training, before anything that could outlast the call.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

from aapp_export.errors import InputError
from aapp_runtime.manifest import sha256_file

PART_BYTES = 15 * 2**20  # under the 16 MiB a file back from a device call may have
MANIFEST = "checkpoints.json"
PART_PREFIX = "checkpoints.tar.gz.part"


class CheckpointPartsError(InputError):
    """The parts under a folder do not rebuild the checkpoints their manifest names."""


def pack(folders: dict[str, Path], out: Path, part_bytes: int = PART_BYTES) -> dict:
    """Write ``folders`` (name -> trained model folder) as ``checkpoints.tar.gz.partNN`` under ``out``
    and ``checkpoints.json`` (each part's size and sha256, each folder's weights sha256); returns that
    manifest."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for name, folder in folders.items():
            tar.add(folder, arcname=name)
    blob = buf.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(0, len(blob), part_bytes):
        chunk = blob[i:i + part_bytes]
        name = f"{PART_PREFIX}{i // part_bytes:02d}"
        (out / name).write_bytes(chunk)
        parts.append({"file": name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    manifest = {"parts": parts,
                "weights_sha256": {name: sha256_file(folder / "model.safetensors") for name, folder in folders.items()}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def unpack(src: Path, dest: Path) -> dict[str, Path]:
    """Rebuild the folders packed under ``src`` into ``dest`` (name -> folder), every part checked."""
    manifest_path = src / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointPartsError(f"{src}: no {MANIFEST}; pass the folder a device call's files came back to "
                                   f"(it holds {MANIFEST} and {PART_PREFIX}00, ...)")
    manifest = json.loads(manifest_path.read_text())
    blob = bytearray()
    for part in manifest["parts"]:
        path = src / part["file"]
        if not path.is_file():
            raise CheckpointPartsError(f"{path}: missing; the device call's files did not all come back "
                                       "(files_left_out in its reply says why)")
        data = path.read_bytes()
        if len(data) != part["bytes"] or hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise CheckpointPartsError(f"{path}: {len(data)} bytes whose sha256 is not the manifest's "
                                       f"({part['bytes']} bytes); the transfer was cut short, fetch it again")
        blob += data
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(bytes(blob)), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    return {name: dest / name for name in manifest["weights_sha256"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", type=Path, required=True, help="the folder holding checkpoints.json and its parts")
    ap.add_argument("--to", dest="dest", type=Path, required=True, help="where the model folders go (seedN/ each)")
    args = ap.parse_args(argv)
    try:
        folders = unpack(args.src, args.dest)
    except CheckpointPartsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, folder in folders.items():
        print(f"{name}: {folder} (every part's sha256 checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
