"""Preference files: records with a `chosen` and a `rejected` answer, as in DPO data.

They are recognised by their layout, from a file's first record, and never read as anything
else: without `data.preference` such a file stops with a message saying what it is and what to
set; with `data.preference: chosen` each record becomes an SFT conversation that ends in the
chosen answer (the rejected one is not used; preference training itself is a later stage).

The layouts read (after the file's column mapping):

| the record has | read as |
| --- | --- |
| `instruction` (+ `input`, `history`, `system`), chosen/rejected texts | alpaca, `output` = chosen |
| `prompt` text, chosen/rejected texts | prompt_completion, `completion` = chosen |
| `conversations` or `messages`, chosen/rejected one message or text each | those turns + the chosen one |
| chosen/rejected message lists starting with the user (UltraFeedback-binarized, HH-RLHF as messages) | chosen |
| `prompt` (text or messages), chosen/rejected lists of answer messages (TRL's explicit prompt) | prompt + chosen |
| only chosen/rejected texts `\\n\\nHuman: …\\n\\nAssistant: …` (HH-RLHF as released) | the chosen transcript |
"""

from __future__ import annotations

import re

from dianjing.data.formats import MESSAGE_ROLES, SHAREGPT_ROLES
from dianjing.data.readers import RawRecord
from dianjing.errors import DataError

MODES = ("chosen",)
PAIR = ("chosen", "rejected")
_TRANSCRIPT = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def is_preference(rec: RawRecord) -> bool:
    """Does this record have the layout of preference data (both a chosen and a rejected answer)?"""
    return isinstance(rec.data, dict) and all(k in rec.data for k in PAIR)


def layout(rec: RawRecord) -> str:
    """The layout of a preference record in words, for messages: "prompt text + chosen/rejected message lists"."""
    d = rec.data if isinstance(rec.data, dict) else {}
    chosen = d.get("chosen")
    kind = ("message lists" if isinstance(chosen, list) else "one message each" if isinstance(chosen, dict)
            else "texts")
    context = next((k for k in ("instruction", "conversations", "messages", "prompt") if k in d), None)
    return (f"{context} + " if context else "") + f"chosen/rejected {kind}"


def unsupported(rec: RawRecord) -> DataError:
    """The error for a preference file read without data.preference: what it is, and what to set."""
    return rec.error(
        f"this is a preference file ({layout(rec)}, as in DPO data): dianjing trains on instructions and their "
        "answers (SFT); training on preferences is not supported yet",
        fix="set data.preference=chosen (--set data.preference=chosen, or `preference: chosen` under `data:`) "
            "to train on the chosen answers; the rejected ones are then not used")


def to_chosen(rec: RawRecord) -> tuple[RawRecord, str]:
    """The record as an SFT record of one of the formats, ending in the chosen answer, and that format."""
    if not isinstance(rec.data, dict):
        raise rec.error(f"expected an object, got {type(rec.data).__name__}", field="<record>")
    d = rec.data
    chosen = d.get("chosen")
    rest = {k: v for k, v in d.items() if k not in PAIR}
    if chosen is None:
        raise rec.error("missing", field="chosen")
    if isinstance(chosen, list):
        return _from_list(rec, rest, chosen)
    if isinstance(chosen, dict):  # one message: LLaMA-Factory's sharegpt preference layout
        return _with_turns(rec, rest, [chosen])
    if isinstance(chosen, bool) or not isinstance(chosen, (str, int, float)):
        raise rec.error(f"expected text, a message or a list of messages, got {type(chosen).__name__}",
                        field="chosen")
    text = str(chosen)
    if "instruction" in rest:
        return _record(rec, {**rest, "output": text}), "alpaca"
    if isinstance(rest.get("prompt"), str):
        return _record(rec, {**rest, "completion": text}), "prompt_completion"
    if _context(rest) is not None:
        return _with_turns(rec, rest, [{"role": "assistant", "content": text}])
    turns = _transcript(text)
    if turns is None:
        raise rec.error("a chosen answer without its prompt: expected 'instruction', 'prompt', 'conversations' "
                        "or 'messages' beside it, or a transcript '\\n\\nHuman: …\\n\\nAssistant: …'",
                        field="chosen", fix="map the prompt's field onto one of these with columns: {prompt: FIELD}")
    return _record(rec, _messages_record(rest, turns)), "messages"


def _record(rec: RawRecord, data: dict) -> RawRecord:
    return RawRecord(data, rec.file, rec.line, rec.unit)


def _context(rest: dict) -> list | None:
    """The turns before the answer: conversations, messages, or a prompt given as messages."""
    for key in ("conversations", "messages", "prompt"):
        if isinstance(rest.get(key), list):
            return rest[key]
    return None


def _role(turn: object) -> str | None:
    if not isinstance(turn, dict):
        return None
    who = turn.get("role", turn.get("from"))
    return SHAREGPT_ROLES.get(who.lower(), MESSAGE_ROLES.get(who)) if isinstance(who, str) else None


def _from_list(rec: RawRecord, rest: dict, chosen: list) -> tuple[RawRecord, str]:
    first = next((t for t in chosen if _role(t) != "system"), None)
    if first is not None and _role(first) == "user":  # the whole conversation (UltraFeedback-binarized)
        return _as_turns(rec, {k: v for k, v in rest.items() if k not in ("conversations", "messages", "prompt")},
                         list(chosen))
    prompt = rest.get("prompt")
    if isinstance(prompt, str):  # a prompt text, the answer as messages
        rest = {k: v for k, v in rest.items() if k != "prompt"}
        return _with_turns(rec, {**rest, "messages": [{"role": "user", "content": prompt}]}, list(chosen))
    if "instruction" in rest:
        raise rec.error("chosen is a list of messages, but the prompt is an alpaca 'instruction'",
                        field="chosen", fix="give chosen and rejected as texts, or the prompt as messages")
    return _with_turns(rec, rest, list(chosen))


def _with_turns(rec: RawRecord, rest: dict, answer: list) -> tuple[RawRecord, str]:
    """The context turns (conversations / messages / prompt as messages) followed by the answer turns."""
    context = _context(rest)
    if context is None and any(isinstance(rest.get(k), str) for k in ("instruction", "prompt")):
        text = rest.get("instruction", rest.get("prompt"))
        if rest.get("input"):
            text = f"{text}\n\n{rest['input']}"
        context = [{"role": "user", "content": text}]
    other = {k: v for k, v in rest.items() if k not in ("conversations", "messages", "prompt", "instruction", "input")}
    return _as_turns(rec, other, list(context or []) + answer)


def _as_turns(rec: RawRecord, other: dict, turns: list) -> tuple[RawRecord, str]:
    """sharegpt when a turn is written {from, value} (its reader takes {role, content} turns too), else messages."""
    if any(isinstance(t, dict) and "from" in t for t in turns):
        return _record(rec, {**other, "conversations": turns}), "sharegpt"
    return _record(rec, _messages_record(other, turns)), "messages"


def _messages_record(other: dict, turns: list) -> dict:
    system = other.get("system")
    if isinstance(system, str) and system.strip() and not (turns and _role(turns[0]) == "system"):
        turns = [{"role": "system", "content": system}, *turns]
    return {**{k: v for k, v in other.items() if k != "system"}, "messages": turns}


def _transcript(text: str) -> list[dict] | None:
    """HH-RLHF's "\\n\\nHuman: …\\n\\nAssistant: …" text as messages; None when it is not one."""
    parts = _TRANSCRIPT.split(text)
    if len(parts) < 3 or parts[0].strip():
        return None
    return [{"role": "user" if who == "Human" else "assistant", "content": body.strip()}
            for who, body in zip(parts[1::2], parts[2::2], strict=True)]
