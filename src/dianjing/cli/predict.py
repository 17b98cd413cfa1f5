"""dianjing predict: labels, tags or answer spans (with scores) for new data, as JSONL."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dianjing.cli.common import add_device_option, check_device, choices
from dianjing.config import DataConfig


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict labels / tags / answer spans for a file with a specialist run",
                       description="Write one JSON line per input record: classify/pair {label, score, scores}, "
                                   "tag {tokens, tags}, extract-qa {id, answer, start, score}. Labels in the "
                                   "input, if any, are ignored.")
    p.add_argument("run", metavar="RUN", help="run folder printed by `dianjing train`")
    p.add_argument("file", metavar="FILE", nargs="+", help="data to predict on (same formats as training)")
    p.add_argument("--out", "-o", help="output JSONL (default: standard output)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--on-error", choices=choices(DataConfig, "on_error"), default="stop")
    add_device_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from dianjing.cli import log
    from dianjing.specialist.evaluate import predict

    check_device(args.device)
    preds = predict(Path(args.run), args.file, on_error=args.on_error, batch_size=args.batch_size, log=log,
                    device=args.device)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for p in preds:
            out.write(json.dumps(p, ensure_ascii=False) + "\n")
    finally:
        if args.out:
            out.close()
    log(f"{len(preds)} predictions" + (f" written to {args.out}" if args.out else ""))
    return 0
