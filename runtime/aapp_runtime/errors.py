"""Typed errors of the runtime; each message names the input, what is wrong and the fix."""

from __future__ import annotations

import sys


class AappRuntimeError(Exception):
    """Base class of every error the runtime raises on purpose."""

    exit_code = 2


class ModelDirError(AappRuntimeError):
    """A model directory that is missing, corrupt, or of another manifest version."""


class ProviderError(AappRuntimeError):
    """An execution provider that was asked for and cannot be used."""


class InputError(AappRuntimeError):
    """A bad generation input: empty prompt, prompt longer than the context, bad sampling value."""


def report(prog: str, exc: BaseException, debug: bool) -> int:
    """A command's one-line error (the traceback only with ``--debug``); returns the exit status."""
    if debug:
        raise exc
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return getattr(exc, "exit_code", 1)
