"""`dianjing serve` end to end on tiny local models, driven with the official `openai` package:
chat and completions (plain and streamed), several adapters on one base picked by name, the
same greedy answers as `load_run` + `complete`, errors as OpenAI error objects, the API key,
batching of concurrent requests, a client leaving mid-stream, SIGTERM, and `chat --url`."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from dianjing.infer.generate import SamplingParams, complete, prompt_ids
from dianjing.infer.load import load_run
from dianjing.train.loop import train
from tests.helpers import sft_config, write_alpaca
from tests.serving import running

KEY = "test-key"
ASK = [{"role": "user", "content": "Say the number 3."}]


@pytest.fixture(scope="module")
def runs(tiny_llama, tmp_path_factory):
    """Two LoRA runs on the same tiny base, taught different answers."""
    tmp = tmp_path_factory.mktemp("serve")
    out = {}
    for name, answer in (("alpha", "The number is {}."), ("beta", "Bonjour {} fois!")):
        cfg = sft_config(tiny_llama, write_alpaca(tmp / f"{name}.jsonl", answer), tmp / name, "data.eval_fraction=0",
                         "train.max_steps=12")
        out[name], _ = train(cfg, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def served(runs):
    from dianjing.infer.models import load_models
    from dianjing.infer.server import Limits, create_app

    models = load_models([str(runs["alpha"]), str(runs["beta"])], precision="fp32", log=lambda *_: None)
    app = create_app(models, api_key=KEY, limits=Limits(max_tokens=200), max_batch=8, log=lambda *_: None)
    with running(app) as (_, url):
        yield app, url


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=served[1] + "/v1", api_key=KEY, max_retries=0)


def _ask(client, model, max_tokens=12, messages=ASK):
    r = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=max_tokens)
    return r.choices[0].message.content


def test_models_and_health(client, served):
    assert {m.id for m in client.models.list()} == {"alpha", "beta", "base"}
    assert client.models.retrieve("beta").id == "beta"
    h = httpx.get(served[1] + "/health", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert h["status"] == "ok" and h["models"] == ["alpha", "beta", "base"]


def test_chat_answers_with_usage(client, tiny_llama):
    r = client.chat.completions.create(model="base", messages=ASK, temperature=0, max_tokens=12)
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == "base" and choice.message.role == "assistant"
    assert choice.message.content and choice.finish_reason in ("stop", "length")
    _, tok, template = load_run(tiny_llama, precision="fp32", log=lambda *_: None)
    assert r.usage.prompt_tokens == len(prompt_ids(tok, template, ASK))
    assert 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_each_name_gets_its_adapter(client, runs, tiny_llama):
    """Greedy answers equal those of the run loaded on its own, and differ from the base model's."""
    answers = {name: _ask(client, name) for name in ("alpha", "beta", "base")}
    for name, path in (("alpha", runs["alpha"]), ("beta", runs["beta"]), ("base", tiny_llama)):
        model, tok, template = load_run(path, precision="fp32", merge=False, log=lambda *_: None)
        want = complete(model, tok, template, ASK, SamplingParams(max_new_tokens=12, temperature=0))
        assert answers[name] == want.lstrip(), name
    assert len(set(answers.values())) == 3


def test_streaming_chat(client, served):
    plain = client.chat.completions.create(model="beta", messages=ASK, temperature=0, max_tokens=10)
    chunks = list(client.chat.completions.create(model="beta", messages=ASK, temperature=0, max_tokens=10,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens
    # on the wire: server-sent events ending with [DONE]
    body = {"model": "beta", "messages": ASK, "max_tokens": 4, "stream": True}
    raw = httpx.post(served[1] + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [e for e in raw.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: {") for e in events[:-1])


def test_completions_plain_and_streamed(client):
    r = client.completions.create(model="base", prompt="USER: hi", temperature=0, max_tokens=8)
    assert r.object == "text_completion" and r.choices[0].text and r.usage.completion_tokens == 8
    assert r.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(model="base", prompt="USER: hi", temperature=0, max_tokens=8,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
    assert chunks[-1].usage.completion_tokens == 8


def test_n_choices_and_seed(client):
    kw = dict(model="base", messages=ASK, temperature=1.0, max_tokens=8, n=3, seed=7)
    a, b = client.chat.completions.create(**kw), client.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert len({c.message.content for c in a.choices}) > 1
    assert 0 < a.usage.completion_tokens <= 3 * 8


def _error(response, status):
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert "Traceback" not in response.text
    return err


def test_errors_are_openai_error_objects(client, served):
    url, auth = served[1], {"Authorization": f"Bearer {KEY}"}

    def post(body):
        if isinstance(body, bytes):
            return httpx.post(url + "/v1/chat/completions", content=body,
                              headers={**auth, "Content-Type": "application/json"})
        return httpx.post(url + "/v1/chat/completions", headers=auth, json=body)

    assert _error(post(b"{not json"), 400)["code"] == "invalid_json"
    assert _error(post({"model": "alpha", "messages": ASK, "temperature": 5}), 400)["param"] == "temperature"
    assert _error(post({"model": "alpha"}), 400)["param"] == "messages"
    assert _error(post({"model": "alpha", "messages": ASK, "max_tokens": 10_000}), 400)["param"] == "max_tokens"
    assert _error(post({"model": "alpha", "messages": ASK, "tools": [{"type": "function"}]}), 400)["param"] == "tools"
    assert _error(post({"model": "alpha", "messages": [{"role": "user", "content": "x" * 10}] * 300}), 400)
    assert _error(post(b"x" * 2_000_000), 413)["code"] == "request_too_large"
    assert _error(httpx.get(url + "/v1/nothing", headers=auth), 404)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gamma", messages=ASK)
    assert e.value.status_code == 404 and e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="alpha", messages=[{"role": "tool", "content": "x"}])
    assert e.value.body["param"] == "messages[0].role"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "x" * 2000}])


def test_api_key_is_required(served):
    url = served[1]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        assert _error(httpx.get(url + "/v1/models", headers=headers), 401)["code"] == "invalid_api_key"
        assert _error(httpx.post(url + "/v1/chat/completions", json={"model": "alpha", "messages": ASK},
                                 headers=headers), 401)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_concurrent_requests_are_batched_and_match_unbatched(client, served):
    prompts = [[{"role": "user", "content": t}] for t in
               ("Say the number 3.", "hi", "Who are you?", "What is the capital of France? Tell me now.")]
    jobs = [(model, p) for model in ("base", "alpha") for p in prompts]
    alone = [_ask(client, model, 24, p) for model, p in jobs]  # one at a time: batches of one
    stats = served[0].state.batcher.stats
    stats["max_batch_size"] = 0
    barrier = threading.Barrier(12)

    def one(i):
        barrier.wait()
        model, messages = jobs[i % len(jobs)]
        return _ask(client, model, 24, messages)

    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(one, range(12)))
    assert together == [alone[i % len(jobs)] for i in range(12)]
    assert stats["max_batch_size"] > 1


def test_client_leaving_mid_stream_frees_its_slot(served):
    url, batcher = served[1], served[0].state.batcher
    before, cancelled = batcher.stats["generated_tokens"], batcher.stats["cancelled"]
    body = {"model": "base", "messages": ASK, "max_tokens": 200, "temperature": 0, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i == 3:
                break  # closes the connection
    deadline = time.monotonic() + 10
    while batcher.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert batcher.running() == 0 and batcher.stats["cancelled"] == cancelled + 1
    assert batcher.stats["generated_tokens"] - before < 200


def test_chat_cli_talks_to_the_server(client, served, capsys):
    from dianjing.cli import main

    want = _ask(client, "alpha", 8)
    code = main(["chat", "--url", served[1] + "/v1", "--model", "alpha", "--api-key", KEY, "--prompt",
                 ASK[0]["content"], "--temperature", "0", "--max-new-tokens", "8"])
    assert code == 0 and capsys.readouterr().out.strip() == want.strip()
    assert main(["chat", "--url", served[1] + "/v1", "--api-key", "wrong", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "401" in err and "--api-key" in err and "Traceback" not in err


def test_sigterm_lets_running_requests_finish(runs):
    """`dianjing serve` as a process: SIGTERM while a stream runs; the stream completes, the process exits."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DIANJING_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "dianjing.cli", "serve", str(runs["alpha"]), "--port", str(port),
                             "--precision", "fp32"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.2)
        stream = client.chat.completions.create(model="base", messages=ASK, temperature=0, max_tokens=200,
                                                stream=True)
        chunks = [next(stream)]
        proc.send_signal(signal.SIGTERM)
        chunks += list(stream)
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        assert proc.wait(timeout=30) == 0  # a handled SIGTERM is a normal exit
        log = proc.stdout.read()
        # Whether the stream was still generating when the signal landed depends on timing (a
        # tiny model finishes 200 tokens in well under a second), so it is not asserted here;
        # what is asserted: the client got a complete stream and the server drained and exited.
        assert "Finished server process" in log and "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
