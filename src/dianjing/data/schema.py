"""The one in-memory shape every data format is turned into.

Tool calling (see docs/data-formats.md, "Tool calls"): an assistant message may carry
`tool_calls` (each with an id, the function's name and its arguments as a dict), a `tool`
message is the result of one call (`tool_call_id` and `name` say which), and a conversation
may list the `tools` it offers, as JSON-schema function specs ({name, description, parameters}).
`as_dicts` and `tool_specs` give them in the shape Hugging Face chat templates expect.

Reasoning (see docs/templates.md): an assistant message may carry the reasoning that came before its
answer, read from an OpenAI-style `reasoning_content` (or `reasoning`) field or from a
`<think>…</think>` block that opens its content. It is kept apart from `content` (the answer), and
data/locate.py gives it to each template the way that template takes it (data.reasoning says which
turns keep it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict  # parsed from the record's JSON

    def as_dict(self) -> dict:
        """The Hugging Face / OpenAI shape, with the arguments as a dict (as chat templates want them)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    train: bool = True  # for assistant turns: is this turn supervised (e.g. loss_weight 0 → False)
    tool_calls: tuple[ToolCall, ...] = ()  # assistant turns: the calls it makes (content may then be "")
    tool_call_id: str | None = None  # tool results: the id of the call this answers
    name: str | None = None  # tool results: the name of the function that was called
    reasoning: str = ""  # assistant turns: the reasoning before the answer (without its <think> tags)

    def as_dict(self) -> dict:
        """{role, content}, plus tool_calls on a calling turn and tool_call_id/name on a tool result."""
        d: dict = {"role": self.role, "content": self.content}
        if self.tool_calls:  # only when there are some: templates test `'tool_calls' in message`
            d["tool_calls"] = [c.as_dict() for c in self.tool_calls]
        if self.role == "tool":
            d["tool_call_id"] = self.tool_call_id
            d["name"] = self.name
        return d


@dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]
    source: str = ""  # "file:line", for messages about this example
    meta: dict = field(default_factory=dict, compare=False)
    tools: tuple[dict, ...] | None = None  # function specs {name, description, parameters}; None: not given

    def as_dicts(self) -> list[dict]:
        return [m.as_dict() for m in self.messages]

    def tool_specs(self) -> list[dict] | None:
        """The tools as chat templates take them ({"type": "function", "function": spec}), or None."""
        if not self.tools:
            return None
        return [{"type": "function", "function": t} for t in self.tools]

    @property
    def has_tools(self) -> bool:
        """Does rendering this conversation involve tools (a tool list, a call or a result)?"""
        return bool(self.tools) or any(m.tool_calls or m.role == "tool" for m in self.messages)
