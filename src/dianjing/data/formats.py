"""Data formats → Conversation. Each converter names the field that is wrong.

Formats: alpaca, sharegpt, messages (OpenAI-style), prompt_completion.
"""

from __future__ import annotations

from collections.abc import Callable

from dianjing.data.readers import RawRecord
from dianjing.data.schema import Conversation, Message
from dianjing.errors import DataError

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion")

SHAREGPT_ROLES = {
    "human": "user", "user": "user", "prompter": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "chatgpt": "assistant",
    "bard": "assistant", "bing": "assistant", "bot": "assistant", "ai": "assistant",
    "system": "system",
}
MESSAGE_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _err(rec: RawRecord, field: str, msg: str) -> DataError:
    unit_line = rec.line if rec.unit == "line" else None
    file = rec.file if rec.unit == "line" else f"{rec.file} record {rec.line}"
    return DataError(msg, file=file, line=unit_line, field=field)


def _text(rec: RawRecord, field: str, value: object, *, required: bool = True) -> str:
    if value is None:
        if required:
            raise _err(rec, field, "missing")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _err(rec, field, f"expected text, got {type(value).__name__}")
    return str(value)


def _mapping(rec: RawRecord) -> dict:
    if not isinstance(rec.data, dict):
        raise _err(rec, "<record>", f"expected an object, got {type(rec.data).__name__}")
    return rec.data


def from_alpaca(rec: RawRecord) -> list[Message]:
    d = _mapping(rec)
    msgs: list[Message] = []
    system = _text(rec, "system", d.get("system"), required=False)
    if system.strip():
        msgs.append(Message("system", system))
    history = d.get("history") or []
    if not isinstance(history, list):
        raise _err(rec, "history", "expected a list of [instruction, response] pairs")
    for k, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise _err(rec, f"history[{k}]", "expected a pair [instruction, response]")
        msgs.append(Message("user", _text(rec, f"history[{k}][0]", pair[0])))
        msgs.append(Message("assistant", _text(rec, f"history[{k}][1]", pair[1])))
    instruction = _text(rec, "instruction", d.get("instruction"))
    inp = _text(rec, "input", d.get("input"), required=False)
    user = f"{instruction}\n\n{inp}" if inp.strip() else instruction
    msgs.append(Message("user", user))
    msgs.append(Message("assistant", _text(rec, "output", d.get("output"))))
    return msgs


def from_sharegpt(rec: RawRecord) -> list[Message]:
    d = _mapping(rec)
    turns = d.get("conversations")
    if not isinstance(turns, list):
        raise _err(rec, "conversations", "missing or not a list of {from, value} turns")
    msgs: list[Message] = []
    system = _text(rec, "system", d.get("system"), required=False)
    if system.strip():
        msgs.append(Message("system", system))
    for k, t in enumerate(turns):
        if not isinstance(t, dict):
            raise _err(rec, f"conversations[{k}]", "expected an object with 'from' and 'value'")
        who = t.get("from", t.get("role"))
        if not isinstance(who, str) or who.lower() not in SHAREGPT_ROLES:
            raise _err(rec, f"conversations[{k}].from",
                       f"unknown role {who!r}; expected one of {sorted(SHAREGPT_ROLES)}")
        value = t.get("value", t.get("content"))
        msgs.append(Message(SHAREGPT_ROLES[who.lower()], _text(rec, f"conversations[{k}].value", value)))
    return msgs


def _content(rec: RawRecord, field: str, content: object) -> str:
    if isinstance(content, list):
        parts = []
        for k, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
                continue
            if not isinstance(part, dict):
                raise _err(rec, f"{field}[{k}]", "expected a text part {type: text, text: ...}")
            kind = part.get("type", "text")
            if kind != "text":
                raise _err(rec, f"{field}[{k}].type",
                           f"only text parts can be trained on, got {kind!r}")
            parts.append(_text(rec, f"{field}[{k}].text", part.get("text", part.get("value"))))
        return "".join(parts)
    return _text(rec, field, content)


def from_messages(rec: RawRecord) -> list[Message]:
    d = _mapping(rec)
    turns = d.get("messages")
    if not isinstance(turns, list):
        raise _err(rec, "messages", "missing or not a list of {role, content} messages")
    msgs = []
    for k, m in enumerate(turns):
        if not isinstance(m, dict):
            raise _err(rec, f"messages[{k}]", "expected an object with 'role' and 'content'")
        role = m.get("role")
        if not isinstance(role, str) or role not in MESSAGE_ROLES:
            raise _err(rec, f"messages[{k}].role",
                       f"unknown role {role!r}; expected one of {sorted(MESSAGE_ROLES)}")
        weight = m.get("loss_weight", m.get("weight", 1))
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise _err(rec, f"messages[{k}].loss_weight", "expected a number")
        msgs.append(Message(MESSAGE_ROLES[role], _content(rec, f"messages[{k}].content", m.get("content")),
                            train=weight > 0))
    return msgs


def from_prompt_completion(rec: RawRecord) -> list[Message]:
    d = _mapping(rec)
    msgs = []
    system = _text(rec, "system", d.get("system"), required=False)
    if system.strip():
        msgs.append(Message("system", system))
    msgs.append(Message("user", _text(rec, "prompt", d.get("prompt"))))
    msgs.append(Message("assistant", _text(rec, "completion", d.get("completion"))))
    return msgs


CONVERTERS: dict[str, Callable[[RawRecord], list[Message]]] = {
    "alpaca": from_alpaca,
    "sharegpt": from_sharegpt,
    "messages": from_messages,
    "prompt_completion": from_prompt_completion,
}


def detect_format(rec: RawRecord) -> str:
    """Detect the format from the keys of one record (the log says what was detected)."""
    if isinstance(rec.data, dict):
        keys = set(rec.data)
        if "conversations" in keys:
            return "sharegpt"
        if "messages" in keys:
            return "messages"
        if "instruction" in keys and "output" in keys:
            return "alpaca"
        if "prompt" in keys and "completion" in keys:
            return "prompt_completion"
        found = sorted(keys)[:8]
    else:
        found = type(rec.data).__name__
    raise DataError(f"cannot tell the data format from this record (keys: {found})",
                    file=rec.where, fix=f"set the format explicitly: one of {', '.join(FORMATS)}")


def check_turns(rec: RawRecord, msgs: list[Message]) -> None:
    """The structure every format must end in: [system] user assistant (user assistant)*.

    Conversations that break it are rejected with the position, never reordered silently.
    """
    body = msgs
    if body and body[0].role == "system":
        body = body[1:]
    if any(m.role == "system" for m in body):
        raise _err(rec, "<turns>", "a system message is only allowed as the first message")
    if not body:
        raise _err(rec, "<turns>", "no user/assistant turns")
    for k, m in enumerate(body):
        want = "user" if k % 2 == 0 else "assistant"
        if m.role != want:
            prev = body[k - 1].role if k else "start"
            raise _err(rec, "<turns>", f"turn {k + 1} is '{m.role}' after '{prev}'; "
                                        f"expected '{want}' (turns must alternate user, assistant)")
    if body[-1].role != "assistant":
        raise _err(rec, "<turns>", "the conversation ends with a user turn; nothing to learn from")
    for k, m in enumerate(body):
        if m.role == "assistant" and not m.content.strip():
            raise _err(rec, "<turns>", f"assistant turn {k // 2 + 1} is empty")
        if m.role == "user" and not m.content.strip():
            raise _err(rec, "<turns>", f"user turn {k // 2 + 1} is empty")


def to_conversation(rec: RawRecord, fmt: str, system_prompt: str | None = None) -> Conversation:
    msgs = CONVERTERS[fmt](rec)
    if system_prompt and not (msgs and msgs[0].role == "system"):
        msgs.insert(0, Message("system", system_prompt))
    check_turns(rec, msgs)
    return Conversation(tuple(msgs), source=rec.where)
