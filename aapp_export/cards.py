"""Model cards: the aliases users pass to ``--model`` (``demo``, ``gemma3``, ``llama2``, ...).

A card is a JSON file ``models/cards/<alias>.json`` naming where the checkpoint comes from
(``hub:<repo id>`` or ``bundled:<dir under models/>``), its family, chat format and the default
calibration / evaluation prompt files. Paths inside a card are relative to the repository root.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UnknownModelError

REPO_ROOT = Path(__file__).resolve().parents[1]


def models_dir() -> Path:
    """The ``models/`` directory (override with ``AAPP_MODELS_DIR``)."""
    return Path(os.environ.get("AAPP_MODELS_DIR", REPO_ROOT / "models"))


@dataclass(frozen=True)
class ModelCard:
    """One alias as described by its card file."""

    alias: str
    source: str
    family: str
    chat_format: str
    description: str = ""
    calibration: dict[str, str] = field(default_factory=dict)
    evaluation: dict[str, str] = field(default_factory=dict)

    @property
    def hub_id(self) -> str | None:
        return self.source[len("hub:"):] if self.source.startswith("hub:") else None

    @property
    def bundled_path(self) -> Path | None:
        if self.source.startswith("bundled:"):
            return models_dir() / self.source[len("bundled:"):]
        return None

    def data_file(self, section: str, key: str) -> Path | None:
        """Absolute path of a calibration/evaluation file named by the card, or None."""
        rel = getattr(self, section).get(key)
        return None if rel is None else REPO_ROOT / rel


_FILE_SUFFIX = {"calibration": "calib", "evaluation": "test"}
# the causal check's held-out harmful prompts, and the harmless ones its over-refusal is measured on
_OWN_FILE = {("calibration", "check"): "harmful_val", ("calibration", "check_harmless"): "harmless_val"}


def default_prompt_file(card: ModelCard | None, checkpoint_dir: Path | None, section: str, key: str) -> Path | None:
    """The prompt file a command uses when none is given: the model card's; else the checkpoint's own
    ``data/<key>_calib.txt`` / ``data/<key>_test.txt`` (what ``scripts/train_demo_model.py`` writes; the
    calibration's ``check`` and ``check_harmless``: ``data/harmful_val.txt`` and ``data/harmless_val.txt``,
    held out from training and from the tests);
    else the demo card's (generic English prompt sets). None if no card names one."""
    if card is not None and (path := card.data_file(section, key)) is not None:
        return path
    if checkpoint_dir is not None:
        own = Path(checkpoint_dir) / "data" / f"{_OWN_FILE.get((section, key), f'{key}_{_FILE_SUFFIX[section]}')}.txt"
        if own.is_file():
            return own
    return load_card("demo").data_file(section, key)


def available_aliases() -> list[str]:
    return sorted(p.stem for p in (models_dir() / "cards").glob("*.json"))


def load_card(alias: str) -> ModelCard:
    """Read ``models/cards/<alias>.json``; raises UnknownModelError listing the known aliases."""
    path = models_dir() / "cards" / f"{alias}.json"
    if not path.is_file():
        raise UnknownModelError(
            f"unknown model alias {alias!r}: no card {path}; known aliases: "
            f"{', '.join(available_aliases()) or '(none)'}; or pass a hub id (org/name) or a local directory"
        )
    try:
        data = json.loads(path.read_text())
        return ModelCard(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise UnknownModelError(f"model card {path} is not valid: {exc}; fix the JSON fields") from exc
