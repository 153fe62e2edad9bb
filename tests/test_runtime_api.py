"""The runtime as an app uses it: chunks that join to the result, cancellation and deadlines, chunked
prefill, max_new_tokens past the context, generation_config defaults, eight threads on one session,
memory over many generations, and conversations that keep their KV cache."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

PROMPT = "Tell me about bread"


@pytest.fixture(scope="module")
def session(exports):
    from aapp_runtime import Session

    return Session(exports["gemma3"], provider="cpu")


def _join(chunks):
    text, ids, chunks = "", [], list(chunks)
    for c in chunks:
        text += c.text
        ids += c.token_ids
    assert all(c.finish_reason is None for c in chunks[:-1]) and chunks[-1].finish_reason is not None
    return text, ids, chunks[-1]


def test_chunks_join_to_the_result_over_stop_strings_and_seeds(session):
    fired = 0
    for seed in range(4):
        kw = dict(temperature=0.9 if seed else 0.0, seed=seed, ignore_eos=True)
        t = session.generate(PROMPT, 24, **kw).text
        assert len(t) > 15
        for stop in (None, t[4:12], t[6:9] + "#never#", [t[10:15], "zz"], t[-4:], t[1:3], "\n"):
            want = session.generate(PROMPT, 24, stop=stop, **kw)
            text, ids, last = _join(session.stream(PROMPT, 24, stop=stop, **kw))
            assert text == want.text and ids == want.tokens, (seed, stop)
            assert last.finish_reason == want.finish_reason and last.usage == want.usage
            assert last.usage["completion_tokens"] == len(want.tokens) and last.timings["prefill_ms"] > 0
            if want.finish_reason == "stop":
                fired += 1
                stops = [stop] if isinstance(stop, str) else stop
                assert not any(s in want.text for s in stops)
    assert fired >= 12  # the stop strings taken from the text did end those generations


def test_cancel_from_another_thread_returns_what_it_has(session):
    generation = session.start(PROMPT, 200, ignore_eos=True)
    seen = []
    for chunk in generation:
        seen.append(chunk)
        if len(seen) == 3:
            t = threading.Thread(target=generation.cancel)
            t.start()
            t.join()
    result = generation.result()
    assert result.finish_reason == "cancelled" == seen[-1].finish_reason
    assert 3 <= len(result.tokens) < 200
    assert result.tokens == session.generate(PROMPT, len(result.tokens), ignore_eos=True).tokens


def test_a_deadline_stops_decoding_and_a_cancel_stops_a_chunked_prefill(exports, monkeypatch):
    from types import SimpleNamespace

    from aapp_runtime import Session, generation as gen_module

    s = Session(exports["llama"], provider="cpu")
    # the deadline's clock ticks 10 ms at each check (one per prefill chunk and decode step), so the
    # test does not depend on how fast this machine decodes: 0.3 s is 30 checks
    ticks = iter(range(10**6))
    monkeypatch.setattr(gen_module, "time", SimpleNamespace(monotonic=lambda: next(ticks) * 0.01))
    result = s.generate(PROMPT, s.context_length, ignore_eos=True, timeout_s=0.3)
    assert result.finish_reason == "timeout" and 25 <= len(result.tokens) <= 31
    monkeypatch.undo()
    t0 = time.perf_counter()  # and with the real clock
    result = s.generate(PROMPT, s.context_length, ignore_eos=True, timeout_s=0.05)
    assert result.finish_reason in ("timeout", "length") and time.perf_counter() - t0 < 3
    s.PREFILL_CHUNK = 4  # a 60-token prompt is 15 runs, each preceded by the check
    ids = list(range(5, 65))
    generation = s.start(ids, 8)
    generation.cancel()
    cancelled = generation.result()
    assert cancelled.finish_reason == "cancelled" and cancelled.tokens == [] and cancelled.prefill_ms == 0
    with pytest.raises(Exception, match="timeout_s"):
        s.generate(PROMPT, 2, timeout_s=0)


@pytest.mark.parametrize("family", ["gemma3", "llama", "qwen2", "gemma3-onnx"])
def test_a_chunked_prefill_equals_one_run(exports, family):
    from aapp_runtime import Session

    whole = Session(exports[family], provider="cpu")
    chunked = Session(exports[family], provider="cpu")
    chunked.PREFILL_CHUNK = 7
    ids = list(np.random.default_rng(3).integers(5, 300, 40))
    assert chunked.generate(ids, 10, ignore_eos=True).tokens == whole.generate(ids, 10, ignore_eos=True).tokens


def test_max_new_tokens_past_the_context_says_so(session):
    room = 5
    ids = [7] * (session.context_length - room)
    result = session.generate(ids, room + 10, ignore_eos=True)
    assert result.max_new_tokens_clipped == room and len(result.tokens) == room
    assert result.to_json()["max_new_tokens_clipped"] == room
    assert session.generate(PROMPT, 3).max_new_tokens_clipped is None


def test_generation_config_supplies_the_defaults(exports, tmp_path):
    from aapp_runtime import ModelDirError, Session
    from aapp_runtime.generation import model_defaults

    assert model_defaults({"do_sample": False, "temperature": 0.7, "max_new_tokens": 9}) == {"max_new_tokens": 9}
    assert model_defaults({"do_sample": True, "top_p": 0.9}) == {"temperature": 1.0, "top_k": 50, "top_p": 0.9}
    model_dir = tmp_path / "m"
    shutil.copytree(exports["qwen2"], model_dir)
    (model_dir / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 0.7, "top_k": 5, "max_new_tokens": 7, "repetition_penalty": 1.3}))
    s = Session(model_dir, provider="cpu", verify="none")
    assert s.params() == s.params(max_new_tokens=7, temperature=0.7, top_k=5, repetition_penalty=1.3)
    by_default = s.generate(PROMPT, seed=3, ignore_eos=True)
    assert len(by_default.tokens) == 7
    assert by_default.tokens == s.generate(PROMPT, 7, temperature=0.7, top_k=5, repetition_penalty=1.3, seed=3,
                                           ignore_eos=True).tokens
    assert s.generate(PROMPT, 4, temperature=0, repetition_penalty=1.0).tokens == Session(
        exports["qwen2"], provider="cpu").generate(PROMPT, 4).tokens  # what the caller gives wins
    (model_dir / "generation_config.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="generation_config.json"):
        Session(model_dir, provider="cpu", verify="none")


def test_eight_threads_on_one_session_equal_sequential_results(session):
    jobs = [(f"{PROMPT} number {i}", dict(temperature=0.8 if i % 2 else 0.0, seed=i, ignore_eos=True))
            for i in range(16)]
    want = [session.generate(p, 12, **kw).tokens for p, kw in jobs]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda job: session.generate(job[0], 12, **job[1]).tokens, jobs))
    assert got == want


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_memory_does_not_grow_over_hundreds_of_generations(session):
    for i in range(40):
        session.generate(f"{PROMPT} {i}", 6, ignore_eos=True)
    before = _rss_mb()
    for i in range(300):
        if i % 3 == 0:
            with session.chat() as chat:
                chat.send(f"{PROMPT} {i}", 4)
                chat.send("And then?", 4)
        else:
            list(session.stream(f"{PROMPT} {i}", 6, ignore_eos=True, stop="zz"))
    assert _rss_mb() - before < 15


@pytest.mark.parametrize("kv_cache", ["buffer", "concat"])
def test_a_conversation_reuses_its_cache_and_equals_a_fresh_prefill(exports, kv_cache):
    from aapp_runtime import Session

    s = Session(exports["gemma3"], provider="cpu", kv_cache=kv_cache)
    chat = s.chat([{"role": "system", "content": "Be brief."}])
    first = chat.send(PROMPT, 10, ignore_eos=True)
    assert first.cached_tokens == 0
    previous = first.prompt_tokens
    for turn, text in enumerate(("And then?", "Tell me more about rivers", "Thanks")):
        result = chat.send(text, 10, ignore_eos=True)
        history = chat.messages[:-1]
        ids = s.tokenize(history)
        # at least the previous prompt comes from the cache (this random model's replies are bytes that
        # do not survive decode -> encode, so the shared prefix ends inside them; a real model's replies do)
        assert result.prompt_tokens == len(ids) and result.cached_tokens >= previous
        previous = result.prompt_tokens
        assert result.tokens == s.generate(history, 10, ignore_eos=True).tokens
    # a repetition penalty counts the cached prompt too, as a fresh prefill's does
    penalized = chat.send("Bread again", 10, ignore_eos=True, repetition_penalty=1.5)
    assert penalized.cached_tokens > 0
    assert penalized.tokens == s.generate(chat.messages[:-1], 10, ignore_eos=True, repetition_penalty=1.5).tokens
    # the cache after the turns, extended by the next prompt, gives a fresh prefill's logits
    chat.messages.append({"role": "user", "content": "One more"})
    ids = s.tokenize(chat.messages)
    reuse = min(next((i for i, (a, b) in enumerate(zip(chat._cached, ids)) if a != b), len(chat._cached)),
                len(ids) - 1)
    chat._cache.truncate(reuse)
    cached, _ = s._run(s._dense, ids[reuse:], reuse, chat._cache)
    assert reuse > 0 and np.abs(cached - s.logits(ids)).max() < 1e-4


def test_conversation_overflow_is_an_error_or_drops_the_oldest_turns(exports):
    from aapp_runtime import InputError, Session

    s = Session(exports["llama"], provider="cpu")
    s.context_length = 60
    strict, lenient = s.chat(), s.chat(overflow="drop_oldest")
    for chat in (strict, lenient):
        chat.send("Tell me about bread and rivers", 8, ignore_eos=True)
    with pytest.raises(InputError, match="context is 60.*drop_oldest"):
        strict.send("Tell me about bread and rivers and clouds and the sea", 8)
    result = lenient.send("Tell me about bread and rivers and clouds and the sea", 8, ignore_eos=True)
    assert lenient.dropped_messages == 2 and result.prompt_tokens < 60 and len(result.tokens) >= 1
    with pytest.raises(InputError, match="overflow"):
        s.chat(overflow="wrap")
    with pytest.raises(InputError, match="fixed when the conversation starts"):
        lenient.send("hi", 2, sparsity=0.4)
