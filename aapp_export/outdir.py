"""Where an export writes: a temporary sibling, renamed over the model dir at the end, never losing a file.

- The target may be replaced only when it is a model dir holding nothing but the files its
  manifest lists (and the manifest): anything else in it (a user's notes, a ``runs/`` folder) makes
  the export refuse in one line naming those files, unless ``force``.
- A symlinked ``--out`` is followed: the link's target is replaced and the link stays.
- The export writes into ``.<name>.partial-<pid>`` beside the target. SIGTERM and SIGINT remove it
  (the handler raises, the exporter's cleanup runs). A partial dir left by a killed process
  (``kill -9``, a power cut) is removed by the next export into the same parent when its owner is
  dead: the pid in its name no longer exists (``os.kill(pid, 0)`` raises ``ProcessLookupError``).
  A live pid keeps its dir, whoever it belongs to now, so a reused pid errs on the side of keeping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import ExportError

MANIFEST = "aapp.json"
# what any version of the exporter writes besides the files its manifest lists (older manifests did
# not list the copied tokenizer files)
EXPORT_WRITES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                 "chat_template.jinja", "calibration.safetensors", "calibration.json", "config.json"}
_LEVEL_GRAPH = re.compile(r"^(prefill|decode)-s\d\.\d\d\.onnx$")
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-(?P<pid>\d+)$")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_leftovers(parent: Path, name: str) -> list[Path]:
    """Remove ``.<name>.partial-<pid>`` / ``.<name>.old-<pid>`` dirs in ``parent`` whose pid is dead."""
    removed = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        m = _LEFTOVER.match(entry.name)
        if m and m.group("name") == name and int(m.group("pid")) != os.getpid() and not pid_alive(int(m.group("pid"))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def resolve_target(out_dir: Path) -> Path:
    """The directory to replace (a symlink's target: the link keeps pointing at the new export)."""
    return Path(os.path.realpath(out_dir)) if out_dir.is_symlink() else out_dir


def _within(path: Path, directory: Path) -> bool:
    path, directory = Path(os.path.realpath(path)), Path(os.path.realpath(directory))
    return path == directory or directory in path.parents


def check_replaceable(target: Path, flag: str, force: bool, keep: dict[str, Path] | None = None) -> None:
    """Refuse, before anything is built, to replace a directory that holds anything an export did not
    write, one that cannot be renamed (a mount point: ``EBUSY``), or one that holds ``keep``'s paths
    (the checkpoint being read, the working directory), even with ``--force``."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ExportError(f"{flag}: {target} exists and is not a directory; choose another path")
    for what, path in {"the working directory": Path.cwd(), **(keep or {})}.items():
        if _within(path, target):
            raise ExportError(f"{flag}: {target} would be replaced by the export, but {what} ({path}) is inside it; "
                              "choose an --out outside it" + (" (or run from another directory)"
                                                               if what == "the working directory" else ""))
    if os.path.ismount(target):
        raise ExportError(f"{flag}: {target} is a mount point, which an export cannot replace (it writes a sibling "
                          "directory and renames it); use a directory inside it, e.g. "
                          f"--out {target / 'model' / 'model.onnx'}")
    entries = sorted(p.name for p in target.iterdir())
    if not entries or force:
        return
    manifest = target / MANIFEST
    if not manifest.is_file():
        raise ExportError(f"{flag}: {target} is a non-empty directory that is not a model dir ({', '.join(entries[:5])}"
                          f"{', ...' if len(entries) > 5 else ''}); choose an empty or new directory, or pass --force "
                          "to replace it")
    try:
        listed = set(json.loads(manifest.read_text()).get("files", {})) | {MANIFEST}
    except (OSError, ValueError, AttributeError):
        listed = {MANIFEST}
    extra = [e for e in entries if e not in listed and e not in EXPORT_WRITES and not _LEVEL_GRAPH.match(e)]
    if extra:
        raise ExportError(f"{flag}: {target} holds files the export did not write ({', '.join(extra[:5])}"
                          f"{', ...' if len(extra) > 5 else ''}); move them out, or pass --force to replace the "
                          "whole directory")


def replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an earlier export at ``target`` is removed only after the move."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class Terminated(BaseException):
    """SIGTERM during an export (a ``BaseException``, so only the cleanup sees it)."""


@contextmanager
def terminate_as_exception() -> Iterator[None]:
    """While inside, SIGTERM raises ``Terminated`` (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["check_replaceable", "remove_stale_leftovers", "resolve_target", "replace_dir", "terminate_as_exception",
           "Terminated", "pid_alive"]
