"""`dianjing serve` against requests that used to hurt it: each test here failed before the fix it
names (empty prompts killing the worker, a dead worker nobody noticed, deep nesting and lone
surrogates giving 500s, CPU work on the event loop, streams overshooting the waiting limit,
cross-site requests, cut streams at shutdown, loose types, huge stop strings, slow bodies,
lower-case 'bearer', tiny temperatures, n copies of a long prompt prefilled at once)."""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import dianjing.infer.batcher as batcher_module
from dianjing.infer.models import load_models
from dianjing.infer.server import Limits, create_app
from tests.serving import running

ASK = [{"role": "user", "content": "Say the number 3."}]
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def models(tiny_llama):
    return load_models([str(tiny_llama)], precision="fp32", log=lambda *_: None)


def _app(models, **kw):
    limits = kw.pop("limits", Limits(max_tokens=64, default_max_tokens=8))
    return create_app(models, limits=limits, max_batch=kw.pop("max_batch", 8), log=kw.pop("log", lambda *_: None),
                      **kw)


@pytest.fixture(scope="module")
def server(models):
    app = _app(models)
    with running(app) as (_, url):
        yield app, url


def _chat(url, body=None, **kw):
    return httpx.post(url + "/v1/chat/completions", json=body or {"messages": ASK, "max_tokens": 6,
                                                                  "temperature": 0}, **kw)


def _err(r, status, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert "Traceback" not in r.text and "Error" not in err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


def _ok(url):
    r = _chat(url)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    return r.json()["choices"][0]["message"]["content"]


# --- 1, 2: the worker survives a bad step, and a dead worker is reported -----------------------


def test_empty_prompts_are_refused_and_the_server_goes_on(server):
    app, url = server
    for prompt in ("", [""]):
        _err(httpx.post(url + "/v1/completions", json={"prompt": prompt, "max_tokens": 4}), 400, "prompt")
    _err(_chat(url, {"messages": [{"role": "user", "content": ""}]}), 400, "messages")
    _err(_chat(url, {"messages": [{"role": "user", "content": [{"type": "text", "text": "  "}]}]}), 400, "messages")
    _err(_chat(url, {"messages": []}), 400, "messages")
    assert app.state.batcher.alive
    _ok(url)


def test_a_failing_step_fails_only_its_requests(server, monkeypatch):
    app, url = server
    real_prefill, real_decode = batcher_module.prefill, batcher_module.decode_step
    calls = {"prefill": 0, "decode": 0}

    def bad_prefill(*a, **kw):
        calls["prefill"] += 1
        if calls["prefill"] == 1:
            raise RuntimeError("secret-internal-detail")
        return real_prefill(*a, **kw)

    monkeypatch.setattr(batcher_module, "prefill", bad_prefill)
    err = _err(_chat(url), 500)
    assert "secret" not in err["message"] and err["type"] == "server_error"
    _ok(url)  # the next request is served

    def bad_decode(*a, **kw):
        calls["decode"] += 1
        if calls["decode"] == 2:
            raise RuntimeError("secret-internal-detail")
        return real_decode(*a, **kw)

    monkeypatch.setattr(batcher_module, "decode_step", bad_decode)
    r = _chat(url, {"messages": ASK, "max_tokens": 20, "temperature": 0, "stream": True})
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    last = json.loads(events[-2][6:])
    assert last["error"]["type"] == "server_error" and "secret" not in r.text
    monkeypatch.setattr(batcher_module, "decode_step", real_decode)
    _ok(url)
    assert app.state.batcher.alive and httpx.get(url + "/health").status_code == 200


def test_a_dead_worker_is_reported_and_requests_do_not_hang(models, monkeypatch):
    app = _app(models)
    logged = []
    app.state.serve.log = app.state.batcher.log = logged.append
    with running(app) as (_, url):
        _ok(url)

        def die():
            raise SystemExit("worker killed")  # not an Exception: the per-step handler lets it through

        monkeypatch.setattr(app.state.batcher, "_admit", die)
        t = time.monotonic()
        r = _chat(url, timeout=10)
        assert r.status_code == 503 and time.monotonic() - t < 5, r.text
        h = httpx.get(url + "/health")
        assert h.status_code == 503 and h.json()["status"] == "unavailable"
        t = time.monotonic()
        _err(_chat(url, timeout=10), 503)  # refused at once
        assert time.monotonic() - t < 1
    assert any("worker stopped" in m for m in logged)


# --- 3: nesting, surrogates, no internals in messages -------------------------------------------


def test_deep_nesting_is_a_400(server):
    url = server[1]
    for body in (b"[" * 100_000 + b"]" * 100_000,  # beyond Python's recursion limit
                 b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                 # within it, but deeper than the server's own bound
                 b'{"messages": [{"role": "user", "content": ' + b'[{"text": ' * 40 + b'"x"' + b"}]" * 40 + b"}]}"):
        _err(httpx.post(url + "/v1/chat/completions", content=body, headers=JSON), 400)
    _ok(url)


def test_lone_surrogates_are_a_400_that_names_the_field(server):
    url = server[1]
    r = httpx.post(url + "/v1/completions", content=b'{"prompt": "hi \\ud800", "max_tokens": 2}', headers=JSON)
    err = _err(r, 400, "prompt")
    assert "template" not in err["message"] and "tokeniz" not in err["message"].lower()
    r = httpx.post(url + "/v1/chat/completions",
                   content=b'{"messages": [{"role": "user", "content": "\\udfff"}]}', headers=JSON)
    err = _err(r, 400, "messages[0].content")
    assert "template" not in err["message"]
    r = httpx.post(url + "/v1/chat/completions", content=b'{"messages": [{"role": "user", "content": "hi"}], '
                                                         b'"stop": ["\\ud800"]}', headers=JSON)
    _err(r, 400, "stop[0]")


# --- 4: CPU work off the event loop -------------------------------------------------------------


def test_health_answers_while_a_huge_prompt_is_tokenized(models):
    app = _app(models, limits=Limits(max_tokens=8, max_prompt_chars=10**7, max_body_bytes=2_000_000))
    prompt = "The quick brown fox jumps 你好 " * 33_000  # ~0.9 M characters: ~1 s of tokenizing here
    with running(app) as (_, url):
        httpx.get(url + "/health")
        result = {}

        def big():
            result["r"] = httpx.post(url + "/v1/completions", json={"prompt": prompt, "max_tokens": 2}, timeout=60)

        t = threading.Thread(target=big)
        t.start()
        times, client = [], httpx.Client(timeout=10)  # one client: a new one costs ~50 ms to set up
        while t.is_alive() and len(times) < 200:
            t0 = time.perf_counter()
            assert client.get(url + "/health").status_code == 200
            times.append(time.perf_counter() - t0)
            time.sleep(0.01)
        t.join()
    assert _err(result["r"], 400)["code"] == "context_length_exceeded"  # refused after tokenizing
    assert len(times) >= 5, "the big request ended too soon to measure anything"
    assert statistics.median(times) < 0.05 and max(times) < 0.5, times


def test_a_prompt_over_the_character_bound_is_refused_before_tokenizing(server, monkeypatch):
    url = server[1]
    served = server[0].state.models.served["base"]
    called = []
    real = served.tokenizer.__class__.__call__
    monkeypatch.setattr(served.tokenizer.__class__, "__call__", lambda self, *a, **k: called.append(1) or real(self, *a, **k))
    err = _err(httpx.post(url + "/v1/completions", json={"prompt": "x" * 5000}), 400, "prompt")  # ctx 256 → 4096
    assert err["code"] == "context_length_exceeded" and not called


# --- 5: exact admission ---------------------------------------------------------------------------


def test_the_waiting_limit_holds_for_streams(models, monkeypatch):
    app = _app(models, limits=Limits(max_tokens=8, default_max_tokens=4, max_waiting=2), max_batch=1)
    batcher = app.state.batcher
    gate, real = threading.Event(), batcher._prefill

    def gated(reqs):
        gate.wait(30)
        return real(reqs)

    monkeypatch.setattr(batcher, "_prefill", gated)
    with running(app) as (_, url):
        body = {"messages": ASK, "max_tokens": 4, "temperature": 0}
        first = ThreadPoolExecutor(1).submit(_chat, url, body, timeout=60)
        deadline = time.monotonic() + 10
        while not (batcher.stats["requests"] == 1 and batcher.waiting() == 0):  # taken, stuck in prefill
            assert time.monotonic() < deadline
            time.sleep(0.01)

        def stream(_):
            with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True},
                              timeout=60) as r:
                return r.status_code, r.headers.get("retry-after"), r.read().decode()

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(stream, i) for i in range(6)]
            deadline = time.monotonic() + 10
            while sum(f.done() for f in futures) < 4:  # the 429s come back at once
                assert time.monotonic() < deadline, [f.done() for f in futures]
                time.sleep(0.01)
            assert batcher.waiting() == 2
            gate.set()
            results = [f.result() for f in futures]
        assert first.result().status_code == 200
    statuses = sorted(s for s, _, _ in results)
    assert statuses == [200, 200, 429, 429, 429, 429], statuses
    assert all(ra == "1" for s, ra, _ in results if s == 429)
    assert all(text.rstrip().endswith("data: [DONE]") for s, _, text in results if s == 200)


# --- 6: browser safety ----------------------------------------------------------------------------


def test_web_pages_cannot_drive_a_loopback_server(server):
    url = server[1]
    body = json.dumps({"messages": ASK, "max_tokens": 2})
    assert _err(httpx.post(url + "/v1/chat/completions", content=body, headers={"Content-Type": "text/plain"}),
                415)["code"] == "unsupported_media_type"
    assert _err(httpx.post(url + "/v1/chat/completions", content=body), 415)  # no content type at all
    assert _err(_chat(url, headers={"Origin": "http://evil.example"}), 403)["code"] == "forbidden_origin"
    assert _err(_chat(url, headers={"Host": "evil.example"}), 403)["code"] == "forbidden_host"  # DNS rebinding
    assert _err(httpx.get(url + "/v1/models", headers={"Host": "evil.example:8000"}), 403)
    for host in ("localhost", f"localhost:{url.rsplit(':', 1)[1]}", "127.0.0.1", "[::1]:8000"):
        assert httpx.get(url + "/v1/models", headers={"Host": host}).status_code == 200, host


def test_cors_origin_lets_a_chat_ui_in(models):
    ui = "http://localhost:3000"
    with running(_app(models, cors_origins=(ui,))) as (_, url):
        pre = httpx.options(url + "/v1/chat/completions",
                            headers={"Origin": ui, "Access-Control-Request-Method": "POST",
                                     "Access-Control-Request-Headers": "content-type,authorization"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == ui
        r = _chat(url, headers={"Origin": ui})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ui
        _err(_chat(url, headers={"Origin": "http://evil.example"}), 403)


def test_a_public_server_does_not_check_host_but_does_check_origin(models):
    with running(_app(models, loopback=False, api_key="k")) as (_, url):
        auth = {"Authorization": "Bearer k"}
        assert _chat(url, headers={**auth, "Host": "my-gpu-box:8000"}).status_code == 200
        _err(_chat(url, headers={**auth, "Origin": "http://evil.example"}), 403)


# --- 7: shutdown ----------------------------------------------------------------------------------


def _slow_decoding(monkeypatch, seconds):
    real = batcher_module.decode_step

    def slow(*a, **kw):
        time.sleep(seconds)
        return real(*a, **kw)

    monkeypatch.setattr(batcher_module, "decode_step", slow)


def test_after_the_grace_period_streams_end_with_an_error_and_waiting_requests_get_503(models, monkeypatch):
    _slow_decoding(monkeypatch, 0.05)  # 200 tokens: 10 s, far beyond the grace period
    app = _app(models, limits=Limits(max_tokens=200), max_batch=1)
    body = {"messages": ASK, "max_tokens": 200, "temperature": 0}
    with running(app, grace=0.5) as (server, url):
        out = {}

        def stream():
            with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True}, timeout=30) as r:
                out["stream"] = r.read().decode()

        def waiting():
            out["waiting"] = _chat(url, body, timeout=30)

        threads = [threading.Thread(target=stream)]
        threads[0].start()
        while app.state.batcher.running() == 0:
            time.sleep(0.01)
        threads.append(threading.Thread(target=waiting))
        threads[1].start()
        while app.state.batcher.waiting() == 0:
            time.sleep(0.01)
        t = time.monotonic()
        server.uvicorn.should_exit = True
        for th in threads:
            th.join(15)
        assert time.monotonic() - t < 5
    events = [e for e in out["stream"].split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert "shutting down" in json.loads(events[-2][6:])["error"]["message"]
    assert _err(out["waiting"], 503)


def test_a_plain_request_is_cancelled_when_its_client_leaves_while_tokens_flow(models, monkeypatch):
    """The disconnect check ran only after a second without tokens: a steady stream kept generating."""
    _slow_decoding(monkeypatch, 0.01)  # ~100 tokens a second: never a second without one
    app = _app(models, limits=Limits(max_tokens=250))
    monkeypatch.setattr(models.served["base"], "eos", set())  # no early end: 250 tokens take 2.5 s
    batcher = app.state.batcher
    with running(app) as (_, url):
        with pytest.raises(httpx.ReadTimeout):
            _chat(url, {"messages": ASK, "max_tokens": 250, "temperature": 0}, timeout=0.5)
        deadline = time.monotonic() + 5
        while batcher.running() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert batcher.running() == 0 and batcher.stats["cancelled"] == 1
        assert batcher.stats["generated_tokens"] < 250


def test_requests_that_end_within_the_grace_period_finish(models, monkeypatch):
    _slow_decoding(monkeypatch, 0.02)
    app = _app(models, limits=Limits(max_tokens=200))
    with running(app, grace=10) as (server, url):
        out = {}

        def stream():
            body = {"messages": ASK, "max_tokens": 30, "temperature": 0, "stream": True}
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
                out["stream"] = r.read().decode()

        th = threading.Thread(target=stream)
        th.start()
        while app.state.batcher.running() == 0:
            time.sleep(0.01)
        server.uvicorn.should_exit = True
        th.join(15)
    events = [json.loads(e[6:]) for e in out["stream"].split("\n\n") if e and e != "data: [DONE]"]
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert out["stream"].rstrip().endswith("data: [DONE]")


# --- 8: the smaller ones --------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [("temperature", "0.5"), ("max_tokens", "4"), ("stream", "yes"),
                                         ("top_p", "1"), ("n", 1.5), ("stream", 1), ("seed", "7")])
def test_a_string_is_not_a_number(server, field, value):
    _err(_chat(server[1], {"messages": ASK, field: value}), 400, field)


def test_stop_strings_are_bounded(server):
    _err(_chat(server[1], {"messages": ASK, "stop": "x" * 500_000}), 400, "stop")
    _err(_chat(server[1], {"messages": ASK, "stop": ["ok", "y" * 129]}), 400, "stop[1]")
    assert _chat(server[1], {"messages": ASK, "stop": "z" * 128, "max_tokens": 2}).status_code == 200


def test_a_slow_body_is_cut_off(models):
    with running(_app(models, limits=Limits(body_timeout=0.5))) as (_, url):
        host, port = url[7:].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"messages\"")
            t = time.monotonic()
            reply = _read_response(s)
            assert time.monotonic() - t < 5
        assert reply.startswith("HTTP/1.1 408") and "request_timeout" in reply


def _read_response(s: socket.socket) -> str:
    """One HTTP response off a raw socket: the head, then its body (the server may send them in two
    writes, so one recv can end at the head; a closed connection ends it too)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return data.decode()
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def test_the_bearer_scheme_is_case_insensitive(models):
    with running(_app(models, api_key="k")) as (_, url):
        for scheme in ("Bearer", "bearer", "BEARER"):
            assert _chat(url, headers={"Authorization": f"{scheme} k"}).status_code == 200, scheme
        _err(_chat(url, headers={"Authorization": "Basic k"}), 401)


def test_a_tiny_temperature_is_greedy(server):
    url = server[1]
    greedy = _chat(url, {"messages": ASK, "max_tokens": 8, "temperature": 0}).json()
    tiny = _chat(url, {"messages": ASK, "max_tokens": 8, "temperature": 1e-300, "seed": 1}).json()
    assert tiny["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"]


def test_n_choices_prefill_the_prompt_once(server, monkeypatch):
    url, rows = server[1], []
    real = batcher_module.prefill
    monkeypatch.setattr(batcher_module, "prefill", lambda model, r, pad: rows.append(len(r)) or real(model, r, pad))
    long = " ".join(["What is the capital of France?"] * 20)
    r = _chat(url, {"messages": [{"role": "user", "content": long}], "n": 8, "max_tokens": 3, "seed": 3})
    assert r.status_code == 200 and len(r.json()["choices"]) == 8
    assert rows == [1]  # one row of the prompt, copied for the 8 choices: not 8 x the prompt
