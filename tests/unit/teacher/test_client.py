"""Client pieces without a server: token budget, Retry-After, request keys, reply extraction."""

import asyncio

import pytest

from dianjing.teacher.client import TokenBudget, extract, parse_retry_after, request_key


def test_token_budget_waits_for_refill_and_gives_back_unused():
    now = [0.0]
    waits = []

    async def sleep(s):
        waits.append(s)
        now[0] += s

    async def go():
        b = TokenBudget(600, clock=lambda: now[0], sleep=sleep)  # 10 tokens a second, starts full
        assert await b.take(500) == 500 and waits == []
        await b.take(300)  # 100 left: waits 20 s for 200 more
        assert waits == [pytest.approx(20.0)]
        b.settle(300, 100)  # the reply used 100 of the 300 taken
        assert b.level == pytest.approx(200)
        assert await b.take(10_000) == 600  # bigger than a minute's budget: waits for a full bucket only
        assert sum(waits) == pytest.approx(20 + 40)

    asyncio.run(go())


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.25") == 0.25
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_request_key_names_the_request_and_hashes_the_body():
    a = request_key("outputs/i000001/0", {"model": "m", "messages": [{"role": "user", "content": "你好"}]})
    assert a.startswith("outputs/i000001/0#") and len(a.split("#")[1]) == 12
    assert a == request_key("outputs/i000001/0", {"messages": [{"content": "你好", "role": "user"}], "model": "m"})
    assert a != request_key("outputs/i000001/0", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def test_extract_chat_and_completions():
    chat = {"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                         "finish_reason": "length"}], "usage": {"total_tokens": 3}}
    assert extract(chat, "chat") == ("ab", "length", {"total_tokens": 3})
    assert extract({"choices": [{"message": {"content": None}}]}, "chat") == ("", None, {})
    assert extract({"choices": [{"text": "x"}]}, "completions")[0] == "x"
    for bad in ({}, {"choices": []}, {"choices": [{"text": 5}]}):
        with pytest.raises((KeyError, IndexError, TypeError)):
            extract(bad, "completions")
