"""`dianjing serve` driven by generated requests (hypothesis) and by a bounded soak of mixed traffic.

The fuzz test sends random JSON shapes, types, sizes, unicode (lone surrogates too), roles and
parameters to both endpoints and asserts that every answer is a well-formed OpenAI object or
error with the right status class, never a 5xx, never a traceback or an internal name, and
that afterwards the server still gives the same greedy answer as before. The soak test sends a
few hundred requests, at most 24 at once: plain, streamed, streamed and dropped by the client,
and invalid; none may be lost or hang, and memory must come back to where it started."""

from __future__ import annotations

import gc
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dianjing.infer.models import load_models
from dianjing.infer.server import Limits, create_app
from tests.serving import running

ASK = [{"role": "user", "content": "Say the number 3."}]
# what must never reach a client: tracebacks, exception and module names, object addresses
INTERNAL = ("Traceback", 'File "', "dianjing.", "site-packages", "pydantic", "torch", "GenRequest", "jinja",
            "RecursionError", "TypeError", "KeyError", "ValueError", "AttributeError", "IndexError",
            "UnicodeEncodeError", "0x7f", "<class", "<object")
OK_STATUSES = {200, 400, 404, 413}


@pytest.fixture(scope="module")
def server(tiny_llama):
    models = load_models([str(tiny_llama)], precision="fp32", log=lambda *_: None)
    logged: list[str] = []
    app = create_app(models, limits=Limits(max_tokens=32, default_max_tokens=6, max_waiting=64), max_batch=8,
                     log=logged.append)
    with running(app) as (_, url):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield app, client, logged


def _greedy(client) -> str:
    r = client.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


# --- generated requests ---------------------------------------------------------------------------

_names = st.text(alphabet="abcxyz-_ ", max_size=8)  # no accidental 'torch' echoed back in a message
_texts = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "\ud800", "hi \udfff", "你好", "🙂" * 50,
                                                          "x" * 5000, "\x00", "USER: hi AI:"]))
_json = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                     | st.floats(allow_nan=False, allow_infinity=False) | _texts,
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_names, kids, max_size=4),
                     max_leaves=12)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "developer", "tool", "", "USER"]) | _names | _json},
    optional={"content": _texts | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _texts}),
                                           max_size=3) | _json, "name": _names})
_common = {
    "model": st.sampled_from(["base", "nope"]) | _names | _json,
    "max_tokens": st.integers(-2, 40) | _json,
    "temperature": st.floats(0, 2.5) | st.sampled_from([1e-300, 0, "0.5"]) | _json,
    "top_p": st.floats(0, 1.2) | _json,
    "n": st.integers(0, 10) | _json,
    "stop": _texts | st.lists(_texts, max_size=6) | _json,
    "seed": st.integers(-5, 2**63) | _json,
    "stream": st.booleans() | _json,
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | _json,
    "logprobs": st.booleans() | _json,
    "unknown_field": _json,
}
_chat = st.fixed_dictionaries({}, optional={**_common, "messages": st.lists(_message, max_size=4) | _json,
                                            "max_completion_tokens": st.integers(-1, 40) | _json,
                                            "tools": _json})
_completion = st.fixed_dictionaries({}, optional={**_common, "prompt": _texts | st.lists(_texts, max_size=2) | _json,
                                                  "echo": st.booleans() | _json})
# mostly valid requests with one field made odd find what a random dict cannot reach: the
# tokenizer, the template, the sampler and the worker behind a body that passes the schema
_valid_params = {"max_tokens": st.integers(1, 12), "temperature": st.floats(0, 2) | st.just(1e-300),
                 "top_p": st.floats(0.05, 1), "n": st.integers(1, 3), "seed": st.integers(0, 2**40),
                 "stream": st.booleans(), "stop": _texts | st.lists(_texts, max_size=3),
                 "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()})}
_valid_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "developer"]),
                                        "content": _texts})
_valid_chat = st.fixed_dictionaries({"messages": st.lists(_valid_message, min_size=1, max_size=3)},
                                    optional=_valid_params)
_valid_completion = st.fixed_dictionaries({"prompt": _texts | st.lists(_texts, min_size=1, max_size=2)},
                                          optional=_valid_params)


def _one_odd_field(body: dict, keys: list[str]):
    return st.tuples(st.sampled_from(keys), _json | _texts).map(lambda kv: {**body, kv[0]: kv[1]})


_keys = sorted({*_common, "messages", "prompt"})
_bodies = st.one_of(
    st.tuples(st.just("/v1/chat/completions"), _valid_chat),
    st.tuples(st.just("/v1/completions"), _valid_completion),
    st.tuples(st.just("/v1/chat/completions"), _valid_chat.flatmap(lambda b: _one_odd_field(b, _keys))),
    st.tuples(st.just("/v1/completions"), _valid_completion.flatmap(lambda b: _one_odd_field(b, _keys))),
    st.tuples(st.just("/v1/chat/completions"), _chat),
    st.tuples(st.just("/v1/completions"), _completion),
    st.tuples(st.sampled_from(["/v1/chat/completions", "/v1/completions"]), _json),
    st.tuples(st.sampled_from(["/v1/chat/completions", "/v1/completions"]), st.binary(max_size=64)),
)


def _check_error(obj: dict) -> None:
    err = obj["error"]
    assert set(err) == {"message", "type", "param", "code"}, obj
    assert isinstance(err["message"], str) and err["message"]
    assert err["param"] is None or isinstance(err["param"], str)


def _check(r: httpx.Response, path: str, body) -> None:
    assert r.status_code in OK_STATUSES, (r.status_code, r.text[:500], body)
    text = r.text
    for name in INTERNAL:
        assert name not in text, (name, text[:500])
    if r.headers["content-type"].startswith("text/event-stream"):
        events = [e for e in text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]", text[-300:]
        want = "chat.completion.chunk" if "chat" in path else "text_completion"
        for e in events[:-1]:
            assert e.startswith("data: ")
            obj = json.loads(e[6:])
            if "error" in obj:
                _check_error(obj)
                assert obj["error"]["type"] == "invalid_request_error", obj
            else:
                assert obj["object"] == want and isinstance(obj["choices"], list)
        return
    obj = r.json()
    if r.status_code == 200:
        assert obj["object"] == ("chat.completion" if "chat" in path else "text_completion")
        assert obj["choices"] and all(c["finish_reason"] in ("stop", "length") for c in obj["choices"])
        assert obj["usage"]["total_tokens"] == obj["usage"]["prompt_tokens"] + obj["usage"]["completion_tokens"]
    else:
        _check_error(obj)
        assert obj["error"]["type"] == "invalid_request_error"


@settings(max_examples=250, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(case=_bodies)
def test_generated_requests_get_well_formed_answers(server, case):
    app, client, _ = server
    path, body = case
    if isinstance(body, bytes):
        r = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        r = client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
    _check(r, path, body)


def test_after_fuzzing_the_server_answers_as_before(server):
    """Runs after the fuzz test (file order): same greedy answer as a fresh server gives, nothing running."""
    app, client, logged = server
    from dianjing.infer.generate import SamplingParams, complete

    served = app.state.models.served["base"]
    want = complete(app.state.models.model, served.tokenizer, served.template, ASK,
                    SamplingParams(max_new_tokens=8, temperature=0)).lstrip()
    assert _greedy(client) == want
    assert app.state.batcher.alive and app.state.batcher.stats["failed"] == 0
    assert not [m for m in logged if "Traceback" in m]
    assert client.get("/health").json()["status"] == "ok"


# --- the soak -------------------------------------------------------------------------------------

SOAK_REQUESTS, SOAK_CONCURRENCY = 300, 24
RSS_MARGIN = 64 * 2**20  # bytes of growth allowed after the soak (allocator arenas, caches)


def _one(client: httpx.Client, i: int) -> str:
    """One request of kind i % 6; returns the kind when it behaved as it should, else raises."""
    rng = random.Random(i)
    kind = i % 6
    msgs = [{"role": "user", "content": rng.choice(["hi", "Who are you?", "Say the number 3.", "你好"])}]
    base = {"max_tokens": rng.randint(1, 16), "temperature": 0.7, "seed": i}
    if kind == 0:
        r = client.post("/v1/chat/completions", json={**base, "messages": msgs})
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length"), r.text
    elif kind in (1, 5):
        path, body = (("/v1/chat/completions", {**base, "messages": msgs, "stream": True}) if kind == 1 else
                      ("/v1/completions", {**base, "prompt": msgs[0]["content"], "stream": True, "n": 2}))
        with client.stream("POST", path, json=body) as r:
            text = r.read().decode()
        assert r.status_code == 200 and text.endswith("data: [DONE]\n\n") and '"error"' not in text, text[-300:]
    elif kind == 2:
        r = client.post("/v1/completions", json={**base, "prompt": msgs[0]["content"]})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1, r.text
    elif kind == 3:  # the client goes away after the first event
        body = {**base, "max_tokens": 32, "messages": msgs, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            next(r.iter_lines())
    else:
        bad = rng.choice([b"{", b'{"messages": "hi"}', b'{"prompt": ""}', b'{"messages": [{"role": "x"}]}'])
        path = "/v1/completions" if b"prompt" in bad else "/v1/chat/completions"
        r = client.post(path, content=bad, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
    return kind


def _soak(url: str, start: int, count: int) -> list[int]:
    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=SOAK_CONCURRENCY)) as client:
        with ThreadPoolExecutor(SOAK_CONCURRENCY) as pool:
            futures = [pool.submit(_one, client, i) for i in range(start, start + count)]
            return [f.result(timeout=120) for f in futures]  # a hang fails here, not forever


def test_soak_loses_nothing_and_memory_comes_back(tiny_llama):
    models = load_models([str(tiny_llama)], precision="fp32", log=lambda *_: None)
    app = create_app(models, limits=Limits(max_tokens=32, max_waiting=SOAK_REQUESTS), max_batch=8,
                     log=lambda *_: None)
    proc = psutil.Process()
    with running(app) as (_, url):
        _soak(url, 0, 60)  # warm-up: allocator, caches, thread pools
        gc.collect()
        before = proc.memory_info().rss
        t = time.monotonic()
        kinds = _soak(url, 60, SOAK_REQUESTS)
        took = time.monotonic() - t
        batcher = app.state.batcher
        deadline = time.monotonic() + 10
        while (batcher.running() or batcher.waiting()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert batcher.running() == 0 and batcher.waiting() == 0
        gc.collect()
        after = proc.memory_info().rss
        stats = dict(batcher.stats)
    assert len(kinds) == SOAK_REQUESTS and sorted(set(kinds)) == [0, 1, 2, 3, 4, 5]
    valid = sum(i % 6 != 4 for i in range(60 + SOAK_REQUESTS))
    assert stats["requests"] == valid and stats["failed"] == 0  # every valid request reached the worker
    print(f"soak: {SOAK_REQUESTS} requests in {took:.1f} s; RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB")
    assert after - before < RSS_MARGIN, f"RSS grew by {(after - before) / 2**20:.0f} MiB"
