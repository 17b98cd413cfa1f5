"""De-duplication speed: dianjing's indexed ROUGE-L against the all-pairs way Alpaca does it.

    python bench/dedup.py                       # N=50,000; the naive peer on the first 3,000
    python bench/dedup.py --n 2000 --naive-n 500

Instructions: the real ones in ../shared/data (self-instruct's 175 seeds, alpaca_en_demo and
alpaca_zh_demo, ~2,200) plus dianjing's seeds, and programmatic variants of them that look like
what a teacher writes, in the same mix at any N: 25% near-duplicates of one generated shortly
before and 10% of a real one (one or two words or characters deleted, inserted, replaced or
swapped), 10% real instructions, 55% new ones (half of the words of a real one replaced), in
English and Chinese.

The peer is Stanford Alpaca's generate_instruction.py loop: rouge-score's LCS (`_score_lcs`) of
each new instruction against every kept one, mapped over a multiprocessing pool. It is given
dianjing's tokenizer (rouge-score's default keeps only [a-z0-9], so every Chinese instruction
would be empty to it and never a duplicate), so both sides decide on the same tokens and must
keep exactly the same instructions; the bench checks that on the prefix both run on. The peer
takes hours at 50k, so it runs on --naive-n instructions, and its time at N is extrapolated
quadratically (it compares each instruction with all kept ones) and printed as an estimate.
The last line is one JSON object with the results. Needs: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dianjing.eval.text import tokenize  # noqa: E402
from dianjing.teacher.dedup import Deduper  # noqa: E402


class SharedTokenizer:
    """rouge-score's tokenizer interface around dianjing's tokenizer."""

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text)


def real_instructions(data: Path) -> list[str]:
    out = []
    seeds = data / "selfinstruct" / "seed_tasks.jsonl"
    out += [json.loads(line)["instruction"] for line in seeds.read_text().splitlines() if line.strip()]
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json"):
        out += [r["instruction"] for r in json.loads((data / "instruct" / name).read_text())]
    ours = ROOT / "src" / "dianjing" / "assets" / "dianjing_seeds.jsonl"
    out += [json.loads(line)["instruction"] for line in ours.read_text().splitlines() if line.strip()]
    return [" ".join(x.split()) for x in out if x.strip()]


def _is_zh(text: str) -> bool:
    return sum("\u4e00" <= c <= "\u9fff" for c in text) > len(text) / 3


def _units(text: str) -> tuple[list[str], str]:
    return (list(text), "") if _is_zh(text) else (text.split(" "), " ")


def _edit(text: str, rng: random.Random, vocab_en: list[str], vocab_zh: list[str], k: int) -> str:
    units, sep = _units(text)
    vocab = vocab_zh if sep == "" else vocab_en
    for _ in range(k):
        op = rng.randrange(4)
        if op == 0 and len(units) > 2:
            del units[rng.randrange(len(units))]
        elif op == 1:
            units.insert(rng.randrange(len(units) + 1), rng.choice(vocab))
        elif op == 2 and units:
            units[rng.randrange(len(units))] = rng.choice(vocab)
        elif len(units) > 1:
            i = rng.randrange(len(units) - 1)
            units[i], units[i + 1] = units[i + 1], units[i]
    return sep.join(units)


def make_instructions(n: int, data: Path, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pool = real_instructions(data)
    vocab_en = [w for x in pool if not _is_zh(x) for w in x.split(" ")]
    vocab_zh = [c for x in pool if _is_zh(x) for c in x if "\u4e00" <= c <= "\u9fff"]
    unused = list(pool)
    rng.shuffle(unused)
    out: list[str] = []
    while len(out) < n:
        r = rng.random()
        if r < 0.25 and out:  # a near-duplicate of something generated recently (the teacher repeats itself)
            out.append(_edit(rng.choice(out[-3000:]), rng, vocab_en, vocab_zh, rng.randrange(1, 3)))
        elif r < 0.35:  # a near-duplicate of a real instruction (the teacher echoes a seed)
            out.append(_edit(rng.choice(pool), rng, vocab_en, vocab_zh, rng.randrange(1, 3)))
        elif r < 0.45 and unused:  # a real instruction
            out.append(unused.pop())
        else:  # a new instruction: about half of the words of a real one replaced
            base = rng.choice(pool)
            out.append(_edit(base, rng, vocab_en, vocab_zh, max(2, len(_units(base)[0]) // 2)))
    return out


def ours(texts: list[str], threshold: float) -> tuple[list[int], float, Deduper]:
    t0 = time.perf_counter()
    dd = Deduper(threshold)
    kept = [i for i, t in enumerate(texts) if dd.check_and_add(t) is None]
    return kept, time.perf_counter() - t0, dd


def naive(texts: list[str], threshold: float, workers: int) -> tuple[list[int], float]:
    """Alpaca's loop: score each new instruction against every kept one in a process pool."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=SharedTokenizer())
    t0 = time.perf_counter()
    kept, kept_tokens = [], []
    with Pool(workers) as p:
        for i, text in enumerate(texts):
            toks = scorer._tokenizer.tokenize(text)
            if kept_tokens:
                scores = p.map(partial(rouge_scorer._score_lcs, toks), kept_tokens)
                if max(s.fmeasure for s in scores) > threshold:
                    continue
            kept.append(i)
            kept_tokens.append(toks)
    return kept, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50_000, help="instructions de-duplicated by dianjing")
    ap.add_argument("--naive-n", type=int, default=3_000, help="prefix the all-pairs peer runs on (0: skip it)")
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="processes of the peer's pool")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    naive_n = min(args.naive_n, args.n)

    texts = make_instructions(args.n, args.data, args.seed)
    zh = sum(_is_zh(t) for t in texts)
    print(f"{len(texts)} instructions ({zh} Chinese), threshold {args.threshold}, {os.cpu_count()} CPUs", flush=True)
    result = {"n": len(texts), "chinese": zh, "threshold": args.threshold, "naive_n": naive_n,
              "workers": args.workers}
    if naive_n:
        prefix = texts[:naive_n]
        k_ours, t_ours, _ = ours(prefix, args.threshold)
        print(f"at {naive_n}: dianjing {t_ours:.2f}s, kept {len(k_ours)}", flush=True)
        k_naive, t_naive = naive(prefix, args.threshold, args.workers)
        print(f"at {naive_n}: rouge-score all pairs, pool of {args.workers}: {t_naive:.1f}s, kept {len(k_naive)}",
              flush=True)
        same = k_ours == k_naive
        if not same:
            a, b = set(k_ours), set(k_naive)
            first = min(a ^ b)
            print(f"DIFFERENT kept sets: {len(a - b)} only dianjing, {len(b - a)} only rouge-score; first at "
                  f"{first}: {prefix[first]!r}", flush=True)
        result.update(same_kept_set_at_naive_n=same, kept_at_naive_n=len(k_ours), ours_s_at_naive_n=round(t_ours, 3),
                      naive_s_at_naive_n=round(t_naive, 2), speedup_at_naive_n=round(t_naive / t_ours, 1))
        print(f"at {naive_n}: dianjing is {t_naive / t_ours:.1f}x faster, same kept set: {same}", flush=True)
    k_full, t_full, dd = ours(texts, args.threshold)
    print(f"at {len(texts)}: dianjing {t_full:.1f}s, kept {len(k_full)} ({len(k_full) / len(texts):.0%}), "
          f"{dd.lcs_computed} exact LCSs", flush=True)
    result.update(ours_s_at_n=round(t_full, 2), kept_at_n=len(k_full), lcs_computed_at_n=dd.lcs_computed)
    if naive_n:
        # the peer's work is (new instruction) × (kept so far): quadratic in N at a steady keep rate
        est = t_naive * (len(texts) / naive_n) ** 2
        result.update(naive_s_at_n_extrapolated=round(est), speedup_at_n_extrapolated=round(est / t_full, 1))
        print(f"at {len(texts)}: rouge-score all pairs EXTRAPOLATED (quadratic from {naive_n}, not measured): "
              f"~{est / 3600:.1f} h, so dianjing ~{est / t_full:.0f}x faster", flush=True)
    print(json.dumps(result))
    return 0 if result.get("same_kept_set_at_naive_n", True) else 1


if __name__ == "__main__":
    sys.exit(main())
