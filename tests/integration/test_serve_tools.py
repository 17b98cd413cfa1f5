"""Tool calls through `dianjing serve`, driven with the official `openai` client.

A whole round on a tiny model trained here for ~10 s on part of the tool demo set (the weather and
calculator conversations, which it learns by heart, so greedy answers are deterministic): a request
with tools → a call in message.tool_calls with finish_reason "tool_calls" → the client appends the
assistant message and the tool's result → a final answer in text; plain and streamed. A forced
`tool_choice` and "none" on the same model; on an untrained random model, what a forced call turns
into when the model cannot finish it (text), and the 400s of requests with bad tools, calls or results.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from dianjing.data.schema import Conversation, Message
from dianjing.infer.models import load_models
from dianjing.infer.server import Limits, create_app
from dianjing.infer.tool_calls import call_opening
from tests.helpers import sft_config
from tests.integration.test_tool_calls import _records, tool_model  # noqa: F401  (a fixture)
from tests.serving import running

N_TRAIN = 15  # the demo set's first conversations: single calls to get_weather and calculator
RECORDS = _records()
TOOLS = RECORDS[0]["tools"]  # get_weather, calculator, web_search, convert_units
TAIPEI = RECORDS[0]["messages"]  # user, assistant call, tool result, assistant answer


@pytest.fixture(scope="module")
def tool_run(tool_model, tmp_path_factory):  # noqa: F811  (the imported fixture)
    from dianjing.train.loop import train

    tmp = tmp_path_factory.mktemp("tool_serve")
    data = tmp / "tools.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS[:N_TRAIN]), encoding="utf-8")
    cfg = sft_config(tool_model, data, tmp / "run", "train.epochs=20", "adapter.method=full", "data.max_length=2048",
                     "data.eval_fraction=0", "model.precision=fp32")
    run_dir, summary = train(cfg, log=lambda *_: None)
    assert summary["steps"] == 80
    return run_dir


@pytest.fixture(scope="module")
def trained(tool_run):
    models = load_models([str(tool_run)], precision="fp32", log=lambda *_: None)
    with running(create_app(models, limits=Limits(max_tokens=100), log=lambda *_: None)) as (_, url):
        yield openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def _ask(client, messages, **kw):
    return client.chat.completions.create(model="run", messages=messages, tools=TOOLS, temperature=0,
                                          max_tokens=60, **kw)


def test_a_whole_round_with_the_openai_client(trained):
    messages = [TAIPEI[0]]
    r = _ask(trained, messages)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Taipei"}
    assert r.usage.completion_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    messages.append(choice.message)  # as the openai docs do: the message object itself
    messages.append({"role": "tool", "tool_call_id": call.id, "content": TAIPEI[2]["content"]})
    final = _ask(trained, messages).choices[0]
    assert final.finish_reason == "stop" and not final.message.tool_calls
    assert final.message.content.startswith("It's 24 °C in Taipei")  # read from the tool's result


def _accumulate(chunks) -> tuple[str, dict[int, dict], list[str | None]]:
    """Content, calls by index and finish reasons from streamed chunks, as a client adds them up."""
    content, calls, reasons = "", {}, []
    for c in chunks:
        delta = c.choices[0].delta
        content += delta.content or ""
        for t in delta.tool_calls or []:
            if t.index not in calls:  # a call's first delta: id, type, name, arguments ""
                assert t.id and t.type == "function" and t.function.name and t.function.arguments == ""
                calls[t.index] = {"id": t.id, "name": t.function.name, "arguments": ""}
            else:
                assert t.id is None and t.function.name is None
            calls[t.index]["arguments"] += t.function.arguments or ""
        reasons.append(c.choices[0].finish_reason)
    return content, calls, reasons


def test_a_streamed_round_adds_up_to_the_plain_one(trained):
    messages = [RECORDS[2]["messages"][0]]  # sunglasses in Sydney
    plain = _ask(trained, messages).choices[0]
    content, calls, reasons = _accumulate(_ask(trained, messages, stream=True))
    assert content == "" and reasons[-1] == "tool_calls" and [r for r in reasons if r] == ["tool_calls"]
    [want] = plain.message.tool_calls
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [(want.function.name, want.function.arguments)]
    assert json.loads(calls[0]["arguments"]) == {"city": "Sydney"}
    messages += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": calls[0]["id"], "type": "function",
                      "function": {"name": calls[0]["name"], "arguments": calls[0]["arguments"]}}]},
                 {"role": "tool", "tool_call_id": calls[0]["id"], "content": RECORDS[2]["messages"][2]["content"]}]
    final = _ask(trained, messages).choices[0]
    content, calls, reasons = _accumulate(_ask(trained, messages, stream=True))
    assert content == final.message.content and "Sydney" in content and calls == {} and reasons[-1] == "stop"


def test_tool_choice_forces_a_function_or_none(trained):
    weather = [RECORDS[0]["messages"][0]]
    sums = [RECORDS[7]["messages"][0]]  # 1234 × 5678
    forced = _ask(trained, sums, tool_choice={"type": "function", "function": {"name": "calculator"}}).choices[0]
    assert forced.finish_reason == "tool_calls" and [c.function.name for c in forced.message.tool_calls] == ["calculator"]
    assert json.loads(forced.message.tool_calls[0].function.arguments) == {"expression": "1234 * 5678"}
    required = _ask(trained, weather, tool_choice="required").choices[0]
    assert required.finish_reason == "tool_calls" and required.message.tool_calls[0].function.name == "get_weather"
    none = _ask(trained, weather, tool_choice="none")
    assert not none.choices[0].message.tool_calls and none.choices[0].finish_reason in ("stop", "length")
    auto = _ask(trained, weather)
    assert none.usage.prompt_tokens < auto.usage.prompt_tokens  # the tools are not shown with "none"


# --- an untrained model, and bad requests ---------------------------------------------------------

WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
ASK = [{"role": "user", "content": "Weather in Taipei?"}]


@pytest.fixture(scope="module")
def random_server(tool_model):  # noqa: F811  the model before training: random weights
    models = load_models([str(tool_model)], precision="fp32", log=lambda *_: None)
    with running(create_app(models, limits=Limits(max_tokens=64, max_tools=4), log=lambda *_: None)) as (_, url):
        yield models, url


def _chat(url, **body):
    return httpx.post(url + "/v1/chat/completions", json={"messages": ASK, "tools": WEATHER, "max_tokens": 12,
                                                          "temperature": 0, **body})


def test_a_forced_call_the_model_cannot_finish_is_text(random_server):
    models, url = random_server
    r = _chat(url, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert r.status_code == 200, r.text
    choice, usage = r.json()["choices"][0], r.json()["usage"]
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] in ("stop", "length")
    assert choice["message"]["content"].startswith('<tool_call>\n{"name": "get_weather", "arguments":')
    auto = _chat(url).json()["usage"]
    served = models.served["base"]
    opening = call_opening(served.template, Conversation((Message("user", ASK[0]["content"]),),
                                                         tools=(WEATHER[0]["function"],)), "get_weather")
    opening_tokens = served.tokenizer(opening, add_special_tokens=False)["input_ids"]
    assert usage["prompt_tokens"] == auto["prompt_tokens"] + len(opening_tokens)
    streamed = httpx.post(url + "/v1/chat/completions", json={
        "messages": ASK, "tools": WEATHER, "max_tokens": 12, "temperature": 0, "stream": True,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}).text
    events = [json.loads(e[6:]) for e in streamed.split("\n\n") if e.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert text == choice["message"]["content"] and events[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]


def _err(r, param):
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and "Traceback" not in r.text and "Error" not in err["message"]
    return err["message"]


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Taipei"}'}}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 24}'}


def test_bad_tools_calls_and_results_are_400s(random_server):
    _, url = random_server
    call_turn = {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert _chat(url, messages=[*ASK, call_turn, RESULT]).status_code == 200
    assert "not one of the tools" in _err(_chat(url, tool_choice={"type": "function", "function": {"name": "x"}}),
                                          "tool_choice")
    _err(_chat(url, tool_choice="sometimes"), "tool_choice")
    _err(_chat(url, tools=None, tool_choice="required"), "tool_choice")
    _err(_chat(url, tools=[{"type": "function"}]), "tools")
    _err(_chat(url, tools=[{"type": "function", "function": {"name": "has space"}}]), "tools")
    _err(_chat(url, tools=WEATHER * 2), "tools")  # listed twice
    assert "at most 4" in _err(_chat(url, tools=[{"type": "function", "function": {"name": f"f{k}"}} for k in range(5)]),
                               "tools")
    _err(_chat(url, tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]), "tools")
    _err(_chat(url, tools=[{"type": "function", "function": {"name": "f", "description": "x" * 10**5}}]), "tools")
    _err(_chat(url, parallel_tool_calls="yes"), "parallel_tool_calls")
    _err(_chat(url, functions=[{"name": "f"}]), "functions")
    assert "answers" in _err(_chat(url, messages=[*ASK, {**RESULT, "tool_call_id": "nope"}]), "messages[1].role")
    bad_id = _err(_chat(url, messages=[*ASK, call_turn, {**RESULT, "tool_call_id": "call_9"}]), "messages[2].tool_call_id")
    assert "call_9" in bad_id and "call_1" in bad_id
    _err(_chat(url, messages=[*ASK, call_turn, {"role": "tool", "content": "x"}]), "messages[2].tool_call_id")
    _err(_chat(url, messages=[*ASK, call_turn, RESULT, RESULT]), "messages[3].tool_call_id")  # answered already
    _err(_chat(url, messages=[*ASK, call_turn, {"role": "user", "content": "hm"}]), "messages[2]")  # not answered
    _err(_chat(url, messages=[*ASK, call_turn]), "messages[1]")
    bad_args = {**CALL, "function": {"name": "get_weather", "arguments": '{"city": '}}
    assert "not valid JSON" in _err(_chat(url, messages=[*ASK, {**call_turn, "tool_calls": [bad_args]}, RESULT]),
                                    "messages[1].tool_calls[0].function.arguments")
    listed = {**CALL, "function": {"name": "get_weather", "arguments": "[1]"}}
    _err(_chat(url, messages=[*ASK, {**call_turn, "tool_calls": [listed]}, RESULT]),
         "messages[1].tool_calls[0].function.arguments")
    _err(_chat(url, messages=[*ASK, {**call_turn, "tool_calls": [{**CALL, "id": ""}]}, RESULT]),
         "messages[1].tool_calls[0].id")
    _err(_chat(url, messages=[*ASK, {**call_turn, "tool_calls": [CALL, CALL]}, RESULT]), "messages[1].tool_calls[1].id")
    _err(_chat(url, messages=[*ASK, {**call_turn, "tool_calls": "x"}]), "messages[1].tool_calls")
    _err(_chat(url, messages=[*ASK, {"role": "assistant", "content": None}]), "messages[1].content")
