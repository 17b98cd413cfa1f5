"""Files in the config → conversations, with every skipped record counted by reason.

Each entry of data.files is read the same way, whatever it is (a file, a saved dataset folder,
a hub dataset, an entry of LLaMA-Factory's dataset_info.json):

    records (readers / hub) → column mapping (columns) → preference layout? (preference)
            → format, detected once from the first record (formats) → Conversation
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from dianjing.config import DataConfig, DataFile
from dianjing.data import catalogue, hub, preference
from dianjing.data.bad_records import BadRecords, Tally
from dianjing.data.columns import ColumnMap
from dianjing.data.formats import detect_format, to_conversation
from dianjing.data.readers import RawRecord, read_records
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


def source_name(df: DataFile) -> str:
    """How the log and the report name an entry: its path, or its hub name."""
    return df.path if df.path is not None else df.hub if df.hub is not None else f"{df.catalogue}#{df.name}"


def entries(files: list[DataFile], key: str = "data.files", log=print) -> Iterator[tuple[DataFile, str]]:
    """(entry, its config key) for every source: a catalogue entry stands for the files it names."""
    for i, df in enumerate(files):
        if df.catalogue is not None:
            for sub in catalogue.expand(df, f"{key}[{i}]", log=log):
                yield sub, f"{key}[{i}]"
        else:
            yield df, f"{key}[{i}]"


def records(df: DataFile, key: str, on_error: str, errors: list) -> Iterator[RawRecord]:
    """The raw records of one path or hub entry."""
    if df.hub is not None:
        return hub.read_hub(df.hub, split=df.split, subset=df.subset, revision=df.revision,
                            streaming=df.streaming, key=f"{key}.hub")
    return read_records(df.path, on_error, errors, split=df.split)


def load_conversations(cfg: DataConfig, log=print, key: str = "data.files") -> tuple[list[Conversation], LoadReport]:
    """The conversations of every entry in cfg.files; bad records stop or are skipped per data.on_error.

    `key` is the config key of cfg.files, for messages (data.eval_files when those are read).
    """
    report = LoadReport()
    bad = BadRecords(cfg.on_error, tally=report.skips)
    convs: list[Conversation] = []
    for df, df_key in entries(cfg.files, key, log):
        limit = cfg.max_examples - len(convs) if cfg.max_examples else None
        got, info = _read_entry(df, df_key, cfg, bad, log, limit)
        convs += got
        report.files.append(info)
        if cfg.max_examples and len(convs) >= cfg.max_examples:
            break
    if not convs:
        raise DataError("no usable examples in " + ", ".join(f["path"] for f in report.files),
                        fix="check the files and data.format; `dianjing validate` shows what was rejected")
    return convs, report


def _read_entry(df: DataFile, key: str, cfg: DataConfig, bad: BadRecords, log,
                limit: int | None) -> tuple[list[Conversation], dict]:
    """One entry's conversations and its line in the report (format, records read and kept)."""
    name = source_name(df)
    mapping = ColumnMap(df.columns, df.roles)
    if mapping:
        log(f"{name}: columns {mapping.describe()}")
    fmt, is_pref = df.format, None  # is_pref: decided by the first record that is an object
    convs: list[Conversation] = []
    n_rec = 0
    errors: list[DataError] = []
    for rec in records(df, key, cfg.on_error, errors):
        n_rec += 1
        try:
            rec = mapping.apply(rec)
        except DataError as e:
            bad.handle(e)
            continue
        if is_pref is None and isinstance(rec.data, dict):
            is_pref = preference.is_preference(rec)
            if is_pref and cfg.preference is None:
                raise preference.unsupported(rec)  # the whole file, whatever data.on_error says
            if is_pref:
                log(f"{name}: a preference file ({preference.layout(rec)}, from {rec.where}); "
                    "training on the chosen answers (data.preference=chosen)")
        try:
            if is_pref:
                rec, rec_fmt = _chosen(rec, df.format)
                fmt = rec_fmt if fmt == "auto" else fmt
            elif fmt == "auto":
                fmt = rec_fmt = detect_format(rec)
                log(f"{name}: detected format '{fmt}' from the keys of {rec.where}")
            else:
                rec_fmt = fmt
            convs.append(to_conversation(rec, rec_fmt, cfg.system_prompt))
        except DataError as e:
            bad.handle(e)
        if limit and len(convs) >= limit:
            break
    for e in errors:  # lines the reader itself could not parse (on_error=skip)
        n_rec += 1
        bad.handle(e)
    return convs, {"path": name, "format": fmt, "detected": df.format == "auto", "records": n_rec,
                   "kept": len(convs), **({"preference": cfg.preference} if is_pref else {})}


def _chosen(rec: RawRecord, declared: str) -> tuple[RawRecord, str]:
    """A preference record as the SFT record of its chosen answer, in the format its layout reads as."""
    out, fmt = preference.to_chosen(rec)
    if declared not in ("auto", fmt):
        raise rec.error(f"format is {declared!r}, but this preference record's chosen answer reads as {fmt!r}",
                        fix=f"set this entry's format to auto (or {fmt})")
    return out, fmt


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
