"""``aapp-serve MODEL_DIR``: an OpenAI-compatible HTTP server over one ``Session`` (Starlette +
uvicorn, the ``aapp-runtime[serve]`` extra; no torch).

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions``, with or
without ``stream`` (server-sent events ending in ``data: [DONE]``; ``stream_options.include_usage``
adds a usage chunk). Body fields: ``messages`` / ``prompt``, ``max_tokens`` (or
``max_completion_tokens``), ``temperature``, ``top_p``, ``seed``, ``stop``, and as extra fields
``top_k``, ``min_p``, ``repetition_penalty``, ``ignore_eos``, ``sparsity``, ``method`` ("dense", "pp",
"aapp", "aapp-adaptive"), ``adaptive_path`` ("restart", "dense-prefill"; absent: the model dir's default,
``Session.default_adaptive_path``).
Responses carry ``usage`` and an ``aapp`` object (our finish reason, timings, method, sparsity).

Limits: ``--max-body-bytes``, ``--max-tokens`` (a request asking for more gets 400),
``--parallel`` generations at once and ``--queue`` waiting; past that a request gets 429 at once.
A client that disconnects cancels its generation (before the next decode step). Binds to
127.0.0.1 unless ``--host`` says otherwise; ``--api-key`` requires ``Authorization: Bearer KEY``.
Errors are OpenAI-shaped JSON: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
import uuid
from typing import Any, AsyncIterator

from .errors import AappRuntimeError, InputError, report
from .generation import Generation
from .providers import PROVIDER_CHOICES
from .thread_pool import THREAD_POOLS

OPENAI_FINISH = {"eos": "stop", "stop": "stop", "length": "length", "timeout": "length", "cancelled": "stop"}
EXTRA_FIELDS = ("top_k", "min_p", "repetition_penalty")


class HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code


class Limits:
    """How much the server takes: body size, tokens per request, generations at once and waiting."""

    def __init__(self, max_body_bytes: int = 1 << 20, max_tokens: int = 4096, parallel: int = 1,
                 queue: int = 16) -> None:
        self.max_body_bytes, self.max_tokens = max_body_bytes, max_tokens
        self.parallel, self.queue = parallel, queue


class Gate:
    """At most ``parallel`` generations run; at most ``queue`` wait; the next one is refused (429)."""

    def __init__(self, parallel: int, queue: int) -> None:
        self._slots = threading.Semaphore(parallel)
        self._lock = threading.Lock()
        self._admitted = 0
        self._capacity = parallel + queue

    def admit(self) -> None:
        with self._lock:
            if self._admitted >= self._capacity:
                raise HTTPError(429, f"the server is busy ({self._admitted} requests running or queued); retry "
                                "later", "rate_limit_error", code="queue_full")
            self._admitted += 1

    def leave(self) -> None:
        with self._lock:
            self._admitted -= 1

    def acquire(self, generation: Generation) -> bool:
        """Wait for a slot (a cancelled generation stops waiting); True when one was taken."""
        while not self._slots.acquire(timeout=0.05):
            if generation.stop_reason() == "cancelled":
                return False
        return True

    def release(self) -> None:
        self._slots.release()


def _number(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise HTTPError(400, f"'{name}' must be a {'number' if kind is not int else 'whole number'}, not "
                        f"{json.dumps(value)[:40]}", param=name)
    return value


class App:
    """The ASGI application (``App(session, model_id, limits).asgi``)."""

    def __init__(self, session: Any, model_id: str, limits: Limits, api_key: str | None = None) -> None:
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.session, self.model_id, self.limits, self.api_key = session, model_id, limits, api_key
        self.gate = Gate(limits.parallel, limits.queue)
        self.created = int(time.time())
        self.asgi = Starlette(routes=[
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
        ])

    # -- plumbing ---------------------------------------------------------------------------------
    @staticmethod
    def _error(exc: HTTPError):
        from starlette.responses import JSONResponse

        return JSONResponse({"error": {"message": exc.message, "type": exc.kind, "param": exc.param,
                                       "code": exc.code}}, status_code=exc.status)

    def _authorize(self, request) -> None:
        if self.api_key and request.headers.get("authorization", "") != f"Bearer {self.api_key}":
            raise HTTPError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                            "authentication_error", code="invalid_api_key")

    async def _body(self, request) -> dict[str, Any]:
        self._authorize(request)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            raise HTTPError(413, f"the request body has {declared} bytes; this server takes at most "
                            f"{self.limits.max_body_bytes}", code="body_too_large")
        raw = b""
        async for part in request.stream():
            raw += part
            if len(raw) > self.limits.max_body_bytes:
                raise HTTPError(413, f"the request body is over {self.limits.max_body_bytes} bytes",
                                code="body_too_large")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"the request body is not JSON ({exc})") from exc
        if not isinstance(body, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.model_id:
            raise HTTPError(404, f"model {model!r} is not served here; this server has {self.model_id!r}",
                            param="model", code="model_not_found")
        if body.get("n", 1) != 1:
            raise HTTPError(400, "'n' must be 1: one choice per request", param="n")
        return body

    def _arguments(self, body: dict[str, Any]) -> dict[str, Any]:
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        _number({"max_tokens": max_tokens}, "max_tokens", int)
        if max_tokens is not None and not 0 < max_tokens <= self.limits.max_tokens:
            raise HTTPError(400, f"'max_tokens' is {max_tokens}; this server takes 1 to {self.limits.max_tokens}",
                            param="max_tokens")
        args: dict[str, Any] = {"max_new_tokens": max_tokens}
        for name in ("temperature", "top_p", *EXTRA_FIELDS):
            args[name] = _number(body, name, (int, float))
        args["seed"] = _number(body, "seed", int)
        args["stop"] = body.get("stop")
        ignore_eos = body.get("ignore_eos", False)
        if not isinstance(ignore_eos, bool):
            raise HTTPError(400, "'ignore_eos' must be true or false", param="ignore_eos")
        args["ignore_eos"] = ignore_eos
        sparsity = _number(body, "sparsity", (int, float))
        method = body.get("method")
        if sparsity is not None or method is not None:
            args["sparsity"] = sparsity if sparsity is not None else 0.0
            args["method"] = method if method is not None else ("aapp" if sparsity else "dense")
        if "adaptive_path" in body:
            if not isinstance(body["adaptive_path"], str):
                raise HTTPError(400, "'adaptive_path' must be \"restart\" or \"dense-prefill\"", param="adaptive_path")
            args["adaptive_path"] = body["adaptive_path"]
        if args["max_new_tokens"] is None:  # the model's default, within the server's limit
            args["max_new_tokens"] = min(self.session.params().max_new_tokens, self.limits.max_tokens)
        return args

    def _start(self, prompt: Any, args: dict[str, Any], chat: bool) -> Generation:
        try:
            return self.session.start(prompt, chat=chat, **args)
        except InputError as exc:
            raise HTTPError(400, str(exc)) from exc

    async def _run(self, generation: Generation, request) -> Any:
        """Run a whole generation in a worker thread; a client that goes away cancels it."""
        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(None, self._blocking_result, generation)
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=0.1)
            if not done and await request.is_disconnected():
                generation.cancel()
        return await task

    def _blocking_result(self, generation: Generation):
        if not self.gate.acquire(generation):
            return generation.result()  # cancelled while waiting: ends at once, nothing run
        try:
            return generation.result()
        finally:
            self.gate.release()

    async def _chunks(self, generation: Generation) -> AsyncIterator[Any]:
        """The generation's chunks, produced in a worker thread; closing this iterator cancels it."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def produce() -> None:
            try:
                if self.gate.acquire(generation):
                    try:
                        for chunk in generation:
                            loop.call_soon_threadsafe(queue.put_nowait, chunk)
                    finally:
                        self.gate.release()
            except BaseException as exc:  # handed to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            loop.call_soon_threadsafe(queue.put_nowait, done)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            generation.cancel()  # the client went away (or we are done: a no-op)

    def _aapp(self, result) -> dict[str, Any]:
        return {"finish_reason": result.finish_reason, "timings": result.timings, "method": result.method,
                "sparsity": result.sparsity, "kept_fraction": result.kept_fraction,
                "risk_gate": result.risk_gate, "confirm_gate": result.confirm_gate,
                **({} if result.dense_prefill is None else {"dense_prefill": result.dense_prefill}),
                "max_new_tokens_clipped": result.max_new_tokens_clipped}

    # -- endpoints --------------------------------------------------------------------------------
    async def health(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok", "model": self.model_id, "provider": self.session.provider})

    async def models(self, request):
        from starlette.responses import JSONResponse

        try:
            self._authorize(request)
        except HTTPError as exc:
            return self._error(exc)
        return JSONResponse({"object": "list", "data": [{"id": self.model_id, "object": "model",
                                                         "created": self.created, "owned_by": "aapp-export"}]})

    async def chat_completions(self, request):
        return await self._complete(request, chat=True)

    async def completions(self, request):
        return await self._complete(request, chat=False)

    async def _complete(self, request, chat: bool):
        from starlette.responses import JSONResponse, StreamingResponse

        try:
            body = await self._body(request)
            if chat:
                prompt = body.get("messages")
                if not isinstance(prompt, list) or not prompt:
                    raise HTTPError(400, "'messages' must be a non-empty list of {'role', 'content'}", param="messages")
            else:
                prompt = body.get("prompt")
                if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                    prompt = prompt[0]
                if not isinstance(prompt, str):
                    raise HTTPError(400, "'prompt' must be a string", param="prompt")
            args = self._arguments(body)
            generation = self._start(prompt, args, chat if chat else False)
            self.gate.admit()
        except HTTPError as exc:
            return self._error(exc)
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not body.get("stream"):
            try:
                result = await self._run(generation, request)
            except InputError as exc:
                return self._error(HTTPError(400, str(exc)))
            except AappRuntimeError as exc:
                return self._error(HTTPError(500, str(exc), "server_error"))
            finally:
                self.gate.leave()
            finish = OPENAI_FINISH[result.finish_reason]
            choice = ({"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": finish}
                      if chat else {"index": 0, "text": result.text, "finish_reason": finish, "logprobs": None})
            usage = {k: v for k, v in result.usage.items() if k != "cached_tokens"}
            return JSONResponse({"id": ident, "object": "chat.completion" if chat else "text_completion",
                                 "created": created, "model": self.model_id, "choices": [choice], "usage": usage,
                                 "aapp": self._aapp(result)})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        kind = "chat.completion.chunk" if chat else "text_completion"

        def event(choices: list, **extra: Any) -> str:
            return "data: " + json.dumps({"id": ident, "object": kind, "created": created, "model": self.model_id,
                                          "choices": choices, **extra}, ensure_ascii=False) + "\n\n"

        def choice(text: str, finish: str | None, first: bool = False) -> dict[str, Any]:
            if chat:
                delta = {"role": "assistant", "content": text} if first else {"content": text}
                return {"index": 0, "delta": delta, "finish_reason": finish}
            return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

        async def events() -> AsyncIterator[str]:
            try:
                first = True
                async for chunk in self._chunks(generation):
                    finish = OPENAI_FINISH[chunk.finish_reason] if chunk.finish_reason else None
                    if chunk.text or first or finish:
                        extra = {"aapp": {"finish_reason": chunk.finish_reason, "timings": chunk.timings}} if finish \
                            else {}
                        yield event([choice(chunk.text, finish, first)], **extra)
                        first = False
                    if finish and include_usage:
                        usage = {k: v for k, v in chunk.usage.items() if k != "cached_tokens"}
                        yield event([], usage=usage)
                yield "data: [DONE]\n\n"
            except AappRuntimeError as exc:
                yield "data: " + json.dumps({"error": {"message": str(exc), "type": "server_error", "param": None,
                                                       "code": None}}) + "\n\n"
            finally:
                self.gate.leave()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aapp-serve", description="Serve an AAPP-exported model dir over an "
                                "OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models).")
    p.add_argument("model_dir", help="directory written by aapp-export (holds aapp.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-id", default=None, help="the model name clients send (default: the dir's name)")
    p.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--thread-pool", choices=THREAD_POOLS, default="shared",
                   help="shared (default): one intra-op pool for the process; auto, session: pools per graph")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    p.add_argument("--parallel", type=int, default=1, help="generations run at once (default 1)")
    p.add_argument("--queue", type=int, default=16, help="requests waiting for a slot before 429 (default 16)")
    p.add_argument("--max-tokens", type=int, default=4096, help="largest max_tokens a request may ask for")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        try:
            import uvicorn
        except ImportError as exc:
            raise InputError("aapp-serve needs Starlette and uvicorn: pip install 'aapp-runtime[serve]'") from exc
        from .session import Session

        if args.parallel < 1 or args.queue < 0 or args.max_tokens < 1 or args.max_body_bytes < 1:
            raise InputError("--parallel, --max-tokens and --max-body-bytes must be >= 1 and --queue >= 0")
        session = Session(args.model_dir, provider=args.provider, threads=args.threads, thread_pool=args.thread_pool)
        model_id = args.model_id or session.manifest.directory.name
        app = App(session, model_id, Limits(args.max_body_bytes, args.max_tokens, args.parallel, args.queue),
                  args.api_key)
        print(f"aapp-serve: {model_id} on {session.provider} at http://{args.host}:{args.port}/v1", file=sys.stderr)
        uvicorn.run(app.asgi, host=args.host, port=args.port, log_level="warning")
        return 0
    except (AappRuntimeError, OSError) as exc:  # OSError: the port is taken, say
        return report("aapp-serve", exc, args.debug)


if __name__ == "__main__":
    sys.exit(main())
