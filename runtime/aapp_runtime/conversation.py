"""``Conversation``: a multi-turn chat that keeps the KV cache of its turns.

Each turn renders the whole conversation with the model's chat template, finds the longest prefix
it shares with the tokens whose keys and values the cache already holds, and prefills only the rest
(the new user message and the template's markers), so the first-token time of a turn depends on
that turn, not on the history. Where the template renders an earlier turn differently from what was
generated (a reply re-tokenized differently, markers it adds after the reply), the shared prefix
ends there and the cache is recomputed from that point; the result equals a fresh prefill of the
same history (tests: logits within 1e-4, greedy tokens identical).

Pruned conversations (``method="pp"``/``"aapp"`` at a built sparsity) decide the kept heads and
channels at the first turn, as one request, and run every later turn, prefill included, on the
decode graph with those kept weights; a change before the end of the first turn's prompt decides
again. Context overflow is the caller's choice: ``overflow="error"`` (default) raises, naming the
sizes; ``"drop_oldest"`` drops the oldest turns after any system message until the prompt and one
new token fit, and says so in ``dropped_messages``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .errors import InputError
from .generation import Chunk, Generation, GenerationResult

if TYPE_CHECKING:
    from .session import Session

OVERFLOW_POLICIES = ("error", "drop_oldest")


def _shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Conversation:
    """Turns of one chat on one ``Session`` (``Session.chat(...)``); one turn at a time."""

    def __init__(self, session: "Session", messages: Sequence[dict[str, Any]] = (), *, sparsity: float = 0.0,
                 method: str = "dense", overflow: str = "error") -> None:
        from .session import _message

        if method == "aapp-adaptive":
            raise InputError("method='aapp-adaptive' picks a sparsity per request, which a conversation's kept KV "
                             "cache cannot follow: pass method='aapp' (or call Session.generate per request)")
        if overflow not in OVERFLOW_POLICIES:
            raise InputError(f"overflow={overflow!r} is not one of {', '.join(OVERFLOW_POLICIES)}")
        if session.codec.template is None:
            raise InputError(f"{session.manifest.directory} has no chat template: a conversation needs one "
                             "(re-export from a checkpoint whose tokenizer has a chat_template)")
        self.session, self.method, self.overflow = session, method, overflow
        self.level = session.pruned_level(method, sparsity)
        self.messages: list[dict[str, Any]] = [_message(m, j) for j, m in enumerate(messages)]
        self.dropped_messages = 0
        self._cache = None
        self._cached: list[int] = []  # ids whose keys and values the cache holds, in order
        self._graphs = None  # (prefill, decode) of a pruned conversation, decided at its first turn
        self._decided = 0  # prompt length the pruned decisions were made on
        self._busy = threading.Lock()

    # -- the prompt of a turn -------------------------------------------------------------------
    def _render(self) -> list[int]:
        s = self.session
        while True:
            ids = s.codec.encode_chat(self.messages)
            if len(ids) < s.context_length:
                return ids
            first = 1 if self.messages and self.messages[0].get("role") == "system" else 0
            if self.overflow == "error" or len(self.messages) - first <= 1:
                raise InputError(f"the conversation has {len(ids)} tokens but the model's context is "
                                 f"{s.context_length}: start a new one, or pass overflow='drop_oldest'")
            del self.messages[first:first + 2]  # the oldest user turn and its reply
            self.dropped_messages += 2

    def _reset(self) -> None:
        if self._graphs is not None:
            self.session._release(self.level, self._graphs[0])
        self._cache, self._cached, self._graphs, self._decided = None, [], None, 0

    # -- turns ----------------------------------------------------------------------------------
    def start(self, content: str | None = None, max_new_tokens: int | None = None, **kwargs: Any) -> Generation:
        """The assistant's next reply as a ``Generation`` (arguments as ``Session.start``, without the
        pruning ones, which the conversation fixed); ``content``: a user message appended first. The
        reply is appended to ``messages`` when the generation ends (cancelled: what it has)."""
        from .session import _check_text

        s = self.session
        for bad in ("sparsity", "method", "chat"):
            if bad in kwargs:
                raise InputError(f"{bad}= is fixed when the conversation starts: pass it to Session.chat()")
        params = s.params(max_new_tokens=max_new_tokens, **kwargs)
        if content is not None:
            if not isinstance(content, str) or not content.strip():
                raise InputError("the message is empty or not a string: pass some text")
            _check_text(content, "the message")
            self.messages.append({"role": "user", "content": content})
        if not self.messages:
            raise InputError("the conversation has no messages: pass content='...'")
        turn: dict[str, Any] = {}
        return Generation(lambda gen: self._turn(gen, params, turn), params.timeout_s,
                          lambda: s._result(turn["state"], self.level, self.method))

    def _turn(self, gen: Generation, params: Any, turn: dict[str, Any]) -> Iterator[Chunk]:
        from .session import _State

        s = self.session
        if not self._busy.acquire(blocking=False):
            raise InputError("this conversation is answering already: finish or cancel that turn first")
        try:
            ids = self._render()
            reuse = _shared_prefix(self._cached, ids)
            if self._graphs is not None and reuse < self._decided:
                self._reset()  # the prompt the decisions were made on changed: decide again
                reuse = 0
            reuse = min(reuse, len(ids) - 1)  # at least one token runs, for the next token's logits
            n, clipped = s._clip(len(ids), params.max_new_tokens)
            turn["state"] = state = _State(len(ids), cached_tokens=reuse, clipped=clipped)
            if self._cache is None:
                if self.level is None:
                    graph = decode = s._dense
                else:
                    self._graphs = graph, decode = s._request_graphs(self.level, self.method)
                    self._decided = len(ids)
                self._cache = s._new_cache(graph.kv_heads, len(ids), s.context_length - len(ids))
            else:
                graph = decode = self._graphs[1] if self._graphs else s._dense
                self._cache.truncate(reuse)
            self._cached = ids[:reuse]
            try:
                yield from s._steps(ids[reuse:], params, gen, state, graph, decode, self._cache, ids[:reuse])
            finally:
                self._cached = ids[:reuse] + state.fed
                self.messages.append({"role": "assistant", "content": state.text})
        finally:
            self._busy.release()

    def send(self, content: str | None = None, max_new_tokens: int | None = None, **kwargs: Any) -> GenerationResult:
        """Append ``content`` as the user's message and generate the reply (``start(...).result()``)."""
        return self.start(content, max_new_tokens, **kwargs).result()

    def stream(self, content: str | None = None, max_new_tokens: int | None = None, **kwargs: Any
               ) -> Iterator[Chunk]:
        return iter(self.start(content, max_new_tokens, **kwargs))

    def close(self) -> None:
        """Free the cache and a pruned conversation's kept weights."""
        self._reset()

    def __enter__(self) -> "Conversation":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Conversation", "OVERFLOW_POLICIES"]
