"""Judge results: win / tie / loss, the tie-adjusted win rate with a bootstrap interval, the agreement of
the two orders, answer lengths, per category; single-answer ratings. Pure Python, seeded.

Pairwise, per judged turn: game 1 shows side a as assistant A, game 2 shows side b as A. Each game's
verdict names a winner (a, b or tie); the turn's outcome is that winner when both games agree, and
a tie when they do not (a verdict that flips with the order says more about the position than the
answers: MT-Bench's rule). A turn with a game whose verdict could not be read has no outcome: it is
counted by reason, not guessed.

win rate = (wins + ties / 2) / n over the turns with an outcome, from side a's view; its interval is
the percentile bootstrap over those turns (`bootstrap`, `level`, `seed`): fewer turns, wider interval.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from dianjing.eval.text import tokenize

SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def game_winner(verdict: str | None, order: tuple[str, str]) -> str | None:
    """The side a game's verdict names: "a", "b", "tie", or None (no verdict)."""
    if verdict is None:
        return None
    return "tie" if verdict == "C" else order[0] if verdict == "A" else order[1]


def outcome(w1: str | None, w2: str | None) -> tuple[str | None, bool | None]:
    """Side a's outcome (win, tie, loss; None without both verdicts) and whether the two orders agreed."""
    if w1 is None or w2 is None:
        return None, None
    agree = w1 == w2
    w = w1 if agree else "tie"
    return {"a": "win", "b": "loss", "tie": "tie"}[w], agree


def bootstrap_interval(values: list[float], n: int = 1000, level: float = 0.95, seed: int = 0) -> list[float] | None:
    """Percentile bootstrap interval of the mean of `values` (None without values)."""
    if not values:
        return None
    rng = random.Random(seed)
    k = len(values)
    means = sorted(sum(values[rng.randrange(k)] for _ in range(k)) / k for _ in range(n))
    lo = means[int((1 - level) / 2 * (n - 1))]
    hi = means[int(round((1 + level) / 2 * (n - 1)))]
    return [round(lo, 4), round(hi, 4)]


def win_stats(outcomes: list[str], *, bootstrap: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    c = Counter(outcomes)
    n = len(outcomes)
    scores = [SCORE[o] for o in outcomes]
    return {"n": n, "wins": c["win"], "ties": c["tie"], "losses": c["loss"],
            "win_rate": round(sum(scores) / n, 4) if n else None,
            "ci": bootstrap_interval(scores, bootstrap, level, seed)}


def length(texts: list[str]) -> dict:
    """Mean length of answers, in ROUGE tokens (words; Chinese characters one by one) and in characters."""
    if not texts:
        return {"tokens": None, "chars": None}
    return {"tokens": round(sum(len(tokenize(t)) for t in texts) / len(texts), 1),
            "chars": round(sum(len(t) for t in texts) / len(texts), 1)}


def pairwise_summary(units: list[dict], *, bootstrap: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """`units`: one per judged turn, {category, outcome, agree, unparsed, answer_a, answer_b, positions}."""
    judged = [u for u in units if u["outcome"] is not None]
    out = win_stats([u["outcome"] for u in judged], bootstrap=bootstrap, level=level, seed=seed)
    both = [u for u in units if u["agree"] is not None]
    out["agreement"] = round(sum(u["agree"] for u in both) / len(both), 4) if both else None
    picks = [p for u in units for p in u["positions"] if p in ("A", "B")]
    out["first_position_picked"] = round(picks.count("A") / len(picks), 4) if picks else None
    out["unjudged"] = len(units) - len(judged)
    out["unjudged_by_reason"] = dict(Counter(r for u in units for r in u["unparsed"]).most_common())
    out["answer_length"] = {"a": length([u["answer_a"] for u in units]), "b": length([u["answer_b"] for u in units])}
    cats: dict[str, list[dict]] = defaultdict(list)
    for u in units:
        cats[u["category"]].append(u)
    out["by_category"] = {}
    for cat, us in sorted(cats.items()):
        j = [u for u in us if u["outcome"] is not None]
        row = win_stats([u["outcome"] for u in j], bootstrap=bootstrap, level=level, seed=seed)
        row["unjudged"] = len(us) - len(j)
        row["answer_length"] = {"a": length([u["answer_a"] for u in us])["tokens"],
                                "b": length([u["answer_b"] for u in us])["tokens"]}
        out["by_category"][cat] = row
    return out


def rating_stats(ratings: list[float], *, bootstrap: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    n = len(ratings)
    return {"n": n, "mean": round(sum(ratings) / n, 3) if n else None,
            "ci": bootstrap_interval(ratings, bootstrap, level, seed),
            "histogram": {str(int(k)) if k == int(k) else str(k): v for k, v in sorted(Counter(ratings).items())}}


def single_summary(units: list[dict], *, bootstrap: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """`units`: one per (side, judged turn), {side, category, rating, unparsed, answer}."""
    out = {}
    for side in sorted({u["side"] for u in units}):
        us = [u for u in units if u["side"] == side]
        row = rating_stats([u["rating"] for u in us if u["rating"] is not None],
                           bootstrap=bootstrap, level=level, seed=seed)
        row["unjudged"] = sum(1 for u in us if u["rating"] is None)
        row["unjudged_by_reason"] = dict(Counter(u["unparsed"] for u in us if u["unparsed"]).most_common())
        row["answer_length"] = length([u["answer"] for u in us])
        cats: dict[str, list[float]] = defaultdict(list)
        for u in us:
            cats[u["category"]].append(u["rating"])
        row["by_category"] = {c: {"n": sum(r is not None for r in rs),
                                  "mean": round(sum(r for r in rs if r is not None) / max(1, sum(r is not None for r in rs)), 3)
                                  if any(r is not None for r in rs) else None}
                              for c, rs in sorted(cats.items())}
        out[side] = row
    return out


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def print_pairwise(s: dict, a: str, b: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    t = Table(title=f"{a} (a) vs {b} (b): a's win rate, ties counted half")
    for name in ("category", "n", "win", "tie", "loss", "win rate %", "95% CI", "unjudged", "len a", "len b"):
        t.add_column(name, justify="left" if name == "category" else "right")
    rows = [(c, r, r["answer_length"]["a"], r["answer_length"]["b"]) for c, r in s["by_category"].items()]
    rows.append(("[bold]all[/]", s, s["answer_length"]["a"]["tokens"], s["answer_length"]["b"]["tokens"]))
    for cat, r, la, lb in rows:
        ci = "–" if r["ci"] is None else f"{_pct(r['ci'][0])}–{_pct(r['ci'][1])}"
        t.add_row(cat, str(r["n"]), str(r["wins"]), str(r["ties"]), str(r["losses"]), _pct(r["win_rate"]), ci,
                  str(r["unjudged"]), "–" if la is None else f"{la:g}", "–" if lb is None else f"{lb:g}")
    console.print(t)
    console.print(f"the two orders agreed on {_pct(s['agreement'])}% of the turns judged in both; the judge picked "
                  f"the first position in {_pct(s['first_position_picked'])}% of its A/B verdicts; lengths in "
                  "tokens (words, Chinese characters)")
    if s["unjudged"]:
        console.print(f"{s['unjudged']} turns without an outcome: "
                      + "; ".join(f"{n} × {why}" for why, n in s["unjudged_by_reason"].items()))


def print_single(s: dict, names: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    cats = sorted({c for r in s.values() for c in r["by_category"]})
    t = Table(title="single-answer grading, 1–10")
    t.add_column("category")
    for side in s:
        t.add_column(f"{names[side]} ({side})", justify="right")
    for c in cats:
        t.add_row(c, *[_num(s[side]["by_category"].get(c, {}).get("mean")) for side in s])
    t.add_row("[bold]all[/]", *[f"{_num(r['mean'])} ({_ci(r['ci'])})" for r in s.values()])
    console.print(t)
    for side, r in s.items():
        if r["unjudged"]:
            console.print(f"{names[side]}: {r['unjudged']} answers without a rating: "
                          + "; ".join(f"{n} × {why}" for why, n in r["unjudged_by_reason"].items()))


def _num(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def _ci(ci) -> str:
    return "–" if ci is None else f"{ci[0]:.2f}–{ci[1]:.2f}"
