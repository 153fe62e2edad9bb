"""Typed errors of the offline toolkit.

Every error names the input, what is wrong with it and how to fix it, in one line, so the CLIs can
print ``error: <message>`` and exit non-zero without a traceback.
"""

from __future__ import annotations


class AappError(Exception):
    """Base class of every error the toolkit raises on purpose."""

    exit_code = 2


class UnknownModelError(AappError):
    """An alias, hub id or directory that does not name a usable checkpoint."""


class CheckpointError(AappError):
    """A checkpoint that exists but is incomplete, corrupt or in a refused format."""


class OfflineError(AappError):
    """A hub id that is not in the local cache while the hub cannot be reached."""


class UnsupportedModelError(AappError):
    """An architecture or configuration feature the graph builder does not implement."""


class ExportError(AappError):
    """The export itself failed (output path, checker, disk)."""


class InputError(AappError):
    """A bad argument value (sparsity out of range, empty prompt file, ...)."""


class BenchmarkError(AappError):
    """A benchmark engine's worker or the onnxruntime-genai builder failed."""
