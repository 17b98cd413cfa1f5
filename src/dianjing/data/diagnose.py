"""What a chat template does around an answer, in plain words, decided once per run.

`diagnose(template, loss_on, reasoning)` renders a small synthetic conversation (a system prompt,
three turns, reasoning in every answer) through the code training uses (data/locate.py) and says what
each supervised turn looks like: the end of turn, the generation prompt and what it pre-fills, how the
last answer differs from earlier ones, where the system prompt goes, what the template writes after
the last turn, its {% generation %} marks and what happens to reasoning. A template that cannot be
trained with the run's settings is refused here, with the cause and a fix that fits the model.
`dianjing validate` prints the report, `dianjing train` logs it; scripts/gen_template_docs.py writes
it for the real templates of today's model families into docs/templates.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import jinja2

from dianjing.data.locate import LAST_ONLY_FIX, Located, free_chars, locate, shape, strip_marks
from dianjing.data.schema import Conversation, Message
from dianjing.data.templates import ChatTemplate
from dianjing.errors import ConfigError, DataError

SYSTEM = "You are brief."
QUESTIONS = ("First question?", "Second question?", "Third question?")
ANSWERS = ("First answer.", "Second answer.", "Third answer.")
THOUGHTS = ("First thought.", "Second thought.", "Third thought.")


def synthetic(turns: int = 3, system: bool = True, reasoning: bool = True) -> Conversation:
    """The conversation the report is made from."""
    msgs = [Message("system", SYSTEM)] if system else []
    for q, a, r in list(zip(QUESTIONS, ANSWERS, THOUGHTS))[:turns]:
        msgs += [Message("user", q), Message("assistant", a, reasoning=r if reasoning else "")]
    return Conversation(tuple(msgs), source="the synthetic conversation")


@dataclass
class Report:
    """The findings, one plain sentence each, and the synthetic conversation as it is trained."""

    name: str
    lines: list[str] = field(default_factory=list)
    example: Located | None = None

    def marked(self, open_: str = "[[", close: str = "]]") -> str:
        """The example with its supervised text between `open_` and `close`."""
        if self.example is None:
            return ""
        text, out, pos = self.example.text, [], 0
        for s, e in self.example.spans:
            out += [text[pos:s], open_, text[s:e], close]
            pos = e
        return "".join(out + [text[pos:]])

    def text(self) -> str:
        return "\n".join(f"  {line}" for line in [f"chat template '{self.name}':", *self.lines])


def _q(text: str) -> str:
    """Template text as a code span, with its newlines shown as \\n."""
    return "`" + repr(text)[1:-1] + "`"


def _form(text: str, answer: str, thought: str) -> str:
    """A supervised turn with its answer and reasoning written as {answer} and {reasoning}."""
    return _q(text.replace(thought, "{reasoning}").replace(answer, "{answer}"))


def _turn_forms(loc: Located, n: int) -> list[str]:
    texts = [loc.text[s:e] for s, e in loc.spans]
    return [_form(t, ANSWERS[k], THOUGHTS[k]) for k, t in zip(range(n - len(texts), n), texts)]


def diagnose(template: ChatTemplate, loss_on: str = "assistant", reasoning: str = "last",
             system_prompt: str | None = None) -> Report:
    """The template's behaviour in plain words; a ConfigError when it cannot be trained with these settings."""
    report = Report(template.name)
    try:
        sh = shape(template)
    except jinja2.TemplateError as e:
        raise ConfigError(f"chat template '{template.name}' cannot be trained: {e}",
                          fix="check data.template_kwargs (the template may need an option), or choose a template "
                              "with data.template") from None
    one = _try(synthetic(1, system=False, reasoning=False), template, "assistant", "none")
    if isinstance(one, DataError):
        raise ConfigError(f"a one-turn conversation cannot be trained: {one.detail}", fix=one.fix)
    multi = _try(synthetic(3, reasoning=False), template, loss_on, "none")
    if isinstance(multi, DataError):
        multi = _refuse_or_report(template, loss_on, system_prompt, multi, report)
    _ends(report, sh, one)
    if multi is not None:
        _turns(report, multi, loss_on)
    _reasoning(report, template, loss_on, reasoning)
    if template.has_generation_marks:
        _marks(report, template)
    report.example = _try(synthetic(3), template, loss_on, reasoning)
    if isinstance(report.example, DataError):
        report.example = multi
    return report


def _try(conv: Conversation, template: ChatTemplate, loss_on: str, reasoning: str,
         notes: Counter | None = None) -> Located | DataError:
    try:
        return locate(conv, template, loss_on, reasoning, notes)
    except DataError as e:
        return e


def _refuse_or_report(template, loss_on, system_prompt, err: DataError, report: Report) -> Located | None:
    """Three turns with a system prompt fail: without the system prompt, or with loss_on=last, do they not?"""
    name = template.name
    without = _try(synthetic(3, system=False, reasoning=False), template, loss_on, "none")
    if not isinstance(without, DataError):
        if system_prompt:
            raise ConfigError(f"data.system_prompt: chat template '{name}' cannot train a conversation with a "
                              f"system prompt: {err.detail}", fix="remove data.system_prompt")
        report.lines.append(f"conversations with a system prompt are dropped (counted): {err.detail}")
        return without
    last = _try(synthetic(3, reasoning=False), template, "last", "none")
    if loss_on != "last" and not isinstance(last, DataError):
        raise ConfigError(f"data.loss_on={loss_on}: chat template '{name}' cannot locate the earlier answers of a "
                          f"conversation of several turns: {err.detail}", fix=LAST_ONLY_FIX)
    raise ConfigError(f"chat template '{name}' cannot be trained on a conversation of several turns: {err.detail}",
                      fix="train on one-turn conversations, or choose another template with data.template")


def _ends(report: Report, sh, one: Located) -> None:
    if sh.end:
        report.lines.append(f"each answer ends with {_q(sh.end)}, which is trained (the model learns to stop)")
    else:
        report.lines.append("the template writes no end of turn after an answer: the model will not learn to stop")
    report.lines.append(f"generation prompt (one turn, no system prompt): {_q(one.text[:one.prompt_len])}")
    if one.prefill:
        report.lines.append(f"the generation prompt pre-fills {_q(one.prefill)}: the last answer is trained from "
                            "after it, as the model writes it")
    if sh.trailing.strip():
        report.lines.append(f"after the last turn only, the template writes {_q(sh.trailing.strip())}: context, not "
                            f"trained (the model stops at {_q(sh.end)})")


def _turns(report: Report, multi: Located, loss_on: str) -> None:
    if loss_on == "all":
        report.lines.append("data.loss_on=all: every token is trained")
        return
    forms = _turn_forms(multi, 3)
    if len(forms) == 3 and len(set(forms[:2])) == 1 and forms[0] != forms[2]:
        report.lines.append(f"the last answer is trained as {forms[2]}, earlier answers as {forms[0]}")
    elif forms:
        report.lines.append(f"every supervised answer is trained as {forms[-1]}")
    text = multi.text
    at = text.find(SYSTEM)
    if at < 0:
        report.lines.append("the template does not render the system prompt")
    elif at > text.find(QUESTIONS[1]) >= 0:
        report.lines.append("the system prompt is written into the last user turn, so it is in the context of the "
                            "last answer only (its generation prompt); earlier answers are trained without it")
    elif multi.moved:
        report.lines.append("the conversation before the last answer renders differently in its generation prompt "
                            "than in the whole conversation: the last answer is trained after the generation prompt")


def _reasoning(report: Report, template: ChatTemplate, loss_on: str, policy: str) -> None:
    style = template.reasoning_style
    how = {"field": "reasoning is given to the template as `reasoning_content`, which it renders",
           "inline": "the template has no reasoning field: reasoning is written into the answer as "
                     "`<think>\\n{reasoning}\\n</think>\\n\\n{answer}`",
           "dropped": "the template removes reasoning from the answers it renders"}[style]
    notes: Counter = Counter()
    every = _try(synthetic(3), template, "assistant", "all", notes)
    if not isinstance(every, DataError) and style == "dropped":
        how += ("; the last answer's reasoning is written after the pre-filled text, as the model writes it"
                if every.prefill else ": reasoning in the data is not trained (counted)")
    if any("earlier answer not rendered" in k for k in notes):
        how += ("; it renders reasoning in the last turn only, so with data.reasoning=all earlier answers' "
                "reasoning is counted as not trained")
    report.lines.append(how)
    chosen = _try(synthetic(3), template, loss_on, policy)
    whose = {"last": "the last answer's", "all": "every answer's", "none": "no answer's"}[policy]
    if isinstance(chosen, DataError):
        report.lines.append(f"data.reasoning={policy}: a conversation with reasoning is dropped (counted): "
                            f"{chosen.detail}")
    elif loss_on != "all":
        forms = _turn_forms(chosen, 3)
        report.lines.append(f"data.reasoning={policy}: {whose} reasoning is trained; with reasoning in the data, "
                            f"answers are trained as {', '.join(dict.fromkeys(forms))}")


def _marks(report: Report, template: ChatTemplate) -> None:
    conv = synthetic(1, system=False, reasoning=False)
    marks = tuple(free_chars(conv)[2:4])
    text = template.render([m.as_dict() for m in conv.messages], marks=marks)
    clean, spans = strip_marks(text, marks)
    held = [clean[s:e] for s, e in spans]
    report.lines.append("the template marks assistant text with {% generation %}: nothing outside the marks is "
                        f"trained; the marks hold {', '.join(_q(h) for h in held)}, of which the generation "
                        "prompt's part is context")
