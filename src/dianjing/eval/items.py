"""What `dianjing eval` scores a chat run on: items of a prompt, a reference answer and maybe options.

    EvalItem(messages, reference, options)   messages: everything before the reference answer

Read from an instruction file in any format dianjing reads (data/load.py: alpaca, sharegpt,
messages, prompt/completion; JSONL, JSON, CSV, Parquet; with a column mapping), where the last
assistant turn is the reference and every message before it the prompt; or from a question set
(eval/questions.py: MT-Bench, self-instruct), where each turn with a reference is an item, the
earlier turns answered with their references, and a turn's `short_answer` (the key answer, "玉山")
is what exact match, F1 and contains-the-answer are scored against.

A record may also carry `options` (a list of at least two answers, the reference among them:
scored by option log-likelihood), `category` (results per category) and `id`. Records that cannot
be scored are counted by reason, never dropped silently: a conversation with tool calls, a
question without a reference, options that are not a list of texts or do not hold the reference.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from dianjing.data.bad_records import BadRecords, Tally
from dianjing.errors import DataError

OPTION_FIELDS = ("options", "choices")


@dataclass
class EvalItem:
    id: str
    where: str
    messages: list[dict]  # the prompt: [system] user (assistant user)*
    reference: str
    options: list[str] | None = None
    category: str | None = None
    short_answer: str | None = None  # the key answer ("玉山"): EM, F1 and contains compare with it, not the reference

    @property
    def key(self) -> str:
        """What exact match, F1 and contains-the-answer compare the generated answer with."""
        return self.short_answer or self.reference


@dataclass
class EvalFile:
    path: str
    format: str
    items: list[EvalItem]
    records: int
    skipped: Tally = field(default_factory=Tally)
    notes: Counter = field(default_factory=Counter)

    def report(self) -> dict:
        return {"path": self.path, "format": self.format, "records": self.records, "items": len(self.items),
                "skipped": dict(self.skipped.counts), "skipped_examples": self.skipped.first(5),
                "notes": dict(self.notes)}


def _first_record(path: str):
    from dianjing.data.readers import read_records

    return next(iter(read_records(path, "skip", [])), None)


def read_eval_file(path: str, *, fmt: str = "auto", columns: dict | None = None, on_error: str = "skip",
                   system_prompt: str | None = None, log=print) -> EvalFile:
    """The items of one file; a question set (MT-Bench, self-instruct) is recognised by its keys."""
    from dianjing.eval.questions import detect

    first = _first_record(path) if fmt == "auto" and not columns else None
    if first is not None and detect(first) != "chat":
        return _from_questions(path, on_error, system_prompt, log)
    return _from_conversations(path, fmt, columns, on_error, system_prompt, log)


def _from_questions(path: str, on_error: str, system_prompt: str | None, log) -> EvalFile:
    from dianjing.eval.questions import read_questions

    questions, qr = read_questions(path, on_error, log=log)
    ef = EvalFile(path, qr.format, [], qr.records, qr.skipped, Counter(qr.notes))
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for q in questions:
        history = list(system)
        for k, turn in enumerate(q.turns):
            ref = q.reference(k)
            if ref is None:
                ef.notes["turns without a reference answer: not scored (dianjing judge grades them)"] += \
                    len(q.turns) - k
                break
            tid = q.id if len(q.turns) == 1 else f"{q.id}/{k + 1}"
            ef.items.append(EvalItem(tid, q.where, history + [{"role": "user", "content": turn}], ref,
                                     category=q.category, short_answer=q.short_answer(k)))
            history += [{"role": "user", "content": turn}, {"role": "assistant", "content": ref}]
    return ef


def _from_conversations(path: str, fmt: str, columns: dict | None, on_error: str, system_prompt: str | None,
                        log) -> EvalFile:
    from dianjing.config import DataConfig, DataFile
    from dianjing.data.load import load_conversations

    cfg = DataConfig(files=[DataFile(path=path, format=fmt, columns=columns)], on_error=on_error,
                     system_prompt=system_prompt)
    convs, load = load_conversations(cfg, log=log)
    ef = EvalFile(path, load.files[0]["format"], [], load.files[0]["records"], load.skips)
    bad = BadRecords(on_error, tally=ef.skipped, skip_hint="use --on-error skip to skip such records (counted)")
    raw = _raw_records(path)
    for conv in convs:  # in file order, so that on_error=stop stops at the first bad one
        last = conv.messages[-1]
        if conv.has_tools:
            ef.skipped.add("uses tools (eval scores text answers; tool calls are not scored)", conv.source)
            continue
        if not last.content.strip():
            ef.skipped.add("the last answer is empty (nothing to compare with)", conv.source)
            continue
        try:
            fields = _fields(raw.get(conv.source), last.content)
        except DataError as e:
            bad.handle(e)
            continue
        ef.items.append(EvalItem(str(fields.get("id") or conv.source), conv.source, conv.as_dicts()[:-1],
                                 last.content, fields.get("options"), fields.get("category")))
    return ef


def _raw_records(path: str) -> dict:
    """Each record by its place, for the fields eval reads beside the conversation."""
    from dianjing.data.readers import read_records

    return {rec.where: rec for rec in read_records(path, "skip", []) if isinstance(rec.data, dict)}


def _fields(rec, reference: str) -> dict:
    """A record's options (checked: the reference among them), category and id."""
    if rec is None:
        return {}
    got: dict = {}
    name = next((f for f in OPTION_FIELDS if f in rec.data), None)
    if name is not None:
        got["options"] = _options(rec, name, rec.data[name])
        if reference.strip() not in [o.strip() for o in got["options"]]:
            raise rec.error("the reference answer (the last assistant turn) is not one of the options", field=name,
                            fix="make the answer one of the options, or drop the options field")
    cat = rec.data.get("category")
    if isinstance(cat, str) and cat.strip():
        got["category"] = cat.strip()
    rid = rec.data.get("id", rec.data.get("question_id"))
    if isinstance(rid, (int, str)) and not isinstance(rid, bool) and str(rid).strip():
        got["id"] = str(rid)
    return got


def _options(rec, name: str, value) -> list[str]:
    if isinstance(value, str):  # CSV cells: a JSON list
        import json

        try:
            value = json.loads(value)
        except ValueError:
            raise rec.error("expected a list of answers (in CSV: a JSON list)", field=name) from None
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(o, str) and o.strip() for o in value):
        raise rec.error("expected a list of at least two non-empty answers", field=name)
    return value
