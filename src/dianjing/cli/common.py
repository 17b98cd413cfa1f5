"""Options shared by the commands that read a config."""

from __future__ import annotations

import argparse

from dianjing.config import RunConfig, load_config


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config (sections model, data, adapter, train)")
    p.add_argument("--model", "-m", help="base model: HF folder, hub id, .gguf file, or gemma-3-270m")
    p.add_argument("--data", "-d", nargs="+", metavar="FILE", help="data files (.json/.jsonl/.csv/.parquet)")
    p.add_argument("--eval-data", nargs="+", metavar="FILE", help="held-out data files (default: data.eval_fraction "
                                                                  "of --data is held out)")
    p.add_argument("--task", choices=["sft", "classify", "pair", "tag", "extract-qa"],
                   help="sft (default): instruction data, generative; classify | pair | tag | extract-qa: "
                        "a specialist head on the model")
    p.add_argument("--format", "-f", choices=["auto", "alpaca", "sharegpt", "messages", "prompt_completion"],
                   help="format of the --data files (default: auto-detect, and say what was detected)")
    p.add_argument("--template", "-t", help="chat template: auto, model, plain, chatml, vicuna, alpaca")
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config key, e.g. --set train.lr=1e-4 (repeatable)")


def config_from_args(args) -> RunConfig:
    overrides = []
    if args.model:
        overrides.append(f"model.name={args.model}")
    if args.template:
        overrides.append(f"data.template={args.template}")
    if getattr(args, "task", None):
        overrides.append(f"task.type={args.task}")
    overrides += args.set
    cfg = load_config(args.config, overrides)
    if args.data:
        from dianjing.config import DataFile

        fmt = args.format or "auto"
        cfg.data.files = [DataFile(path=f, format=fmt) for f in args.data]
    elif args.format:
        for f in cfg.data.files:
            f.format = args.format
    if getattr(args, "eval_data", None):
        from dianjing.config import DataFile

        cfg.data.eval_files = [DataFile(path=f) for f in args.eval_data]
    return cfg
