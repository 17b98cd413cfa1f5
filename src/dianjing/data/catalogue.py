"""LLaMA-Factory's dataset_info.json, read as a catalogue of data entries.

    data:
      files:
        - {catalogue: LLaMA-Factory/data/dataset_info.json, name: alpaca_en_demo}
        - {catalogue: LLaMA-Factory/data, name: my_sharegpt_set}     # the folder that holds it

An entry's `file_name` is read next to dataset_info.json (a file, a folder of files, or a folder
written by save_to_disk), its `hf_hub_url` as a hub dataset (with `split`, `subset`, `revision`);
`formatting` (alpaca | sharegpt) becomes the entry's format, and its `columns` and `tags` become
a column mapping (data/columns.py), LLaMA-Factory's names translated:

    columns  prompt → instruction, query → input, response → output, history, system, tools,
             chosen, rejected; sharegpt: messages → conversations
    tags     role_tag → from, content_tag → value; user_tag, assistant_tag, system_tag,
             observation_tag, function_tag → the role names

So a user coming from LLaMA-Factory keeps their data files and their dataset_info.json as they are.
What dianjing cannot train on (images, videos, audio, KTO tags, ModelScope or script datasets) is
refused, naming the entry.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from pydantic import ValidationError

from dianjing.config import DataFile
from dianjing.data.columns import ROLE_NAMES
from dianjing.data.readers import decode_utf8, parse_json
from dianjing.errors import ConfigError, DataError

CATALOGUE_FILE = "dataset_info.json"
FILE_SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")
COMMON_COLUMNS = {"system": "system", "tools": "tools", "chosen": "chosen", "rejected": "rejected"}
COLUMNS = {  # LLaMA-Factory's column names → the keys dianjing's formats read, per formatting
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "history": "history",
               **COMMON_COLUMNS},
    "sharegpt": {"messages": "conversations", **COMMON_COLUMNS},
}
TAGS = {"role_tag": ("columns", "from"), "content_tag": ("columns", "value"), "user_tag": ("roles", "user"),
        "assistant_tag": ("roles", "assistant"), "system_tag": ("roles", "system"),
        "observation_tag": ("roles", "observation"), "function_tag": ("roles", "function")}
UNSUPPORTED_COLUMNS = {"images": "images", "videos": "videos", "audios": "audio", "kto_tag": "KTO tags"}
# ranking: a preference file is recognised by its layout (data.preference); ms/om_hub_url: read hf_hub_url
KNOWN = {"file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "formatting", "ranking", "split",
         "subset", "revision", "folder", "num_samples", "columns", "tags"}


def catalogue_path(path: str) -> Path:
    """dataset_info.json itself, or the folder that holds it."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / CATALOGUE_FILE
    if not p.is_file():
        raise ConfigError(f"catalogue {path}: {p} does not exist",
                          fix="give LLaMA-Factory's dataset_info.json, or the folder that holds it")
    return p


def read_catalogue(path: str) -> tuple[dict, Path]:
    """The entries of a dataset_info.json, and the file's path."""
    p = catalogue_path(path)
    obj = parse_json(decode_utf8(p.read_bytes(), str(p), 1), str(p), 1)
    if not isinstance(obj, dict):
        raise DataError("expected an object of named dataset entries, as LLaMA-Factory's dataset_info.json",
                        file=str(p))
    return obj, p


def expand(df: DataFile, key: str = "data.files[]", log=print) -> list[DataFile]:
    """A {catalogue, name} entry → the path or hub entries it stands for (a folder can give several)."""
    entries, p = read_catalogue(df.catalogue)
    if df.name not in entries:
        close = difflib.get_close_matches(df.name, list(entries), n=3)
        listed = ", ".join(list(entries)[:20]) + (", …" if len(entries) > 20 else "")
        raise ConfigError(f"{key}.name = {df.name!r}: no such entry in {p}"
                          + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""),
                          fix=f"its entries: {listed}")
    entry = entries[df.name]
    where = f"{p} entry {df.name!r}"
    if not isinstance(entry, dict):
        raise DataError(f"expected an object with file_name or hf_hub_url, got {type(entry).__name__}", file=where)
    fmt, columns, roles = _mapping(entry, where)
    if df.format != "auto":  # the file entry's own format wins over the catalogue's formatting
        fmt = df.format
    if "num_samples" in entry:
        log(f"{where}: num_samples is not used (data.max_examples limits the records read)")
    for k in entry:
        if k not in KNOWN:
            log(f"{where}: {k} is not used (not a dataset_info.json key dianjing reads)")
    common = {"format": fmt, "columns": columns or None, "roles": roles or None}
    files = _sources(entry, p.parent, where, common)
    log(f"{where}: {', '.join(f.path or f.hub for f in files)} as {fmt}")
    return files


def _mapping(entry: dict, where: str) -> tuple[str, dict, dict]:
    """(format, columns, roles) from an entry's formatting, columns and tags."""
    fmt = entry.get("formatting", "alpaca")
    if fmt not in COLUMNS:
        raise DataError(f"formatting {fmt!r}: dianjing reads alpaca and sharegpt entries", file=where,
                        fix="set formatting to alpaca or sharegpt, or name the file in data.files with its format")
    lf_columns = entry.get("columns") or {}
    tags = entry.get("tags") or {}
    for what, obj in (("columns", lf_columns), ("tags", tags)):
        if not isinstance(obj, dict):
            raise DataError(f"{what}: expected an object, got {type(obj).__name__}", file=where)
    columns: dict[str, str] = {}
    for lf_key, own in lf_columns.items():
        if lf_key in UNSUPPORTED_COLUMNS:
            raise DataError(f"columns.{lf_key}: dianjing trains on text only; {UNSUPPORTED_COLUMNS[lf_key]} "
                            "cannot be used", file=where, fix="use a text-only dataset")
        if lf_key not in COLUMNS[fmt]:
            raise DataError(f"columns.{lf_key}: not a {fmt} column (those are {', '.join(COLUMNS[fmt])})",
                            file=where)
        if own is not None:
            columns[COLUMNS[fmt][lf_key]] = own
    roles: dict[str, str] = {}
    if tags and fmt != "sharegpt":
        raise DataError("tags apply to sharegpt entries only", file=where, fix="set formatting: sharegpt, or drop tags")
    for tag, own in tags.items():
        if tag not in TAGS:
            raise DataError(f"tags.{tag}: unknown (the tags are {', '.join(TAGS)})", file=where)
        if own is None:
            continue
        what, canon = TAGS[tag]
        (columns if what == "columns" else roles)[canon] = own
    return (fmt, {k: v for k, v in columns.items() if k != v},
            {k: v for k, v in roles.items() if ROLE_NAMES[k] != v})  # mapping a name onto itself renames nothing


def _sources(entry: dict, base: Path, where: str, common: dict) -> list[DataFile]:
    """The entry's data as path or hub entries: hf_hub_url, else file_name (a file or a folder)."""
    if "hf_hub_url" in entry:
        if entry.get("folder"):
            raise DataError(f"folder {entry['folder']!r} of a hub dataset is not supported", file=where,
                            fix="download that folder and name it in file_name")
        return [_entry(where, hub=entry["hf_hub_url"], split=entry.get("split", "train"),
                       subset=entry.get("subset"), revision=entry.get("revision"), **common)]
    for k in ("ms_hub_url", "om_hub_url", "script_url"):
        if k in entry:
            raise DataError(f"{k}: only hf_hub_url and file_name entries can be read", file=where,
                            fix="download the data and name it in file_name")
    name = entry.get("file_name")
    if not isinstance(name, str) or not name:
        raise DataError("no file_name or hf_hub_url", file=where, fix="add file_name: the data file next to "
                                                                     "dataset_info.json")
    path = base / name
    if not path.exists():
        raise DataError(f"file_name {name!r}: {path} does not exist", file=where,
                        fix="file_name is read next to dataset_info.json")
    if path.is_dir() and not (path / "state.json").is_file() and not (path / "dataset_dict.json").is_file():
        found = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in FILE_SUFFIXES)
        if not found:
            raise DataError(f"file_name {name!r}: the folder {path} holds no data file "
                            f"({', '.join(FILE_SUFFIXES)})", file=where)
        return [_entry(where, path=str(f), **common) for f in found]
    return [_entry(where, path=str(path), **common)]


def _entry(where: str, **fields) -> DataFile:
    try:
        return DataFile(**fields)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'entry'}: {x['msg']}" for x in e.errors())
        raise DataError(f"cannot be read as a data entry: {problems}", file=where) from None
