"""`dianjing` command line: one thin module per subcommand; each parses, loads config, calls the library."""

from __future__ import annotations

import argparse
import os
import sys

from dianjing import __version__
from dianjing.errors import DianjingError


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(
        prog="dianjing", description="點睛 dianjing — instruction fine-tuning of pre-trained language models.")
    parser.add_argument("--version", action="version", version=f"dianjing {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from dianjing.cli import chat, doctor, evaluate, export, predict, serve, train, validate

    for mod in (train, validate, evaluate, predict, chat, serve, export, doctor):
        mod.add_parser(sub)
    from dianjing.cli import mix; mix.add_parser(sub)  # noqa: E702  (generalist: FLAN-style mixtures)
    from dianjing.cli import synth; synth.add_parser(sub)  # noqa: E702
    from dianjing.cli import judge, cost; judge.add_parser(sub); cost.add_parser(sub)  # noqa: E401,E702  (eval/)
    from dianjing.cli import report; report.add_parser(sub)  # noqa: E702  (eval/report.py)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` hands them to torchrun
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except DianjingError as e:
        where = f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}: " if "WORLD_SIZE" in os.environ else ""
        print(f"{where}error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
