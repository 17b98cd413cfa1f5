"""A data file's own field and role names → the keys the formats read, before the format is detected.

A file entry maps the keys a format reads (the canonical keys) onto the file's own names:

    columns: {instruction: question, output: answer}           # question/answer → alpaca
    columns: {input: context, output: response}                # Dolly → alpaca
    columns: {completion: response}                            # prompt/response → prompt_completion
    columns: {conversations: dialog, from: speaker, value: text}   # keys inside each turn too
    roles:   {user: customer, assistant: agent}                # role names inside the turns

Renaming happens record by record, before detection and parsing, so data/formats.py reads every
file as if it had been written with the canonical names. A mapped field that a record does not
have is a bad record, named by its place and the mapping key (`columns.output`), under the file's
data.on_error policy like any other.
"""

from __future__ import annotations

import difflib

from dianjing.data.readers import RawRecord
from dianjing.errors import ConfigError, DataError

# the keys a record (top level) can be given under another name
RECORD_KEYS = ("instruction", "input", "output", "system", "history", "conversations", "messages",
               "prompt", "completion", "chosen", "rejected", "tools")
# the keys inside one turn of a conversation (sharegpt reads from/value, messages role/content)
TURN_KEYS = ("role", "content", "from", "value")
COLUMN_KEYS = RECORD_KEYS + TURN_KEYS
# the fields whose value may be a list of turns (or, for chosen/rejected, one turn)
TURN_FIELDS = ("conversations", "messages", "prompt", "chosen", "rejected")
# canonical role → the role name written into the turn: observation and function are written as
# sharegpt's own names for tool results and tool calls
ROLE_NAMES = {"user": "user", "assistant": "assistant", "system": "system",
              "observation": "observation", "function": "function_call", "tool": "tool"}


def mapping_problem(columns: dict | None, roles: dict | None) -> str | None:
    """What is wrong with a mapping (a key no format reads, an empty name), for the config's check; else None."""
    for what, known, mapping in (("columns", COLUMN_KEYS, columns), ("roles", tuple(ROLE_NAMES), roles)):
        for key, own in (mapping or {}).items():
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                return (f"{what}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                        + f"; the keys are {', '.join(known)}, each mapped onto the file's own name, "
                          f"e.g. {what}: {{{known[1]}: my_name}}")
            if not isinstance(own, str) or not own:
                return f"{what}.{key}: expected the file's own name for it, got {own!r}"
    return None


class ColumnMap:
    """The renaming of one file entry, applied to each of its records."""

    def __init__(self, columns: dict[str, str] | None = None, roles: dict[str, str] | None = None):
        problem = mapping_problem(columns, roles)
        if problem:
            raise ConfigError(problem, fix="docs/data-formats.md, 'Column mappings', lists the keys")
        pairs = {k: v for k, v in (columns or {}).items() if k != v}  # a key mapped onto itself is no rename
        self.record = {k: v for k, v in pairs.items() if k in RECORD_KEYS}
        self.turn = {k: v for k, v in pairs.items() if k in TURN_KEYS}
        self.roles = {own: ROLE_NAMES[k] for k, own in (roles or {}).items()}  # the file's name → canonical

    def __bool__(self) -> bool:
        return bool(self.record or self.turn or self.roles)

    def describe(self) -> str:
        """The mapping as the log shows it, e.g. "output ← answer, user ← human"."""
        pairs = [f"{k} ← {v}" for k, v in {**self.record, **self.turn}.items()]
        pairs += [f"{canon} ← {own}" for own, canon in self.roles.items()]
        return ", ".join(pairs)

    def apply(self, rec: RawRecord) -> RawRecord:
        """The record with its fields renamed (a new record; the original is not changed)."""
        if not self or not isinstance(rec.data, dict):
            return rec  # not an object: the format's reader says so, with its place
        d = rec.data
        for key, own in self.record.items():
            if own not in d:
                raise _missing(rec, f"columns.{key}", own, "this record does not have", d)
        sources = set(self.record.values())
        out = {k: v for k, v in d.items() if k not in sources}
        out.update({key: d[own] for key, own in self.record.items()})
        if self.turn or self.roles:
            for field in TURN_FIELDS:
                value = out.get(field)
                if isinstance(value, list):
                    out[field] = [self._turn(rec, f"{field}[{k}]", t) for k, t in enumerate(value)]
                elif isinstance(value, dict) and field in ("chosen", "rejected"):  # one message (LLaMA-Factory)
                    out[field] = self._turn(rec, field, value)
        return RawRecord(out, rec.file, rec.line, rec.unit)

    def _turn(self, rec: RawRecord, where: str, turn: object) -> object:
        if not isinstance(turn, dict):
            return turn  # the format's reader names the turn that is not an object
        for key, own in self.turn.items():
            if own not in turn:
                raise _missing(rec, f"columns.{key}", own, f"turn {where} does not have", turn)
        sources = set(self.turn.values())
        out = {k: v for k, v in turn.items() if k not in sources}
        out.update({key: turn[own] for key, own in self.turn.items()})
        if self.roles:
            role_key = "role" if "role" in out else "from"
            who = out.get(role_key)
            if isinstance(who, str) and who in self.roles:
                out[role_key] = self.roles[who]
        return out


def _missing(rec: RawRecord, key: str, own: str, what: str, obj: dict) -> DataError:
    shown = sorted(map(str, obj))
    listed = ", ".join(shown[:12]) + (", …" if len(shown) > 12 else "")
    return rec.error(f"{key} names the field '{own}', which {what}",
                     fix=f"its fields are: {listed}; correct {key} in this file's data.files entry (or --columns)")
