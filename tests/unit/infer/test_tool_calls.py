"""infer/tool_calls.py: reading calls back from generated text, whole and streamed (the streamed
pieces add up to `parse_tool_calls`'s answer at every split point), and the call opening a forced
tool_choice pre-fills."""

import json

import pytest

from dianjing.data.schema import Conversation, Message, ToolCall
from dianjing.data.templates import BUILTIN_TEMPLATES, BUILTIN_STOPS, ChatTemplate
from dianjing.data.tools import parse_tool_calls
from dianjing.infer.tool_calls import CallStream, Content, ToolDeltas, ToolPlan, answer, call_opening, render

NAMES = {"get_weather", "calculator"}


def _builtin(name: str) -> ChatTemplate:
    return ChatTemplate(name, BUILTIN_TEMPLATES[name], "<s>", "</s>", False, tuple(BUILTIN_STOPS[name]))


# a Mistral-like and a Llama-3-like template: they render the tool list, calls and results themselves
MISTRAL = ChatTemplate("model", (
    "{% if tools %}[AVAILABLE_TOOLS] {{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}"
    "{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }}[/INST]"
    "{% elif m.role == 'tool' %}[TOOL_RESULTS] {{ m.content }}[/TOOL_RESULTS]"
    "{% elif m.tool_calls %}[TOOL_CALLS] [{% for c in m.tool_calls %}{\"name\": {{ c.function.name | tojson }}, "
    "\"arguments\": {{ c.function.arguments | tojson }}}{% if not loop.last %}, {% endif %}{% endfor %}]{{ eos_token }}"
    "{% else %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}"), "<s>", "</s>", False)
LLAMA3 = ChatTemplate("model", (
    "{% if tools %}Tools: {{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}{\"name\": \"{{ c.function.name }}\", \"parameters\": "
    "{{ c.function.arguments | tojson }}}{% endfor %}{% else %}{{ m.content }}{% endif %}<|eot|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"), "<s>", "</s>", False)

W = '{"name": "get_weather", "arguments": {"city": "Taipei"}}'
C = '{"name": "calculator", "arguments": {"expression": "27 * 3"}}'
HERMES_SAMPLES = [
    f"<tool_call>\n{W}\n</tool_call>",
    f"Let me check.\n<tool_call>\n{W}\n</tool_call>",
    f"<tool_call>\n{W}\n</tool_call>\n<tool_call>\n{C}\n</tool_call>",
    f"<tool_call>\n{W}\n</tool_call>\nDone, more  text after.  ",
    f"<tool_call>\n{W}",  # cut off before </tool_call>: still a call
    "<tool_call>\n{not json}\n</tool_call> and text",
    'I will <tool_call>\n{"name": "calc',  # cut off mid-call: text
    "Almost a marker <tool_ca",
    "  plain answer,\n with whitespace  \n",
    f"<tool_call> <tool_call>{W}</tool_call> then {C}",
    f"<tool_call>[1, 2]</tool_call>  <tool_call>{C}</tool_call></tool_call>",
    "",
    "<",
]
MISTRAL_SAMPLES = [f"[TOOL_CALLS] [{W}, {C}]", f"Sure. [TOOL_CALLS] [{W}] trailing", "[TOOL_CALLS] [{bad",
                   "no calls here [TOOL_", f"[TOOL_CALLS] {W}"]
LLAMA3_SAMPLES = [W, f"<|python_tag|>{W} and after", f"  {W}", "{not a call}", "plain text", "<|pyth",
                  "<|python_tag|> plain", '{"answer": 3}']


def _ids(k: int) -> str:
    return f"call_{k}"


def _streamed(template, chunks, names=NAMES, keep=None):
    s = CallStream(template, names, keep, _ids)
    pieces = [p for c in chunks for p in s.push(c)] + s.finish()
    content = "".join(p.text for p in pieces if isinstance(p, Content))
    return content, [p.call for p in pieces if not isinstance(p, Content)]


@pytest.mark.parametrize(("template", "samples"), [(_builtin("plain"), HERMES_SAMPLES),
                                                  (_builtin("vicuna"), HERMES_SAMPLES[:4]),
                                                  (MISTRAL, MISTRAL_SAMPLES), (LLAMA3, LLAMA3_SAMPLES)])
def test_streamed_pieces_add_up_to_parse_tool_calls_at_every_split(template, samples):
    for text in samples:
        want = parse_tool_calls(text, template, new_id=_ids)
        assert _streamed(template, [text]) == want, text
        assert _streamed(template, list(text)) == want, text  # a character at a time
        for i in range(len(text) + 1):
            assert _streamed(template, [text[:i], text[i:]]) == want, (text, i)
        for i in range(0, len(text) + 1, 3):
            for j in range(i, len(text) + 1, 5):
                assert _streamed(template, [text[:i], text[i:j], text[j:]]) == want, (text, i, j)


def test_the_styles_are_told_apart_and_calls_are_found():
    assert [c["function"]["name"] for c in _streamed(_builtin("chatml"), [HERMES_SAMPLES[2]])[1]] == [
        "get_weather", "calculator"]
    assert _streamed(MISTRAL, [MISTRAL_SAMPLES[0]])[1][1]["function"]["arguments"] == '{"expression": "27 * 3"}'
    assert _streamed(LLAMA3, [LLAMA3_SAMPLES[1]]) == ("and after", [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Taipei"}'}}])


def test_a_call_to_a_function_the_request_did_not_list_stays_text():
    text = f"<tool_call>\n{W}\n</tool_call>\n<tool_call>\n{C}\n</tool_call>"
    content, calls = _streamed(_builtin("plain"), [text], names={"calculator"})
    assert content == f"<tool_call>\n{W}\n</tool_call>" and [c["function"]["name"] for c in calls] == ["calculator"]
    assert _streamed(MISTRAL, [MISTRAL_SAMPLES[0]], names={"calculator"}) == (MISTRAL_SAMPLES[0], [])


def test_one_call_is_kept_without_parallel_calls():
    text = HERMES_SAMPLES[2] + " ok"
    for plan in (ToolPlan(({"name": "get_weather"}, {"name": "calculator"}), parallel=False),
                 ToolPlan(({"name": "get_weather"}, {"name": "calculator"}), "function", "get_weather")):
        content, calls = answer(text, _builtin("plain"), plan, new_id=_ids)
        assert content == "ok" and [c["function"]["name"] for c in calls] == ["get_weather"]


def test_answer_content_is_none_with_calls_only_and_text_without():
    plan = ToolPlan(({"name": "get_weather"},))
    content, calls = answer(f" <tool_call>\n{W}\n</tool_call>", _builtin("plain"), plan)
    assert content is None and calls[0]["id"].startswith("call_") and len(calls[0]["id"]) == 29
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Taipei"}
    assert answer("", _builtin("plain"), plan) == ("", [])
    assert answer("<tool_call>\n{bad}", _builtin("plain"), plan) == ("<tool_call>\n{bad}", [])


def test_deltas_have_openai_shape():
    d = ToolDeltas(_builtin("plain"), ToolPlan(({"name": "get_weather"}, {"name": "calculator"})))
    out = []
    for piece in ["Let me", " check.\n<tool", "_call>\n", W[:20], W[20:], "\n</tool_call>\n<tool_call>", C,
                  "\n</tool_", "call>"]:
        out += d.push(piece)
    out += d.finish()
    assert out[0] == {"content": "Let me"} and out[1] == {"content": " check."}
    first, args = out[2]["tool_calls"][0], out[3]["tool_calls"][0]
    assert set(first) == {"index", "id", "type", "function"} and first["index"] == 0 and first["type"] == "function"
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert args == {"index": 0, "function": {"arguments": '{"city": "Taipei"}'}}
    assert out[4]["tool_calls"][0]["index"] == 1 and out[4]["tool_calls"][0]["function"]["name"] == "calculator"
    assert len(out) == 6 and d.reason("stop") == "tool_calls"
    plain = ToolDeltas(_builtin("plain"), ToolPlan(({"name": "get_weather"},)))
    assert plain.push("<tool_c") == [] and plain.finish() == [{"content": "<tool_c"}] and plain.reason("length") == "length"


# --- the call opening ---------------------------------------------------------------------------------

TOOLS = ({"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}},)
ASK = Conversation((Message("user", "Weather in Taipei?"),), tools=TOOLS)


@pytest.mark.parametrize("name", ["plain", "chatml", "vicuna", "alpaca"])
def test_the_opening_is_how_the_template_starts_that_call(name):
    template = _builtin(name)
    forced, required = call_opening(template, ASK, "get_weather"), call_opening(template, ASK, None)
    assert forced.lstrip() == '<tool_call>\n{"name": "get_weather", "arguments":'
    assert required.lstrip() == '<tool_call>\n{"name":'
    call = Message("assistant", "", tool_calls=(ToolCall("c1", "get_weather", {"city": "Taipei"}),))
    trained = render(template, Conversation(ASK.messages + (call,), tools=TOOLS), add_generation_prompt=False)
    assert trained.startswith(render(template, ASK) + forced)  # the prompt and opening are the trained text


def test_other_call_styles_get_their_own_opening_or_none():
    assert call_opening(MISTRAL, ASK, "get_weather") == '[TOOL_CALLS] [{"name": "get_weather", "arguments":'
    assert call_opening(LLAMA3, ASK, None) == '{"name":'
    backwards = ChatTemplate("model", LLAMA3.source.replace(
        '{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}',
        '{"parameters": {{ c.function.arguments | tojson }}, "name": "{{ c.function.name }}"}'), "<s>", "</s>", False)
    assert backwards.supports_tools and call_opening(backwards, ASK, "get_weather") is None
    assert call_opening(backwards, ASK, None) is None


def test_a_forced_choice_a_template_cannot_start_is_a_400():
    from dianjing.infer.api import ApiError, ChatRequest, Limits, chat_job

    class _Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(range(len(text) // 8 + 1))}

    class _Served:
        name, tokenizer, eos = "m", _Tok(), {0}
        template = ChatTemplate("model", LLAMA3.source.replace(
            '{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}',
            '{"parameters": {{ c.function.arguments | tojson }}, "name": "{{ c.function.name }}"}'), "<s>", "</s>", False)

    tools = [{"type": "function", "function": TOOLS[0]}]
    body = {"messages": [{"role": "user", "content": "Weather?"}], "tools": tools}
    job = chat_job(ChatRequest.model_validate(body), _Served(), 4096, Limits())
    assert job.opening == "" and job.tools.choice == "auto"
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        with pytest.raises(ApiError) as e:  # its calls write the arguments first: nothing to pre-fill
            chat_job(ChatRequest.model_validate({**body, "tool_choice": choice}), _Served(), 4096, Limits())
        assert e.value.status == 400 and e.value.param == "tool_choice" and "not supported" in e.value.message
