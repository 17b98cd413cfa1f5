"""The data of the quality-vs-quantity experiment: the held-out test set, the three training sets and the
three corruptions (truncate, shuffle, noise), each seeded per record, so that the same seed always gives
the same files (run.py's docstring and README.md say what each set holds).

A record's id is its language and its place in the source file ("en-0003" is alpaca_en_demo.json[3]);
every corruption draws from its own random.Random seeded with "seed:kind:id", so a record corrupted the
same way in two sets gets the same corrupted answer in both, whatever else is drawn.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from pathlib import Path

SOURCES = {"en": "alpaca_en_demo.json", "zh": "alpaca_zh_demo.json"}
KINDS = ("truncate", "shuffle", "noise")
TRUNCATE_KEEP = (0.10, 0.40)  # a truncated answer keeps this share of its units, uniform in the range
WORD_RATE = 0.15  # noise: the chance that a unit is deleted, swapped with the next or repeated
CHAR_RATE = 0.05  # noise: the chance that a letter of a Latin word is deleted or swapped with the next
CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# a unit: one Chinese character, or a run of anything else that is not white space (a word with its
# punctuation, a number, "，"); white space between units is kept as it was
UNIT = re.compile(rf"[{CJK}]|[^\s{CJK}]+")


# -- reading ----------------------------------------------------------------------------------------
def load_pairs(folder: Path) -> tuple[list[dict], Counter]:
    """Every usable pair of the two source files, and the count of what was left out, by reason: a record
    that is not an object with text instruction/input/output, an empty instruction or answer, or a
    question (instruction + input) seen before in its file (the first is kept)."""
    pairs, dropped = [], Counter()
    for lang, name in SOURCES.items():
        path = folder / name
        if not path.exists():
            raise SystemExit(f"{path} not found: give --data-dir, the folder that holds "
                             f"{' and '.join(SOURCES.values())}")
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise SystemExit(f"{path}: not JSON ({e}); expected an alpaca JSON list") from e
        if not isinstance(rows, list):
            raise SystemExit(f"{path}: expected a JSON list of alpaca records, got {type(rows).__name__}")
        seen: set[tuple[str, str]] = set()
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or not all(isinstance(r.get(k, ""), str) for k in ("instruction", "input",
                                                                                          "output")):
                dropped[f"{name}: not an alpaca record with text fields"] += 1
                continue
            ins, inp, out = r.get("instruction", "").strip(), r.get("input", "").strip(), r.get("output", "").strip()
            if not ins or not out:
                dropped[f"{name}: empty instruction or answer"] += 1
                continue
            if (ins, inp) in seen:
                dropped[f"{name}: the same question as an earlier record (first kept)"] += 1
                continue
            seen.add((ins, inp))
            pairs.append({"id": f"{lang}-{i:04d}", "lang": lang, "source": f"{name}[{i}]",
                          "instruction": ins, "input": inp, "output": out})
    return pairs, dropped


def by_lang(pairs: list[dict]) -> dict[str, list[dict]]:
    return {lang: [p for p in pairs if p["lang"] == lang] for lang in SOURCES}


def halves(n: int) -> dict[str, int]:
    """n split between the languages, en taking the odd one."""
    return {"en": n - n // 2, "zh": n // 2}


def split(pairs: list[dict], *, n_test: int, n_clean: int, n_noisy: int, seed: int) -> dict[str, list[dict]]:
    """test, clean and noisy-source records, each half English and half Chinese, disjoint; pool: every pair
    that is not in the test set (the donors of shuffled answers)."""
    need = {lang: halves(n_test)[lang] + halves(n_clean)[lang] + halves(n_noisy)[lang] for lang in SOURCES}
    out: dict[str, list[dict]] = {"test": [], "clean": [], "noisy": [], "pool": []}
    for lang, rows in by_lang(pairs).items():
        if need[lang] > len(rows):
            raise SystemExit(f"{lang}: {len(rows)} usable pairs, but --n-test {n_test}, --n-clean {n_clean} and "
                             f"--n-noisy {n_noisy} need {need[lang]} of them (half of each): lower --n-noisy or "
                             "--n-clean")
        rows = rows[:]
        random.Random(f"{seed}:split:{lang}").shuffle(rows)
        a, b = halves(n_test)[lang], halves(n_test)[lang] + halves(n_clean)[lang]
        c = b + halves(n_noisy)[lang]
        out["test"] += rows[:a]
        out["clean"] += rows[a:b]
        out["noisy"] += rows[b:c]
        out["pool"] += rows[a:]
    return out


# -- the corruptions ---------------------------------------------------------------------------------
def units(text: str) -> tuple[str, list[list[str]]]:
    """The text's leading white space, and its units, each with the white space that follows it."""
    ms = list(UNIT.finditer(text))
    if not ms:
        return text, []
    lead = text[:ms[0].start()]
    return lead, [[m.group(), text[m.end():(ms[k + 1].start() if k + 1 < len(ms) else len(text))]]
                  for k, m in enumerate(ms)]


def join(lead: str, us: list[list[str]]) -> str:
    return (lead + "".join(u + s for u, s in us)).strip()


def is_cjk(unit: str) -> bool:
    return len(unit) == 1 and re.match(rf"[{CJK}]", unit) is not None


def glue(us: list[list[str]], i: int) -> str:
    """What goes between a repeated unit and its copy: nothing where the text runs on without spaces there
    (Chinese, or punctuation glued to a word), else one space."""
    if is_cjk(us[i][0]):
        return ""
    around = us[i][1] if us[i][1] or i + 1 < len(us) else (us[i - 1][1] if i > 0 else " ")
    return " " if around else ""


def truncate(text: str, rng: random.Random) -> tuple[str, dict]:
    """The first ⌈f·n⌉ of the answer's n units, f uniform in TRUNCATE_KEEP; an answer of one unit is cut in
    characters the same way."""
    f = rng.uniform(*TRUNCATE_KEEP)
    lead, us = units(text)
    if len(us) >= 2:
        keep = max(1, math.ceil(f * len(us)))
        return join(lead, us[:keep]), {"kept_share": round(f, 3), "units": len(us), "kept_units": keep}
    keep = max(1, math.ceil(f * len(text)))
    return text[:keep], {"kept_share": round(f, 3), "chars": len(text), "kept_chars": keep}


def shuffle(rec: dict, donors: list[dict], rng: random.Random) -> tuple[str, dict]:
    """The answer of another question of the same language, drawn from the training pool (never the test set)
    among those whose answer differs from this one's."""
    others = [d for d in donors if d["id"] != rec["id"] and d["output"] != rec["output"]]
    if not others:
        raise SystemExit(f"no other {rec['lang']} answer to give {rec['id']}: the pool is too small for shuffling")
    d = rng.choice(others)
    return d["output"], {"answer_of": d["id"]}


def noise(text: str, rng: random.Random) -> tuple[str, dict]:
    """Machine noise: each unit, with probability WORD_RATE, is deleted, swapped with the next unit or repeated
    (one of the three, equally likely); then each letter of a Latin word of 3+ characters, with probability
    CHAR_RATE, is deleted or swapped with the next letter. An answer that comes out unchanged (too short for
    any draw to hit) gets one repeated unit, so that every noised answer differs from its original."""
    lead, us = units(text)
    ops = Counter()
    out: list[list[str]] = []
    i = 0
    while i < len(us):
        u, sep = us[i]
        if rng.random() < WORD_RATE:
            op = rng.choice(("delete", "swap", "repeat"))
            if op == "swap" and i + 1 < len(us):
                v, sep2 = us[i + 1]
                out += [[v, sep], [u, sep2]]
                ops["swapped"] += 1
                i += 2
                continue
            if op == "delete" and len(us) > 1:
                ops["deleted"] += 1
                i += 1
                continue
            out += [[u, glue(us, i)], [u, sep]]  # repeat (also a swap of the last unit, or a delete of the
            ops["repeated"] += 1                 # only one)
            i += 1
            continue
        out.append([u, sep])
        i += 1
    for pair in out:
        u = pair[0]
        if is_cjk(u) or len(u) < 3 or not re.search(r"[A-Za-z]", u):
            continue
        cs, j = list(u), 0
        while j < len(cs):
            if cs[j].isalpha() and rng.random() < CHAR_RATE:
                if rng.random() < 0.5 or j + 1 >= len(cs):
                    del cs[j]
                else:
                    cs[j], cs[j + 1] = cs[j + 1], cs[j]
                    j += 1
                ops["typos"] += 1
            j += 1
        pair[0] = "".join(cs) or u
    noised = join(lead, out)
    if noised == text.strip() and out:
        k = rng.randrange(len(out))
        out.insert(k, [out[k][0], glue(out, k)])
        ops["repeated"] += 1
        ops["forced"] += 1
        noised = join(lead, out)
    return noised, {"rates": {"unit": WORD_RATE, "letter": CHAR_RATE}, **dict(ops)}


def corrupt(rec: dict, kind: str, donors: dict[str, list[dict]], seed: int) -> dict:
    """A copy of `rec` with its answer corrupted by `kind`, and what was done (the manifest's fields)."""
    rng = random.Random(f"{seed}:{kind}:{rec['id']}")
    if kind == "truncate":
        answer, detail = truncate(rec["output"], rng)
    elif kind == "shuffle":
        answer, detail = shuffle(rec, donors[rec["lang"]], rng)
    elif kind == "noise":
        answer, detail = noise(rec["output"], rng)
    else:
        raise ValueError(kind)
    return {**rec, "output": answer, "corruption": kind, "detail": detail, "changed": answer != rec["output"],
            "original_chars": len(rec["output"])}


def kinds_for(n: int, rng: random.Random) -> list[str]:
    """n corruption kinds, as even a split over KINDS as n allows, in a seeded random order."""
    ks = [KINDS[i % len(KINDS)] for i in range(n)]
    rng.shuffle(ks)
    return ks


def build_sets(parts: dict[str, list[dict]], *, mixed_share: float, seed: int) -> dict[str, list[dict]]:
    """The three training sets, as manifest rows (each record with its corruption, or "none"):

    clean        the clean records, answers as written
    clean+noisy  the same clean records, plus every noisy-source record with its answer corrupted (kinds split
                 evenly, at random)
    mixed        the same questions as clean+noisy; exactly round(mixed_share × total) of them, drawn uniformly
                 at random from all of them (clean set included), get a corrupted answer (kinds split evenly);
                 the rest keep theirs
    """
    donors = by_lang(parts["pool"])
    clean = [{**r, "corruption": "none", "changed": False} for r in parts["clean"]]
    noisy_kinds = kinds_for(len(parts["noisy"]), random.Random(f"{seed}:kinds:noisy"))
    noisy = [corrupt(r, k, donors, seed) for r, k in zip(parts["noisy"], noisy_kinds)]
    everyone = parts["clean"] + parts["noisy"]
    rng = random.Random(f"{seed}:mixed")
    n_bad = round(mixed_share * len(everyone))
    bad = set(rng.sample(range(len(everyone)), n_bad))
    mixed_kinds = iter(kinds_for(n_bad, random.Random(f"{seed}:kinds:mixed")))
    mixed = [corrupt(r, next(mixed_kinds), donors, seed) if k in bad else {**r, "corruption": "none", "changed": False}
             for k, r in enumerate(everyone)]
    sets = {"clean": clean, "clean+noisy": clean + noisy, "mixed": mixed}
    for name, rows in sets.items():  # interleaved, so that a sequential batching does not see clean ones first
        random.Random(f"{seed}:order:{name}").shuffle(rows)
    return sets


# -- files ------------------------------------------------------------------------------------------
def alpaca(rec: dict, *, keep_id: bool = False) -> dict:
    row = {"instruction": rec["instruction"], "input": rec["input"], "output": rec["output"]}
    return {"id": rec["id"], "category": rec["lang"], **row} if keep_id else row


def user_turn(rec: dict) -> str:
    """The user's message, joined as dianjing's alpaca reader joins instruction and input."""
    return f"{rec['instruction']}\n\n{rec['input']}" if rec["input"] else rec["instruction"]


def slug(arm: str) -> str:
    return arm.replace("+", "_")


def write_files(work: Path, parts: dict[str, list[dict]], sets: dict[str, list[dict]]) -> dict[str, Path]:
    """work/data/: test.json (alpaca, with id and the language as category: dianjing eval),
    test_questions.jsonl (MT-Bench shape, the same prompts and references: dianjing judge), and per set
    train-<set>.json (alpaca, the three fields only) with manifest-<set>.jsonl beside it (every record's
    id, source, corruption and what it did)."""
    d = work / "data"
    d.mkdir(parents=True, exist_ok=True)
    files = {"test": d / "test.json", "questions": d / "test_questions.jsonl"}
    files["test"].write_text(json.dumps([alpaca(r, keep_id=True) for r in parts["test"]], ensure_ascii=False,
                                        indent=1), encoding="utf-8")
    files["questions"].write_text("".join(json.dumps({"question_id": r["id"], "category": r["lang"],
                                                      "turns": [user_turn(r)], "reference": [r["output"]]},
                                                     ensure_ascii=False) + "\n" for r in parts["test"]),
                                  encoding="utf-8")
    for name, rows in sets.items():
        files[name] = d / f"train-{slug(name)}.json"
        files[name].write_text(json.dumps([alpaca(r) for r in rows], ensure_ascii=False, indent=1), encoding="utf-8")
        (d / f"manifest-{slug(name)}.jsonl").write_text(
            "".join(json.dumps({k: r.get(k) for k in ("id", "lang", "source", "corruption", "changed", "detail",
                                                      "original_chars")} | {"chars": len(r["output"])},
                               ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return files


def languages(rows: list[dict]) -> dict[str, int]:
    return dict(Counter(r["lang"] for r in rows))


def describe(rows: list[dict]) -> dict:
    """A set's size, languages, corrupted share and corruptions by kind (and how many left the answer as it
    was: a one-character answer cannot be truncated)."""
    kinds = Counter(r["corruption"] for r in rows)
    bad = sum(n for k, n in kinds.items() if k != "none")
    return {"examples": len(rows), "languages": languages(rows),
            "corrupted": bad, "corrupted_share": round(bad / len(rows), 4) if rows else None,
            "by_kind": {k: kinds.get(k, 0) for k in ("none", *KINDS)},
            "unchanged_by_corruption": sum(1 for r in rows if r["corruption"] != "none" and not r["changed"]),
            "answer_chars_mean": round(sum(len(r["output"]) for r in rows) / len(rows), 1) if rows else None}


def examples(sets: dict[str, list[dict]], parts: dict[str, list[dict]], width: int = 400) -> list[dict]:
    """One real example of each corruption in clean+noisy: an English one, prose, its answer nearest 200 characters."""
    orig = {r["id"]: r for r in parts["pool"]}
    out = []
    for kind in KINDS:
        got = sorted((r for r in sets["clean+noisy"] if r["corruption"] == kind and r["changed"]),
                     key=lambda r: (r["lang"] != "en", any(c in orig[r["id"]]["output"] for c in "|`\n"),
                                    abs(len(orig[r["id"]]["output"]) - 200), r["id"]))
        if got:  # English prose (no table, code or line break) nearest 200 characters: shown whole in a table
            r = got[0]
            out.append({"kind": kind, "id": r["id"], "question": user_turn(r)[:width],
                        "original": orig[r["id"]]["output"][:width], "corrupted": r["output"][:width],
                        "detail": r["detail"]})
    return out
