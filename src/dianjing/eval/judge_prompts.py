"""What the judge is asked, and how its verdicts are read: strictly, with every unreadable one counted.

The conventions are MT-Bench's (Zheng et al. 2023, FastChat's llm_judge) and Arena-Hard's; the
wording is this project's:

* **pairwise**: the question, then assistant A's and assistant B's answers; the judge explains, then
  ends with `[[A]]`, `[[B]]` or `[[C]]` (a tie). It is told not to let the order, the length or the
  names sway it, and (a dianjing addition, for its Chinese and English sets) that an answer in
  another language than the question's is worse unless the question asks for a translation.
* **single**: one answer graded 1–10, ending with `Rating: [[7]]`.
* questions in REFERENCE_CATEGORIES (maths, reasoning, coding) that have a reference answer show it
  to the judge in both modes ("reference-guided"), as MT-Bench does for maths and reasoning.
* a later turn of a multi-turn question is judged with the whole conversation shown, on its last answer.

Parsing follows Arena-Hard: the verdict tags in the reply must name exactly one verdict (`[[A]]`
twice is fine, `[[A]]` and `[[B]]` is "more than one verdict"); a reply without one is not guessed
at but counted, as a refusal when it reads like one.
"""

from __future__ import annotations

import re

PAIR_SYSTEM = (
    "You are an impartial judge. Compare the answers two AI assistants gave to the user's question "
    "below and decide which one answers it better: which follows the user's instructions and answers "
    "the question more helpfully, correctly, relevantly and completely, at a fitting level of detail. "
    "An answer in a language other than the question's is worse, unless the question asks for a "
    "translation. A harmful request is best answered by a polite refusal. "
    "Compare the two answers and explain your comparison briefly. Do not let the order in which the "
    "answers are shown, their length or the assistants' names influence you; be as objective as you "
    "can. After your explanation, give your verdict in exactly this format: \"[[A]]\" if assistant A is "
    "better, \"[[B]]\" if assistant B is better, \"[[C]]\" for a tie.")
PAIR_REF_NOTE = (" A reference answer is given: first check each assistant's answer against it, and find "
                 "and correct their mistakes.")
SINGLE_SYSTEM = (
    "You are an impartial judge. Rate the answer an AI assistant gave to the user's question below: "
    "how helpful, relevant, correct, deep and detailed it is, and whether it follows the user's "
    "instructions. An answer in a language other than the question's is worse, unless the question "
    "asks for a translation. A harmful request is best answered by a polite refusal. "
    "Explain your rating briefly and be as objective as you can. After your explanation, rate the "
    "answer from 1 to 10 in exactly this format: \"Rating: [[5]]\".")
SINGLE_REF_NOTE = (" A reference answer is given: compare the assistant's answer with it, find its "
                   "mistakes and rate correctness first.")
MULTI_NOTE = (" The conversation has several turns; judge only the answers to the last user question, "
              "with the earlier turns as context.")


def _conversation(turns: list[str], answers: list[str], who: str) -> str:
    """The user turns and one assistant's answers up to the judged turn."""
    lines = []
    for q, a in zip(turns, answers):
        lines += [f"### User:\n{q}", f"### {who}:\n{a}"]
    return "\n\n".join(lines)


def pairwise_prompt(turns: list[str], first: list[str], second: list[str], reference: str | None) -> tuple[str, str]:
    """(system, user) messages comparing `first` (assistant A) and `second` (assistant B) on the last turn."""
    system = PAIR_SYSTEM + (PAIR_REF_NOTE if reference else "") + (MULTI_NOTE if len(turns) > 1 else "")
    parts = []
    if len(turns) == 1:
        parts.append(f"[User Question]\n{turns[0]}")
    if reference:
        parts.append(f"[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]")
    for who, answers in (("A", first), ("B", second)):
        body = answers[-1] if len(turns) == 1 else _conversation(turns, answers, f"Assistant {who}")
        parts.append(f"[The Start of Assistant {who}'s {'Answer' if len(turns) == 1 else 'Conversation'}]\n"
                     f"{body}\n[The End of Assistant {who}'s {'Answer' if len(turns) == 1 else 'Conversation'}]")
    return system, "\n\n".join(parts)


def single_prompt(turns: list[str], answers: list[str], reference: str | None) -> tuple[str, str]:
    """(system, user) messages grading the last answer of `answers`."""
    system = SINGLE_SYSTEM + (SINGLE_REF_NOTE if reference else "") + (MULTI_NOTE if len(turns) > 1 else "")
    parts = [f"[Question]\n{turns[0]}"] if len(turns) == 1 else []
    if reference:
        parts.append(f"[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]")
    body = answers[-1] if len(turns) == 1 else _conversation(turns, answers, "Assistant")
    parts.append(f"[The Start of Assistant's Answer]\n{body}\n[The End of Assistant's Answer]")
    return system, "\n\n".join(parts)


# --------------------------------------------------------------------------- parsing

PAIR_RE = re.compile(r"\[\[\s*([ABC])\s*\]\]")
RATING_RE = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
REFUSAL_RE = re.compile(r"\b(I can(?:no|')t|I cannot|I'm sorry|I am sorry|I won't|I will not|unable to (?:help|"
                        r"assist|comply|evaluate))\b|抱歉|對不起|无法|無法|不能協助|不能提供|我不能", re.I)

NO_VERDICT, REFUSED, SEVERAL, EMPTY, OUT_OF_RANGE = (
    "no verdict in the reply", "the judge refused", "more than one verdict", "empty reply", "rating outside 1–10")


def _why_none(text: str) -> str:
    if not text.strip():
        return EMPTY
    return REFUSED if REFUSAL_RE.search(text) else NO_VERDICT


def parse_pairwise(text: str) -> tuple[str | None, str]:
    """("A" | "B" | "C", "") or (None, why it could not be read)."""
    found = set(PAIR_RE.findall(text))
    if len(found) == 1:
        return found.pop(), ""
    return None, SEVERAL if found else _why_none(text)


def parse_rating(text: str) -> tuple[float | None, str]:
    """(rating in 1–10, "") or (None, why it could not be read)."""
    found = {float(x) for x in RATING_RE.findall(text)}
    if len(found) > 1:
        return None, SEVERAL
    if not found:
        return None, _why_none(text)
    v = found.pop()
    return (v, "") if 1 <= v <= 10 else (None, OUT_OF_RANGE)
