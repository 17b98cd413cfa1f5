"""Conversation → token ids + loss mask, in one pass, segment by segment.

data/locate.py finds, in what the chat template renders, the text of each assistant turn that the
model writes (its answer, by data.reasoning its reasoning, and its end of turn): that is a supervised
segment, the rest is context. Each segment is tokenised on its own and the ids are concatenated, which
is also how generation sees it (prompt tokens, then generated tokens), so the mask cannot drift from
the answer where tokens would merge across the boundary.

Tool calls: a template that renders tools (`ChatTemplate.supports_tools`) is given the tool list
and the messages in Hugging Face's shape; any other is given them lowered into the built-in tool
format (data/tools.py). Either way an assistant turn, calls included, is supervised with its end
token; tool results and the tool list are context.
"""

from __future__ import annotations

import json
import weakref
from collections import Counter
from dataclasses import dataclass, field

from dianjing.data.locate import locate, template_input  # noqa: F401  template_input: infer/tool_calls.py
from dianjing.data.schema import Conversation
from dianjing.data.templates import ChatTemplate
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
    not_trained: Counter = field(default_factory=Counter)  # text the data has that is not trained, why → count

    def summary(self) -> dict:
        return {"examples": self.total, "kept": self.kept, "truncated": self.truncated,
                "dropped": dict(self.dropped), "tokens": self.tokens,
                "supervised_tokens": self.supervised_tokens, "not_trained": dict(self.not_trained)}


def segments(conv: Conversation, template: ChatTemplate, loss_on: str = "assistant", reasoning: str = "last",
             notes: Counter | None = None) -> list[tuple[str, bool]]:
    """Split the sequence `conv` is trained as into (text, supervised) segments."""
    loc = locate(conv, template, loss_on, reasoning, notes)
    out: list[tuple[str, bool]] = []
    pos = 0
    for start, end in loc.spans:
        if start > pos:
            out.append((loc.text[pos:start], False))
        if end > max(start, pos):
            out.append((loc.text[max(start, pos):end], True))
        pos = max(pos, end)
    if pos < len(loc.text):
        out.append((loc.text[pos:], False))
    return out


def _texts(conv: Conversation):
    """(what, text) for every piece of the conversation that is rendered: contents, reasoning, calls, the tool list."""
    for k, m in enumerate(conv.messages):
        yield f"message {k + 1} ({m.role})", m.content
        if m.reasoning:
            yield f"message {k + 1} ({m.role}), its reasoning,", m.reasoning
        for c in m.tool_calls:
            yield f"message {k + 1} ({m.role}), call of {c.name!r},", json.dumps(c.arguments, ensure_ascii=False)
    if conv.tools:
        yield "the tool list", json.dumps(conv.tools, ensure_ascii=False)


_CONTROL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def control_tokens(tokenizer) -> dict[str, dict[int, set[str]]]:
    """The tokenizer's control tokens, by first character and length: its special tokens and every added
    token it treats as special (Gemma's <start_of_turn> and <end_of_turn> are in added_tokens_decoder
    with special=True, not in all_special_tokens)."""
    try:
        return _CONTROL[tokenizer]
    except (KeyError, TypeError):
        pass
    found = {t for t in getattr(tokenizer, "all_special_tokens", []) if t}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    found |= {str(tok) for tok in added.values() if getattr(tok, "special", False) and str(tok)}
    index: dict[str, dict[int, set[str]]] = {}
    for t in found:
        index.setdefault(t[0], {}).setdefault(len(t), set()).add(t)
    try:
        _CONTROL[tokenizer] = index
    except TypeError:  # not weak-referenceable: not cached
        pass
    return index


def find_control_token(text: str, index: dict[str, dict[int, set[str]]]) -> str | None:
    """The first control token spelt in `text`, or None (a scan of the positions of each first character)."""
    for first, by_len in index.items():
        at = text.find(first)
        while at >= 0:
            for n, toks in by_len.items():
                if text[at:at + n] in toks:
                    return text[at:at + n]
            at = text.find(first, at + 1)
    return None


def check_no_control_tokens(conv: Conversation, tokenizer) -> None:
    """Text that spells a control token ("</s>", "<|im_end|>", Gemma's "<start_of_turn>") would be read as
    that token (an injected end of turn or turn marker); such an example is rejected and counted, not
    silently changed."""
    index = control_tokens(tokenizer)
    for what, text in _texts(conv):
        t = find_control_token(text, index)
        if t is not None:
            raise DataError(f"{what} contains the special token {t!r}, which would be "
                            "read as a control token", file=conv.source or None,
                            fix="remove or escape it in the data")


def render(conv: Conversation, tokenizer, template: ChatTemplate, max_length: int,
           loss_on: str = "assistant", reasoning: str = "last", notes: Counter | None = None) -> Rendered:
    check_no_control_tokens(conv, tokenizer)
    ids: list[int] = []
    mask: list[bool] = []
    for text, sup in segments(conv, template, loss_on, reasoning, notes):
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
               loss_on: str = "assistant", stats: RenderStats | None = None, reasoning: str = "last") -> list[Rendered]:
    """Render every conversation; drop (and count) those with nothing left to learn from, and count what the
    kept ones hold that is not trained (stats.not_trained)."""
    stats = stats if stats is not None else RenderStats()
    kept = []
    for conv in convs:
        stats.total += 1
        notes: Counter = Counter()
        try:
            r = render(conv, tokenizer, template, max_length, loss_on, reasoning, notes)
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
        stats.not_trained.update(notes)
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
