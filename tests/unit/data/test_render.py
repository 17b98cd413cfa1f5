"""The loss mask is exactly the assistant answers plus their end tokens, for every template."""

import pytest

from dianjing.data.render import render, render_all, segments
from dianjing.data.schema import Conversation, Message
from dianjing.data.templates import BUILTIN_TEMPLATES, choose_template
from dianjing.infer.generate import prompt_ids

OWN = ("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{{ eos_token }}\n{% endfor %}"
       "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")

CONV = Conversation((Message("system", "Be brief."), Message("user", "Hi there"),
                     Message("assistant", "Hello! 我是點睛。"), Message("user", "What is 2+2?"),
                     Message("assistant", "It is 4.")), source="t:1")

# what each template must put under the loss for an answer: its text and the end of turn
ANSWER = {"plain": " {}</s>", "chatml": "{}<|im_end|>", "vicuna": " {}</s>", "alpaca": "{}</s>",
          "model": "{}</s>"}


@pytest.fixture(scope="module")
def tok(make_tokenizer):
    """The tiny tokenizer with its own chat template: the "model" template under test."""
    return make_tokenizer(chat_template=OWN)


def runs(r, tok, supervised=True):
    out, cur = [], []
    for t, m in zip(r.input_ids, r.mask):
        if m == supervised:
            cur.append(t)
        elif cur:
            out.append(tok.decode(cur)); cur = []
    if cur:
        out.append(tok.decode(cur))
    return out


@pytest.mark.parametrize("name", [*BUILTIN_TEMPLATES, "model"])
def test_mask_is_exactly_the_answers_and_end_tokens(tok, name):
    template, _ = choose_template(name, tok)
    r = render(CONV, tok, template, max_length=1000)
    answers = [m.content for m in CONV.messages if m.role == "assistant"]
    assert runs(r, tok) == [ANSWER[name].format(a) for a in answers]
    # every other token is context, and the whole is the template's rendering
    assert tok.decode(r.input_ids) == template.render(CONV.as_dicts())
    # the end-of-sequence token of each answer is supervised
    if ANSWER[name].endswith("</s>"):
        eos_pos = [i for i, t in enumerate(r.input_ids) if t == tok.eos_token_id and r.mask[i]]
        assert len(eos_pos) == 2


@pytest.mark.parametrize("name", [*BUILTIN_TEMPLATES, "model"])
def test_training_context_equals_generation_prompt(tok, name):
    """The ids before an answer are exactly what generation is prompted with."""
    template, _ = choose_template(name, tok)
    r = render(CONV, tok, template, max_length=1000)
    first = r.mask.index(True)
    assert r.input_ids[:first] == prompt_ids(tok, template, CONV.as_dicts()[:2])


def test_loss_on_last_and_all(tok):
    template, _ = choose_template("chatml", tok)
    last = render(CONV, tok, template, 1000, loss_on="last")
    assert runs(last, tok) == ["It is 4.<|im_end|>"]
    everything = render(CONV, tok, template, 1000, loss_on="all")
    assert all(everything.mask[1:]) and not everything.mask[0]


def test_unweighted_turn_is_context(tok):
    template, _ = choose_template("plain", tok)
    conv = Conversation((Message("user", "a"), Message("assistant", "b", train=False),
                         Message("user", "c"), Message("assistant", "d")))
    assert runs(render(conv, tok, template, 1000), tok) == [" d</s>"]


def test_truncation_and_dropping_are_counted(tok):
    from dianjing.data.render import RenderStats

    template, _ = choose_template("plain", tok)
    short = Conversation((Message("user", "Hi"), Message("assistant", "Hello there friend")))
    long_prompt = Conversation((Message("user", "word " * 200), Message("assistant", "ok")))
    n_prompt = len(render(short, tok, template, 1000).input_ids) - 3
    stats = RenderStats()
    kept = render_all([short, long_prompt], tok, template, max_length=n_prompt + 3 - 1, stats=stats)
    assert len(kept) == 1 and kept[0].truncated and stats.truncated == 1
    assert sum(kept[0].mask) > 0
    assert stats.dropped == {"no supervised token left after truncation to max_length": 1}


def test_template_choice_without_chat_template(make_tokenizer):
    plain_tok = make_tokenizer(pad=False)
    template, why = choose_template("auto", plain_tok)
    assert template.name == "plain" and "no chat template" in why


def test_a_last_turn_rendered_differently_is_located_by_what_the_template_renders(tok):
    """A template that renders the last message differently from history (as Qwen3 does) is no longer refused:
    each answer is located where the template renders it."""
    from dianjing.data.templates import ChatTemplate

    odd = ChatTemplate("model", "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m.content }}{{ eos_token }}"
                                "{% endfor %}", "<s>", "</s>", False)
    assert [t for t, sup in segments(CONV, odd) if sup] == ["Hello! 我是點睛。</s>", "LAST It is 4.</s>"]


def test_a_template_whose_answers_cannot_be_located_is_refused_with_the_cause(tok):
    from dianjing.data.templates import ChatTemplate
    from dianjing.errors import DataError

    twice = ChatTemplate("model", "{% for m in messages %}{{ m.content }}{{ m.content }}{{ eos_token }}{% endfor %}",
                         "<s>", "</s>", False)
    with pytest.raises(DataError, match="renders no usable two-turn conversation: it does not render every message of a two-turn conversation exactly once"):
        segments(CONV, twice)
