"""The command line that the comparisons over per-model reports share (``budget_rule.py`` over
``calibration_stability.json``, ``gate_center.py`` over ``routing.json``): which reports by default (the
shipped model's in ``docs/results`` and every seed's in ``docs/results/seeds/*``), what each is called,
reading them with an error that names the file and the script that writes it, and writing the result
as ``STEM.json`` and ``STEM.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def default_reports(filename: str) -> list[Path]:
    """The shipped model's report and every seed's, those that exist."""
    return [p for p in [RESULTS / filename, *sorted((RESULTS / "seeds").glob(f"*/{filename}"))] if p.is_file()]


def report_name(path: Path) -> str:
    """``shipped`` for the shipped model's report, else its folder's name (``fp32_seed1``)."""
    return "shipped" if path.resolve().parent == RESULTS else path.parent.name


def read_reports(paths: list[Path], producer: str, error: Callable[[str], Exception]) -> dict[str, dict]:
    """``{name: report}``; a second report of the same name is keyed by its path. Raises ``error`` naming an
    unreadable file and ``producer``, the script that writes such reports."""
    reports = {}
    for p in paths:
        try:
            reports[report_name(p) if report_name(p) not in reports else str(p)] = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise error(f"{p}: not a readable report ({e}); run scripts/{producer} --out FILE first") from None
    return reports


def write_outputs(result: dict, text: str, out: Path | None, stem: str) -> None:
    """Print the markdown ``text``; with ``out``, write ``STEM.json`` and ``STEM.md`` there."""
    print(text, end="")
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / f"{stem}.md").write_text(text)
