"""Scoring and predicting with a trained specialist run: what `dianjing eval --data` and
`dianjing predict` do, below the command line.

A run folder's specialist.json says how its head reads data (task settings, max_length) and
which labels it knows; new data is read with those settings, examples whose labels or tag
types the head never saw are refused or counted (data.on_error), and the head predicts and
scores the rest (metrics from eval.metrics, through Head.score). The model computes on the
device `--device` names (load_head moves it there; Head.logits_of moves each batch).
"""

from __future__ import annotations

import json
from pathlib import Path

from dianjing.config import RunConfig
from dianjing.data import specialist_readers as sd
from dianjing.errors import DataError
from dianjing.precision import device as resolve_device
from dianjing.specialist.task import Head, load_head, read_examples


def config_from_info(info: dict, on_error: str) -> RunConfig:
    """The config a run's head reads new data with: its task settings and max_length, and `on_error`.

    The run's own data settings (files, eval_fraction, ...) do not apply to the new files, so
    they are left at their defaults.
    """
    cfg = RunConfig()
    cfg.task = cfg.task.model_validate(info["task"])
    cfg.data.on_error = on_error
    cfg.data.max_length = info["max_length"]
    return cfg


def keep_known(head: Head, examples: list, report: sd.ReadReport, on_error: str) -> list:
    """The examples whose labels (classify/pair) or tag types (tag) the head was trained on.

    A label the model has no output for cannot be scored: refused with on_error="stop", counted
    in `report` and dropped with "skip". extract-qa examples have no labels to check.
    """
    if head.task == "tag":
        return sd.check_tags(examples, set(head.labels), report, on_error)
    if head.task in ("classify", "pair"):
        return sd.check_labels(examples, head.labels, report, on_error)
    return examples


def read_for_head(run_dir: Path, paths: list[str], on_error: str, require_labels: bool, log=print,
                  command: str = "dianjing eval", device: str = "auto") -> tuple[Head, list, sd.ReadReport]:
    """Load a run's head onto `device` and read `paths` as it was trained to read them (labels checked
    when required). The device is resolved first: one this machine lacks fails before anything loads."""
    resolve_device(device, key="--device")  # load_head resolves it again, naming model.device
    head, info = load_head(Path(run_dir), log=log, command=command, device=device)
    cfg = config_from_info(info, on_error)
    examples, report = read_examples(cfg, paths, require_labels=require_labels, log=log)
    if require_labels:
        examples = keep_known(head, examples, report, on_error)
    return head, examples, report


def evaluate(run_dir: Path, paths: list[str], on_error: str = "skip", batch_size: int = 16,
             out: Path | None = None, log=print, device: str = "auto") -> tuple[dict, Path]:
    """Score a specialist run on labelled files; the result is written to `out` (default RUN/eval/<file>.json).

    Returns the result ({run, task, data, scores, data_report}) and where it was written.
    """
    run_dir = Path(run_dir)
    head, examples, report = read_for_head(run_dir, paths, on_error, require_labels=True, log=log, device=device)
    if not examples:
        raise DataError("no labelled example left to score", file=paths[0])
    scores = head.score(examples, head.predict(examples, batch_size))
    result = {"run": str(run_dir), "task": head.task, "data": paths, "scores": scores,
              "data_report": report.summary()}
    out = Path(out) if out else run_dir / "eval" / (Path(paths[0]).stem + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return result, out


def predict(run_dir: Path, paths: list[str], on_error: str = "stop", batch_size: int = 16,
            log=print, device: str = "auto") -> list[dict]:
    """One prediction per readable record of `paths`, each {"where": file:line, **prediction}.

    Labels in the files, if any, are ignored: nothing is checked against the run's labels.
    """
    head, examples, _ = read_for_head(Path(run_dir), paths, on_error, require_labels=False, log=log,
                                      command="dianjing predict", device=device)
    preds = head.predict(examples, batch_size)
    return [{"where": ex.where, **p} for ex, p in zip(examples, preds)]


def print_scores(task: str, scores: dict) -> None:
    """The metrics as a table on the terminal; for tag, also precision/recall/F1 per entity type."""
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
