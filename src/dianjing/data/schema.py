"""The one in-memory shape every data format is turned into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    train: bool = True  # for assistant turns: is this turn supervised (e.g. loss_weight 0 → False)


@dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]
    source: str = ""  # "file:line", for messages about this example
    meta: dict = field(default_factory=dict, compare=False)

    def as_dicts(self) -> list[dict]:
        return [{"role": m.role, "content": m.content} for m in self.messages]
