"""data/tools.py: the built-in tool format (tool list block, calls, results) and parse_tool_calls,
which reads generated text back into OpenAI-style calls for each template's way of writing them."""

import json
from pathlib import Path

import pytest

from dianjing.data import tools
from dianjing.data.templates import BUILTIN_TEMPLATES, ChatTemplate
from dianjing.data.tools import (call_style, format_call, format_calls, lower, parse_tool_calls,
                                 tools_block)
from tests.helpers import SHARED_DATA

TEMPLATES = SHARED_DATA / "templates"
WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SPECS = [{"type": "function", "function": WEATHER}]
CALLS = [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "台北"}}},
         {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}]
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in 台北 and Tokyo?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": CALLS},
            {"role": "tool", "content": '{"t": 27}', "tool_call_id": "c1", "name": "get_weather"},
            {"role": "tool", "content": '{"t": 18}', "tool_call_id": "c2", "name": "get_weather"},
            {"role": "assistant", "content": "台北 27°C, Tokyo 18°C."}]


def ids(k: int) -> str:
    return f"id{k}"


def _template(name: str) -> ChatTemplate:
    return ChatTemplate(name, BUILTIN_TEMPLATES[name], "<s>", "</s>", False)


def _model_template(file: str) -> ChatTemplate:
    path = TEMPLATES / file
    if not path.exists():
        pytest.skip("the shared chat templates are not on this machine")
    return ChatTemplate("model", path.read_text(encoding="utf-8"), "<s>", "</s>", False)


# --- the format --------------------------------------------------------------------------------

def test_the_built_in_format_exactly():
    assert format_call("get_weather", {"city": "台北"}) == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "台北"}}\n</tool_call>')
    assert format_calls("Checking.", CALLS) == (
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "台北"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo"}}\n</tool_call>')
    assert format_calls("", CALLS[:1]).startswith("<tool_call>\n")
    assert format_call("f", '{"a": 1}') == '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    block = tools_block(SPECS)
    assert block == (tools.TOOLS_HEAD + "\n" + json.dumps(WEATHER, ensure_ascii=False) + tools.TOOLS_TAIL)
    assert block.startswith("# Tools\n") and "\n<tools>\n{\"name\": \"get_weather\"" in block
    assert tools_block([WEATHER]) == block  # bare specs list the same


def test_lowering_for_a_template_without_tool_support():
    out, origin = lower(MESSAGES, SPECS)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user", "assistant"]
    assert out[0]["content"] == "Be brief.\n\n" + tools_block(SPECS)
    assert out[2]["content"] == format_calls("Checking.", CALLS)
    # consecutive results are one user turn, each in its markers
    assert out[3]["content"] == '<tool_response>\n{"t": 27}\n</tool_response>\n<tool_response>\n{"t": 18}\n</tool_response>'
    assert origin == [0, 1, 2, 3, 5]
    out, origin = lower(MESSAGES[1:], SPECS)
    assert out[0] == {"role": "system", "content": tools_block(SPECS)} and origin[0] is None
    assert lower(MESSAGES[1:2], None) == ([MESSAGES[1]], [0])


@pytest.mark.parametrize("name", ["chatml", "plain"])
def test_the_built_in_templates_write_the_same_format_as_the_lowering(name):
    """One format: the Jinja of chatml/plain and the Python of tools.py give the same tool list and calls."""
    text = _template(name).render(MESSAGES, tools=SPECS)
    assert ("Be brief.\n\n" + tools_block(SPECS)) in text
    assert format_calls("Checking.", CALLS) in text
    assert text.count("Be brief.") == 1  # the system text is in the tools block, not repeated


def test_built_in_chatml_and_plain_with_tools_exactly():
    one = [MESSAGES[1], {"role": "assistant", "content": "", "tool_calls": CALLS[:1]}, MESSAGES[3],
           {"role": "assistant", "content": "27°C."}]
    call = format_call("get_weather", {"city": "台北"})
    assert _template("chatml").render(one, tools=SPECS) == (
        f"<|im_start|>system\n{tools_block(SPECS)}<|im_end|>\n<|im_start|>user\nWeather in 台北 and Tokyo?<|im_end|>\n"
        f"<|im_start|>assistant\n{call}<|im_end|>\n<|im_start|>tool\n{{\"t\": 27}}<|im_end|>\n"
        "<|im_start|>assistant\n27°C.<|im_end|>\n")
    assert _template("plain").render(one, tools=SPECS, add_generation_prompt=True) == (
        f"{tools_block(SPECS)}\n\nUSER: Weather in 台北 and Tokyo?\nAI: {call}</s>\nTOOL: {{\"t\": 27}}\n"
        "AI: 27°C.</s>\nAI:")


def test_without_tools_the_built_in_templates_render_as_before():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    assert _template("plain").render(msgs) == "S\n\nUSER: U\nAI: A</s>\n"
    assert _template("chatml").render(msgs) == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                                                "<|im_start|>assistant\nA<|im_end|>\n")


def test_which_templates_support_tools():
    assert _template("chatml").supports_tools and _template("plain").supports_tools
    assert not _template("vicuna").supports_tools and not _template("alpaca").supports_tools
    ignores = ChatTemplate("model", "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}", None, None, False)
    assert not ignores.supports_tools
    refuses = ChatTemplate("model", "{{ raise_exception('no tools') if tools else '' }}", None, None, False)
    assert not refuses.supports_tools


@pytest.mark.parametrize("file, supported", [("qwen2_5.jinja", True), ("llama3_1.jinja", True),
                                             ("mistral_v03.jinja", True), ("gemma3.jinja", False),
                                             ("phi3_5.jinja", False)])
def test_real_templates_are_probed(file, supported):
    assert _model_template(file).supports_tools is supported


# --- reading calls back --------------------------------------------------------------------------

def test_parse_calls_and_the_text_around_them():
    text = format_calls("Let me check.", CALLS)
    content, calls = parse_tool_calls(text, _template("chatml"), new_id=ids)
    assert content == "Let me check."
    assert calls == [{"id": "id0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "台北"}'}},
                     {"id": "id1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'}}]
    assert parse_tool_calls("Just text.", _template("plain")) == ("Just text.", [])
    assert parse_tool_calls("  ", None) == ("", [])


def test_round_trip_through_the_format():
    for args in ({}, {"expression": "(17 + 25) * 3"}, {"q": "珍珠奶茶", "n": [1, 2.5, None, True]}):
        _, calls = parse_tool_calls(format_call("f", args), None)
        assert [json.loads(c["function"]["arguments"]) for c in calls] == [args]
        assert calls[0]["id"].startswith("call_") and len(calls[0]["id"]) == 29


def test_a_block_cut_off_before_its_end_still_counts_when_its_json_is_whole():
    content, calls = parse_tool_calls('<tool_call>\n{"name": "calculator", "arguments": {"expression": "2 ** 20"}}',
                                      None, new_id=ids)
    assert content == "" and calls[0]["function"] == {"name": "calculator", "arguments": '{"expression": "2 ** 20"}'}


@pytest.mark.parametrize("block", [
    '<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>',      # not valid JSON
    '<tool_call>\n{"arguments": {"a": 1}}\n</tool_call>',                 # no name
    '<tool_call>\n{"name": "f", "arguments": [1, 2]}\n</tool_call>',      # arguments not an object
    '<tool_call>\n{"name": "f", "arguments": "{not json"}\n</tool_call>',  # arguments text not JSON
    '<tool_call>\n["f"]\n</tool_call>',
])
def test_a_malformed_block_is_not_a_call_and_stays_in_the_content(block):
    text = "Sure. " + block + "\n" + format_call("g", {"b": 2})
    content, calls = parse_tool_calls(text, None, new_id=ids)
    assert content == "Sure. " + block
    assert [c["function"]["name"] for c in calls] == ["g"]


def test_arguments_given_as_json_text_and_parameters_are_read():
    _, calls = parse_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>', None, new_id=ids)
    assert calls[0]["function"]["arguments"] == '{"a": 1}'
    _, calls = parse_tool_calls('<tool_call>{"name": "f", "parameters": {"a": 1}}</tool_call>', None, new_id=ids)
    assert calls[0]["function"]["arguments"] == '{"a": 1}'


def test_mistral_and_llama3_styles():
    mistral, llama = _model_template("mistral_v03.jinja"), _model_template("llama3_1.jinja")
    assert call_style(mistral) == "mistral" and call_style(llama) == "llama3"
    assert call_style(_model_template("qwen2_5.jinja")) == "hermes" and call_style(None) == "hermes"
    assert call_style(_model_template("gemma3.jinja")) == "hermes"  # given the built-in format
    content, calls = parse_tool_calls('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, '
                                      '"id": "abc123XYZ"}]', mistral, new_id=ids)
    assert content == "" and calls == [{"id": "abc123XYZ", "type": "function",
                                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert parse_tool_calls("[TOOL_CALLS] [not json", mistral) == ("[TOOL_CALLS] [not json", [])
    content, calls = parse_tool_calls('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
                                      llama, new_id=ids)
    assert content == "" and calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert parse_tool_calls("It is sunny.", llama) == ("It is sunny.", [])


def test_what_a_real_template_writes_is_read_back():
    """Render a call with Qwen2.5's own template, cut out the assistant's text, parse it."""
    qwen = _model_template("qwen2_5.jinja")
    msgs = [MESSAGES[1], {"role": "assistant", "content": "", "tool_calls": CALLS}]
    head = qwen.render(msgs[:1], add_generation_prompt=True, tools=SPECS)
    answer = qwen.render(msgs, tools=SPECS)[len(head):].removesuffix("<|im_end|>\n")
    _, calls = parse_tool_calls(answer, qwen, new_id=ids)
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "台北"}), ("get_weather", {"city": "Tokyo"})]


def test_docs_state_the_format():
    page = (Path(__file__).resolve().parents[3] / "docs" / "data-formats.md").read_text(encoding="utf-8")
    assert tools.TOOLS_HEAD in page and tools.TOOLS_TAIL in page


@pytest.mark.parametrize("name", ["chatml", "plain"])
def test_transformers_renders_the_built_in_templates_the_same(make_tokenizer, name):
    """An exported run carries its template: transformers' apply_chat_template(..., tools=) must write the
    same tool format (its `tojson` is the one templates.py installs)."""
    tok = make_tokenizer()
    ours = ChatTemplate(name, BUILTIN_TEMPLATES[name], tok.bos_token, tok.eos_token, False)
    theirs = tok.apply_chat_template(MESSAGES, tools=SPECS, chat_template=BUILTIN_TEMPLATES[name], tokenize=False,
                                     add_generation_prompt=True, add_bos=False)
    assert theirs == ours.render(MESSAGES, add_generation_prompt=True, tools=SPECS)
    assert format_calls("Checking.", CALLS) in theirs
