"""One way to handle a record that cannot be used: stop on it, or skip it and count it by reason.

Every reader (data.load for the chat formats, generalist.mix for task files, the specialist
readers) turns a bad record into a DataError naming its file, line (or record) and field, and
hands it to BadRecords:

    bad = BadRecords(cfg.on_error)               # "stop" or "skip"
    try:
        ...
    except DataError as e:
        bad.handle(e)                            # stop: raises; skip: counted under its reason
    log(bad.summary())                           # "skipped 4 records: 3 × field 'output': missing; 1 × ..."

With "stop" the first bad record raises, its fix saying how to skip such records instead.
With "skip" nothing is dropped silently: each record is counted under a reason (the error's
field and message without its place, so one cause is one line however many records share it),
and the first few places and messages of each reason are kept to show the user.

A Tally is the counting half on its own: the specialist readers also count the repairs they
make with one, and one Tally can be shared by checks that run under different policies.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from dianjing.errors import DataError

POLICIES = ("stop", "skip")
EXAMPLES_PER_REASON = 3
REASON_WIDTH = 80
SKIP_HINT = "set data.on_error=skip to skip bad records (they are counted)"


def where_of(err: DataError) -> str:
    """The place an error names: "file:line", "file record N", or "" when it names none."""
    if err.file is None:
        return ""
    return f"{err.file}:{err.line}" if err.line is not None else str(err.file)


def reason_of(err: DataError, width: int = REASON_WIDTH) -> str:
    """What a skip is counted under: the field and the first line of the message, no place."""
    text = err.detail.splitlines()[0] if err.detail else ""
    if len(text) > width:
        text = text[: width - 1] + "…"
    return (f"field '{err.field}': " if err.field else "") + text


@dataclass
class Tally:
    """Records counted by reason, with the place and message of the first few of each reason."""

    per_reason: int = EXAMPLES_PER_REASON
    counts: Counter = field(default_factory=Counter)               # reason -> records
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> first "where: message"
    places: dict[str, list[str]] = field(default_factory=dict)    # reason -> where of those examples

    def add(self, reason: str, where: str = "", message: str | None = None) -> None:
        """Count one record under `reason`; keep its place and message if it is among the first few."""
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.per_reason:
            text = reason if message is None else message
            shown.append(f"{where}: {text}" if where else text)
            self.places.setdefault(reason, []).append(where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def first(self, n: int) -> list[str]:
        """Up to n kept examples, reason by reason in the order the reasons were first seen."""
        return [e for shown in self.examples.values() for e in shown][:n]

    def summary(self, verb: str = "skipped", top: int = 3) -> str:
        """One line for the log, e.g. "skipped 4 records: 3 × field 'output': missing; 1 × ..."."""
        n = self.total
        parts = [f"{c} × {r}" for r, c in self.counts.most_common(top)]
        more = "; …" if len(self.counts) > top else ""
        return f"{verb} {n} record{'s' if n != 1 else ''}" + (": " + "; ".join(parts) + more if parts else "")


class BadRecords:
    """Stop on a bad record (policy "stop") or count it in a Tally (policy "skip")."""

    def __init__(self, policy: str, *, tally: Tally | None = None, skip_hint: str = SKIP_HINT):
        if policy not in POLICIES:
            raise ValueError(f"on_error must be 'stop' or 'skip', not {policy!r}")
        self.policy = policy
        self.tally = tally if tally is not None else Tally()
        self.skip_hint = skip_hint  # how to choose "skip" instead, naming the setting

    @property
    def counts(self) -> Counter:
        return self.tally.counts

    def handle(self, err: DataError, *, reason: str | None = None, message: str | None = None) -> None:
        """stop: raise `err` again, its fix also saying how to skip such records. skip: count it.

        `reason` groups the count (default: reason_of(err)); `message` is what is kept to show
        after the error's place (default: "field 'f': " and the error's message). The caller
        drops the record after this returns.
        """
        if self.policy == "stop":
            fix = f"{err.fix}; or {self.skip_hint}" if err.fix else f"fix the record, or {self.skip_hint}"
            raise DataError(err.detail, file=err.file, line=err.line, field=err.field, fix=fix) from None
        if message is None:
            message = (f"field '{err.field}': " if err.field else "") + (err.detail.splitlines() or [""])[0]
        self.tally.add(reason if reason is not None else reason_of(err), where_of(err), message)

    def summary(self) -> str:
        return self.tally.summary()
