"""Read records from JSON, JSONL, CSV and Parquet files, each with its line (or row) number."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dianjing.errors import DataError

BUILTIN_PREFIX = "builtin:"
BUILTINS = {"default": "default_sft.jsonl", "questions": "questions.jsonl"}  # questions: eval/questions.py
MAX_LINE_BYTES = 8 * 1024 * 1024
MAX_JSON_DEPTH = 64


@dataclass
class RawRecord:
    data: object
    file: str
    line: int  # 1-based line for JSONL/CSV; 1-based record index for JSON/Parquet
    unit: str = "line"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.unit == "line" else f"{self.file} record {self.line}"

    def error(self, message: str, *, field: str | None = None, fix: str | None = None) -> DataError:
        """A DataError about this record, its place named once: "file:line: …" or "file record N: …"."""
        if self.unit == "line":
            return DataError(message, file=self.file, line=self.line, field=field, fix=fix)
        return DataError(message, file=self.where, field=field, fix=fix)


def resolve_path(path: str) -> Path:
    """A data path, or builtin:NAME for data that ships inside dianjing."""
    if path.startswith(BUILTIN_PREFIX):
        name = path[len(BUILTIN_PREFIX):]
        if name not in BUILTINS:
            raise DataError(f"unknown built-in dataset '{name}'", fix=f"use one of {sorted(BUILTINS)}")
        return Path(str(resources.files("dianjing.assets").joinpath(BUILTINS[name])))
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data file {p} does not exist", fix="check data.files in the config or --data")
    if p.is_dir():
        if (p / "dataset_info.json").is_file() and not (p / "state.json").is_file():
            raise DataError(f"{p} is a folder with LLaMA-Factory's dataset_info.json",
                            fix=f"name one of its datasets: {{catalogue: {p}, name: NAME}} in data.files")
        raise DataError(f"{p} is a folder; name the data files in it",
                        fix="or give a folder written by datasets' save_to_disk")
    return p


def shown_name(path: str, p: Path) -> str:
    """How messages name a data file: builtin:NAME as the user wrote it, else the resolved path."""
    return path if path.startswith(BUILTIN_PREFIX) else str(p)


def decode_utf8(raw: bytes, file: str, line: int) -> str:
    """Bytes of a file (or one line of it) as text, without a BOM; DataError at file:line if not UTF-8."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 at byte {e.start}", file=file, line=line,
                        fix="re-encode the file as UTF-8") from None


def _depth(obj: object, limit: int = MAX_JSON_DEPTH) -> int:
    stack = [(obj, 1)]
    deepest = 0
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        if d > limit:
            return d
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return deepest


def parse_json(text: str, file: str, line: int) -> object:
    """JSON text → object; DataError at file:line if it is not JSON or nested too deeply."""
    try:
        obj = json.loads(text)
    except RecursionError:
        raise DataError("JSON nested too deeply", file=file, line=line) from None
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg} at column {e.colno}", file=file, line=line) from None
    if _depth(obj) > MAX_JSON_DEPTH:
        raise DataError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", file=file, line=line)
    return obj


def read_jsonl(path: Path, on_error: str = "stop", errors: list | None = None) -> Iterator[RawRecord]:
    name = str(path)
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, start=1):
            try:
                if len(raw) > MAX_LINE_BYTES:
                    raise DataError(f"line is {len(raw)} bytes, over the {MAX_LINE_BYTES} limit",
                                    file=name, line=i)
                text = decode_utf8(raw, name, i).strip()
                if not text:
                    continue
                yield RawRecord(parse_json(text, name, i), name, i)
            except DataError as e:
                if on_error == "stop":
                    raise
                if errors is not None:
                    errors.append(e)


def read_json(path: Path) -> Iterator[RawRecord]:
    name = str(path)
    text = decode_utf8(path.read_bytes(), name, 1)
    obj = parse_json(text, name, 1)
    if isinstance(obj, dict):
        for key in ("data", "examples", "train"):
            if isinstance(obj.get(key), list):
                obj = obj[key]
                break
        else:
            obj = [obj]
    if not isinstance(obj, list):
        raise DataError("expected a JSON list of records (or an object with a 'data' list)", file=name)
    for i, rec in enumerate(obj, start=1):
        yield RawRecord(rec, name, i, unit="record")


def read_csv(path: Path) -> Iterator[RawRecord]:
    name = str(path)
    text = decode_utf8(path.read_bytes(), name, 1)
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delim)
    for row in reader:
        # line_num is the line where this row ended; rows rarely span lines
        yield RawRecord(dict(row), name, reader.line_num)


def read_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for bad files
        raise DataError(f"cannot read Parquet: {e}", file=str(path)) from None
    for i, row in enumerate(table.to_pylist(), start=1):
        yield RawRecord(row, str(path), i, unit="record")


def read_records(path: str, on_error: str = "stop", errors: list | None = None,
                 split: str | None = None) -> Iterator[RawRecord]:
    """Yield the raw records of one file; the reader is chosen by the file's extension.

    A folder written by datasets' save_to_disk is read too (`split` picks one of a DatasetDict's).
    """
    if not isinstance(path, str):
        raise DataError("this data entry has no path: only instruction data (task.type sft) reads hub and "
                        "catalogue entries", fix="give the data as a file: {path: FILE} in data.files")
    from dianjing.data import hub

    folder = Path(path).expanduser()
    if not path.startswith(BUILTIN_PREFIX) and hub.is_saved_dataset(folder):
        yield from hub.read_saved(folder, split, str(folder))
        return
    p = resolve_path(path)
    suffix = p.suffix.lower()
    shown = shown_name(path, p)
    if split is not None:
        raise DataError(f"split {split!r} is set, but {shown} is a file, which has no splits",
                        fix="drop split from this data.files entry (it applies to hub datasets and saved folders)")
    if suffix in (".jsonl", ".ndjson"):
        it = read_jsonl(p, on_error, errors)
    elif suffix == ".json":
        it = read_json(p)
    elif suffix in (".csv", ".tsv"):
        it = read_csv(p)
    elif suffix == ".parquet":
        it = read_parquet(p)
    else:
        raise DataError(f"unknown data file type '{suffix}'",
                        file=str(p), fix="use .json, .jsonl, .csv, .tsv or .parquet")
    for rec in it:
        if shown != str(p):
            rec.file = shown
        yield rec
