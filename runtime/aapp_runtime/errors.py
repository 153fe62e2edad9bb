"""Typed errors of the runtime; each message names the input, what is wrong and the fix."""

from __future__ import annotations


class AappRuntimeError(Exception):
    """Base class of every error the runtime raises on purpose."""

    exit_code = 2


class ModelDirError(AappRuntimeError):
    """A model directory that is missing, corrupt, or of another manifest version."""


class ProviderError(AappRuntimeError):
    """An execution provider that was asked for and cannot be used."""


class InputError(AappRuntimeError):
    """A bad generation input: empty prompt, prompt longer than the context, bad sampling value."""
