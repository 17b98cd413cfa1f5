"""The HTTP teacher (and judge) over several endpoints: requests spread over them, one that fails is taken out
and its requests retried on another at once, and it gets requests again after its cool-down."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from dianjing.teacher.client import HttpTeacher, TeacherError
from dianjing.teacher.settings import TeacherSettings
from dianjing.teacher.store import Journal, read_jsonl
from tests.fake_openai import FakeOpenAI


@pytest.fixture
def servers():
    made = []

    def start(answer) -> FakeOpenAI:
        made.append(FakeOpenAI(answer))
        return made[-1]

    yield start
    for s in made:
        s.close()


def _ask_all(urls, tmp_path, n=12, **settings) -> tuple[list, HttpTeacher, list[str]]:
    s = TeacherSettings(base_url=urls, model="m", max_retries=3, backoff_s=5.0, **settings)
    journal = Journal(tmp_path / "requests.jsonl")
    logs: list[str] = []
    teacher = HttpTeacher(s, journal, logs.append)

    async def go():
        try:
            return await asyncio.gather(*(teacher.ask(f"q/{i}", f"question {i}") for i in range(n)))
        finally:
            await teacher.aclose()

    try:
        return asyncio.run(go()), teacher, logs
    finally:
        journal.close()


def test_requests_are_spread_over_the_endpoints(servers, tmp_path):
    a, b = servers(lambda body: "from a"), servers(lambda body: "from b")
    replies, teacher, _ = _ask_all([a.url, b.url], tmp_path, n=20, max_concurrency=2)
    assert {r.text for r in replies} == {"from a", "from b"}
    assert a.requests + b.requests == 20 and min(a.requests, b.requests) >= 8
    assert [e["replies"] for e in teacher.endpoint_stats()] == [a.requests, b.requests]
    urls = {e["url"] for e in read_jsonl(tmp_path / "requests.jsonl")[0]}
    assert urls == {a.url, b.url}  # each reply names the endpoint that gave it


@pytest.mark.parametrize("fault", ["503", "closed port"])
def test_a_failing_endpoint_is_taken_out_and_its_request_retried_elsewhere_at_once(servers, tmp_path, fault):
    good = servers(lambda body: "ok")
    if fault == "503":
        bad = servers(lambda body: ("status", 503))
        bad_url = bad.url
    else:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        bad_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # bound, not listening: connection refused
        sock.close()
    t0 = time.monotonic()
    replies, teacher, logs = _ask_all([bad_url, good.url], tmp_path, n=12, max_concurrency=2)
    assert time.monotonic() - t0 < 4  # no 5 s back-off: another endpoint was ready
    assert [r.text for r in replies] == ["ok"] * 12 and good.requests == 12
    bad_stats, good_stats = teacher.endpoint_stats()
    assert bad_stats["taken_out"] == 1 and bad_stats["replies"] == 0 and 1 <= bad_stats["failed_attempts"] <= 2
    failures = [e for e in read_jsonl(tmp_path / "requests.jsonl")[0] if e["kind"] == "failure"]
    assert failures and {f["url"] for f in failures} == {bad_url}
    assert any(f"endpoint {bad_url} taken out for 30s" in line for line in logs)


def test_a_taken_out_endpoint_gets_requests_again_after_its_cool_down(servers, tmp_path):
    calls = {"n": 0}

    def flaky(body):
        calls["n"] += 1
        return ("status", 500) if calls["n"] == 1 else "back"

    a, b = servers(flaky), servers(lambda body: ("slow", 0.15, "steady"))
    replies, teacher, _ = _ask_all([a.url, b.url], tmp_path, n=16, max_concurrency=1, endpoint_cooldown_s=0.2)
    assert len(replies) == 16 and teacher.endpoint_stats()[0]["taken_out"] == 1
    assert sum(r.text == "back" for r in replies) >= 1  # a came back after 0.2 s and answered again


def test_when_every_endpoint_is_out_the_request_waits_for_the_first_to_return(servers, tmp_path):
    seen = {"a": 0, "b": 0}

    def once(name):
        def answer(body):
            seen[name] += 1
            return ("status", 502) if seen[name] == 1 else name
        return answer

    a, b = servers(once("a")), servers(once("b"))
    replies, teacher, _ = _ask_all([a.url, b.url], tmp_path, n=1, max_concurrency=1, endpoint_cooldown_s=0.2)
    assert replies[0].text in ("a", "b") and [e["taken_out"] for e in teacher.endpoint_stats()] == [1, 1]


def test_a_refusal_stops_at_once_naming_the_endpoint_and_status(servers, tmp_path):
    a = servers(lambda body: ("status", 401))
    with pytest.raises(TeacherError) as e:
        _ask_all([a.url], tmp_path, n=1)
    assert e.value.status == 401 and a.url in str(e.value) and a.requests == 1


def test_settings_take_one_url_or_a_list():
    from dianjing.errors import ConfigError
    from dianjing.teacher.settings import check_urls

    assert TeacherSettings(base_url="http://x/v1/").urls() == ["http://x/v1"]
    assert TeacherSettings(base_url=["http://x/v1", "http://y/v1"]).urls() == ["http://x/v1", "http://y/v1"]
    with pytest.raises(ConfigError, match="more than once"):
        check_urls(TeacherSettings(base_url=["http://x/v1", "http://x/v1/"]), "judge")
    with pytest.raises(ConfigError, match="judge.base_url 'x:8000' is not an http"):
        check_urls(TeacherSettings(base_url=["http://y/v1", "x:8000"]), "judge")
