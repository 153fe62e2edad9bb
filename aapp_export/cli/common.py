"""What every CLI of the toolkit shares: one-line errors, ``--debug`` for tracebacks."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from aapp_runtime.errors import AappRuntimeError

from ..choices import DEVICES, SCORERS
from ..errors import AappError
from ..outdir import Terminated


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
    except Terminated:
        print(f"{prog}: terminated (SIGTERM); nothing was left behind", file=sys.stderr)
        return 143
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        _silence_stdout()
        return 0


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush cannot fail."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    """The calibration inputs shared by aapp-export and aapp-eval."""
    p.add_argument("--calib-harmful", type=Path, help="harmful prompts for circuit identification, one a line "
                   "(default: the model card's)")
    p.add_argument("--calib-harmless", type=Path, help="harmless prompts for circuit identification, one a line "
                   "(default: the model card's)")
    p.add_argument("--calib-check", type=Path, help="held-out harmful prompts the causal check answers to choose the "
                   "scorer, one a line; keep them out of --calib-harmful and out of your test prompts (default: the "
                   "model card's, for the demo data/harmful_val.txt)")
    p.add_argument("--calib-check-harmless", type=Path, help="held-out harmless prompts the causal check also answers: "
                   "scorer and budget are chosen by refusal minus over-refusal on them; keep them out of "
                   "--calib-harmless and out of your test prompts (default: the model card's, for the demo "
                   "data/harmless_val.txt)")
    p.add_argument("--calib-text", type=Path, help="general text for PP history statistics, one paragraph a line "
                   "(default: the model card's)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where calibration (and aapp-eval's torch engine) runs: cuda spreads the model over the "
                        "GPUs with accelerate (device_map=auto, host memory past them) in bf16; auto: cuda when "
                        "torch sees a GPU, else cpu")
    p.add_argument("--budget", type=float, default=None,
                   help="protected fraction of prunable units (default: the one of 0.05, 0.02, 0.1, 0.2, 0.3, 0.4 whose protected "
                        "set keeps the most refusal under AAPP at 0.4 in the causal check; 0.05 unless another refuses more)")
    p.add_argument("--scorer", choices=SCORERS, default=None,
                   help="alignment scorer (default: the one whose protected set keeps the most refusal under AAPP at "
                        "0.4 on the causal check's prompts; the ablation gap breaks ties); a given scorer is the only one "
                        "run: refusal-dir and actdiff need no backward pass")
