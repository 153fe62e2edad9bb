"""aapp-serve through the official ``openai`` client and raw HTTP: chat and text completions with and
without streaming, stop, usage, the extra pruning fields, limits, the queue, disconnects, errors."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

MESSAGES = [{"role": "user", "content": "Tell me about bread"}]


def _post(url: str, body: bytes) -> tuple[int, dict]:
    """POST raw bytes (the client libraries would refuse to send what these tests need)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, session, **limits) -> None:
        import uvicorn

        from aapp_runtime.serve import App, Limits

        api_key = limits.pop("api_key", None)
        self.app = App(session, "tiny", Limits(**limits), api_key)
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app.asgi, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            assert time.time() < deadline, "the server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def client(self, key: str = "none"):
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def session(exports):
    from aapp_runtime import Session

    return Session(exports["gemma3"], provider="cpu")


@pytest.fixture(scope="module")
def server(session):
    s = _Server(session, max_tokens=64, max_body_bytes=4096)
    yield s
    s.stop()


def test_models_and_chat_completions_match_the_session(server, session):
    client = server.client()
    assert [m.id for m in client.models.list().data] == ["tiny"]
    want = session.generate(MESSAGES, 12)
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
    assert reply.choices[0].message.content == want.text
    assert reply.usage.prompt_tokens == want.prompt_tokens and reply.usage.completion_tokens == len(want.tokens)
    assert reply.choices[0].finish_reason in ("stop", "length")
    # streaming: the deltas join to the same text; the usage chunk comes last
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    parts, usage, finish = [], None, None
    for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert "".join(parts) == want.text and usage.completion_tokens == len(want.tokens)
    assert finish == reply.choices[0].finish_reason


def test_stop_seed_extra_fields_and_text_completions(server, session):
    client = server.client()
    full = session.generate(MESSAGES, 16, ignore_eos=True).text
    stop = full[5:9]
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=16, temperature=0, stop=stop)
    assert reply.choices[0].message.content == session.generate(MESSAGES, 16, stop=stop).text
    assert reply.choices[0].finish_reason == "stop"
    sampled = [client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=1.0,
                                              seed=5, extra_body={"top_k": 20}).choices[0].message.content
               for _ in range(2)]
    assert sampled[0] == sampled[1] == session.generate(MESSAGES, 8, temperature=1.0, seed=5, top_k=20).text
    text = client.completions.create(model="tiny", prompt="Bread is", max_tokens=6, temperature=0)
    assert text.choices[0].text == session.generate("Bread is", 6, chat=False).text
    status, raw = _post(f"{server.url}/chat/completions", json.dumps(
        {"messages": MESSAGES, "max_tokens": 4, "sparsity": 0.4, "method": "aapp"}).encode())
    assert status == 400 and "no pruned graphs" in raw["error"]["message"]


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not JSON"),
    (json.dumps({"messages": []}).encode(), 400, "messages"),
    (json.dumps({"messages": MESSAGES, "model": "gpt-4"}).encode(), 404, "not served here"),
    (json.dumps({"messages": MESSAGES, "max_tokens": 100000}).encode(), 400, "max_tokens"),
    (json.dumps({"messages": MESSAGES, "temperature": "hot"}).encode(), 400, "temperature"),
    (json.dumps({"messages": MESSAGES, "top_p": 7}).encode(), 400, "top_p"),
    (json.dumps({"messages": MESSAGES, "n": 3}).encode(), 400, "'n'"),
    (json.dumps({"messages": [{"role": "user", "content": "bread " * 700}]}).encode(), 413, "bytes"),
    (json.dumps({"prompt": 5}).encode(), 400, "prompt"),
    (json.dumps({"messages": MESSAGES, "adaptive_path": 5}).encode(), 400, "adaptive_path"),
    (json.dumps({"messages": MESSAGES, "adaptive_path": "later"}).encode(), 400, "adaptive_path='later'"),
])
def test_bad_requests_get_a_status_and_a_json_error(server, body, status, words):
    path = "completions" if b'"prompt"' in body else "chat/completions"
    got, reply = _post(f"{server.url}/{path}", body)
    assert got == status, reply
    error = reply["error"]
    assert words in error["message"] and set(error) == {"message", "type", "param", "code"}


def test_an_over_long_prompt_is_400_through_the_client(server, session):
    too_long = " ".join(["bread"] * (session.context_length + 10))
    big = _Server(session, max_body_bytes=1 << 22)
    try:
        with pytest.raises(openai.BadRequestError, match="context"):
            big.client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": too_long}],
                                                 max_tokens=2)
    finally:
        big.stop()


def test_api_key_queue_limit_and_disconnect(session):
    s = _Server(session, parallel=1, queue=0, api_key="sekret")
    try:
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").models.list()
        client = s.client("sekret")
        # a long streaming request holds the only slot: the next request is refused at once
        stream = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4000, stream=True,
                                                extra_body={"ignore_eos": True})
        next(iter(stream))
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
        stream.close()  # the client goes away: its generation is cancelled and the slot frees
        deadline = time.time() + 10
        while True:
            try:
                reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
                break
            except openai.RateLimitError:
                assert time.time() < deadline, "the disconnected generation kept its slot"
                time.sleep(0.05)
        assert reply.usage.completion_tokens <= 2
    finally:
        s.stop()
