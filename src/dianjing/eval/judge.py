"""`dianjing judge`: two sides' answers to a question set, compared (or graded) by an OpenAI-compatible judge.

    questions (eval/questions.py) → each side's answers (eval/answers.py: a run or model answering with its
    own template, a file, or the references) → judge requests (eval/judge_prompts.py), sent through the
    teacher's client (teacher/client.py: concurrency, retries, token budget, several endpoints, and the
    request journal OUT/requests.jsonl, so a killed run resumes without paying twice) → verdicts, parsed
    strictly → results (eval/judge_stats.py) → OUT/result.json, OUT/judgments.jsonl, a printed table

Pairwise (default): every turn is judged twice, a's answer shown first and then b's, and the two verdicts
combined (a flip is a tie). Single: every answer of each side is graded 1–10.

Nothing is guessed: a verdict that cannot be read, a request that failed after its retries, or a
request the judge's server refused (HTTP 400/413/422: e.g. a content filter on a harmful question)
leaves that turn without an outcome, counted by reason; a wrong key, URL or model (401/403/404)
stops the run. Run the same command again to retry what failed: the rest is read from the journal.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

from dianjing.eval import judge_prompts as P
from dianjing.eval import judge_stats as S
from dianjing.eval.answers import Side
from dianjing.eval.questions import REFERENCE_CATEGORIES, Question
from dianjing.teacher.client import RequestFailed, TeacherError
from dianjing.teacher.settings import TeacherSettings

FATAL_STATUS = (401, 403, 404)


def default_out(a: str, b: str | None, questions: str, mode: str) -> Path:
    """A run's eval/ folder (else ./eval), named after the questions and the other side."""
    from dianjing.infer.load import is_run

    def name(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(s.removeprefix("builtin:")).name.removesuffix(".jsonl"))

    label = f"judge-{mode}-{name(questions)}" + (f"-vs-{name(b)}" if b else "")
    return Path(a) / "eval" / label if is_run(a) else Path("eval") / (label.replace("judge-", f"judge-{name(a)}-", 1))


def units_of(questions: list[Question], sides: list[Side]) -> tuple[list[tuple[Question, int]], dict]:
    """(question, turn) pairs every side has an answer for; the questions left out, by reason."""
    units, left = [], {}
    for q in questions:
        lacking = [s.key for s in sides if q.id not in s.answers]
        if lacking:
            why = f"no answer from side {' and '.join(lacking)}"
            left[why] = left.get(why, 0) + 1
            continue
        units += [(q, k) for k in range(len(q.turns))]
    return units, left


def _reference(q: Question, k: int) -> str | None:
    return q.reference(k) if q.category.lower() in REFERENCE_CATEGORIES else None


async def _ask(judge, name: str, system: str, prompt: str) -> dict:
    """One judge request: its reply, or why there is none (a failure after retries, a refused request)."""
    try:
        r = await judge.ask(name, prompt, system=system)
    except RequestFailed as e:
        return {"error": f"no reply after {e.attempts} attempts: {e.cause}"}
    except TeacherError as e:
        if e.status in FATAL_STATUS or e.status is None:
            raise
        return {"error": f"the judge's server refused the request: HTTP {e.status}"}
    return {"text": r.text, "key": r.key, "cached": r.cached, "finish_reason": r.finish_reason}


async def _run_all(judge, plans: list[tuple[str, str, str]], log) -> list[dict]:
    done, t0 = 0, time.monotonic()
    step = max(1, len(plans) // 10)

    async def one(plan):
        nonlocal done
        res = await _ask(judge, *plan)
        done += 1
        if done % step == 0 or done == len(plans):
            log(f"  judged {done}/{len(plans)} ({time.monotonic() - t0:.0f}s)")
        return res

    try:
        return await asyncio.gather(*(one(p) for p in plans))
    finally:
        await judge.aclose()


def pairwise(judge, units: list[tuple[Question, int]], a: Side, b: Side, log) -> tuple[list[dict], list[dict]]:
    """Both orders of every unit: the per-turn units for the statistics and one record per game."""
    plans, meta = [], []
    for q, k in units:
        turns, ref = list(q.turns[:k + 1]), _reference(q, k)
        for game, (first, second) in enumerate(((a, b), (b, a)), 1):
            system, prompt = P.pairwise_prompt(turns, first.answers[q.id][:k + 1], second.answers[q.id][:k + 1], ref)
            plans.append((f"pair/{q.id}/t{k + 1}/g{game}", system, prompt))
            meta.append((q, k, game, (first.key, second.key), ref is not None))
    replies = asyncio.run(_run_all(judge, plans, log))
    games, by_unit = [], {}
    for (q, k, game, order, with_ref), rep in zip(meta, replies):
        verdict, why = P.parse_pairwise(rep["text"]) if "text" in rep else (None, rep["error"])
        g = {"question_id": q.id, "turn": k + 1, "category": q.category, "game": game, "order": list(order),
             "reference_shown": with_ref, "verdict": verdict, "winner": S.game_winner(verdict, order),
             "unparsed": why or None, "judgment": rep.get("text"), "request": rep.get("key"),
             "from_journal": rep.get("cached")}
        games.append(g)
        by_unit.setdefault((q.id, k), []).append(g)
    units_out = []
    for q, k in units:
        g1, g2 = by_unit[(q.id, k)]
        result, agree = S.outcome(g1["winner"], g2["winner"])
        units_out.append({"question_id": q.id, "turn": k + 1, "category": q.category, "outcome": result,
                          "agree": agree, "unparsed": [g["unparsed"] for g in (g1, g2) if g["unparsed"]],
                          "positions": [g["verdict"] for g in (g1, g2)],
                          "answer_a": a.answers[q.id][k], "answer_b": b.answers[q.id][k]})
    return units_out, games


def single(judge, units: list[tuple[Question, int]], sides: list[Side], log) -> tuple[list[dict], list[dict]]:
    plans, meta = [], []
    for side in sides:
        for q, k in units:
            ref = _reference(q, k)
            system, prompt = P.single_prompt(list(q.turns[:k + 1]), side.answers[q.id][:k + 1], ref)
            plans.append((f"single/{side.key}/{q.id}/t{k + 1}", system, prompt))
            meta.append((side, q, k, ref is not None))
    replies = asyncio.run(_run_all(judge, plans, log))
    units_out, records = [], []
    for (side, q, k, with_ref), rep in zip(meta, replies):
        rating, why = P.parse_rating(rep["text"]) if "text" in rep else (None, rep["error"])
        records.append({"side": side.key, "question_id": q.id, "turn": k + 1, "category": q.category,
                        "reference_shown": with_ref, "rating": rating, "unparsed": why or None,
                        "judgment": rep.get("text"), "request": rep.get("key"), "from_journal": rep.get("cached")})
        units_out.append({"side": side.key, "category": q.category, "rating": rating, "unparsed": why or None,
                          "answer": side.answers[q.id][k]})
    return units_out, records


def template_warnings(sides: list[Side]) -> list[str]:
    """Two sides rendering their prompts with different chat templates: allowed, and said."""
    tmpl = [s for s in sides if s.template is not None]
    if len(tmpl) == 2 and tmpl[0].template_digest != tmpl[1].template_digest:
        a, b = tmpl
        return [f"the sides use different chat templates: {a.key} ({a.source}) '{a.template}', {b.key} ({b.source}) "
                f"'{b.template}'; each answered with its own, as it was trained, so the comparison includes the "
                "template"]
    return []


def requests_report(journal, judge, settings: TeacherSettings) -> dict:
    st = judge.stats
    out = {"paid_replies": journal.replies, "failed_attempts": sum(journal.failures.values()),
           "failed_attempts_by_cause": dict(journal.failures.most_common()), "gave_up": journal.gave_up,
           "this_run": {"sent": st.sent, "new_replies": st.replies, "answered_from_journal": st.cached,
                        "retries": st.retries},
           "by_endpoint": judge.endpoint_stats(),
           "tokens": {"prompt": journal.prompt_tokens, "completion": journal.completion_tokens}}
    if settings.price_per_1m_prompt_tokens is not None or settings.price_per_1m_completion_tokens is not None:
        amount = (journal.prompt_tokens * (settings.price_per_1m_prompt_tokens or 0)
                  + journal.completion_tokens * (settings.price_per_1m_completion_tokens or 0)) / 1e6
        out["cost_estimate"] = {"amount": round(amount, 6), "currency": settings.currency,
                                "note": "from the usage the judge's server reported, over every run of this folder"}
    return out


def write_outputs(out: Path, result: dict, records: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "judgments.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                         encoding="utf-8")
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out / "result.json")


def make_side(key: str, source: str, questions: list[Question], gen, out: Path, *, on_error: str,
              precision: str, device: str, log) -> Side:
    from dianjing.eval.answers import REFERENCE, file_side, model_side, reference_side, side_kind

    kind = side_kind(source)
    if kind == REFERENCE:
        return reference_side(key, questions)
    if kind == "file":
        return file_side(key, source, questions, on_error, log)
    return model_side(key, source, questions, gen, out, precision=precision, device=device, log=log)


def pick_questions(qs: list[Question], categories: list[str] | None, limit: int | None) -> list[Question]:
    from dianjing.errors import ConfigError

    if categories:
        known = sorted({q.category for q in qs})
        unknown = [c for c in categories if c not in known]
        if unknown:
            raise ConfigError(f"--category {', '.join(unknown)}: no such category in the questions",
                              fix=f"the categories are {', '.join(known)}")
        qs = [q for q in qs if q.category in categories]
    return qs[:limit] if limit else qs


def run_judge(a: str, b: str | None, *, questions: str, mode: str, judge_settings: TeacherSettings,
              gen, out: Path | None = None, bootstrap: int = 1000, level: float = 0.95, seed: int = 0,
              max_questions: int | None = None, categories: list[str] | None = None, on_error: str = "skip",
              precision: str = "auto", device: str = "auto", log=print) -> tuple[dict, Path]:
    """Judge a against b (pairwise) or grade a (and b) alone (single); the result and the folder it is in."""
    from dianjing.errors import ConfigError, DataError
    from dianjing.eval.questions import read_questions
    from dianjing.teacher.client import HttpTeacher
    from dianjing.teacher.store import Journal

    if mode == "pairwise" and b is None:
        raise ConfigError("pairwise judging needs two sides: dianjing judge A B …",
                          fix="give B (a run, a model, an answers file or 'reference'), or --mode single")
    qs, qreport = read_questions(questions, on_error, log=log)
    qs = pick_questions(qs, categories, max_questions)
    out = Path(out) if out else default_out(a, b, questions, mode)
    out.mkdir(parents=True, exist_ok=True)
    sides = [make_side(k, s, qs, gen, out, on_error=on_error, precision=precision, device=device, log=log)
             for k, s in (("a", a), ("b", b)) if s is not None]
    warnings = template_warnings(sides)
    for w in warnings:
        log(f"note: {w}")
    units, left = units_of(qs, sides)
    for why, n in left.items():
        log(f"{n} questions not judged: {why}")
    if not units:
        raise DataError("nothing to judge: no question has an answer from every side",
                        fix="check the answers files' question_id values against the questions")
    journal = Journal(out / "requests.jsonl")
    judge = HttpTeacher(judge_settings, journal, log)
    log(f"judge {judge_settings.model} at {judge.url}: {mode}, {len(units)} turns of {len(qs) - sum(left.values())} "
        f"questions" + (" (each in both orders)" if mode == "pairwise" else f" × {len(sides)} sides"))
    t0 = time.monotonic()
    stats = dict(bootstrap=bootstrap, level=level, seed=seed)
    try:
        if mode == "pairwise":
            unit_rows, records = pairwise(judge, units, sides[0], sides[1], log)
            summary = S.pairwise_summary(unit_rows, **stats)
        else:
            unit_rows, records = single(judge, units, sides, log)
            summary = S.single_summary(unit_rows, **stats)
        requests = requests_report(journal, judge, judge_settings)
    finally:
        journal.close()
    unjudged = sum(1 for r in records if r["unparsed"])
    result = {"mode": mode, "questions": qreport.summary(), "questions_judged": len(qs) - sum(left.values()),
              "questions_not_judged": left, "turns": len(units),
              "sides": {s.key: s.describe() for s in sides},
              "judge": {"model": judge_settings.model, "urls": judge_settings.urls(), "api": judge_settings.api,
                        "temperature": judge_settings.temperature, "max_tokens": judge_settings.max_tokens},
              "bootstrap": {"resamples": bootstrap, "level": level, "seed": seed},
              "warnings": warnings,
              "complete": not any((r["unparsed"] or "").startswith("no reply") for r in records),
              "unparsed_judgments": unjudged, "results": summary, "requests": requests,
              "elapsed_s": round(time.monotonic() - t0, 1), "judgments": str(out / "judgments.jsonl")}
    write_outputs(out, result, records)
    return result, out
