"""Where each answer is in a chat template's rendering, whatever the template does around it.

A conversation is trained as the sequence its last answer is generated from: the template's
generation prompt for the last assistant turn, `render(messages before it, add_generation_prompt=True)`,
then the text the model writes for that turn. Answers are found by what the template actually
renders for them, not by assuming that each prefix of the conversation renders as a prefix of the whole:

- a message is found by rendering the conversation again with that message's text replaced by a
  sentinel (characters the conversation does not use): the text around the sentinel is the
  template's own, and the real rendering holds the message's text in its place;
- an earlier answer starts where generation would start: at the end of the generation prompt for that
  turn when the history renders as that prompt (most templates), else after the text the template
  puts between that prompt and an answer (`Shape.answer_prefix`, plain's " ");
- the last answer starts where its generation prompt ends, even where the full rendering differs
  there: Qwen3 writes a think block in the last turn only; DeepSeek's prompt pre-fills `<think>\\n`
  (the model then writes its reasoning, `</think>` and the answer); Mistral v0.3 moves the system
  prompt into the last user turn (the prompt keeps it; the answer is what follows the prompt);
- every answer ends with the template's end of turn (`Shape.end`), which is trained too; what a template
  writes after the last turn only (Phi-3.5's trailing `<|endoftext|>`) is not part of the sequence;
- with `{% generation %}` marks in the template, nothing outside the marks is trained.

A conversation that cannot be located this way raises a DataError that names the cause (counted, one
count per cause, by render.render_all).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass

import jinja2

from dianjing.data.schema import Conversation
from dianjing.data.templates import ChatTemplate
from dianjing.data.tools import lower
from dianjing.errors import DataError

LAST_ONLY_FIX = ("data.loss_on=last trains the last answer of each conversation, whose context is exactly the "
                 "template's generation prompt")
PRIVATE = [chr(c) for c in range(0xE000, 0xE100)]  # private-use characters: sentinels and generation marks


def think_block(reasoning: str) -> str:
    """Reasoning as Qwen3 and DeepSeek-R1 write it before an answer."""
    return f"<think>\n{reasoning}\n</think>\n\n"


# --- what goes into the template -------------------------------------------------------------------

def template_input(conv: Conversation, template: ChatTemplate) -> tuple[list[dict], list[dict] | None,
                                                                        list[int | None]]:
    """What the template is rendered with: the messages, the tools, and for each message the index in
    conv.messages it stands for (the built-in tool format merges results and adds a tool-list block)."""
    msgs = conv.as_dicts()
    if not conv.has_tools or template.supports_tools:
        return msgs, conv.tool_specs(), list(range(len(msgs)))
    lowered, origin = lower(msgs, conv.tool_specs())
    return lowered, None, origin


def with_reasoning(conv: Conversation, template: ChatTemplate, msgs: list[dict], origin: list[int | None],
                   policy: str, notes: Counter) -> dict[int, str]:
    """Give the kept reasoning (data.reasoning: all | last | none) to the template the way it takes it
    (ChatTemplate.reasoning_style) and count what the policy leaves out; returns {template message index:
    reasoning} for the turns that keep theirs."""
    last = max(k for k, m in enumerate(conv.messages) if m.role == "assistant")
    kept: dict[int, str] = {}
    for j, o in enumerate(origin):
        m = conv.messages[o] if o is not None else None
        if m is None or m.role != "assistant" or not m.reasoning:
            continue
        if policy == "none":
            notes["reasoning left out by data.reasoning=none"] += 1
            continue
        if policy == "last" and o != last:
            notes["reasoning of an earlier answer left out by data.reasoning=last"] += 1
            continue
        kept[j] = m.reasoning
        if template.reasoning_style == "field":
            msgs[j] = {**msgs[j], "reasoning_content": m.reasoning}
        elif template.reasoning_style == "inline":
            msgs[j] = {**msgs[j], "content": think_block(m.reasoning) + msgs[j]["content"]}
    return kept


def free_chars(conv: Conversation, n: int = 4) -> list[str]:
    """n private-use characters that no text of the conversation contains (sentinels and marks)."""
    used = set("".join(m.content + m.reasoning + "".join(json.dumps(c.arguments, ensure_ascii=False)
                                                         for c in m.tool_calls) for m in conv.messages))
    used |= set(json.dumps(conv.tools, ensure_ascii=False))
    return [c for c in PRIVATE if c not in used][:n]


# --- what the template does around an answer, found once -------------------------------------------

@dataclass(frozen=True)
class Shape:
    """What a template writes around an answer, found on a synthetic two-turn conversation of sentinels."""

    end: str  # the end of turn after every answer ("<|im_end|>"); "" when the template writes none
    prompt_tail: str  # what the generation prompt adds after a user message ("<|im_end|>\n<|im_start|>assistant\n")
    history_head: str  # what comes between a user message and an earlier answer
    answer_prefix: str  # what history_head adds after prompt_tail (plain's " "): the answer's own first text
    trailing: str  # what follows the end of the last turn only (Phi-3.5's "\n<|endoftext|>")


_SHAPES: dict[tuple, Shape] = {}


def shape(template: ChatTemplate) -> Shape:
    """The template's Shape (computed once per template); a template that cannot render the synthetic
    conversation, or leaves a message out, raises jinja2.TemplateError."""
    key = (template.source, template.bos_token, template.eos_token, template.add_bos, repr(template.kwargs))
    if key not in _SHAPES:
        s = [f"\ue000{k}\ue001" for k in ("u1", "a1", "u2", "a2")]
        msgs = [{"role": r, "content": c} for r, c in zip(("user", "assistant") * 2, s)]
        full, prompt = template.render(msgs), template.render(msgs[:3], add_generation_prompt=True)
        missing = [c for c in s if full.count(c) != 1] + [c for c in s[:3] if prompt.count(c) != 1]
        if missing:
            raise jinja2.TemplateError("it does not render every message of a two-turn conversation exactly once")
        after = lambda text, c: text.index(c) + len(c)  # noqa: E731
        after_hist, after_last = full[after(full, s[1]):full.index(s[2])], full[after(full, s[3]):]
        end = _end_of_turn(after_hist, after_last)
        tail = prompt[after(prompt, s[2]):]
        head = full[after(full, s[0]):full.index(s[1])]
        _SHAPES[key] = Shape(end, tail, head, head[len(tail):] if head.startswith(tail) else "",
                             after_last[len(end):])
    return _SHAPES[key]


def _end_of_turn(after_hist: str, after_last: str) -> str:
    """The end of turn: what follows both an earlier answer and the last one. Where the last turn has more
    after it (Phi-3.5's `<|end|>\n<|endoftext|>` against `<|end|>\n<|user|>`), the shared text may stop
    inside the next marker (`<|`): it is cut back to whitespace or a closing `>`, `]`, `}`, `)`."""
    common = os.path.commonprefix([after_hist, after_last])
    if after_last[len(common):].strip() and common and not common[-1].isspace() and common[-1] not in ">]})":
        cut = max((i for i, ch in enumerate(common) if ch.isspace() or ch in ">]})"), default=-1)
        common = common[:cut + 1]
    return common.rstrip()


# --- locating, per conversation --------------------------------------------------------------------

@dataclass
class Located:
    """The sequence a conversation is trained as, and its supervised character spans."""

    text: str
    spans: list[tuple[int, int]]
    prompt_len: int  # len(the last answer's generation prompt): text[:prompt_len] is that prompt
    prefill: str = ""  # what the generation prompt writes of the last answer (DeepSeek's "<think>\n")
    moved: bool = False  # the conversation before the last answer renders differently in its prompt


class Locator:
    """Finds the answers of one conversation (template messages `msgs`) in the template's rendering."""

    def __init__(self, template: ChatTemplate, conv: Conversation, msgs: list[dict], tools: list[dict] | None):
        self.t, self.conv, self.msgs, self.tools = template, conv, msgs, tools
        c = free_chars(conv)
        self.s1, self.s2, self.marks = f"{c[0]}dj1{c[1]}", f"{c[0]}dj2{c[1]}", (c[2], c[3])
        self.prefill, self.moved = "", False  # how the last answer was placed (for data/diagnose.py)
        try:
            self.shape = shape(template)
        except jinja2.TemplateError as e:
            raise self.error(f"renders no usable two-turn conversation: {e}") from None

    def error(self, why: str, fix: str | None = None) -> DataError:
        return DataError(f"chat template '{self.t.name}' {why}", file=self.conv.source or None,
                         fix=fix or "change the record, or check data.template and data.template_kwargs")

    def render(self, msgs: list[dict], gen: bool = False, marks: tuple[str, str] | None = None) -> str:
        try:
            return self.t.render(msgs, add_generation_prompt=gen, tools=self.tools, marks=marks)
        except jinja2.TemplateError as e:  # the template's raise_exception, or a template that cannot render it
            raise self.error(f"cannot render this conversation: {e}",
                             fix="change the record, or use a built-in template: data.template=chatml (or plain)"
                             ) from None

    def region(self, text: str, msgs: list[dict], j: int, gen: bool) -> tuple[int, int] | None:
        """Where message j's own text (content, reasoning, calls) is in `text` = render(msgs, gen)."""
        m = msgs[j]
        base = {"role": "assistant"} if m["role"] == "assistant" else m
        probes = [{**base, "content": self.s1}]
        if m.get("reasoning_content"):
            probes.append({**base, "content": self.s1, "reasoning_content": self.s2})
        if m.get("tool_calls"):
            probes.append({**m, "content": self.s1})
        for probe in probes:
            try:
                alt = self.t.render(msgs[:j] + [probe] + msgs[j + 1:], add_generation_prompt=gen, tools=self.tools)
            except jinja2.TemplateError:
                continue
            present = [s for s in (self.s1, self.s2) if s in probe.values()]
            if any(alt.count(s) != 1 for s in present):
                continue
            i, k = min(alt.index(s) for s in present), max(alt.index(s) + len(s) for s in present)
            before, after = alt[:i], alt[k:]
            if len(before) + len(after) <= len(text) and text.startswith(before) and text.endswith(after):
                return len(before), len(text) - len(after)
        return None

    def end_at(self, text: str, b: int, what: str) -> int:
        """The end of the answer that stops at b: after the template's end of turn, which must follow."""
        if not text.startswith(self.shape.end, b):
            raise self.error(f"does not end {what} with its end of turn {self.shape.end!r}")
        return b + len(self.shape.end)

    def history(self, prompt: str, msgs: list[dict], j: int) -> tuple[int, int]:
        """The span of an earlier answer (message j) inside the last answer's generation prompt."""
        head = self.render(msgs[:j], gen=True)
        reg = self.region(prompt, msgs, j, gen=True)
        if reg is None:  # e.g. a tool call that no plain answer may stand in for: the prefix rendering
            upto = self.render(msgs[:j + 1])
            if prompt.startswith(head) and prompt.startswith(upto) and len(head) < len(upto):
                return len(head), len(head) + len(upto[len(head):].rstrip())
            what = "tool-call turn" if msgs[j].get("tool_calls") else "assistant turn"
            raise self.error(f"renders an earlier {what} in a way that cannot be located (the conversation before "
                             "it renders differently once later turns exist, and no plain answer can stand in for "
                             "it)", fix=LAST_ONLY_FIX)
        a, b = reg
        end = self.end_at(prompt, b, "an earlier answer")
        if prompt.startswith(head) and len(head) <= a:
            return len(head), end
        pre = self.shape.answer_prefix
        return (a - len(pre) if pre and prompt[:a].endswith(pre) else a), end

    def last(self, prompt: str, full: str, j: int, reasoning: str) -> tuple[str, int, int]:
        """The last answer (message j) as (text written before it, start, end in `full`): the model's
        completion of `prompt` is that text + full[start:end]."""
        reg = self.region(full, self.msgs, j, gen=False)
        if reg is None:
            raise self.error("renders the last answer in a way that cannot be located")
        a, b = reg
        end = self.end_at(full, b, "the last answer")
        if full.startswith(prompt) and len(prompt) <= b:
            return "", len(prompt), end
        if prompt.startswith(full[:a]):  # the generation prompt pre-fills the start of the answer
            return self.after_prefill(prompt[a:], full, a, end, reasoning)
        ends = [self.region(t, ms, j - 1, g) for t, ms, g in ((full, self.msgs, False), (prompt, self.msgs[:j], True))]
        if None in ends:
            raise self.error("renders the turn before the last answer in a way that cannot be located")
        head_full, head_prompt = full[ends[0][1]:a], prompt[ends[1][1]:]
        self.moved = True
        if head_full.startswith(head_prompt):  # the conversation before differs (Mistral's system prompt)
            return "", ends[0][1] + len(head_prompt), end
        if head_prompt.startswith(head_full):
            return self.after_prefill(head_prompt[len(head_full):], full, a, end, reasoning)
        raise self.error(f"ends its generation prompt with {head_prompt!r} where the rendered conversation has "
                         f"{head_full!r} before the last answer, so the answer cannot be placed after the prompt")

    def after_prefill(self, prefill: str, full: str, a: int, end: int, reasoning: str) -> tuple[str, int, int]:
        self.prefill = prefill
        if full.startswith(prefill, a):
            return "", a + len(prefill), end
        block = think_block(reasoning)
        if block.startswith(prefill):  # DeepSeek-R1: `<think>\n` pre-filled, the template strips reasoning
            return block[len(prefill):], a, end
        raise self.error(f"pre-fills {prefill!r} in its generation prompt, which the last answer does not begin "
                         "with", fix="check data.template_kwargs (Qwen3's enable_thinking=false pre-fills an empty "
                                     "think block: use it with data.reasoning=none)")


    def reasoning_rendered(self, msgs: list[dict], j: int, gen: bool, reasoning: str) -> bool:
        """Does the template render message j's reasoning (given as with_reasoning gave it)?"""
        m = msgs[j]
        if self.t.reasoning_style == "field":
            probe = {**m, "reasoning_content": self.s2}
        elif self.t.reasoning_style == "inline":
            probe = {**m, "content": m["content"].replace(think_block(reasoning), think_block(self.s2), 1)}
        else:
            return False
        try:
            return self.s2 in self.t.render(msgs[:j] + [probe] + msgs[j + 1:], add_generation_prompt=gen,
                                            tools=self.tools)
        except jinja2.TemplateError:
            return False

    def rendered(self, msgs: list[dict], gen: bool = False) -> tuple[str, list[tuple[int, int]] | None]:
        """render(msgs, gen), and the spans its {% generation %} marks hold (None: the template has none)."""
        if not self.t.has_generation_marks:
            return self.render(msgs, gen), None
        return strip_marks(self.render(msgs, gen, marks=self.marks), self.marks)


def strip_marks(text: str, marks: tuple[str, str]) -> tuple[str, list[tuple[int, int]]]:
    """The text without its generation marks, and the spans the marks held."""
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    n, start = 0, None
    for piece in re.split(f"([{re.escape(marks[0])}{re.escape(marks[1])}])", text):
        if piece == marks[0]:
            start = n
        elif piece == marks[1]:
            spans.append((n if start is None else start, n))
            start = None
        else:
            out.append(piece)
            n += len(piece)
    return "".join(out), spans


def _clip(spans: list[tuple[int, int]], allowed: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(max(s, a), min(e, b)) for s, e in spans for a, b in allowed if max(s, a) < min(e, b)]


def locate(conv: Conversation, template: ChatTemplate, loss_on: str = "assistant", reasoning: str = "last",
           notes: Counter | None = None) -> Located:
    """The sequence `conv` is trained as and its supervised spans (see the module's docstring); what is not
    trained although the data has it (reasoning left out, or not rendered) is counted in `notes`."""
    notes = notes if notes is not None else Counter()
    msgs, tools, origin = template_input(conv, template)
    kept = with_reasoning(conv, template, msgs, origin, reasoning, notes)
    loc = Locator(template, conv, msgs, tools)
    full, full_marks = loc.rendered(msgs)
    if loss_on == "all":
        return Located(full, [(0, len(full))], 0)
    answers = [j for j, o in enumerate(origin) if o is not None and conv.messages[o].role == "assistant"]
    last = answers[-1]
    prompt, prompt_marks = loc.rendered(msgs[:last], gen=True)
    wanted = [j for j in (answers[-1:] if loss_on == "last" else answers) if conv.messages[origin[j]].train]
    spans = [loc.history(prompt, msgs[:last], j) for j in wanted if j != last]
    text, allowed = prompt, list(prompt_marks or [])
    written = ""
    if last in wanted:
        written, start, end = loc.last(prompt, full, last, kept.get(last, ""))
        text = prompt + written + full[start:end]
        spans.append((len(prompt), len(text)))
        shift = len(prompt) + len(written) - start
        if full_marks is not None:  # the prompt's marks hold the earlier answers, the full rendering's the last
            allowed = _clip(allowed, [(0, len(prompt))])
            allowed += _clip([(a + shift, b + shift) for a, b in full_marks], [(len(prompt) + len(written), len(text))])
            if written and any(a <= start < b for a, b in full_marks):
                allowed.append((len(prompt), len(prompt) + len(written)))
        text += full[end:]  # what the template writes after the last turn: context
    for j, r in kept.items():
        if j == last and written and template.reasoning_style == "dropped":
            continue  # written after the pre-fill (DeepSeek-R1)
        if not loc.reasoning_rendered(msgs if j == last else msgs[:last], j, j != last, r):
            notes[f"reasoning of {'the last' if j == last else 'an earlier'} answer not rendered by the chat "
                  "template (not trained)"] += 1
    if prompt_marks is not None:
        clipped = _clip(spans, allowed)
        lost = sum(1 for s, e in spans if not any(max(s, a) < min(e, b) for a, b in allowed))
        if lost:
            notes["an answer outside the chat template's {% generation %} marks (not trained)"] += lost
        spans = clipped
    return Located(text, sorted(spans), len(prompt), loc.prefill, loc.moved)
