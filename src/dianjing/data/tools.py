"""The built-in tool-call format, and turning generated text back into OpenAI-style calls.

A chat template that renders tools itself (Qwen2.5, Llama 3.1, Mistral v0.3, … and the built-in
`chatml` and `plain`) is given the tool list and the calls as Hugging Face templates expect them.
A template that cannot (`vicuna`, `alpaca`, or a model template that ignores `tools`) is given the
conversation "lowered" into plain text turns by `lower`, in the same built-in format the `chatml`
and `plain` templates write (Hermes / Qwen style; documented in docs/data-formats.md):

- the tool list: a system block, `tools_block(tools)`: TOOLS_HEAD, then each function spec
  ({name, description, parameters}) as JSON on its own line, then TOOLS_TAIL;
  appended to the conversation's system message after a blank line, or the system message itself;
- a call: `<tool_call>\\n{"name": NAME, "arguments": {…}}\\n</tool_call>`, several calls one per
  line, after the turn's text (and a newline) when there is some;
- a result: `<tool_response>\\n…\\n</tool_response>` in a user turn (consecutive results in one turn).

`parse_tool_calls(text, template)` reads a generated answer back: the calls in the template's format
(the built-in one, or Mistral's `[TOOL_CALLS]`, or Llama 3's bare JSON) as OpenAI-style calls, and
the text around them.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dianjing.data.templates import ChatTemplate

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
TOOLS_HEAD = "# Tools\n\nYou can call these functions, listed one JSON object a line:\n<tools>"
TOOLS_TAIL = ("\n</tools>\n\nTo call one, answer with {\"name\": <function name>, \"arguments\": <arguments object>} "
              "inside <tool_call></tool_call>, one block per call.")


def _dumps(obj: object) -> str:
    """JSON as chat templates' `tojson` writes it (Hugging Face's filter: no ASCII escaping, keys in order)."""
    return json.dumps(obj, ensure_ascii=False)


def tools_block(tools: list[dict]) -> str:
    """The system block listing `tools` (given in the template shape {"type": "function", "function": spec},
    or as bare specs): each spec {name, description, parameters} as JSON on its own line."""
    return TOOLS_HEAD + "".join("\n" + _dumps(t.get("function", t)) for t in tools) + TOOLS_TAIL


def format_call(name: str, arguments: dict | str) -> str:
    """One call: <tool_call>, the JSON {"name", "arguments"}, </tool_call> (arguments given as text are kept)."""
    args = arguments if isinstance(arguments, str) else _dumps(arguments)
    return f'{CALL_OPEN}\n{{"name": {_dumps(name)}, "arguments": {args}}}\n{CALL_CLOSE}'


def format_calls(content: str, calls: list[dict]) -> str:
    """An assistant turn's text with its calls (Hugging Face shape) after it, one block per line."""
    blocks = []
    for c in calls:
        f = c.get("function", c)
        blocks.append(format_call(f["name"], f["arguments"]))
    return (content + "\n" if content else "") + "\n".join(blocks)


def format_response(content: str) -> str:
    return f"{RESPONSE_OPEN}\n{content}\n{RESPONSE_CLOSE}"


def lower(messages: list[dict], tools: list[dict] | None) -> tuple[list[dict], list[int | None]]:
    """Messages with tools, calls and results → plain {role, content} messages in the built-in format,
    for a template that renders neither; and for each, the index of the message it came from
    (None for a system block made only of the tool list; the first result for merged results)."""
    out: list[dict] = []
    origin: list[int | None] = []
    rest = list(enumerate(messages))
    if tools:
        if messages and messages[0]["role"] == "system":
            out.append({"role": "system", "content": messages[0]["content"] + "\n\n" + tools_block(tools)})
            origin.append(0)
            rest = rest[1:]
        else:
            out.append({"role": "system", "content": tools_block(tools)})
            origin.append(None)
    prev_tool = False
    for i, m in rest:
        if m["role"] == "tool":
            text = format_response(m["content"])
            if prev_tool:
                out[-1] = {"role": "user", "content": out[-1]["content"] + "\n" + text}
            else:
                out.append({"role": "user", "content": text})
                origin.append(i)
        elif m.get("tool_calls"):
            out.append({"role": m["role"], "content": format_calls(m["content"], m["tool_calls"])})
            origin.append(i)
        else:
            out.append({"role": m["role"], "content": m["content"]})
            origin.append(i)
        prev_tool = m["role"] == "tool"
    return out, origin


# --- Jinja: the same format, for the built-in chatml and plain templates --------------------------

def _lit(text: str) -> str:
    """`text` as a Jinja expression (a JSON string literal is a valid Jinja one)."""
    return "{{ " + json.dumps(text) + " }}"


# the tool list, for `tools` (templates.py puts it in the system block)
JINJA_TOOLS_BLOCK = (_lit(TOOLS_HEAD) + "{% for t in tools %}" + _lit("\n")
                     + "{{ (t.function if t.function is defined else t) | tojson }}{% endfor %}" + _lit(TOOLS_TAIL))
# an assistant message `m` with tool_calls: its text, then one <tool_call> block per call
JINJA_CALLS = (
    "{% if m.content %}{{ m.content }}" + _lit("\n") + "{% endif %}"
    "{% for c in m.tool_calls %}{% if not loop.first %}" + _lit("\n") + "{% endif %}"
    "{% if c.function is defined %}{% set f = c.function %}{% else %}{% set f = c %}{% endif %}"
    + _lit(CALL_OPEN + '\n{"name": ') + "{{ f.name | tojson }}" + _lit(', "arguments": ')
    + "{% if f.arguments is string %}{{ f.arguments }}{% else %}{{ f.arguments | tojson }}{% endif %}"
    + _lit("}\n" + CALL_CLOSE) + "{% endfor %}"
)


# --- reading calls back -----------------------------------------------------------------------

_BLOCK = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(CALL_CLOSE) + r"|\Z)", re.DOTALL)
MISTRAL_MARK = "[TOOL_CALLS]"
LLAMA_TAG = "<|python_tag|>"


CALL_STYLES = {"hermes": "<tool_call> JSON blocks", "mistral": "a [TOOL_CALLS] JSON list",
               "llama3": 'a bare JSON object {"name", "parameters"}'}


def call_style(template: ChatTemplate | None) -> str:
    """How `template` writes calls: "hermes" (<tool_call> JSON blocks: the built-in format, Qwen, Hermes),
    "mistral" ([TOOL_CALLS] [...]) or "llama3" (a bare JSON object {"name", "parameters"})."""
    if template is None or not template.supports_tools:
        return "hermes"
    if MISTRAL_MARK in template.source:
        return "mistral"
    if CALL_OPEN in template.source:
        return "hermes"
    if '"parameters": ' in template.source:
        return "llama3"
    return "hermes"


def describe_tool_format(template: ChatTemplate) -> str:
    """One sentence for the log: how this template renders tool lists, calls and results."""
    if template.supports_tools:
        return (f"tools: chat template '{template.name}' renders the tool list, calls and results itself "
                f"(calls are read back from {CALL_STYLES[call_style(template)]})")
    return (f"tools: chat template '{template.name}' does not render tools; they are written in dianjing's "
            "built-in format (a system block listing them, calls as JSON in <tool_call></tool_call>, "
            "results in <tool_response></tool_response> user turns)")


def _new_id(k: int) -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _as_call(obj: object, new_id: Callable[[int], str], k: int) -> dict | None:
    """{"name": str, "arguments" (or "parameters"): object or its JSON text} → an OpenAI-style call."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    cid = obj.get("id") if isinstance(obj.get("id"), str) and obj.get("id") else new_id(k)
    return {"id": cid, "type": "function", "function": {"name": obj["name"], "arguments": _dumps(args)}}


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _parse_hermes(text: str, new_id) -> tuple[str, list[dict]]:
    calls: list[dict] = []
    kept: list[str] = []
    pos = 0
    for m in _BLOCK.finditer(text):
        call = _as_call(_loads(m.group(1)), new_id, len(calls))
        if call is None:
            continue  # not a well-formed call: it stays in the text
        kept.append(text[pos:m.start()])
        pos = m.end()
        calls.append(call)
    kept.append(text[pos:])
    return "".join(kept).strip(), calls


def _parse_mistral(text: str, new_id) -> tuple[str, list[dict]]:
    at = text.find(MISTRAL_MARK)
    if at < 0:
        return text.strip(), []
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[at + len(MISTRAL_MARK):].lstrip())
    except json.JSONDecodeError:
        return text.strip(), []
    items = obj if isinstance(obj, list) else [obj]
    calls = [_as_call(o, new_id, k) for k, o in enumerate(items)]
    if not calls or None in calls:
        return text.strip(), []
    return text[:at].strip(), calls


def _parse_llama3(text: str, new_id) -> tuple[str, list[dict]]:
    body = text.strip()
    body = body[len(LLAMA_TAG):].lstrip() if body.startswith(LLAMA_TAG) else body
    if not body.startswith("{"):
        return text.strip(), []
    try:
        obj, end = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError:
        return text.strip(), []
    call = _as_call(obj, new_id, 0)
    return (text.strip(), []) if call is None else (body[end:].strip(), [call])


def parse_tool_calls(text: str, template: ChatTemplate | None = None, *,
                     new_id: Callable[[int], str] = _new_id) -> tuple[str, list[dict]]:
    """Generated text → (content, calls), the calls OpenAI-style:
    {"id", "type": "function", "function": {"name", "arguments": JSON text of an object}}.

    The format is the one `template` writes (`call_style`): <tool_call> blocks (the built-in format, also
    for templates without tool support, which are given it, and for `template=None`; Qwen, Hermes),
    Mistral's `[TOOL_CALLS] [...]` or Llama 3's bare `{"name", "parameters"}`. A block that is not a
    JSON object with a "name" and object "arguments" is not a call: it stays in the content. A last
    <tool_call> block cut off before its </tool_call> (generation stopped there) still counts when its
    JSON is whole. `content` is the text without the calls, stripped; ids are kept from the text when it
    has them (Mistral), else made by `new_id(k)` ("call_" and 24 hex digits by default).
    """
    style = call_style(template)
    if style == "mistral":
        return _parse_mistral(text, new_id)
    if style == "llama3":
        return _parse_llama3(text, new_id)
    return _parse_hermes(text, new_id)
