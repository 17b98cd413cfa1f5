"""Reasoning in the data: read apart from the answer in every format, trained by data.reasoning, and never
dropped silently (what is left out or not rendered is counted). Built-in templates and small hand-written
ones; the real families are in test_template_families.py."""

import pytest

from dianjing.data.formats import split_reasoning, to_conversation
from dianjing.data.readers import RawRecord
from dianjing.data.render import RenderStats, render_all, segments
from dianjing.data.schema import Conversation, Message
from dianjing.data.templates import BUILTIN_TEMPLATES, ChatTemplate
from dianjing.errors import DataError


def _conv(record: dict, fmt: str) -> Conversation:
    return to_conversation(RawRecord(record, "d.jsonl", 3), fmt)


@pytest.mark.parametrize("text, want", [
    ("<think>\nStep one.\n</think>\n\nThe answer.", ("Step one.", "The answer.")),
    ("  <think>Step one.</think>The answer.", ("Step one.", "The answer.")),
    ("Step one.\n</think>\n\nThe answer.", ("Step one.", "The answer.")),  # DeepSeek-R1: <think> was pre-filled
    ("<think>\n\n</think>\n\nThe answer.", ("", "The answer.")),  # an empty block is no reasoning
    ("The answer.", ("", "The answer.")),
    ("Say <think> then </think>.", ("", "Say <think> then </think>.")),  # a <think> that does not open the text
])
def test_split_reasoning(text, want):
    assert split_reasoning(text) == want


def test_every_format_reads_reasoning_apart_from_the_answer():
    think = "<think>Why.</think>Because."
    convs = [
        _conv({"instruction": "Q", "output": think}, "alpaca"),
        _conv({"instruction": "Q", "output": think, "history": [["q0", think]]}, "alpaca"),
        _conv({"prompt": "Q", "completion": think}, "prompt_completion"),
        _conv({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": think}]}, "sharegpt"),
        _conv({"conversations": [{"from": "human", "value": "Q"},
                                 {"from": "gpt", "value": "Because.", "reasoning_content": "Why."}]}, "sharegpt"),
        _conv({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": think}]}, "messages"),
        _conv({"messages": [{"role": "user", "content": "Q"},
                            {"role": "assistant", "content": "Because.", "reasoning_content": "Why."}]}, "messages"),
        _conv({"messages": [{"role": "user", "content": "Q"},
                            {"role": "assistant", "content": "Because.", "reasoning": "Why."}]}, "messages"),
    ]
    for conv in convs:
        last = conv.messages[-1]
        assert (last.content, last.reasoning) == ("Because.", "Why."), conv
    assert convs[1].messages[1].reasoning == "Why."  # alpaca history answers too
    # a user's text is never split
    assert _conv({"instruction": think, "output": "ok"}, "alpaca").messages[0].content == think


def test_reasoning_given_twice_is_a_bad_record_naming_the_field():
    rec = {"messages": [{"role": "user", "content": "Q"},
                        {"role": "assistant", "content": "<think>A</think>B", "reasoning_content": "C"}]}
    with pytest.raises(DataError, match=r"d\.jsonl:3: field 'messages\[1\]\.reasoning_content': reasoning given twice"):
        _conv(rec, "messages")
    with pytest.raises(DataError, match=r"field 'messages\[1\]\.reasoning_content': expected text"):
        _conv({"messages": [{"role": "user", "content": "Q"},
                            {"role": "assistant", "content": "B", "reasoning_content": 3}]}, "messages")


def test_an_answer_of_reasoning_only_is_not_an_empty_turn():
    conv = _conv({"messages": [{"role": "user", "content": "Q"},
                               {"role": "assistant", "content": "<think>Only this.</think>"}]}, "messages")
    assert conv.messages[-1].reasoning == "Only this." and conv.messages[-1].content == ""


CONV = Conversation((Message("user", "Q1"), Message("assistant", "A1", reasoning="R1"),
                     Message("user", "Q2"), Message("assistant", "A2", reasoning="R2")), source="t:1")


def _template(name: str) -> ChatTemplate:
    return ChatTemplate(name, BUILTIN_TEMPLATES[name], "<s>", "</s>", False)


@pytest.mark.parametrize("policy, want", [
    ("last", ["A1<|im_end|>", "<think>\nR2\n</think>\n\nA2<|im_end|>"]),
    ("all", ["<think>\nR1\n</think>\n\nA1<|im_end|>", "<think>\nR2\n</think>\n\nA2<|im_end|>"]),
    ("none", ["A1<|im_end|>", "A2<|im_end|>"]),
])
def test_the_policy_says_whose_reasoning_is_trained(policy, want):
    assert [t for t, sup in segments(CONV, _template("chatml"), reasoning=policy) if sup] == want


def test_what_a_policy_leaves_out_is_counted(tiny_tokenizer):
    stats = RenderStats()
    render_all([CONV, CONV], tiny_tokenizer, _template("plain"), 1000, stats=stats, reasoning="none")
    assert stats.not_trained == {"reasoning left out by data.reasoning=none": 4}
    assert stats.summary()["not_trained"] == {"reasoning left out by data.reasoning=none": 4}


def test_reasoning_a_template_does_not_render_is_counted_not_dropped_silently(tiny_tokenizer):
    """A serving variant of the DeepSeek-R1 template: strips reasoning from every answer, pre-fills nothing."""
    strips = ChatTemplate("model", "{% for m in messages %}{% if m.role == 'user' %}<u>{{ m.content }}{% else %}"
                                   "<a>{{ m.content.split('</think>')[-1] }}{{ eos_token }}{% endif %}{% endfor %}"
                                   "{% if add_generation_prompt %}<a>{% endif %}", "<s>", "</s>", False)
    assert strips.reasoning_style == "dropped"
    stats = RenderStats()
    kept = render_all([CONV], tiny_tokenizer, strips, 1000, stats=stats, reasoning="all")
    assert len(kept) == 1 and not stats.dropped
    assert stats.not_trained == {"reasoning of an earlier answer not rendered by the chat template (not trained)": 1,
                                 "reasoning of the last answer not rendered by the chat template (not trained)": 1}
    assert [t for t, sup in segments(CONV, strips, reasoning="all") if sup] == ["A1</s>", "A2</s>"]


def test_a_special_token_in_the_reasoning_is_rejected(tiny_tokenizer):
    bad = Conversation((Message("user", "Q"), Message("assistant", "A", reasoning="R</s>")), source="t:2")
    stats = RenderStats()
    render_all([bad], tiny_tokenizer, _template("plain"), 1000, stats=stats)
    assert stats.dropped == {"the text contains a special token": 1}
