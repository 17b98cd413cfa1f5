"""Rendering tool conversations: the assistant's calls and answers are supervised with their end tokens;
the tool list and the tool results never are. With a template that renders tools (real Qwen2.5 and
Llama 3.1 templates, the built-in chatml and plain) the template's own format is used; with one that
does not (vicuna, a model template that ignores tools, Gemma 3), the built-in format of data/tools.py."""

import pytest

from dianjing.data.render import RenderStats, render, render_all, template_input
from dianjing.data.schema import Conversation, Message, ToolCall
from dianjing.data.templates import ChatTemplate, choose_template
from dianjing.data.tools import format_call, format_calls, tools_block
from tests.helpers import SHARED_DATA

WEATHER = {"name": "get_weather", "description": "Current weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TAIPEI, TOKYO = ToolCall("call00001", "get_weather", {"city": "台北"}), ToolCall("call00002", "get_weather", {"city": "Tokyo"})
CONV = Conversation((
    Message("system", "Be brief."),
    Message("user", "Weather in 台北 and Tokyo?"),
    Message("assistant", "", tool_calls=(TAIPEI, TOKYO)),
    Message("tool", '{"t": 27}', tool_call_id="call00001", name="get_weather"),
    Message("tool", '{"t": 18}', tool_call_id="call00002", name="get_weather"),
    Message("assistant", "台北 27°C, Tokyo 18°C."),
    Message("user", "Thanks!"),
    Message("assistant", "You're welcome."),
), source="t.jsonl:1", tools=(WEATHER,))
CALLS = format_calls("", [TAIPEI.as_dict(), TOKYO.as_dict()])
ANSWERS = ["台北 27°C, Tokyo 18°C.", "You're welcome."]
OWN = ("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{{ eos_token }}\n{% endfor %}"
       "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def runs(r, tok, supervised=True) -> list[str]:
    out, cur = [], []
    for t, m in zip(r.input_ids, r.mask):
        if m == supervised:
            cur.append(t)
        elif cur:
            out.append(tok.decode(cur))
            cur = []
    if cur:
        out.append(tok.decode(cur))
    return out


def _source(file: str) -> str:
    path = SHARED_DATA / "templates" / file
    if not path.exists():
        pytest.skip("the shared chat templates are not on this machine")
    return path.read_text(encoding="utf-8")


def _check(conv, tok, template, want: list[str]) -> None:
    """The supervised runs are exactly `want`; every token is the template's rendering; nothing of the
    tool list or the results is supervised."""
    r = render(conv, tok, template, max_length=10_000)
    assert runs(r, tok) == want
    msgs, tools, _ = template_input(conv, template)
    assert tok.decode(r.input_ids) == template.render(msgs, tools=tools)
    supervised = "".join(runs(r, tok))
    assert '{"t": 27}' not in supervised and "Current weather" not in supervised


def test_qwen2_5s_own_template(make_tokenizer):
    tok = make_tokenizer(chat_template=_source("qwen2_5.jinja"))
    template, _ = choose_template("auto", tok)
    assert template.name == "model" and template.supports_tools
    qwen_calls = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "台北"}}\n</tool_call>\n'
                  '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo"}}\n</tool_call>')
    _check(CONV, tok, template, [qwen_calls + "<|im_end|>"] + [a + "<|im_end|>" for a in ANSWERS])
    text = tok.decode(render(CONV, tok, template, 10_000).input_ids)
    assert "# Tools" in text and '"description": "Current weather"' in text  # Qwen's own tool list
    assert '<|im_start|>user\n<tool_response>\n{"t": 27}\n</tool_response>\n<tool_response>\n{"t": 18}' in text


def test_llama3_1s_own_template_one_call_a_turn(make_tokenizer):
    tok = make_tokenizer(chat_template=_source("llama3_1.jinja"))
    template, _ = choose_template("auto", tok)
    one = Conversation(CONV.messages[:3] + CONV.messages[3:4] + CONV.messages[5:6], source="t.jsonl:2", tools=CONV.tools)
    one = Conversation((one.messages[0], one.messages[1], Message("assistant", "", tool_calls=(TAIPEI,)),
                        one.messages[3], one.messages[4]), source="t.jsonl:2", tools=CONV.tools)
    _check(one, tok, template, ['{"name": "get_weather", "parameters": {"city": "台北"}}<|eot_id|>',
                                ANSWERS[0] + "<|eot_id|>"])


def test_a_template_that_refuses_a_conversation_drops_it_counted_once_per_reason(make_tokenizer):
    tok = make_tokenizer(chat_template=_source("llama3_1.jinja"))
    template, _ = choose_template("auto", tok)
    two = Conversation(CONV.messages, source="t.jsonl:3", tools=CONV.tools)  # two calls in one turn
    stats = RenderStats()
    assert render_all([CONV, two], tok, template, 10_000, stats=stats) == []
    assert stats.dropped == {"chat template 'model' cannot render this conversation: "
                             "This model only supports single tool-calls at once!": 2}


@pytest.mark.parametrize("name, call, answer", [
    ("chatml", CALLS + "<|im_end|>", "{}<|im_end|>"),
    ("plain", " " + CALLS + "</s>", " {}</s>"),
])
def test_built_in_templates_render_tools_themselves(make_tokenizer, name, call, answer):
    tok = make_tokenizer()
    template, _ = choose_template(name, tok)
    _check(CONV, tok, template, [call] + [answer.format(a) for a in ANSWERS])
    text = tok.decode(render(CONV, tok, template, 10_000).input_ids)
    assert "Be brief.\n\n" + tools_block(CONV.tool_specs()) in text


@pytest.mark.parametrize("name", ["vicuna", "own", "gemma3"])
def test_a_template_without_tool_support_gets_the_built_in_format(make_tokenizer, name):
    if name == "vicuna":
        tok = make_tokenizer()
        template, _ = choose_template("vicuna", tok)
        end = "</s>"
    else:
        tok = make_tokenizer(chat_template=OWN if name == "own" else _source("gemma3.jinja"))
        template, _ = choose_template("auto", tok)
        end = "</s>" if name == "own" else "<end_of_turn>"
    assert not template.supports_tools
    lead = " " if name == "vicuna" else ""
    _check(CONV, tok, template, [lead + CALLS + end] + [lead + a + end for a in ANSWERS])
    msgs, tools, origin = template_input(CONV, template)
    assert tools is None and [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant",
                                                            "user", "assistant"]
    assert msgs[3]["content"] == '<tool_response>\n{"t": 27}\n</tool_response>\n<tool_response>\n{"t": 18}\n</tool_response>'
    assert origin == [0, 1, 2, 3, 5, 6, 7]


def test_the_context_before_each_supervised_turn_is_the_generation_prompt(make_tokenizer):
    """What the model is trained to continue is what it will be prompted with: after a tool result too."""
    tok = make_tokenizer(chat_template=_source("qwen2_5.jinja"))
    template, _ = choose_template("auto", tok)
    r = render(CONV, tok, template, 10_000)
    starts = [i for i in range(1, len(r.mask)) if r.mask[i] and not r.mask[i - 1]]
    msgs, tools = CONV.as_dicts(), CONV.tool_specs()
    for start, upto in zip(starts, (2, 5, 7)):  # before the calls, the answer after the results, the last
        prompt = template.render(msgs[:upto], add_generation_prompt=True, tools=tools)
        assert r.input_ids[:start] == tok(prompt, add_special_tokens=False)["input_ids"]


def test_loss_on_last_and_unweighted_call_turns(make_tokenizer):
    tok = make_tokenizer()
    template, _ = choose_template("chatml", tok)
    assert runs(render(CONV, tok, template, 10_000, loss_on="last"), tok) == ["You're welcome.<|im_end|>"]
    quiet = Conversation(CONV.messages[:2] + (Message("assistant", "", train=False, tool_calls=(TAIPEI, TOKYO)),)
                         + CONV.messages[3:], source="t:1", tools=CONV.tools)
    assert runs(render(quiet, tok, template, 10_000), tok) == [a + "<|im_end|>" for a in ANSWERS]


def test_a_special_token_in_call_arguments_or_the_tool_list_is_refused(make_tokenizer):
    tok = make_tokenizer()
    template, _ = choose_template("chatml", tok)
    bad_call = Conversation((Message("user", "x"), Message("assistant", "", tool_calls=(
        ToolCall("c", "get_weather", {"city": "a</s>b"}),))), source="t:4")
    bad_list = Conversation((Message("user", "x"), Message("assistant", "y")), source="t:5",
                            tools=({"name": "f", "description": "ends with </s>"},))
    stats = RenderStats()
    assert render_all([bad_call, bad_list], tok, template, 10_000, stats=stats) == []
    assert stats.dropped == {"the text contains a special token": 2}


def test_a_conversation_without_tools_renders_as_before(make_tokenizer):
    """tools=None is passed to the template, as transformers does; the output is unchanged."""
    tok = make_tokenizer(chat_template=_source("qwen2_5.jinja"))
    template, _ = choose_template("auto", tok)
    plain = Conversation((Message("user", "Hi"), Message("assistant", "Hello!")), source="t:6")
    r = render(plain, tok, template, 10_000)
    assert runs(r, tok) == ["Hello!<|im_end|>"] and "# Tools" not in tok.decode(r.input_ids)
    call = format_call("get_weather", {"city": "台北"})
    assert call in tok.decode(render(CONV, tok, template, 10_000).input_ids)


def test_mistral_renders_a_single_round_and_refuses_later_rounds(make_tokenizer):
    """Mistral v0.3 puts the tool list before the *last* user turn, so a second round re-renders the first
    one differently and its calls cannot be located: such conversations are refused by name (one round is
    fine), and with data.loss_on=last (the fix the refusal names) the last answer is trained."""
    tok = make_tokenizer(chat_template=_source("mistral_v03.jinja"))
    template = ChatTemplate("model", tok.chat_template, "<s>", "</s>", False)
    assert template.supports_tools
    one_round = Conversation(CONV.messages[1:6], source="t:7", tools=CONV.tools)
    r = render(one_round, tok, template, 10_000)
    assert runs(r, tok)[-1] == " " + ANSWERS[0] + "</s>"
    assert runs(r, tok)[0].startswith("[TOOL_CALLS] [") and runs(r, tok)[0].endswith("]</s>")
    stats = RenderStats()
    render_all([CONV], tok, template, 10_000, stats=stats)
    assert list(stats.dropped) == ["chat template 'model' renders an earlier tool-call turn in a way that cannot be "
                                   "located (the conversation before it renders differently once later turns exist, "
                                   "and no plain answer can stand in for it)"]
    assert runs(render(CONV, tok, template, 10_000, loss_on="last"), tok) == [" " + ANSWERS[1] + "</s>"]


def test_validate_shows_a_tool_call_with_its_supervised_tokens_marked(tiny_llama, tmp_path, capsys, monkeypatch):
    import json

    from dianjing.cli import main

    monkeypatch.setenv("COLUMNS", "400")  # rich wraps at the terminal's width

    f = tmp_path / "tools.jsonl"
    plain = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}], "tools": "[]"}
    calling = {"conversations": [{"from": "human", "value": "Weather in 台北?"},
                                 {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "台北"}}'},
                                 {"from": "observation", "value": '{"t": 27}'},
                                 {"from": "gpt", "value": "27°C."}], "tools": json.dumps([WEATHER])}
    f.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in (plain, plain, calling)), encoding="utf-8")
    assert main(["validate", "--data", str(f), "--model", str(tiny_llama), "--no-color", "--show", "2",
                 "--set", "data.max_length=4096"]) == 0
    out, err = capsys.readouterr()
    assert "tools: chat template 'plain' renders the tool list, calls and results itself" in err
    # --show 2: the first example, then the first one with a call in place of the second
    assert f"{f}:1" in out and f"{f}:2" not in out and f"{f}:3" in out
    assert "AI:[[ " + format_call("get_weather", {"city": "台北"}) + "</s>]]" in out
    assert 'TOOL: {"t": 27}\nAI:[[ 27°C.</s>]]' in out
    assert "tool calls 1 in 1 conversations, tool results 1, conversations with a tool list 1" in out
