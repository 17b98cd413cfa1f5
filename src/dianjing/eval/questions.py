"""Question sets for `dianjing judge` (and `dianjing eval`): one shape, read from the formats people have.

    Question(id, category, turns, references)   turns: the user's messages, one per turn;
                                                references: an answer per turn, where the set has one

Formats, detected from the first record's keys (the log says which):

* **MT-Bench** (`question.jsonl` of FastChat's llm_judge): `{question_id, category, turns: [...],
  reference: [...]}`, reference optional. dianjing's own set, `builtin:questions`
  (src/dianjing/assets/questions.jsonl), is written in it, with two fields of its own: `lang`, and
  `short_answer`, the key answer of a turn ("玉山" where the reference says "台灣最高的山是玉山，主峰海拔
  3,952 公尺。"), which `dianjing eval` scores exact match, F1 and contains-the-answer against.
* **self-instruct's user-oriented instructions** (`user_oriented_instructions.jsonl`):
  `{id, motivation_app, instruction, instances: [{input, output}]}`. Each instance is a question
  (its input after the instruction, its output the reference); the app is the category; ids get
  `#k` when a task has several instances.
* **any instruction file** dianjing reads (alpaca, sharegpt, messages, prompt/completion; JSONL, JSON,
  CSV, Parquet): the user turns are the turns, the assistant turns the references.

A record with a missing or wrong field (no `turns`, an empty question, a reference that is not text,
an id seen before) stops the read with its file:line, or with on_error=skip is counted by reason;
a question without a category is kept under "(none)" and counted.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from dianjing.data.bad_records import BadRecords, Tally
from dianjing.data.readers import RawRecord, read_records
from dianjing.errors import DataError

NO_CATEGORY = "(none)"
FORMATS = ("mt-bench", "self-instruct", "chat")
# categories whose questions have one right answer: single grading and pairwise judging show the judge
# the reference (MT-Bench's NEED_REF_CATS, with this set's "maths")
REFERENCE_CATEGORIES = frozenset({"math", "maths", "reasoning", "coding", "arena-hard-200"})


@dataclass(frozen=True)
class Question:
    id: str
    category: str
    turns: tuple[str, ...]
    references: tuple[str, ...] | None = None  # one per turn (or fewer: the first turns'), when given
    where: str = ""
    lang: str | None = None
    short_answers: tuple[str, ...] | None = None  # the key answer of each turn ("玉山"), for EM / F1 / contains

    def short_answer(self, turn: int) -> str | None:
        if self.short_answers and turn < len(self.short_answers) and self.short_answers[turn].strip():
            return self.short_answers[turn]
        return None

    def reference(self, turn: int) -> str | None:
        """The reference answer of turn `turn` (0-based), if the set has one."""
        if self.references and turn < len(self.references) and self.references[turn].strip():
            return self.references[turn]
        return None


@dataclass
class QuestionReport:
    path: str
    format: str = ""
    records: int = 0
    kept: int = 0
    skipped: Tally = field(default_factory=Tally)
    notes: Counter = field(default_factory=Counter)  # kept, but said: "no category", …

    def summary(self) -> dict:
        return {"path": self.path, "format": self.format, "records": self.records, "kept": self.kept,
                "skipped": dict(self.skipped.counts), "skipped_examples": self.skipped.first(5),
                "notes": dict(self.notes)}


def detect(rec: RawRecord) -> str:
    """The question format of a record: mt-bench, self-instruct, or chat (an instruction file)."""
    if isinstance(rec.data, dict):
        keys = set(rec.data)
        if "turns" in keys:
            return "mt-bench"
        if "instances" in keys or "motivation_app" in keys:
            return "self-instruct"
    return "chat"


def _text(rec: RawRecord, name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        what = "missing" if value is None else "empty" if isinstance(value, str) else \
            f"expected text, got {type(value).__name__}"
        raise rec.error(what, field=name)
    return value


def _id(rec: RawRecord, name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or str(value).strip() == "":
        raise rec.error("missing" if value is None else f"expected a number or text, got {value!r}"[:80],
                        field=name, fix="every question needs an id (answers and judgments are matched by it)")
    return str(value)


def _category(rec: RawRecord, value: object, notes: Counter) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        notes["no category: kept under (none)"] += 1
        return NO_CATEGORY
    if not isinstance(value, str):
        raise rec.error(f"expected text, got {type(value).__name__}", field="category")
    return value.strip()


def from_mt_bench(rec: RawRecord, notes: Counter) -> list[Question]:
    d = rec.data
    turns = d.get("turns")
    if not isinstance(turns, list) or not turns:
        raise rec.error("missing" if turns is None else "expected a non-empty list of questions", field="turns")
    turns = [_text(rec, f"turns[{k}]", t) for k, t in enumerate(turns)]
    ref = d.get("reference")
    if isinstance(ref, str):
        ref = [ref]
    if ref is not None:
        if not isinstance(ref, list) or len(ref) > len(turns):
            raise rec.error(f"expected a list of at most {len(turns)} answers (one per turn)", field="reference")
        ref = [_text(rec, f"reference[{k}]", r) for k, r in enumerate(ref)]
    short = _per_turn(rec, "short_answer", d.get("short_answer"), len(turns))
    lang = d.get("lang")
    return [Question(_id(rec, "question_id", d.get("question_id")), _category(rec, d.get("category"), notes),
                     tuple(turns), tuple(ref) if ref else None, rec.where, lang if isinstance(lang, str) else None,
                     short)]


def _per_turn(rec: RawRecord, name: str, value: object, turns: int) -> tuple[str, ...] | None:
    """An optional text per turn: a string (the first turn's) or a list of at most `turns` texts ("" for none)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > turns or not all(isinstance(v, str) for v in value):
        raise rec.error(f"expected a text, or a list of at most {turns} texts (one per turn)", field=name)
    return tuple(value)


def from_self_instruct(rec: RawRecord, notes: Counter) -> list[Question]:
    d = rec.data
    qid = _id(rec, "id", d.get("id"))
    instruction = _text(rec, "instruction", d.get("instruction"))
    category = _category(rec, d.get("motivation_app"), notes)
    instances = d.get("instances")
    if instances is None:
        instances = [{}]
        notes["no instances: the instruction alone, no reference"] += 1
    if not isinstance(instances, list) or not instances:
        raise rec.error("expected a non-empty list of {input, output}", field="instances")
    out = []
    for k, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise rec.error("expected {input, output}", field=f"instances[{k}]")
        inp, output = inst.get("input") or "", inst.get("output")
        if not isinstance(inp, str) or (output is not None and not isinstance(output, str)):
            raise rec.error("input and output must be text", field=f"instances[{k}]")
        turn = f"{instruction}\n\n{inp}" if inp.strip() else instruction
        ref = (output,) if output and output.strip() else None
        out.append(Question(qid if len(instances) == 1 else f"{qid}#{k + 1}", category, (turn,), ref, rec.where))
    return out


def read_questions(path: str, on_error: str = "skip", log=print) -> tuple[list[Question], QuestionReport]:
    """The questions of one file (MT-Bench, self-instruct or an instruction file), with what was skipped."""
    report = QuestionReport(path)
    bad = BadRecords(on_error, tally=report.skipped, skip_hint="use --on-error skip to skip such questions "
                                                                "(they are counted)")
    errors: list[DataError] = []
    out: list[Question] = []
    seen: dict[str, str] = {}
    records = read_records(path, on_error, errors)
    first = next(records, None)
    if first is None and not errors:
        raise DataError(f"{path} holds no questions", fix="give a question file (docs/evaluation.md)")
    report.format = detect(first) if first is not None else "mt-bench"
    if report.format == "chat":
        return _from_instruction_file(path, on_error, report, log)
    log(f"{path}: question format '{report.format}', detected from the keys of {first.where}")
    read = from_mt_bench if report.format == "mt-bench" else from_self_instruct
    for rec in itertools.chain([first], records) if first is not None else ():  # lazily: stop at the first bad one
        report.records += 1
        try:
            if not isinstance(rec.data, dict):
                raise rec.error(f"expected an object, got {type(rec.data).__name__}")
            notes: Counter = Counter()  # said only for the questions that are kept
            got = read(rec, notes)
            for q in got:
                if q.id in seen:
                    raise rec.error(f"question id {q.id!r} is already used at {seen[q.id]}", field="id")
            seen.update((q.id, rec.where) for q in got)
            out += got
            report.notes.update(notes)
        except DataError as e:
            bad.handle(e)
    for e in errors:  # lines the reader could not parse (skip)
        report.records += 1
        bad.handle(e)
    report.kept = len(out)
    _say(report, log)
    if not out:
        raise DataError(f"no usable question in {path}", fix="see the skipped records above")
    return out, report


def _from_instruction_file(path: str, on_error: str, report: QuestionReport, log) -> tuple[list[Question], QuestionReport]:
    """An instruction file: each conversation is a question, its user turns the turns, its answers the references."""
    from dianjing.config import DataConfig, DataFile
    from dianjing.data.load import load_conversations

    convs, load = load_conversations(DataConfig(files=[DataFile(path=path)], on_error=on_error), log=log)
    report.format = f"chat ({load.files[0]['format']})"
    report.records = load.files[0]["records"]
    report.skipped = load.skips
    out = []
    for k, conv in enumerate(convs, 1):
        users = tuple(m.content for m in conv.messages if m.role == "user")
        answers = tuple(m.content for m in conv.messages if m.role == "assistant" and not m.tool_calls)
        if conv.has_tools or len(answers) != len(users):
            report.skipped.add("uses tools (not judged)", conv.source)
            continue
        qid = conv.source.rsplit(":", 1)[-1].rsplit(" ", 1)[-1] or str(k)  # the record's line (or number)
        out.append(Question(qid, NO_CATEGORY, users, answers, conv.source))
    report.kept = len(out)
    report.notes["no category: kept under (none)"] += len(out)
    _say(report, log)
    if not out:
        raise DataError(f"no usable question in {path}", fix="see the skipped records above")
    return out, report


def _say(report: QuestionReport, log) -> None:
    log(f"{report.path}: {report.kept} questions from {report.records} records"
        + (f"; {report.skipped.summary()}" if report.skipped.total else "")
        + "".join(f"; {n} × {why}" for why, n in report.notes.items()))
