"""Files in the config → conversations, with every skipped record counted by reason."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from dianjing.config import DataConfig
from dianjing.data.formats import detect_format, to_conversation
from dianjing.data.readers import read_records
from dianjing.data.schema import Conversation
from dianjing.errors import DataError


@dataclass
class LoadReport:
    files: list[dict] = field(default_factory=list)  # path, format, detected, records, kept
    skipped: Counter = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)

    def note(self, err: DataError) -> None:
        self.skipped[_reason(err)] += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(str(err))


def _reason(err: DataError) -> str:
    msg = err.message
    return (f"{err.field}: " if err.field else "") + (msg if len(msg) < 80 else msg[:77] + "...")


def load_conversations(cfg: DataConfig, log=print) -> tuple[list[Conversation], LoadReport]:
    report = LoadReport()
    convs: list[Conversation] = []
    for df in cfg.files:
        fmt = df.format
        n_rec = n_kept = 0
        errors: list[DataError] = []
        for rec in read_records(df.path, cfg.on_error, errors):
            n_rec += 1
            try:
                if fmt == "auto":
                    fmt = detect_format(rec)
                    log(f"{df.path}: detected format '{fmt}' from the keys of {rec.where}")
                convs.append(to_conversation(rec, fmt, cfg.system_prompt))
                n_kept += 1
            except DataError as e:
                if cfg.on_error == "stop":
                    raise DataError(e.message if e.file else str(e), file=e.file, line=e.line, field=e.field,
                                    fix="fix the record, or set data.on_error=skip to skip bad records "
                                        "(they are counted)") from None
                report.note(e)
            if cfg.max_examples and len(convs) >= cfg.max_examples:
                break
        for e in errors:  # lines the reader itself could not parse (on_error=skip)
            n_rec += 1
            report.note(e)
        report.files.append({"path": df.path, "format": fmt, "detected": df.format == "auto",
                             "records": n_rec, "kept": n_kept})
        if cfg.max_examples and len(convs) >= cfg.max_examples:
            break
    if not convs:
        raise DataError("no usable examples in " + ", ".join(f.path for f in cfg.files),
                        fix="check the files and data.format; `dianjing validate` shows what was rejected")
    return convs, report


def split_eval(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """A deterministic held-out split; none when there is too little data to spare."""
    n_eval = int(len(items) * fraction)
    if fraction > 0 and n_eval == 0 and len(items) >= 20:
        n_eval = 1
    if n_eval == 0:
        return list(items), []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return ([x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held])
