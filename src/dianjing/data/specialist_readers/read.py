"""The entry points: read a task's files into examples, check evaluation examples against the
labels a model was trained on, and list the labels a training set defines."""

from __future__ import annotations

import re
from pathlib import Path

from dianjing.data.specialist_readers.classify import read_text
from dianjing.data.specialist_readers.common import Checker, Position, ReadReport, TagExample, TextExample
from dianjing.data.specialist_readers.extractive_qa import read_qa
from dianjing.data.specialist_readers.tagging import read_conll, read_tag_records, tag_type
from dianjing.errors import DataError

TASKS = ("classify", "pair", "tag", "extract-qa")
RECORD_SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv", ".parquet")  # tag: anything else is CoNLL columns
_INT = re.compile(r"-?\d+")


def read_task(paths: list[str], task: str, *, text_field: str | None = None, text_b_field: str | None = None,
              label_field: str | None = None, require_labels: bool = True,
              on_error: str = "stop") -> tuple[list, ReadReport]:
    """The examples of `task` in `paths`, and what was rejected or repaired on the way.

    classify/pair → TextExample, tag → TagExample, extract-qa → QAExample. With on_error="stop"
    the first bad record raises DataError; with "skip" it is counted in report.rejected.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [str(p) for p in paths]
    report = ReadReport(files=list(paths))
    checker = Checker(report, on_error)
    out: list = []
    for path in paths:
        if task in ("classify", "pair"):
            it = read_text(path, task, checker, text_field, text_b_field, label_field, require_labels)
        elif task == "tag":
            if Path(path).suffix.lower() in RECORD_SUFFIXES:
                it = read_tag_records(path, checker, require_labels)
            else:
                it = read_conll(path, checker, require_labels)
        else:
            it = read_qa(path, checker, require_labels)
        for ex in it:
            out.append(ex)
            report.kept += 1
    if not out:
        why = "; ".join(f"{n} {r}" for r, n in report.rejected.most_common(3))
        raise DataError(f"no usable {task} examples in {', '.join(paths)}" + (f" (rejected: {why})" if why else ""),
                        fix="check the files and task.type; the report lists what was rejected")
    return out, report


def check_labels(examples: list[TextExample], known: list[str], report: ReadReport,
                 on_error: str) -> list[TextExample]:
    """Drop (skip) or refuse (stop) examples whose label the model was not trained on."""
    checker = Checker(report, on_error)
    known_set = set(known)
    shown = ", ".join(repr(k) for k in list(known)[:10]) + (", …" if len(known_set) > 10 else "")
    out = []
    for ex in examples:
        if ex.label is not None and ex.label not in known_set:
            checker.reject(f"label not seen in training: {ex.label!r}", Position.named(ex.where), field="label",
                           fix=f"the model knows only the training labels ({shown})")
            report.kept = max(0, report.kept - 1)
            continue
        out.append(ex)
    return out


def check_tags(examples: list[TagExample], known: set[str], report: ReadReport,
               on_error: str) -> list[TagExample]:
    """Drop (skip) or refuse (stop) sentences with a tag whose type the model was not trained on.

    `known` holds tags (O, B-X, I-X) or bare types (X); B-X makes I-X known too.
    """
    checker = Checker(report, on_error)
    types = {tag_type(t) for t in known if t != "O"}
    out = []
    for ex in examples:
        bad = next((t for t in ex.tags or [] if t != "O" and t not in known and tag_type(t) not in types), None)
        if bad is not None:
            checker.reject(f"tag type not seen in training: {tag_type(bad)!r}", Position.named(ex.where),
                           field="tags", detail=f"tag {bad!r}", fix=f"the model knows only the types {sorted(types)}")
            report.kept = max(0, report.kept - 1)
            continue
        out.append(ex)
    return out


def label_list(examples: list) -> list[str]:
    """The labels the examples define, sorted (numerically when all are integers).

    tag: "O" first, then B-X and I-X for every type X seen, sorted; I-X is listed even when only
    B-X occurs, so every valid tag of a known type has an id.
    """
    if any(isinstance(ex, TagExample) for ex in examples):
        types = {tag_type(t) for ex in examples for t in ex.tags or [] if t != "O"}
        return ["O"] + sorted(f"{p}-{x}" for x in types for p in "BI")
    labels = {ex.label for ex in examples if getattr(ex, "label", None) is not None}
    if labels and all(_INT.fullmatch(l) for l in labels):
        return sorted(labels, key=lambda l: (int(l), l))
    return sorted(labels)
