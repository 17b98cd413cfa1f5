"""Tool calls in the data: sharegpt's function_call / observation turns with a `tools` field (JSON text
or a list), OpenAI messages with `tools`, `tool_calls` (several a turn) and `tool` results. Results are
matched to calls (by tool_call_id, else in order); bad arguments, a result with no call and a call to a
tool the record does not list are bad records, their message pinned for every reader that can hold them."""

import json

import pytest

from dianjing.config import DataConfig, load_config
from dianjing.data.load import load_conversations
from dianjing.data.schema import ToolCall
from dianjing.errors import DataError
from tests.helpers import SHARED_DATA

WEATHER = {"name": "get_weather", "description": "Current weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALC = {"name": "calculator", "description": "Arithmetic",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}
FIX = "\n  fix: fix the record, or set data.on_error=skip to skip bad records (they are counted)"

SHAREGPT = {"conversations": [
    {"from": "human", "value": "Weather in Taipei and Tokyo?"},
    {"from": "function_call", "value": json.dumps([{"name": "get_weather", "arguments": {"city": "Taipei"}},
                                                   {"name": "get_weather", "arguments": {"city": "Tokyo"}}])},
    {"from": "observation", "value": '{"t": 27}'},
    {"from": "observation", "value": '{"t": 18}'},
    {"from": "gpt", "value": "Taipei 27°C, Tokyo 18°C."},
    {"from": "human", "value": "And 27 * 3?"},
    {"from": "function_call", "value": '{"name": "calculator", "arguments": {"expression": "27 * 3"}}'},
    {"from": "observation", "value": '{"result": 81}'},
    {"from": "gpt", "value": "81."}],
    "tools": json.dumps([WEATHER, CALC])}

MESSAGES = {"messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Taipei and Tokyo?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Taipei"}'}},
        {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'}}]},
    {"role": "tool", "tool_call_id": "b", "content": '{"t": 18}'},  # answered out of order, by id
    {"role": "tool", "tool_call_id": "a", "content": '{"t": 27}'},
    {"role": "assistant", "content": "Taipei 27°C, Tokyo 18°C."}],
    "tools": [{"type": "function", "function": WEATHER}]}


def _load(tmp_path, rows, name="d.jsonl", **kw):
    p = tmp_path / name
    if name.endswith(".json"):
        p.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return load_conversations(DataConfig(files=[str(p)], **kw), log=lambda *_: None)


def _error(tmp_path, rows, name="d.jsonl") -> str:
    with pytest.raises(DataError) as e:
        _load(tmp_path, rows, name)
    return str(e.value)


def test_sharegpt_function_call_and_observation_turns(tmp_path):
    (conv,), report = _load(tmp_path, [SHAREGPT])
    assert report.files[0]["format"] == "sharegpt"
    assert conv.tools == (WEATHER, CALC)
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "tool", "assistant", "user",
                                               "assistant", "tool", "assistant"]
    calls = conv.messages[1].tool_calls
    assert calls == (ToolCall("call00001", "get_weather", {"city": "Taipei"}),
                     ToolCall("call00002", "get_weather", {"city": "Tokyo"}))
    assert conv.messages[1].content == ""
    # results match the calls in order, across turns
    assert [(m.tool_call_id, m.name) for m in conv.messages if m.role == "tool"] == [
        ("call00001", "get_weather"), ("call00002", "get_weather"), ("call00003", "calculator")]
    assert conv.messages[6].tool_calls == (ToolCall("call00003", "calculator", {"expression": "27 * 3"}),)


def test_sharegpt_tools_as_a_list_and_llama_factorys_empty_tools(tmp_path):
    listed = {**SHAREGPT, "tools": [WEATHER, {"type": "function", "function": CALC}]}
    (conv,), _ = _load(tmp_path, [listed])
    assert conv.tools == (WEATHER, CALC)
    plain = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}], "tools": "[]"}
    (conv,), _ = _load(tmp_path, [plain])
    assert conv.tools == () and conv.tool_specs() is None and not conv.has_tools
    (conv,), _ = _load(tmp_path, [{**plain, "tools": ""}])
    assert conv.tools is None


def test_openai_messages_keep_their_structure(tmp_path):
    (conv,), report = _load(tmp_path, [MESSAGES])
    assert report.files[0]["format"] == "messages"
    assert conv.tools == (WEATHER,)
    assert [(m.role, m.tool_call_id) for m in conv.messages] == [
        ("system", None), ("user", None), ("assistant", None), ("tool", "b"), ("tool", "a"), ("assistant", None)]
    assert conv.messages[2].tool_calls == (ToolCall("a", "get_weather", {"city": "Taipei"}),
                                           ToolCall("b", "get_weather", {"city": "Tokyo"}))
    # the Hugging Face shape templates are given
    assert conv.as_dicts()[2] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Taipei"}}},
        {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}]}
    assert conv.as_dicts()[3] == {"role": "tool", "content": '{"t": 18}', "tool_call_id": "b", "name": "get_weather"}
    assert "tool_calls" not in conv.as_dicts()[5]  # templates test `'tool_calls' in message`
    assert conv.tool_specs() == [{"type": "function", "function": WEATHER}]


def test_openai_results_without_ids_go_in_order_and_a_conversation_may_end_with_a_call(tmp_path):
    rows = [{"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "Let me see.", "tool_calls": [
            {"function": {"name": "f", "arguments": {"a": 1}}}, {"function": {"name": "g", "arguments": "{}"}}]},
        {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"},
        {"role": "assistant", "content": "done", "function_call": None}]},
        {"messages": [{"role": "user", "content": "x"},
                      {"role": "assistant", "function_call": {"name": "f", "arguments": '{"a": 2}'}}]}]
    (first, second), _ = _load(tmp_path, rows)
    assert [(m.tool_call_id, m.name) for m in first.messages if m.role == "tool"] == [("call00001", "f"),
                                                                                      ("call00002", "g")]
    assert first.messages[1].content == "Let me see."
    assert second.messages[-1].tool_calls == (ToolCall("call00001", "f", {"a": 2}),)


def test_the_demo_set_reads_and_lists_its_tools():
    convs, report = load_conversations(DataConfig(files=["src/dianjing/assets/tool_calls_demo.jsonl"]),
                                       log=lambda *_: None)
    assert len(convs) == report.files[0]["kept"] == report.files[0]["records"] and 40 <= len(convs) <= 60
    assert all({t["name"] for t in c.tools} == {"get_weather", "calculator", "web_search", "convert_units"}
               for c in convs)
    turns = [m for c in convs for m in c.messages if m.tool_calls]
    assert sum(len(m.tool_calls) > 1 for m in turns) >= 5  # several calls in one turn
    assert all(c.messages[-1].role == "assistant" and not c.messages[-1].tool_calls for c in convs)  # a final answer
    han = sum(any("\u4e00" <= ch <= "\u9fff" for ch in c.messages[0 if c.messages[0].role == "user" else 1].content)
              for c in convs)
    assert 0.3 * len(convs) < han < 0.7 * len(convs)  # Traditional Chinese and English


# --- bad records: each message names the place once, then the field -------------------------------

@pytest.mark.parametrize("turns, field, what", [
    ([{"from": "human", "value": "x"}, {"from": "function_call", "value": '{"name": "get_weather", "arguments": {'}],
     "conversations[1].value", 'not valid JSON: Expecting property name enclosed in double quotes at column 39 '
                               '(a function_call turn holds {"name": ..., "arguments": {...}} or a list of them)'),
    ([{"from": "human", "value": "x"}, {"from": "function_call", "value": '{"name": "get_weather", "arguments": "{x"}'}],
     "conversations[1].value.arguments", "not valid JSON: Expecting property name enclosed in double quotes at column 2"),
    ([{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}, {"from": "observation", "value": "z"}],
     "conversations[2]", "a tool result with no call before it"),
    ([{"from": "human", "value": "x"}, {"from": "function_call", "value": '[{"name": "search", "arguments": {}}]'}],
     "conversations[1].value[0].name", "calls 'search', which is not in the record's tools (get_weather)"),
    ([{"from": "human", "value": "x"}, {"from": "function_call", "value": '{"name": "get_weather", "arguments": [1]}'}],
     "conversations[1].value.arguments", "the arguments must be a JSON object, got list"),
    ([{"from": "human", "value": "x"}, {"from": "function_call", "value": '{"name": "get_weather", "arguments": {}}'},
      {"from": "human", "value": "y"}],
     "<turns>", "turn 3 is 'user' after 'assistant (tool call)'; expected 'tool' (turns must alternate user, assistant)"),
])
def test_bad_sharegpt_tool_records_are_named_exactly(tmp_path, turns, field, what):
    rows = [{"conversations": [{"from": "human", "value": "ok"}, {"from": "gpt", "value": "ok"}]},
            {"conversations": turns, "tools": [WEATHER]}]
    f = tmp_path / "d.jsonl"
    assert _error(tmp_path, rows) == f"{f}:2: field '{field}': {what}{FIX}"


@pytest.mark.parametrize("msgs, field, what", [
    ([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": Taipei}'}}]}],
     "messages[1].tool_calls[0].function.arguments", "not valid JSON: Expecting value at column 10"),
    ([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "a", "content": "27"}],
     "messages[1]", "a tool result with no call before it"),
    ([{"role": "user", "content": "x"},
      {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "get_weather", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "b", "content": "27"}],
     "messages[2]", "tool_call_id 'b' matches no unanswered call of the assistant turn before it (a)"),
    ([{"role": "user", "content": "x"},
      {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "get_wether", "arguments": "{}"}}]}],
     "messages[1].tool_calls[0].function.name", "calls 'get_wether', which is not in the record's tools (get_weather)"),
    ([{"role": "user", "content": "x"},
      {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "get_weather"}}]}],
     "messages[1].tool_calls[0].function.arguments", "missing (a call without arguments has {})"),
    ([{"role": "user", "content": "x"},
      {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "get_weather", "arguments": "{}"}}]},
      {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}],
     "messages[3]", "a tool result with no call before it"),
    ([{"role": "user", "content": "x"},
      {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "get_weather", "arguments": "{}"}}]},
      {"role": "tool", "content": "1"}],
     "<turns>", "the conversation ends with a tool turn; nothing to learn from"),
])
def test_bad_openai_tool_records_are_named_exactly(tmp_path, msgs, field, what):
    f = tmp_path / "d.jsonl"
    assert _error(tmp_path, [{"messages": msgs, "tools": [WEATHER]}]) == f"{f}:1: field '{field}': {what}{FIX}"


def test_a_bad_tool_list_is_named(tmp_path):
    f = tmp_path / "d.jsonl"
    row = {"conversations": SHAREGPT["conversations"][:1] + [{"from": "gpt", "value": "y"}]}
    assert _error(tmp_path, [{**row, "tools": "[{"}]) == (
        f"{f}:1: field 'tools': not valid JSON: Expecting property name enclosed in double quotes at column 3{FIX}")
    assert _error(tmp_path, [{**row, "tools": [{"description": "no name"}]}]) == (
        f"{f}:1: field 'tools[0].name': missing or not a name{FIX}")
    assert _error(tmp_path, [{**row, "tools": {"name": "x"}}]) == (
        f"{f}:1: field 'tools': expected a list of function specs (or its JSON text){FIX}")


# --- the same message from every reader that can hold tool data --------------------------------------

ORPHAN = {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "27"}]}
WHAT = "field 'messages[1]': a tool result with no call before it"


def _only_once(msg: str, place: str) -> None:
    assert msg == f"{place}: {WHAT}{FIX}", msg
    assert msg.count(str(place).split(" record ")[0]) == 1


def test_jsonl_names_file_and_line(tmp_path):
    _only_once(_error(tmp_path, [MESSAGES, ORPHAN]), f"{tmp_path / 'd.jsonl'}:2")


def test_json_list_names_file_and_record(tmp_path):
    _only_once(_error(tmp_path, [MESSAGES, ORPHAN], name="d.json"), f"{tmp_path / 'd.json'} record 2")


def test_parquet_names_file_and_record(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    f = tmp_path / "d.parquet"
    plain = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    pq.write_table(pa.Table.from_pylist([plain, ORPHAN]), f)
    with pytest.raises(DataError) as e:
        load_conversations(load_config(None, [f"data.files={f}"]).data, log=lambda *_: None)
    _only_once(str(e.value), f"{f} record 2")


def test_skipped_tool_records_are_counted_by_reason(tmp_path):
    rows = [MESSAGES, ORPHAN, ORPHAN, {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"function": {"name": "nope", "arguments": "{}"}}]}], "tools": [WEATHER]}]
    convs, report = _load(tmp_path, rows, on_error="skip")
    assert len(convs) == 1
    assert report.skipped == {WHAT: 2, "field 'messages[1].tool_calls[0].function.name': calls 'nope', which is "
                                       "not in the record's tools (get_weather)": 1}
    assert report.first_errors[:2] == [f"{tmp_path / 'd.jsonl'}:2: {WHAT}", f"{tmp_path / 'd.jsonl'}:3: {WHAT}"]


GLAIVE = SHARED_DATA / "instruct" / "glaive_toolcall_en_demo.json"


@pytest.mark.skipif(not GLAIVE.exists(), reason="LLaMA-Factory's glaive tool-call demo is not in ../shared/data")
def test_llama_factorys_glaive_tool_call_demo_reads():
    convs, report = load_conversations(DataConfig(files=[str(GLAIVE)]), log=lambda *_: None)
    assert report.files[0]["kept"] == report.files[0]["records"] == len(convs)
    assert sum(1 for c in convs for m in c.messages if m.tool_calls) > 100
