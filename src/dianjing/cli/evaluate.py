"""dianjing eval: score a specialist run on a labelled file; metrics printed and saved in the run folder."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="score a run on labelled data (accuracy/F1, entity F1, EM/F1)",
                       description="Predict on a labelled file with a trained specialist run and score it: "
                                   "accuracy and macro-F1 (classify/pair), entity-level P/R/F1 (tag), "
                                   "EM and F1 (extract-qa, character-level for Chinese). The metrics are "
                                   "written to RUN/eval/<file name>.json.")
    p.add_argument("run", metavar="RUN", help="run folder printed by `dianjing train`")
    p.add_argument("--data", "-d", nargs="+", required=True, metavar="FILE", help="labelled data files")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--on-error", choices=["stop", "skip"], default="skip",
                   help="bad records: stop at the first, or skip and count them (default)")
    p.add_argument("--out", help="metrics JSON (default RUN/eval/<first data file name>.json)")
    p.set_defaults(func=run)


def run(args) -> int:
    from dianjing.cli import log
    from dianjing.specialist import data as sd
    from dianjing.specialist.task import load_head, read_examples

    run_dir = Path(args.run)
    head, info = load_head(run_dir, log=log)
    cfg = _cfg(info, args.on_error)
    examples, report = read_examples(cfg, args.data, require_labels=True, log=log)
    if head.task == "tag":
        examples = sd.check_tags(examples, set(head.labels), report, args.on_error)
    elif head.task in ("classify", "pair"):
        examples = sd.check_labels(examples, head.labels, report, args.on_error)
    if not examples:
        from dianjing.errors import DataError

        raise DataError("no labelled example left to score", file=args.data[0])
    preds = head.predict(examples, args.batch_size)
    scores = head.score(examples, preds)
    result = {"run": str(run_dir), "task": head.task, "data": args.data, "scores": scores,
              "data_report": report.summary()}
    out = Path(args.out) if args.out else run_dir / "eval" / (Path(args.data[0]).stem + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    _print(head.task, scores)
    log(f"metrics written to {out}")
    return 0


def _cfg(info: dict, on_error: str):
    from dianjing.config import RunConfig

    cfg = RunConfig()
    cfg.task = cfg.task.model_validate(info["task"])
    cfg.data.on_error = on_error
    cfg.data.max_length = info["max_length"]
    return cfg


def _print(task: str, scores: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{task}: {scores.get('count', '')} examples")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in scores.items():
        if isinstance(v, float):
            t.add_row(k, f"{v:.4f}" if v <= 1 else f"{v:.2f}")
        elif isinstance(v, int):
            t.add_row(k, str(v))
    Console().print(t)
    if task == "tag" and scores.get("per_type"):
        pt = Table(title="entities by type")
        for c in ("type", "precision", "recall", "f1", "support"):
            pt.add_column(c, justify="right" if c != "type" else "left")
        for typ, r in sorted(scores["per_type"].items()):
            pt.add_row(typ, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", str(r["support"]))
        Console().print(pt)
