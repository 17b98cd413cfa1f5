"""report.json: generated, kept and rejected (by stage and reason), requests, retries, tokens, cost.

Everything is counted from the files of the work folder (the committed records and the
request journal), so the report of a run that was killed and resumed counts each record
and each paid request once, over all the runs.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from dianjing.teacher.client import RunStats
from dianjing.teacher.settings import SynthConfig
from dianjing.teacher.store import Journal, Ledger, now_iso


def _by_reason(rows: list[dict], stage: str) -> dict[str, int]:
    return dict(Counter(r["reason"] for r in rows if r["stage"] == stage).most_common())


def build_report(cfg: SynthConfig, ledger: Ledger, journal: Journal, stats: RunStats, *, teacher_url: str,
                 model: str, stages: dict[str, str], out: Path, error: str | None = None,
                 endpoints: list[dict] | None = None) -> dict:
    rejected = ledger.rows("rejected")
    stage_counts: dict[str, dict] = {}
    if cfg.generate.mode == "self-instruct":
        instr = ledger.rows("instructions")
        cls = ledger.rows("classify")
        inst = ledger.rows("instances")
        n_instances = sum(len(r["instances"]) for r in inst)
        for name, kept in (("instructions", len(instr)), ("classify", len(cls)), ("instances", n_instances)):
            rej = _by_reason(rejected, name)
            stage_counts[name] = {"generated": kept + sum(rej.values()), "kept": kept, "rejected": rej}
        stage_counts["classify"]["classification"] = sum(1 for r in cls if r["is_classification"])
        stage_counts["classify"]["not_classification"] = sum(1 for r in cls if not r["is_classification"])
        names = ("outputs",)
    else:
        names = ("oneshot",)
    kept_out = _count_lines(out)
    for name in names:
        rej = _by_reason(rejected, name)
        stage_counts[name] = {"generated": kept_out + sum(rej.values()), "kept": kept_out, "rejected": rej}

    prompt_t, completion_t, no_usage = journal.prompt_tokens, journal.completion_tokens, journal.without_usage
    failures = sum(journal.failures.values())
    t = cfg.teacher
    cost = None
    if t.price_per_1m_prompt_tokens is not None or t.price_per_1m_completion_tokens is not None:
        amount = (prompt_t * (t.price_per_1m_prompt_tokens or 0)
                  + completion_t * (t.price_per_1m_completion_tokens or 0)) / 1e6
        cost = {"amount": round(amount, 6), "currency": t.currency,
                "prices_per_1m_tokens": {"prompt": t.price_per_1m_prompt_tokens,
                                         "completion": t.price_per_1m_completion_tokens},
                "note": "from the usage the server reported"
                        + (f"; {no_usage} replies reported none" if no_usage else "")}
    flat = Counter()
    for r in rejected:
        flat[f"{r['stage']}: {r['reason']}"] += 1
    return {
        "out": str(out), "time": now_iso(), "mode": cfg.generate.mode,
        "complete": all(v == "done" for v in stages.values()),
        "stages_state": stages, "error": error,
        "teacher": {"url": teacher_url, "model": model, "terms_of_use": t.terms_of_use},
        "generated": kept_out + len(rejected), "kept": kept_out, "rejected_total": len(rejected),
        "rejected": dict(flat.most_common()), "stages": stage_counts,
        "requests": {"paid_replies": journal.replies, "failed_attempts": failures,
                     "failed_attempts_by_cause": dict(journal.failures.most_common()),
                     "retries": failures - journal.gave_up, "gave_up": journal.gave_up,
                     "this_run": {"sent": stats.sent, "new_replies": stats.replies,
                                  "answered_from_journal": stats.cached, "retries": stats.retries,
                                  "by_endpoint": endpoints or []}},
        "tokens": {"prompt": prompt_t, "completion": completion_t, "total": prompt_t + completion_t,
                   "replies_without_usage": no_usage},
        "cost_estimate": cost,
    }


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def write_report(path: Path, report: dict) -> None:
    """Atomically: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
