"""Data formats → Conversation. Each converter names the field that is wrong.

Formats: alpaca, sharegpt, messages (OpenAI-style), prompt_completion. sharegpt and messages
also carry tool calls (a `tools` list, calls, results: see docs/data-formats.md, "Tool calls").
An assistant text's reasoning (a `<think>…</think>` block that opens it, or a `reasoning_content` /
`reasoning` field of a message or turn) is read into Message.reasoning, apart from the answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from dianjing.data.readers import RawRecord
from dianjing.data.schema import Conversation, Message, ToolCall
from dianjing.errors import DataError

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion")

SHAREGPT_ROLES = {
    "human": "user", "user": "user", "prompter": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "chatgpt": "assistant",
    "bard": "assistant", "bing": "assistant", "bot": "assistant", "ai": "assistant",
    "system": "system",
    "function_call": "assistant", "observation": "tool", "tool": "tool",  # LLaMA-Factory's tool turns
}
MESSAGE_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                 "tool": "tool"}
Tools = tuple[dict, ...] | None


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


# --- reasoning --------------------------------------------------------------------------------

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
REASONING_FIELDS = ("reasoning_content", "reasoning")


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, answer) of an assistant text: the reasoning is what comes before the first `</think>`,
    with its opening `<think>` (DeepSeek-R1 outputs whose prompt pre-filled `<think>` have none), as
    Qwen3's and DeepSeek's own templates read it; ("", text) when the text has no such block, or has a
    `<think>` that does not open it."""
    head, sep, tail = text.partition(THINK_CLOSE)
    if not sep:
        return "", text
    body = head.lstrip()
    if body.startswith(THINK_OPEN):
        body = body[len(THINK_OPEN):]
    elif THINK_OPEN in body:
        return "", text
    return body.strip("\n"), tail.lstrip("\n")


def assistant_text(rec: RawRecord, field: str, value: str, turn: dict | None = None) -> tuple[str, str]:
    """(answer, reasoning) of an assistant turn: its text split by split_reasoning, or the text and the
    turn's own reasoning field (reasoning_content or reasoning); both at once is a bad record."""
    reasoning, answer = split_reasoning(value)
    for key in REASONING_FIELDS:
        given = (turn or {}).get(key)
        if given is None or given == "":
            continue
        where = field.rsplit(".", 1)[0] + "." + key
        if not isinstance(given, str):
            raise _err(rec, where, f"expected text, got {type(given).__name__}")
        if reasoning:
            raise _err(rec, where, "reasoning given twice: in this field and as a <think> block in the content")
        reasoning = given.strip("\n")
        break
    return answer, reasoning


# --- tool calls -------------------------------------------------------------------------------

def _json_text(rec: RawRecord, field: str, text: str, hint: str = "") -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        why = f"not valid JSON: {e.msg} at column {e.colno}"
        raise _err(rec, field, why + (f" ({hint})" if hint else "")) from None


def read_tools(rec: RawRecord, field: str, value: object) -> Tools:
    """The record's tool list (a list, or its JSON text) as function specs; None when it has none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        value = _json_text(rec, field, value)
    if not isinstance(value, list):
        raise _err(rec, field, "expected a list of function specs (or its JSON text)")
    specs = []
    for k, t in enumerate(value):
        spec = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else t
        if not isinstance(spec, dict):
            raise _err(rec, f"{field}[{k}]", "expected a function spec {name, description, parameters} "
                                             "(or {type: function, function: {...}})")
        if not isinstance(spec.get("name"), str) or not spec["name"].strip():
            raise _err(rec, f"{field}[{k}].name", "missing or not a name")
        specs.append(spec)
    return tuple(specs)


def _arguments(rec: RawRecord, field: str, value: object) -> dict:
    if value is None:
        raise _err(rec, field, "missing (a call without arguments has {})")
    if isinstance(value, str):
        value = _json_text(rec, field, value)
    if not isinstance(value, dict):
        raise _err(rec, field, f"the arguments must be a JSON object, got {type(value).__name__}")
    return value


class ToolLinker:
    """Gives each call an id (its own, or call00001, call00002, …: 9 characters, as Mistral's template
    wants), checks it names a tool in the record's `tools` when it has some, and matches each tool
    result to an unanswered call of the assistant turn just before it: by tool_call_id, else in order."""

    def __init__(self, rec: RawRecord, tools: Tools):
        self.rec = rec
        self.names = None if tools is None else [t["name"] for t in tools]
        self.pending: list[ToolCall] = []  # the last assistant turn's calls not yet answered
        self.made = 0

    def call(self, field: str, name: object, arguments: object, call_id: object = None) -> ToolCall:
        if not isinstance(name, str) or not name.strip():
            raise _err(self.rec, f"{field}.name", "missing or not a function name")
        if self.names is not None and name not in self.names:
            listed = ", ".join(self.names) if self.names else "none"
            raise _err(self.rec, f"{field}.name", f"calls {name!r}, which is not in the record's tools ({listed})")
        args = _arguments(self.rec, f"{field}.arguments", arguments)
        self.made += 1
        cid = call_id if isinstance(call_id, str) and call_id else f"call{self.made:05d}"
        return ToolCall(cid, name, args)

    def turn(self, calls: tuple[ToolCall, ...] = ()) -> None:
        """A user or assistant message: the calls that the tool results after it may answer."""
        self.pending = list(calls)

    def result(self, field: str, call_id: object) -> ToolCall:
        if call_id is not None and not isinstance(call_id, str):
            raise _err(self.rec, f"{field}.tool_call_id", "expected text")
        match = [c for c in self.pending if c.id == call_id] if call_id else self.pending[:1]
        if not match:
            if call_id and self.pending:
                raise _err(self.rec, field, f"tool_call_id {call_id!r} matches no unanswered call of the "
                                            f"assistant turn before it ({', '.join(c.id for c in self.pending)})")
            raise _err(self.rec, field, "a tool result with no call before it")
        self.pending.remove(match[0])
        return match[0]


def _sharegpt_calls(rec: RawRecord, field: str, value: object, link: ToolLinker) -> tuple[ToolCall, ...]:
    """A function_call turn: JSON {"name", "arguments"} or a list of them (or that JSON's text)."""
    if isinstance(value, str):
        value = _json_text(rec, field, value,
                           'a function_call turn holds {"name": ..., "arguments": {...}} or a list of them')
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _err(rec, field, "a function_call turn with no call")
    calls = []
    for j, c in enumerate(items):
        where = f"{field}[{j}]" if isinstance(value, list) else field
        if not isinstance(c, dict):
            raise _err(rec, where, 'expected a call {"name": ..., "arguments": {...}}')
        calls.append(link.call(where, c.get("name"), c.get("arguments", c.get("parameters")), c.get("id")))
    return tuple(calls)


def _message_calls(rec: RawRecord, k: int, m: dict, link: ToolLinker) -> tuple[ToolCall, ...]:
    """An OpenAI assistant message's tool_calls [{id, type: function, function: {name, arguments}}]
    (or the older single function_call {name, arguments})."""
    field = f"messages[{k}].tool_calls"
    raw = m.get("tool_calls")
    if raw is None and isinstance(m.get("function_call"), dict):
        raw, field = [m["function_call"]], f"messages[{k}].function_call"
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _err(rec, field, "expected a list of calls")
    calls = []
    for j, c in enumerate(raw):
        where = f"{field}[{j}]" if field.endswith("tool_calls") else field
        if not isinstance(c, dict):
            raise _err(rec, where, "expected a call {id, type: function, function: {name, arguments}}")
        fn, fwhere = (c["function"], f"{where}.function") if isinstance(c.get("function"), dict) else (c, where)
        calls.append(link.call(fwhere, fn.get("name"), fn.get("arguments"), c.get("id")))
    return tuple(calls)


def from_alpaca(rec: RawRecord) -> tuple[list[Message], Tools]:
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
        answer, reasoning = assistant_text(rec, f"history[{k}][1]", _text(rec, f"history[{k}][1]", pair[1]))
        msgs.append(Message("assistant", answer, reasoning=reasoning))
    instruction = _text(rec, "instruction", d.get("instruction"))
    inp = _text(rec, "input", d.get("input"), required=False)
    user = f"{instruction}\n\n{inp}" if inp.strip() else instruction
    msgs.append(Message("user", user))
    answer, reasoning = assistant_text(rec, "output", _text(rec, "output", d.get("output")))
    msgs.append(Message("assistant", answer, reasoning=reasoning))
    return msgs, None


def from_sharegpt(rec: RawRecord) -> tuple[list[Message], Tools]:
    d = _mapping(rec)
    turns = d.get("conversations")
    if not isinstance(turns, list):
        raise _err(rec, "conversations", "missing or not a list of {from, value} turns")
    tools = read_tools(rec, "tools", d.get("tools"))
    link = ToolLinker(rec, tools)
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
        who, field = who.lower(), f"conversations[{k}].value"
        value = t.get("value", t.get("content"))
        if who == "function_call":
            calls = _sharegpt_calls(rec, field, value, link)
            msgs.append(Message("assistant", "", tool_calls=calls))
            link.turn(calls)
        elif SHAREGPT_ROLES[who] == "tool":
            call = link.result(f"conversations[{k}]", t.get("tool_call_id"))
            msgs.append(Message("tool", _text(rec, field, value), tool_call_id=call.id, name=call.name))
        elif SHAREGPT_ROLES[who] == "assistant":
            answer, reasoning = assistant_text(rec, field, _text(rec, field, value), t)
            msgs.append(Message("assistant", answer, reasoning=reasoning))
            link.turn()
        else:
            msgs.append(Message(SHAREGPT_ROLES[who], _text(rec, field, value)))
            link.turn()
    return msgs, tools


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


def _message(rec: RawRecord, k: int, m: object, link: ToolLinker) -> Message:
    if not isinstance(m, dict):
        raise _err(rec, f"messages[{k}]", "expected an object with 'role' and 'content'")
    role = m.get("role")
    if not isinstance(role, str) or role not in MESSAGE_ROLES:
        raise _err(rec, f"messages[{k}].role",
                   f"unknown role {role!r}; expected one of {sorted(MESSAGE_ROLES)}")
    weight = m.get("loss_weight", m.get("weight", 1))
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise _err(rec, f"messages[{k}].loss_weight", "expected a number")
    role, field = MESSAGE_ROLES[role], f"messages[{k}].content"
    if role == "tool":
        call = link.result(f"messages[{k}]", m.get("tool_call_id"))
        return Message("tool", _content(rec, field, m.get("content")), tool_call_id=call.id, name=call.name)
    calls = _message_calls(rec, k, m, link) if role == "assistant" else ()
    link.turn(calls)
    content = "" if calls and m.get("content") is None else _content(rec, field, m.get("content"))
    reasoning = ""
    if role == "assistant":
        content, reasoning = assistant_text(rec, field, content, m)
    return Message(role, content, train=weight > 0, tool_calls=calls, reasoning=reasoning)


def from_messages(rec: RawRecord) -> tuple[list[Message], Tools]:
    d = _mapping(rec)
    turns = d.get("messages")
    if not isinstance(turns, list):
        raise _err(rec, "messages", "missing or not a list of {role, content} messages")
    tools = read_tools(rec, "tools", d.get("tools"))
    link = ToolLinker(rec, tools)
    return [_message(rec, k, m, link) for k, m in enumerate(turns)], tools


def from_prompt_completion(rec: RawRecord) -> tuple[list[Message], Tools]:
    d = _mapping(rec)
    msgs = []
    system = _text(rec, "system", d.get("system"), required=False)
    if system.strip():
        msgs.append(Message("system", system))
    msgs.append(Message("user", _text(rec, "prompt", d.get("prompt"))))
    answer, reasoning = assistant_text(rec, "completion", _text(rec, "completion", d.get("completion")))
    msgs.append(Message("assistant", answer, reasoning=reasoning))
    return msgs, None


CONVERTERS: dict[str, Callable[[RawRecord], tuple[list[Message], Tools]]] = {
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


def _label(m: Message) -> str:
    return "assistant (tool call)" if m.tool_calls else m.role


def _allowed_after(m: Message | None) -> tuple[str, ...]:
    """The roles that may follow `m` (None: the start)."""
    if m is None or m.role == "assistant" and not m.tool_calls:
        return ("user",)
    if m.role == "user":
        return ("assistant",)
    return ("tool",) if m.role == "assistant" else ("tool", "assistant")


def check_turns(rec: RawRecord, msgs: list[Message]) -> None:
    """The structure every format must end in: [system] user assistant (user assistant)*, where an
    assistant turn that calls tools is followed by their results and then by another assistant turn
    (user, assistant-call, tool…, assistant). A conversation may end with a call.

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
        prev = body[k - 1] if k else None
        want = _allowed_after(prev)
        if m.role not in want:
            expected = " or ".join(f"'{w}'" for w in want)
            raise _err(rec, "<turns>", f"turn {k + 1} is '{_label(m)}' after '{_label(prev) if prev else 'start'}'; "
                                        f"expected {expected} (turns must alternate user, assistant)")
    if body[-1].role != "assistant":
        raise _err(rec, "<turns>", f"the conversation ends with a {body[-1].role} turn; nothing to learn from")
    seen = {"user": 0, "assistant": 0}
    for m in body:
        if m.role in seen:
            seen[m.role] += 1
            if not m.content.strip() and not m.tool_calls and not m.reasoning.strip():
                raise _err(rec, "<turns>", f"{m.role} turn {seen[m.role]} is empty")


def to_conversation(rec: RawRecord, fmt: str, system_prompt: str | None = None) -> Conversation:
    msgs, tools = CONVERTERS[fmt](rec)
    if system_prompt and not (msgs and msgs[0].role == "system"):
        msgs.insert(0, Message("system", system_prompt))
    check_turns(rec, msgs)
    return Conversation(tuple(msgs), source=rec.where, tools=tools)
