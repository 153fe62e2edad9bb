"""Tokenizer and chat template of a model dir: ``tokenizers`` for text, jinja2's sandbox for templates."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from .errors import InputError, ModelDirError

ROLES = ("system", "user", "assistant", "model")


def _raise(message: str) -> None:
    raise TemplateError(message)


class TextCodec:
    """Encodes prompts (raw or chat-formatted) and decodes generated tokens."""

    def __init__(self, directory: Path, tokenizer_file: str = "tokenizer.json",
                 template_file: str | None = "chat_template.jinja", special: dict[str, str] | None = None) -> None:
        path = Path(directory) / tokenizer_file
        if not path.is_file():
            raise ModelDirError(f"{path} is missing: the model dir has no tokenizer; re-export the model")
        self.tokenizer = Tokenizer.from_file(str(path))
        self.special = dict(special or {})
        self.template = None
        if template_file and (Path(directory) / template_file).is_file():
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = _raise
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            env.filters["tojson"] = lambda x, indent=None: json.dumps(x, indent=indent, ensure_ascii=False)
            self.template = env.from_string((Path(directory) / template_file).read_text())

    def render_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        if self.template is None:
            raise InputError("this model dir has no chat template: pass a plain prompt with chat=False, or token ids")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise InputError(f"chat message {i} must be a dict with 'role' and 'content', got {m!r}")
        try:
            return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special)
        except TemplateError as exc:
            raise InputError(f"the chat template rejected the messages: {exc}") from exc

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        # The rendered template already holds <bos>: no second one from the post-processor.
        return self.encode(self.render_chat(messages), add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
