"""Files in the config → conversations, with every skipped record counted by reason."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from dianjing.config import DataConfig
from dianjing.data.bad_records import BadRecords, Tally
from dianjing.data.formats import detect_format, to_conversation
from dianjing.data.readers import read_records
from dianjing.data.schema import Conversation
from dianjing.errors import DataError


@dataclass
class LoadReport:
    """What was read: per file its format and counts, and every skipped record by reason."""

    files: list[dict] = field(default_factory=list)  # path, format, detected, records, kept
    skips: Tally = field(default_factory=Tally)

    @property
    def skipped(self) -> Counter:
        """reason -> records skipped for it (data.on_error=skip)."""
        return self.skips.counts

    @property
    def first_errors(self) -> list[str]:
        """The first few skipped records' places and messages, a few per reason."""
        return self.skips.first(5)


def load_conversations(cfg: DataConfig, log=print) -> tuple[list[Conversation], LoadReport]:
    """The conversations of every file in cfg.files; bad records stop or are skipped per data.on_error."""
    report = LoadReport()
    bad = BadRecords(cfg.on_error, tally=report.skips)
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
                bad.handle(e)
            if cfg.max_examples and len(convs) >= cfg.max_examples:
                break
        for e in errors:  # lines the reader itself could not parse (on_error=skip)
            n_rec += 1
            bad.handle(e)
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
