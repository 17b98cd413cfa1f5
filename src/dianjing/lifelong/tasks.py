"""A task's data as question answering: each record becomes a prompt (context and question) and answers.

Formats (the keys a format reads can be renamed with the task's `fields`):

    qa                 {context (optional), question, answer (a string or a list: the first is trained on)}
    classify           {text, label}; the prompt is the text and the task's `question`
    prompt_completion  {prompt, completion}; a trailing <|endoftext|> (as in the T0 files) is removed
    alpaca             {instruction, input (optional), output}
    squad              SQuAD v1.1 / DRCD JSON (or records in the Hugging Face squad layout)

Everything is checked before any training, and an error names the task, the file and line, and the
key: a record that does not parse, a task with no examples, a marker that occurs in the data, and a
metric that does not fit the data (accuracy needs a small set of labels, more than one, and held-out
labels that training has).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from dianjing.data.readers import read_records
from dianjing.errors import DataError, DianjingError
from dianjing.lifelong.sequence import Sequence, TaskSpec

EOT = "<|endoftext|>"
MAX_LABELS = 50  # accuracy: more distinct training answers than this is free text (use em, f1 or rouge_l)


@dataclass
class QAExample:
    task: str
    prompt: str  # what comes before the answer marker: context and question
    answers: list[str]  # the first is trained on; every one counts as right when scoring
    where: str = ""  # file:line, or "generated" / "replayed from ..."

    @property
    def answer(self) -> str:
        return self.answers[0]


@dataclass
class TaskData:
    spec: TaskSpec
    train: list[QAExample]
    eval: list[QAExample]
    labels: list[str] = field(default_factory=list)  # accuracy tasks: the training answers, sorted

    @property
    def name(self) -> str:
        return self.spec.name

    def majority_rate(self, scored: list[QAExample] | None = None) -> float | None:
        """Accuracy tasks: the share of held-out examples (or of those `scored`) whose answer is the most
        common one, in percent: what always giving that answer would score."""
        held = self.eval if scored is None else scored
        if self.spec.metric != "accuracy" or not held:
            return None
        return 100.0 * Counter(e.answer for e in held).most_common(1)[0][1] / len(held)


def _where(task: TaskSpec, idx: int) -> str:
    return f"task '{task.name}' (tasks[{idx}])"


def read_all(seq: Sequence, seed: int) -> list[TaskData]:
    """Every task of the sequence, read and checked; the first problem stops with its task and place."""
    return [read_task(seq, i, seed) for i in range(len(seq.tasks))]


def read_task(seq: Sequence, idx: int, seed: int) -> TaskData:
    spec = seq.tasks[idx]
    who = _where(spec, idx)
    try:
        records = [ex for f in spec.files for ex in _read_file(spec, f)]
        held = [ex for f in spec.eval_files for ex in _read_file(spec, f)]
    except DataError as e:
        raise DianjingError(f"{who}: {e.message}", fix=e.fix) from None
    if not records:
        raise DianjingError(f"{who}: the task has no examples (files: {', '.join(spec.files)})",
                            fix=f"check tasks[{idx}].files and tasks[{idx}].format")
    if not spec.eval_files:
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
        if len(records) <= spec.eval_examples:
            raise DianjingError(f"{who}: eval_examples {spec.eval_examples} would hold out all {len(records)} "
                                "examples, leaving none to train on",
                                fix=f"lower tasks[{idx}].eval_examples or give tasks[{idx}].eval_files")
        held = [records[i] for i in order[:spec.eval_examples]]
        records = [records[i] for i in order[spec.eval_examples:]]
    if not held:
        raise DianjingError(f"{who}: eval_files hold no examples", fix=f"check tasks[{idx}].eval_files")
    if spec.max_examples is not None:
        records = records[:spec.max_examples]
    if spec.format == "classify":
        question = spec.question or default_question(sorted({e.answer for e in records}))
        for e in records + held:
            e.prompt = f"{e.prompt}\n{question}"
    data = TaskData(spec, records, held)
    check_markers(seq, data, who)
    check_metric(data, who, idx)
    return data


def default_question(labels: list[str]) -> str:
    return "Which of these is it: " + ", ".join(labels) + "?"


def _read_file(spec: TaskSpec, path: str) -> list[QAExample]:
    if spec.format == "squad":
        return _read_squad(spec, path)
    keys = {k: spec.fields.get(k, k) for k in ("context", "question", "answer", "text", "label", "prompt",
                                              "completion", "instruction", "input", "output")}
    out = []
    for rec in read_records(path):
        if not isinstance(rec.data, dict):
            raise rec.error(f"expected an object with the keys of format {spec.format}, got "
                            f"{type(rec.data).__name__}")
        d = rec.data

        def text(key: str, required: bool = True) -> str:
            v = d.get(keys[key])
            if v is None and not required:
                return ""
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                v = str(v)
            if not isinstance(v, str) or (required and not v.strip()):
                found = ", ".join(repr(k) for k in d) or "none"
                raise rec.error(f"format {spec.format} needs a non-empty text here (fields found: {found})",
                                field=keys[key], fix=f"name the file's field for '{key}' in the task's fields")
            return v.strip()

        match spec.format:
            case "qa":
                answers = _answers(d.get(keys["answer"]), rec, keys["answer"])
                context, question = text("context", required=False), text("question")
                prompt = f"{context}\n{question}" if context else question
            case "classify":
                prompt, answers = text("text"), [text("label")]
            case "prompt_completion":
                comp = d.get(keys["completion"])
                if isinstance(comp, str) and comp.rstrip().endswith(EOT):
                    d = {**d, keys["completion"]: comp.rstrip()[:-len(EOT)]}
                prompt, answers = text("prompt"), [text("completion")]
            case "alpaca":
                extra = text("input", required=False)
                prompt = f"{text('instruction')}\n{extra}" if extra else text("instruction")
                answers = [text("output")]
        out.append(QAExample(spec.name, prompt, answers, rec.where))
    return out


def _answers(value, rec, key: str) -> list[str]:
    vals = value if isinstance(value, list) else [value]
    out = [str(v).strip() for v in vals if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
    if not out or not all(out) or len(out) != len(vals):
        raise rec.error("the answer must be a non-empty text or a list of them", field=key)
    return out


def _read_squad(spec: TaskSpec, path: str) -> list[QAExample]:
    from dianjing.data.specialist_readers.read import read_task as read_specialist

    examples, _ = read_specialist([path], "extract-qa")
    return [QAExample(spec.name, f"{e.context.strip()}\n{e.question.strip()}",
                      list(dict.fromkeys(a for a, _ in e.answers)), e.where) for e in examples]


def check_markers(seq: Sequence, data: TaskData, who: str) -> None:
    """A marker inside the data would make a generated example parse wrongly: refuse it now."""
    marks = {seq.markers.answer: "markers.answer"}
    marks.update({seq.gen_text(t.name): "the generation token" for t in seq.tasks})
    for e in data.train + data.eval:
        for text, what in [(e.prompt, "prompt"), *((a, "answer") for a in e.answers)]:
            for mark, key in marks.items():
                if mark in text:
                    raise DianjingError(f"{who}: {e.where}: the {what} contains {mark!r} ({key}), which marks the "
                                        "parts of an example",
                                        fix="choose other markers in the sequence file's markers section")


def check_metric(data: TaskData, who: str, idx: int) -> None:
    """Does the task's metric fit its answers? accuracy: a few labels, more than one, held-out ones known."""
    if data.spec.metric != "accuracy":
        return
    counts = Counter(e.answer for e in data.train)
    fix = f"use tasks[{idx}].metric em, f1 or rouge_l for free-text answers"
    if len(counts) > MAX_LABELS:
        raise DianjingError(f"{who}: metric accuracy needs a small set of labels; the training answers have "
                            f"{len(counts)} distinct values", fix=fix)
    if len(counts) == 1:
        label = next(iter(counts))
        raise DianjingError(f"{who}: every training answer is {label!r}: accuracy cannot tell a model that "
                            "learned the task from one that always says that", fix="choose data with more than one "
                            "label (some T0 files hold a single label: check with `sort | uniq -c`)")
    for e in data.eval:
        if e.answer not in counts:
            raise DianjingError(f"{who}: {e.where}: the held-out label {e.answer!r} is not among the training "
                                f"labels ({', '.join(sorted(counts))})", fix=fix + ", or fix the label")
    data.labels = sorted(counts)
