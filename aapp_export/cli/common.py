"""What every CLI of the toolkit shares: one-line errors, ``--debug`` for tracebacks."""

from __future__ import annotations

import sys
from typing import Callable

from aapp_runtime.errors import AappRuntimeError

from ..errors import AappError


def run_cli(prog: str, body: Callable[[], int], debug: bool) -> int:
    """Run ``body``; a typed error becomes ``prog: error: message`` on stderr and a non-zero exit."""
    try:
        return body()
    except (AappError, AappRuntimeError) as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
