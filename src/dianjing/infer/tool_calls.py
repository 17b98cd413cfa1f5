"""Tool calls in `dianjing serve`: rendering a request's tools as training rendered them, the call
opening a forced `tool_choice` pre-fills, and reading calls back from the generated text, whole or
as it streams.

Rendering is `data.render.template_input`, the function training renders with: the run's template
with the tools when it renders them (`supports_tools`), else the conversation lowered into the
built-in tool format. The generated text is read with `data.tools.parse_tool_calls` in the
template's call style, one block at a time, by `CallStream`; a whole answer is the same stream fed
in one piece (`answer`), so a streamed answer's deltas add up to the non-streamed one. A call is
sent only once its block is complete and checked, so nothing sent is ever taken back: a block that
is not a valid call (bad JSON, a function the request did not list) is sent as text instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from dianjing.data.render import template_input
from dianjing.data.schema import Conversation, Message, ToolCall
from dianjing.data.templates import ChatTemplate
from dianjing.data.tools import CALL_CLOSE, CALL_OPEN, LLAMA_TAG, MISTRAL_MARK, call_style, parse_tool_calls


@dataclass(frozen=True)
class ToolPlan:
    """What a request asks about tools, checked: its function specs, `tool_choice` ("auto", "none",
    "required" or "function" with `name`) and `parallel_tool_calls`."""

    specs: tuple[dict, ...]
    choice: str = "auto"
    name: str | None = None
    parallel: bool = True

    @property
    def parse(self) -> bool:
        """Is the answer read for calls? (Not with tool_choice "none": it is plain text.)"""
        return self.choice != "none"

    @property
    def names(self) -> set[str]:
        return {t["name"] for t in self.specs}

    @property
    def keep(self) -> int | None:
        """How many calls an answer keeps: one when parallel calls are off or a function is forced."""
        return 1 if self.choice == "function" or not self.parallel else None


# --- the prompt -------------------------------------------------------------------------------------


def render(template: ChatTemplate, conv: Conversation, add_generation_prompt: bool = True) -> str:
    """The conversation's text exactly as training renders it (tools lowered for a template without them)."""
    msgs, tools, _ = template_input(conv, template)
    if tools is None:
        return template.render(msgs, add_generation_prompt=add_generation_prompt)
    return template.render(msgs, add_generation_prompt=add_generation_prompt, tools=tools)


PROBE_NAME, PROBE_KEY = "dj_probe_function", "dj_probe_key"


def call_opening(template: ChatTemplate, conv: Conversation, name: str | None) -> str | None:
    """The text an assistant turn of `conv` starts with when it calls `name` (None: some function), up to
    where the model's choice begins: the arguments (`name` given) or the function's name. Found by
    rendering the conversation with such a call after it, as training would; None when this template's
    calls cannot be cut there (the text is not a prefix of the call, or the call is written otherwise).

    The opening ends before whitespace (`<tool_call>\\n{"name": "f", "arguments":`), where tokenizers
    split words, so its tokens are those of the same text inside a whole trained answer."""
    call = ToolCall("call00000", name or PROBE_NAME, {PROBE_KEY: 0})
    with_call = replace(conv, messages=conv.messages + (Message("assistant", "", tool_calls=(call,)),))
    try:
        head, full = render(template, conv), render(template, with_call, add_generation_prompt=False)
    except Exception:  # noqa: BLE001  a template that cannot render the probe: the choice is refused
        return None
    if not full.startswith(head):
        return None
    turn = full[len(head):]
    if name is None:
        at = turn.find(PROBE_NAME)
        cut = turn[:at].rstrip().removesuffix('"') if at > 0 and PROBE_KEY not in turn[:at] else ""
    else:
        at = turn.find(f'"{PROBE_KEY}"')
        at = turn.rfind("{", 0, at) if at > 0 else -1
        cut = turn[:at] if at > 0 and f'"{name}"' in turn[:at] else ""
    cut = cut.rstrip()
    return cut if cut.strip() else None


# --- reading calls back -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    """Text of the answer, outside any call."""

    text: str


@dataclass(frozen=True)
class Call:
    """A checked call, OpenAI-style: {"id", "type": "function", "function": {"name", "arguments"}}."""

    index: int
    call: dict


def _held(text: str, marker: str) -> int:
    """How many characters at the end of `text` could be the start of `marker` (held back)."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


class CallStream:
    """Generated text in, `Content` and `Call` pieces out, in the template's call style (`call_style`).

    hermes (`<tool_call>` blocks: the built-in format, Qwen): text outside blocks streams as it comes,
    less any tail that may begin `<tool_call>`; a block is held until `</tool_call>` (or the end) and
    then read. mistral (`[TOOL_CALLS] [...]`): text before the marker streams; everything from it on is
    read at the end. llama3 (a bare JSON object): an answer that starts with `{` or `<|python_tag|>` is
    read at the end, any other streams. A call to a function not in `names` is text; beyond `keep`
    calls, later ones are dropped. Content is stripped at both ends as `parse_tool_calls` strips it.
    """

    def __init__(self, template: ChatTemplate | None, names: set[str], keep: int | None = None,
                 new_id: Callable[[int], str] | None = None):
        self.template, self.names, self.keep, self.new_id = template, names, keep, new_id
        self.style = call_style(template)
        self.buf = ""  # text not yet given out
        self.held = False  # in a block (hermes), after the marker (mistral), a JSON answer (llama3)
        self.decided = self.style != "llama3"  # llama3: is the answer a JSON object? known at its first text
        self.calls = 0
        self.started, self.ws = False, ""  # content: has it begun; whitespace held at its end

    def push(self, piece: str) -> list[Content | Call]:
        self.buf += piece
        if self.style == "hermes":
            return self._hermes()
        if self.style == "mistral":
            return self._until(MISTRAL_MARK)
        return self._llama3()

    def finish(self) -> list[Content | Call]:
        """What was held back: the last block or the held answer, read; a partial marker as text."""
        text, self.buf = self.buf, ""
        if self.held and self.style != "hermes":
            content, calls = self._read(text)
            if calls:
                return self._emit(calls) + self._content(content)
            return self._content(text)
        return self._block(text) if self.held else self._content(text)

    # --- the styles ---

    def _hermes(self) -> list[Content | Call]:
        out: list[Content | Call] = []
        while True:
            if not self.held:
                at = self.buf.find(CALL_OPEN)
                if at < 0:
                    return out + self._until_partial(CALL_OPEN)
                out += self._content(self.buf[:at])
                self.buf, self.held = self.buf[at:], True
            end = self.buf.find(CALL_CLOSE, len(CALL_OPEN))
            if end < 0:
                return out
            end += len(CALL_CLOSE)
            block, self.buf, self.held = self.buf[:end], self.buf[end:], False
            out += self._block(block)

    def _until(self, marker: str) -> list[Content | Call]:
        if self.held:
            return []
        at = self.buf.find(marker)
        if at < 0:
            return self._until_partial(marker)
        out = self._content(self.buf[:at])
        self.buf, self.held = self.buf[at:], True
        return out

    def _llama3(self) -> list[Content | Call]:
        if not self.decided:
            start = self.buf.lstrip()
            if not start or (len(start) < len(LLAMA_TAG) and LLAMA_TAG.startswith(start)):
                return []  # nothing yet, or maybe the start of the tag: wait for more
            self.decided, self.held = True, start.startswith(("{", LLAMA_TAG))
        if self.held:
            return []
        text, self.buf = self.buf, ""
        return self._content(text)

    # --- pieces ---

    def _until_partial(self, marker: str) -> list[Content | Call]:
        keep = _held(self.buf, marker)
        text, self.buf = self.buf[:len(self.buf) - keep], self.buf[len(self.buf) - keep:]
        return self._content(text)

    def _read(self, text: str) -> tuple[str, list[dict]]:
        """`parse_tool_calls` on `text`; calls to a function the request did not list make it text."""
        new_id = None if self.new_id is None else (lambda k: self.new_id(self.calls + k))
        content, calls = parse_tool_calls(text, self.template, **({} if new_id is None else {"new_id": new_id}))
        if any(c["function"]["name"] not in self.names for c in calls):
            return text, []
        return content, calls

    def _block(self, block: str) -> list[Content | Call]:
        _, calls = self._read(block)
        return self._emit(calls) if calls else self._content(block)

    def _emit(self, calls: list[dict]) -> list[Content | Call]:
        out: list[Content | Call] = []
        for c in calls:
            if self.keep is None or self.calls < self.keep:
                out.append(Call(self.calls, c))
            self.calls += 1
        return out

    def _content(self, text: str) -> list[Content | Call]:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        body = text.rstrip()
        if not body:
            self.ws += text
            return []
        out, self.ws = self.ws + body, text[len(body):]
        return [Content(out)]


def answer(text: str, template: ChatTemplate | None, plan: ToolPlan,
           new_id: Callable[[int], str] | None = None) -> tuple[str | None, list[dict]]:
    """A whole answer → (content, calls): the content None when there are calls and no text."""
    s = CallStream(template, plan.names, plan.keep, new_id)
    pieces = s.push(text) + s.finish()
    content = "".join(p.text for p in pieces if isinstance(p, Content))
    calls = [p.call for p in pieces if isinstance(p, Call)]
    return (content or None) if calls else content, calls


class ToolDeltas:
    """One streamed choice as OpenAI chat deltas: {"content": …} for text; for each call a first delta
    with its index, id, type and name (arguments ""), then one with its arguments."""

    def __init__(self, template: ChatTemplate | None, plan: ToolPlan):
        self.stream = CallStream(template, plan.names, plan.keep)
        self.called = False

    def push(self, piece: str) -> list[dict]:
        return self._deltas(self.stream.push(piece))

    def finish(self) -> list[dict]:
        return self._deltas(self.stream.finish())

    def reason(self, reason: str) -> str:
        return "tool_calls" if self.called else reason

    def _deltas(self, pieces: list[Content | Call]) -> list[dict]:
        out = []
        for p in pieces:
            if isinstance(p, Content):
                out.append({"content": p.text})
                continue
            self.called = True
            f = p.call["function"]
            out.append({"tool_calls": [{"index": p.index, "id": p.call["id"], "type": "function",
                                        "function": {"name": f["name"], "arguments": ""}}]})
            out.append({"tool_calls": [{"index": p.index, "function": {"arguments": f["arguments"]}}]})
        return out
