"""What every specialist reader shares: the example types, the report, positions, and the checker
through which each rejection (stop or skip, per on_error) and each repair (always counted) goes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from dianjing.data.bad_records import BadRecords, Tally
from dianjing.data.readers import RawRecord, read_records
from dianjing.errors import DataError

MAX_SAMPLES = 3  # places and messages kept per reason

# rejection reasons shared by the readers of records
NOT_OBJECT = "record is not an object"
UNREADABLE = "unreadable line"


@dataclass
class TextExample:
    """classify (text_b None) and pair."""
    where: str              # "file:line" / "file record N"
    text: str
    text_b: str | None = None
    label: str | None = None


@dataclass
class TagExample:
    where: str              # file and line of the sentence's first token / its record
    tokens: list[str]
    tags: list[str] | None = None


@dataclass
class QAExample:
    where: str
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]  # (text, char start in context); empty only when labels are not required


@dataclass
class ReadReport:
    """The files read, the examples kept, and every rejection and repair by reason with the first
    few places of each (rejections are counted only with on_error="skip"; with "stop" they raise)."""

    files: list[str] = field(default_factory=list)
    kept: int = 0
    rejections: Tally = field(default_factory=lambda: Tally(MAX_SAMPLES))
    repairs: Tally = field(default_factory=lambda: Tally(MAX_SAMPLES))

    @property
    def rejected(self) -> Counter:
        return self.rejections.counts

    @property
    def fixed(self) -> Counter:
        return self.repairs.counts

    @property
    def samples(self) -> dict[str, list[str]]:
        """reason -> the first "where: detail" of its rejections or repairs."""
        return {**self.rejections.examples, **self.repairs.examples}

    def summary(self) -> dict:
        return {"files": list(self.files), "kept": self.kept,
                "rejected": dict(self.rejected.most_common()), "fixed": dict(self.fixed.most_common()),
                "samples": {k: list(v) for k, v in self.samples.items()}}

    def lines(self) -> list[str]:
        """The log lines: what was read, then one line per rejection or repair reason with its places."""
        out = [f"read {self.kept} example{'s' if self.kept != 1 else ''} from "
               + ", ".join(self.files)]
        for kind, tally in (("rejected", self.rejections), ("fixed", self.repairs)):
            for reason, n in tally.counts.most_common():
                places = tally.places.get(reason, [])
                more = ", …" if n > len(places) else ""
                out.append(f"{kind} {n}: {reason} ({', '.join(places)}{more})")
        return out


@dataclass(frozen=True)
class Position:
    """Where a record is: its file and line, or (line None) a record number or JSON path in `where`."""

    file: str
    line: int | None
    where: str

    @classmethod
    def of_record(cls, rec: RawRecord) -> Position:
        return cls(rec.file, rec.line if rec.unit == "line" else None, rec.where)

    @classmethod
    def at_line(cls, file: str, line: int) -> Position:
        return cls(file, line, f"{file}:{line}")

    @classmethod
    def named(cls, where: str) -> Position:
        """An example's `where`, as kept in the example (used when checking examples already read)."""
        return cls(where, None, where)

    def error(self, message: str, field: str | None, fix: str | None) -> DataError:
        if self.line is not None:
            return DataError(message, file=self.file, line=self.line, field=field, fix=fix)
        return DataError(message, file=self.where, field=field, fix=fix)


class Checker:
    """The one way a specialist reader rejects or repairs: rejections go to BadRecords (stop raises,
    skip counts in report.rejections); repairs are always made and counted in report.repairs."""

    def __init__(self, report: ReadReport, on_error: str):
        self.report = report
        self.bad = BadRecords(on_error, tally=report.rejections)
        self.ids: Counter[str] = Counter()  # extract-qa: ids seen, to rename duplicates

    def reject(self, reason: str, pos: Position, *, field: str | None = None, detail: str | None = None,
               fix: str | None = None) -> None:
        """on_error=stop: raise; skip: count. The caller drops the record after this returns."""
        message = reason if detail is None else f"{reason}: {detail}"
        self.bad.handle(pos.error(message, field, fix), reason=reason, message=message)

    def fixed(self, reason: str, pos: Position, detail: str | None = None) -> None:
        self.report.repairs.add(reason, pos.where, detail or reason)

    def unreadable(self, errors: list[DataError]) -> None:
        """Lines the reader itself could not parse (JSONL with on_error=skip)."""
        for e in errors:
            self.bad.handle(e, reason=UNREADABLE)


def find_key(keys: list[str], name: str) -> str | None:
    """The key named `name`, matched exactly or else ignoring case."""
    if name in keys:
        return name
    for k in keys:
        if k.lower() == name.lower():
            return k
    return None


def first_key(keys: list[str], names) -> str | None:
    """The first of `names` that is a key (see find_key)."""
    for n in names:
        k = find_key(keys, n)
        if k is not None:
            return k
    return None


def str_keys(data: dict) -> list[str]:
    return [k for k in data if isinstance(k, str)]


def as_text(value: object) -> str | None:
    """A text value: strings as they are, numbers as str(); None for anything else."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def objects(path: str, checker: Checker, fix: str) -> Iterator[tuple[RawRecord, Position, dict]]:
    """(record, position, mapping) for each record that is an object; others rejected, unreadable lines noted."""
    errors: list[DataError] = []
    for rec in read_records(path, checker.bad.policy, errors):
        pos = Position.of_record(rec)
        if not isinstance(rec.data, dict):
            checker.reject(NOT_OBJECT, pos, detail=f"got {type(rec.data).__name__}", fix=fix)
            continue
        yield rec, pos, rec.data
    checker.unreadable(errors)
