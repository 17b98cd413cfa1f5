"""Options shared by the commands that read a config."""

from __future__ import annotations

import argparse
import typing

from pydantic import BaseModel, ValidationError

from dianjing.config import DataFile, RunConfig, TaskConfig, load_config
from dianjing.errors import ConfigError


def choices(model_cls: type[BaseModel], field: str) -> list[str]:
    """The values a config field's Literal type allows, for argparse's `choices`.

    A flag that sets a config key then offers exactly what the config accepts: one list, in
    config.py, instead of a copy here that drifts when a value is added there.
    """
    annotation = model_cls.model_fields[field].annotation
    values = [v for v in _literal_values(annotation) if isinstance(v, str)]
    if not values:
        raise TypeError(f"{model_cls.__name__}.{field} is not a Literal of strings: {annotation}")
    return values


def _literal_values(annotation) -> list:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [v for arg in typing.get_args(annotation) for v in _literal_values(arg)]  # Literal[...] | None


DEVICE_HELP = ("where the model computes: auto (default: CUDA when present, else Apple's MPS, else the CPU), "
               "cpu, cuda, cuda:N or mps")


def add_device_option(p: argparse.ArgumentParser, default: str | None = "auto", help: str = DEVICE_HELP) -> None:
    """--device for the commands that run a model (chat, serve, eval, predict, synth with a local teacher)."""
    p.add_argument("--device", default=default, metavar="DEVICE", help=help)


def check_device(setting: str, key: str = "--device") -> str:
    """Fail now, naming `key`, if `setting` is no device or one this machine lacks (before any model is
    loaded, which can take minutes); returns the setting for the library, which resolves it again."""
    from dianjing.precision import device

    device(setting, key=key)
    return setting


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config (sections model, data, adapter, train)")
    p.add_argument("--model", "-m", help="base model: HF folder, hub id, .gguf file, or gemma-3-270m")
    p.add_argument("--data", "-d", nargs="+", metavar="FILE", help="data files (.json/.jsonl/.csv/.parquet)")
    p.add_argument("--eval-data", nargs="+", metavar="FILE", help="held-out data files (default: data.eval_fraction "
                                                                  "of --data is held out)")
    p.add_argument("--task", choices=choices(TaskConfig, "type"),
                   help="sft (default): instruction data, generative; classify | pair | tag | extract-qa: "
                        "a specialist head on the model")
    p.add_argument("--format", "-f", choices=choices(DataFile, "format"),
                   help="format of the --data files (default: auto-detect, and say what was detected)")
    p.add_argument("--columns", nargs="+", metavar="KEY=FIELD",
                   help="the data files' own field names, e.g. --columns input=context output=response (Dolly "
                        "as alpaca); applies to --data and --eval-data (without --data: the config's files)")
    p.add_argument("--template", "-t", help="chat template: auto, model, plain, chatml, vicuna, alpaca")
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config key, e.g. --set train.lr=1e-4 (repeatable)")


def config_from_args(args, log=None) -> RunConfig:
    overrides = []
    if args.model:
        overrides.append(f"model.name={args.model}")
    if args.template:
        overrides.append(f"data.template={args.template}")
    if getattr(args, "task", None):
        overrides.append(f"task.type={args.task}")
    overrides += args.set
    cfg = load_config(args.config, overrides, log=log)
    columns = _columns(getattr(args, "columns", None))
    if args.data:
        fmt = args.format or "auto"
        cfg.data.files = [_data_file(path=f, format=fmt, columns=columns) for f in args.data]
    elif args.format or columns:
        for i, f in enumerate(cfg.data.files):
            cfg.data.files[i] = _data_file(**{**f.model_dump(), **({"format": args.format} if args.format else {}),
                                              **({"columns": columns} if columns else {})})
    if getattr(args, "eval_data", None):
        cfg.data.eval_files = [_data_file(path=f, columns=columns) for f in args.eval_data]
    return cfg


def _columns(pairs: list[str] | None) -> dict[str, str] | None:
    """--columns KEY=FIELD ... as a column mapping (checked with the data entry it goes into)."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        key, eq, own = pair.partition("=")
        if not eq or not key.strip() or not own.strip():
            raise ConfigError(f"--columns {pair!r}: expected KEY=FIELD", fix="e.g. --columns output=response")
        out[key.strip()] = own.strip()
    return out


def _data_file(**fields) -> DataFile:
    """A data entry from the command line; a bad --format/--columns for it is a ConfigError naming the flag."""
    try:
        return DataFile(**fields)
    except ValidationError as e:
        raise ConfigError("--data/--columns: " + "; ".join(x["msg"] for x in e.errors()),
                          fix="docs/data-formats.md lists the keys a column mapping can name") from None
