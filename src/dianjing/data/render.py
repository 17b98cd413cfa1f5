"""Conversation → token ids + loss mask, in one pass, segment by segment.

The template is rendered for growing prefixes of the conversation; the text an
assistant turn adds (its answer and end token) is one supervised segment, the rest
is context. Each segment is tokenised on its own and the ids are concatenated, which
is also how generation sees it (prompt tokens, then generated tokens), so the mask
cannot drift from the answer where tokens would merge across the boundary.

Tool calls: a template that renders tools (`ChatTemplate.supports_tools`) is given the tool list
and the messages in Hugging Face's shape; any other is given them lowered into the built-in tool
format (data/tools.py). Either way an assistant turn, calls included, is supervised with its end
token; tool results and the tool list are context.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import jinja2

from dianjing.data.schema import Conversation
from dianjing.data.templates import ChatTemplate
from dianjing.data.tools import lower
from dianjing.errors import DataError


@dataclass
class Rendered:
    input_ids: list[int]
    mask: list[bool]  # True where the token is a target of the loss
    source: str = ""
    truncated: bool = False

    @property
    def n_supervised(self) -> int:
        return sum(self.mask)


@dataclass
class RenderStats:
    total: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason → count
    tokens: int = 0
    supervised_tokens: int = 0

    def summary(self) -> dict:
        return {"examples": self.total, "kept": self.kept, "truncated": self.truncated,
                "dropped": dict(self.dropped), "tokens": self.tokens,
                "supervised_tokens": self.supervised_tokens}


def template_input(conv: Conversation, template: ChatTemplate) -> tuple[list[dict], list[dict] | None,
                                                                        list[int | None]]:
    """What the template is rendered with: the messages, the tools, and for each message the index in
    conv.messages it stands for (the built-in tool format merges results and adds a tool-list block)."""
    msgs = conv.as_dicts()
    if not conv.has_tools or template.supports_tools:
        return msgs, conv.tool_specs(), list(range(len(msgs)))
    lowered, origin = lower(msgs, conv.tool_specs())
    return lowered, None, origin


def _render(template: ChatTemplate, conv: Conversation, msgs: list[dict], tools: list[dict] | None,
            add_generation_prompt: bool = False) -> str:
    try:
        return template.render(msgs, add_generation_prompt=add_generation_prompt, tools=tools)
    except jinja2.TemplateError as e:  # the template's raise_exception, or a template that cannot render it
        raise DataError(f"chat template '{template.name}' cannot render this conversation: {e}",
                        file=conv.source or None,
                        fix="change the record, or use a built-in template: data.template=chatml (or plain)") from None


def segments(conv: Conversation, template: ChatTemplate, loss_on: str = "assistant") -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, supervised) segments."""
    msgs, tools, origin = template_input(conv, template)
    full = _render(template, conv, msgs, tools)
    if loss_on == "all":
        return [(full, True)]
    assistant_idx = [j for j, o in enumerate(origin) if o is not None and conv.messages[o].role == "assistant"]
    supervised_idx = assistant_idx[-1:] if loss_on == "last" else assistant_idx
    spans: list[tuple[int, int]] = []
    for j in supervised_idx:
        if not conv.messages[origin[j]].train:
            continue
        head = _render(template, conv, msgs[:j], tools, add_generation_prompt=True)
        upto = _render(template, conv, msgs[: j + 1], tools)
        if not (full.startswith(head) and full.startswith(upto) and len(head) <= len(upto)):
            raise DataError(
                f"chat template '{template.name}' does not render the conversation prefix-stably "
                "(an earlier turn renders differently once later turns exist), so the answer "
                "tokens cannot be located", file=conv.source or None,
                fix="use a built-in template: data.template=chatml (or plain)")
        start, end = len(head), len(upto)
        # whitespace after the end token belongs to the next turn, not to the answer
        answer = full[start:end]
        end = start + len(answer.rstrip())
        spans.append((start, end))
    out: list[tuple[str, bool]] = []
    pos = 0
    for start, end in spans:
        if start > pos:
            out.append((full[pos:start], False))
        if end > start:
            out.append((full[start:end], True))
        pos = max(pos, end)
    if pos < len(full):
        out.append((full[pos:], False))
    return out


def _texts(conv: Conversation):
    """(what, text) for every piece of the conversation that is rendered: contents, calls, the tool list."""
    for k, m in enumerate(conv.messages):
        yield f"message {k + 1} ({m.role})", m.content
        for c in m.tool_calls:
            yield f"message {k + 1} ({m.role}), call of {c.name!r},", json.dumps(c.arguments, ensure_ascii=False)
    if conv.tools:
        yield "the tool list", json.dumps(conv.tools, ensure_ascii=False)


def check_no_control_tokens(conv: Conversation, tokenizer) -> None:
    """Text that spells a special token ("</s>", "<|im_end|>") would be read as that control token
    (an injected end of turn); such an example is rejected and counted, not silently changed."""
    specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]
    for what, text in _texts(conv):
        for t in specials:
            if t in text:
                raise DataError(f"{what} contains the special token {t!r}, which would be "
                                "read as a control token", file=conv.source or None,
                                fix="remove or escape it in the data")


def render(conv: Conversation, tokenizer, template: ChatTemplate, max_length: int,
           loss_on: str = "assistant") -> Rendered:
    check_no_control_tokens(conv, tokenizer)
    ids: list[int] = []
    mask: list[bool] = []
    for text, sup in segments(conv, template, loss_on):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        mask.extend([sup] * len(piece))
    truncated = len(ids) > max_length
    if truncated:
        ids, mask = ids[:max_length], mask[:max_length]
    # the first token is never a target (nothing predicts it)
    if mask:
        mask[0] = False
    return Rendered(ids, mask, conv.source, truncated)


def render_all(convs: list[Conversation], tokenizer, template: ChatTemplate, max_length: int,
               loss_on: str = "assistant", stats: RenderStats | None = None) -> list[Rendered]:
    """Render every conversation; drop (and count) those with nothing left to learn from."""
    stats = stats if stats is not None else RenderStats()
    kept = []
    for conv in convs:
        stats.total += 1
        try:
            r = render(conv, tokenizer, template, max_length, loss_on)
        except DataError as e:
            # the reason without the example's place, so one cause is one count
            reason = "the text contains a special token" if "special token" in e.detail else e.detail
            stats.dropped[reason] += 1
            continue
        if r.n_supervised == 0:
            reason = ("no supervised token left after truncation to max_length"
                      if r.truncated else "no supervised token (all assistant turns have loss_weight 0)")
            stats.dropped[reason] += 1
            continue
        stats.truncated += r.truncated
        stats.kept += 1
        stats.tokens += len(r.input_ids)
        stats.supervised_tokens += r.n_supervised
        kept.append(r)
    return kept


def show(r: Rendered, tokenizer, color: bool = True) -> str:
    """The example as text with the supervised tokens marked (green, or [[…]] without colour)."""
    out, run, run_sup = [], [], None

    def flush():
        if not run:
            return
        text = tokenizer.decode(run, skip_special_tokens=False)
        if run_sup:
            out.append(f"[green]{_esc(text)}[/green]" if color else f"[[{text}]]")
        else:
            out.append(_esc(text) if color else text)

    for tok, sup in zip(r.input_ids, r.mask):
        if sup != run_sup:
            flush()
            run, run_sup = [], sup
        run.append(tok)
    flush()
    return "".join(out)


def _esc(text: str) -> str:
    return text.replace("[", r"\[")
