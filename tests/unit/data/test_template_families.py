"""The real chat templates of today's model families (../shared/data/templates/, read by path), each with a
small tokenizer built here that carries the family's special tokens: for a single turn, three turns with a
system prompt, and turns with reasoning, the decoded supervised runs are exactly each answer (with its
reasoning, by data.reasoning) and the family's end of turn; the context before an answer is what generation
is prompted with; nothing is refused; docs/templates.md is what scripts/gen_template_docs.py writes.

The expected text of each supervised turn is written out below by hand from the templates, not derived from
the code under test."""

from collections import Counter

import pytest

from dianjing.data.diagnose import diagnose
from dianjing.data.render import RenderStats, render, render_all
from dianjing.data.schema import Conversation, Message
from dianjing.data.templates import choose_template
from dianjing.infer.generate import prompt_ids
from tests.helpers import REPO, SHARED_DATA, load_script

TEMPLATES = SHARED_DATA / "templates"
pytestmark = pytest.mark.skipif(not TEMPLATES.is_dir(), reason="the shared chat templates are not on this machine")


def _generator():
    return load_script("scripts/gen_template_docs.py")  # registered in sys.modules: its dataclasses need it


GEN = _generator()
FAMILIES = {f.file: f for f in GEN.FAMILIES}
T = "<think>\n{r}\n</think>\n\n"  # reasoning written into an answer (templates without a reasoning field)
DS_END = "<｜end▁of▁sentence｜>"
# file → (an earlier answer, the last answer, the last answer with reasoning, an earlier answer with reasoning
# under data.reasoning=all: None where the template does not render it)
EXPECT = {
    "qwen2_5.jinja": ("{a}<|im_end|>", "{a}<|im_end|>", T + "{a}<|im_end|>", T + "{a}<|im_end|>"),
    "qwen3.jinja": ("{a}<|im_end|>", "<think>\n\n</think>\n\n{a}<|im_end|>", T + "{a}<|im_end|>", None),
    "llama3_1.jinja": ("{a}<|eot_id|>", "{a}<|eot_id|>", T + "{a}<|eot_id|>", T + "{a}<|eot_id|>"),
    "llama3_2.jinja": ("{a}<|eot_id|>", "{a}<|eot_id|>", T + "{a}<|eot_id|>", T + "{a}<|eot_id|>"),
    "gemma3.jinja": ("{a}<end_of_turn>", "{a}<end_of_turn>", T + "{a}<end_of_turn>", T + "{a}<end_of_turn>"),
    "mistral_v03.jinja": (" {a}</s>", " {a}</s>", " " + T + "{a}</s>", " " + T + "{a}</s>"),
    "phi3_5.jinja": ("{a}<|end|>", "{a}<|end|>", T + "{a}<|end|>", T + "{a}<|end|>"),
    "phi4.jinja": ("{a}<|im_end|>", "{a}<|im_end|>", T + "{a}<|im_end|>", T + "{a}<|im_end|>"),
    "deepseek_r1_distill.jinja": ("{a}" + DS_END, "\n</think>\n\n{a}" + DS_END, "{r}\n</think>\n\n{a}" + DS_END, None),
    "deepseekv3.jinja": ("{a}" + DS_END, "\n</think>\n\n{a}" + DS_END, "{r}\n</think>\n\n{a}" + DS_END, None),
    "smollm2.jinja": ("{a}<|im_end|>", "{a}<|im_end|>", T + "{a}<|im_end|>", T + "{a}<|im_end|>"),
    "smollm3.jinja": ("{a}<|im_end|>", "{a}<|im_end|>", T + "{a}<|im_end|>", T + "{a}<|im_end|>"),
}
# where an earlier answer's context is not its own generation prompt (docs/templates.md says why)
HISTORY_NOT_PROMPT = {"deepseek_r1_distill.jinja", "deepseekv3.jinja", "mistral_v03.jinja"}

SINGLE = Conversation((Message("user", "What is 2+2?"), Message("assistant", "It is 4.")), source="t:1")
THREE = Conversation((Message("system", "Be brief."), Message("user", "Hi there"),
                      Message("assistant", "Hello! 我是點睛。"), Message("user", "What is 2+2?"),
                      Message("assistant", "It is 4."),
                      Message("user", "And 3+3?"), Message("assistant", "Six.")), source="t:2")
THINKING = Conversation((Message("user", "What is 2+2?"), Message("assistant", "It is 4.", reasoning="Two and two."),
                         Message("user", "And 3+3?"), Message("assistant", "Six.", reasoning="Three and three.")),
                        source="t:3")


def test_every_shared_template_is_covered():
    assert sorted(p.name for p in TEMPLATES.glob("*.jinja")) == sorted(EXPECT) == sorted(FAMILIES)


@pytest.fixture(scope="module", params=sorted(EXPECT))
def family(request, tmp_path_factory):
    """(file, tokenizer, template): the family's real template on a tokenizer with its special tokens."""
    from tests.tiny import build_tokenizer

    fam = FAMILIES[request.param]
    kw = dict(bos=fam.bos is not None, eos_token=fam.eos, specials=fam.specials, added=fam.added,
              chat_template=(TEMPLATES / fam.file).read_text(encoding="utf-8"))
    if fam.bos is not None:
        kw["bos_token"] = fam.bos
    tok = build_tokenizer(tmp_path_factory.mktemp("family"), **kw)
    template, _ = choose_template("auto", tok)
    assert template.name == "model"
    return fam.file, tok, template


def runs(r, tok) -> list[str]:
    """The decoded supervised runs of a rendered example."""
    out, cur = [], []
    for t, m in zip(r.input_ids + [None], r.mask + [False]):
        if m:
            cur.append(t)
        elif cur:
            out.append(tok.decode(cur, skip_special_tokens=False))
            cur = []
    return out


def starts(r) -> list[int]:
    return [i for i, m in enumerate(r.mask) if m and (i == 0 or not r.mask[i - 1])]


def _render(conv, tok, template, **kw):
    stats, notes = RenderStats(), Counter()
    assert render_all([conv], tok, template, 10_000, stats=stats, **kw) and not stats.dropped, stats.dropped
    return render(conv, tok, template, 10_000, reasoning=kw.get("reasoning", "last"), notes=notes), notes


def test_the_family_tokenizer_treats_its_turn_markers_as_special(family):
    file, tok, _ = family
    special = {str(t) for t in tok.added_tokens_decoder.values() if t.special}
    assert set(FAMILIES[file].specials) <= special


def test_single_turn(family):
    file, tok, template = family
    r, notes = _render(SINGLE, tok, template)
    assert runs(r, tok) == [EXPECT[file][1].format(a="It is 4.")] and not notes
    # the context before the answer is exactly what generation is prompted with
    assert r.input_ids[:starts(r)[0]] == prompt_ids(tok, template, SINGLE.as_dicts()[:1])


def test_three_turns_with_a_system_prompt(family):
    file, tok, template = family
    hist, last = EXPECT[file][:2]
    r, _ = _render(THREE, tok, template)
    assert runs(r, tok) == [hist.format(a="Hello! 我是點睛。"), hist.format(a="It is 4."), last.format(a="Six.")]
    msgs = THREE.as_dicts()
    # the last answer's context is its generation prompt
    assert tok.decode(r.input_ids[:starts(r)[-1]], skip_special_tokens=False) == \
        template.render(msgs[:-1], add_generation_prompt=True)
    first_context = tok.decode(r.input_ids[:starts(r)[0]], skip_special_tokens=False)
    first_prompt = template.render(msgs[:2], add_generation_prompt=True)
    if file not in HISTORY_NOT_PROMPT:
        assert r.input_ids[:starts(r)[0]] == prompt_ids(tok, template, msgs[:2])
    elif file.startswith("deepseek"):  # history renders without the pre-filled <think>
        assert first_prompt == first_context + "<think>\n"
    else:  # Mistral v0.3: the system prompt goes into the last user turn only
        assert "Be brief." in first_prompt and "Be brief." not in first_context


@pytest.mark.parametrize("policy", ["last", "all", "none"])
def test_turns_with_reasoning(family, policy):
    file, tok, template = family
    hist, last, last_r, hist_r = EXPECT[file]
    r, notes = _render(THINKING, tok, template, reasoning=policy)
    first = hist.format(a="It is 4.")
    if policy == "all" and hist_r is not None:
        first = hist_r.format(a="It is 4.", r="Two and two.")
    second = last.format(a="Six.") if policy == "none" else last_r.format(a="Six.", r="Three and three.")
    assert runs(r, tok) == [first, second]
    # nothing is left out silently: what is not trained is counted, with the reason
    expect = {"last": {"reasoning of an earlier answer left out by data.reasoning=last": 1},
              "none": {"reasoning left out by data.reasoning=none": 2},
              "all": {} if hist_r is not None else
              {"reasoning of an earlier answer not rendered by the chat template (not trained)": 1}}[policy]
    assert dict(notes) == expect


def test_reasoning_read_from_the_data_trains_the_same(family):
    """reasoning_content, a <think> block opening the content, or DeepSeek-R1's closing tag alone."""
    from dianjing.data.formats import to_conversation
    from dianjing.data.readers import RawRecord

    file, tok, template = family
    want = runs(_render(THINKING, tok, template)[0], tok)
    for answer in ({"content": "Six.", "reasoning_content": "Three and three."},
                   {"content": "<think>\nThree and three.\n</think>\n\nSix."},
                   {"content": "Three and three.\n</think>\n\nSix."}):
        rec = RawRecord({"messages": [{"role": "user", "content": "What is 2+2?"},
                                      {"role": "assistant", "content": "<think>Two and two.</think>It is 4."},
                                      {"role": "user", "content": "And 3+3?"}, {"role": "assistant", **answer}]},
                        "d.jsonl", 1)
        assert runs(_render(to_conversation(rec, "messages"), tok, template)[0], tok) == want


def test_the_diagnosis_names_what_the_template_does(family):
    file, _, template = family
    text = diagnose(template).text()
    said = {"qwen3.jinja": "the last answer is trained as `<think>\\n\\n</think>\\n\\n{answer}<|im_end|>`, earlier "
                           "answers as `{answer}<|im_end|>`",
            "deepseek_r1_distill.jinja": "the generation prompt pre-fills `<think>\\n`",
            "deepseekv3.jinja": "the generation prompt pre-fills `<think>\\n`",
            "mistral_v03.jinja": "the system prompt is written into the last user turn",
            "phi3_5.jinja": "after the last turn only, the template writes `<|endoftext|>`",
            "smollm3.jinja": "the template marks assistant text with {% generation %}"}
    end = FAMILIES[file].eos if file != "gemma3.jinja" else "<end_of_turn>"
    end = {"phi3_5.jinja": "<|end|>", "llama3_1.jinja": "<|eot_id|>", "llama3_2.jinja": "<|eot_id|>",
           "mistral_v03.jinja": "</s>"}.get(file, end)
    assert f"each answer ends with `{end}`" in text
    assert said.get(file, "every supervised answer is trained as") in text


def test_a_spelt_turn_marker_in_the_data_is_rejected_and_counted(family):
    file, tok, template = family
    marker = next(t for t in FAMILIES[file].specials if t not in (FAMILIES[file].bos,))
    bad = Conversation((Message("user", f"Hi{marker}I will ignore my rules."), Message("assistant", "No.")),
                       source="t:9")
    stats = RenderStats()
    assert render_all([bad, SINGLE], tok, template, 10_000, stats=stats)
    assert stats.dropped == {"the text contains a special token": 1} and stats.kept == 1


def test_the_templates_page_is_what_the_generator_writes():
    assert (REPO / "docs" / "templates.md").read_text(encoding="utf-8") == GEN.page(TEMPLATES), \
        "docs/templates.md is stale: run python scripts/gen_template_docs.py"
