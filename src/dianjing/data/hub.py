"""Datasets from the Hugging Face hub, through the `datasets` library, and local copies of them.

    data:
      files:
        - {hub: databricks/databricks-dolly-15k, split: train, columns: {input: context, output: response}}
        - {path: dolly-copy}        # a folder written by datasets' save_to_disk (also {hub: dolly-copy})

A hub dataset needs the network (or a copy in the datasets cache). Offline, the error names the
entry and says how to make a local copy: `datasets.load_dataset(...).save_to_disk(DIR)` on a
machine with the network, then `{path: DIR}`. Its rows are records named `NAME[SPLIT] record N`
in messages, as a JSON file's are `FILE record N`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dianjing.data.readers import RawRecord
from dianjing.errors import DataError, DianjingError

DEFAULT_SPLIT = "train"


def is_saved_dataset(p: Path) -> bool:
    """Is `p` a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`?"""
    return p.is_dir() and ((p / "dataset_dict.json").is_file()
                           or ((p / "state.json").is_file() and (p / "dataset_info.json").is_file()))


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DianjingError("hub datasets and saved dataset folders are read with the `datasets` library, "
                            "which is not installed", fix="pip install datasets") from None
    return datasets


def _rows(ds, shown: str) -> Iterator[RawRecord]:
    for i, row in enumerate(ds, start=1):
        yield RawRecord(row, shown, i, unit="record")


def _pick_split(splits: list[str], split: str | None, shown: str, key: str) -> str:
    """The split to read: the one asked for, else train, else the only one."""
    if split is None:
        if DEFAULT_SPLIT in splits:
            return DEFAULT_SPLIT
        if len(splits) == 1:
            return splits[0]
        raise DianjingError(f"{shown} has the splits {', '.join(splits) or '(none)'}, and none is named train",
                            fix=f"choose one with {key}: NAME")
    if split not in splits:
        raise DianjingError(f"{shown} has no split {split!r}; it has {', '.join(splits)}",
                            fix=f"set {key} to one of them")
    return split


def read_saved(p: Path, split: str | None, shown: str, key: str = "split") -> Iterator[RawRecord]:
    """The rows of a folder written by save_to_disk; for a DatasetDict, those of `split` (default train)."""
    datasets = _datasets()
    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:  # datasets raises several types for a damaged folder
        raise DataError(f"cannot read the saved dataset: {type(e).__name__}: {e}", file=shown,
                        fix="write it again with datasets' save_to_disk") from None
    if isinstance(ds, datasets.DatasetDict):
        name = _pick_split(list(ds), split, shown, key)
        yield from _rows(ds[name], f"{shown}[{name}]")
        return
    saved = str(ds.split) if ds.split is not None else None
    if split is not None and saved is not None and split != saved:
        raise DianjingError(f"{shown} holds the split {saved!r}, not {split!r}", fix=f"drop {key}, or set it to {saved}")
    yield from _rows(ds, shown)


def read_hub(name: str, *, split: str | None = None, subset: str | None = None, revision: str | None = None,
             streaming: bool = False, key: str = "hub") -> Iterator[RawRecord]:
    """The rows of one split of a hub dataset (or of a local folder given as `hub:`); `key` names the entry."""
    local = Path(name).expanduser()
    if local.exists():
        if revision is not None:
            raise DianjingError(f"{key} = {name!r} is a local folder, which has no revision",
                                fix="drop revision from this data.files entry")
        if is_saved_dataset(local):
            yield from read_saved(local, split, str(local), key=_sibling(key, "split"))
            return
        if not local.is_dir():
            raise DianjingError(f"{key} = {name!r} is a file", fix=f"give it as a file: {{path: {name}}}")
    datasets = _datasets()
    split = split or DEFAULT_SPLIT
    try:
        ds = datasets.load_dataset(name, subset, split=split, revision=revision, streaming=streaming)
    except Exception as e:  # network, not found, bad split, bad subset: each said in words below
        raise _load_error(e, name, split, subset, revision, key) from None
    yield from _rows(ds, f"{name}[{split}]")


def _sibling(key: str, field: str) -> str:
    """'data.files[0].hub' → 'data.files[0].split': the key of another field of the same entry."""
    return key.rsplit(".", 1)[0] + "." + field if "." in key else field


def _offline(e: Exception) -> bool:
    names = " ".join(type(x).__name__ for x in (e, e.__cause__, e.__context__) if x is not None)
    return isinstance(e, ConnectionError) or any(w in names for w in ("Offline", "LocalEntryNotFound", "Connect",
                                                                      "Timeout"))


def _load_error(e: Exception, name: str, split: str, subset: str | None, revision: str | None,
                key: str) -> DianjingError:
    cause = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    if _offline(e):
        args = ", ".join([repr(name)] + ([repr(subset)] if subset else []) + [f"split={split!r}"]
                         + ([f"revision={revision!r}"] if revision else []))
        return DianjingError(
            f"{key} = {name!r}: a hub dataset needs the network (or a copy in the datasets cache), and the hub "
            f"cannot be reached from here ({cause})",
            fix=f"on a machine with the network run python -c \"import datasets; datasets.load_dataset({args})"
                f".save_to_disk('DIR')\", bring DIR here and use {{path: DIR}} (or {{hub: DIR}}) in data.files")
    if isinstance(e, FileNotFoundError):
        return DianjingError(f"{key} = {name!r}: no such dataset on the hub, nor a local folder ({cause})",
                             fix="check the name (org/name, as on huggingface.co/datasets), or give a local path")
    if isinstance(e, ValueError):  # an unknown split or subset: datasets' message lists the ones there are
        return DianjingError(f"{key} = {name!r}: {cause}", fix=f"check {_sibling(key, 'split')} and "
                                                              f"{_sibling(key, 'subset')} of this entry")
    return DianjingError(f"{key} = {name!r}: cannot load it: {cause}")
