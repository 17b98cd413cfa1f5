"""Near-duplicate instructions by ROUGE-L, exact, without comparing every pair.

Self-instruct and Alpaca drop a new instruction when its ROUGE-L F-measure against any
instruction kept so far is above 0.7, and compute that against all of them: n²/2 LCS
tables for n instructions, hours at 50,000. `Deduper` makes the same decisions (the same
kept set, checked against the all-pairs computation in the tests and in bench/dedup.py)
while computing only a few LCSs per instruction:

1. Tokens: `dianjing.eval.text.tokenize`, the one tokenizer for every language and every
   ROUGE score in the project. Chinese and Japanese characters are one token each; any other
   run of letters or digits (Hangul words included; `_` separates) is one lowercased word.
   (rouge-score's default tokenizer keeps only [a-z0-9] and so sees a Chinese instruction as
   empty.)
2. Bound: the LCS of two token sequences is at most the size of their multiset intersection
   I, so F = 2·LCS/(m+n) ≤ 2·I/(m+n); and F > t also needs I > t·m/(2−t) of the m tokens
   of either side. Such a bound is a set-overlap condition, so prefix filtering (as in
   AllPairs/PPJoin set-similarity joins) finds every pair that could pass it: order the
   (token, k-th occurrence) items by rarity; two sequences sharing I ≥ o items share one
   among the first len−o+1 items of each. Only those first items are indexed.
3. Candidates from that index pass a length check and the exact overlap bound; only the
   survivors get a real LCS, computed bit-parallel (`dianjing.eval.metrics.lcs_from_masks`,
   Hyyrö's 2004 recurrence: one big-int add, and, or per token), the query's bit masks built
   once and reused for every candidate.

The item order is by how many kept instructions contain an item, recomputed each time the
kept set doubles (items first seen in between rank as rarest); any fixed order is correct,
a rarity order makes the indexed prefixes short. The bound checks use t − 1e-9 so that a
float rounding in F can only add candidates, never lose one; the decision itself is
F > t with F = `dianjing.eval.metrics.f_measure`, computed exactly as rouge-score computes it.

A text without tokens (only punctuation, say) is never a near-duplicate, not even of another
one: its F against anything is 0 (`f_measure`), although `rouge_l("", "")` is 1.0. There is
nothing in it to repeat, and by default (min_instruction_tokens = 3) the pipeline's length
filter rejects it before de-duplication.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dianjing.eval.metrics import f_measure, lcs_from_masks, lcs_length, match_masks, rouge_l
from dianjing.eval.text import tokenize

__all__ = ["Deduper", "Match", "naive_keep", "tokenize", "lcs_length", "f_measure", "rouge_l"]

_OCC_BITS = 20  # an item is token_id << 20 | occurrence: up to a million repeats of a token per text


@dataclass
class Match:
    index: int  # position of the similar text among those added
    score: float


class Deduper:
    """Keeps texts whose ROUGE-L against every text added before is ≤ threshold."""

    def __init__(self, threshold: float = 0.7):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.threshold = threshold
        self._t = threshold - 1e-9  # the bounds use a slightly lower threshold: never lose a candidate
        self._vocab: dict[str, int] = {}
        self._docs: list[list[int]] = []
        self._counts: list[dict[int, int]] = []
        self._df: dict[int, int] = {}  # item → number of added texts that contain it
        self._rank: dict[int, int] = {}
        self._next_new = -1
        self._index: dict[int, list[int]] = {}
        self._rebuild_at = 32
        self.lcs_computed = 0  # how many exact LCSs were needed (for the benchmark)
        self.candidates_seen = 0

    def __len__(self) -> int:
        return len(self._docs)

    # --- tokens and items ---------------------------------------------------------------------

    def _ids(self, text: str) -> list[int]:
        vocab = self._vocab
        return [vocab.setdefault(t, len(vocab)) for t in tokenize(text)]

    @staticmethod
    def _items(ids: list[int]) -> tuple[list[int], dict[int, int]]:
        counts: dict[int, int] = {}
        items = []
        for t in ids:
            k = counts.get(t, 0)
            counts[t] = k + 1
            items.append(t << _OCC_BITS | k)
        return items, counts

    def _rank_of(self, item: int) -> int:
        r = self._rank.get(item)
        if r is None:  # unseen since the last rebuild: rarer than anything indexed
            r = self._rank[item] = self._next_new
            self._next_new -= 1
        return r

    def _prefix_len(self, n: int) -> int:
        """How many of the rarest items of an n-token text must be indexed / looked up."""
        need = int(self._t * n / (2 - self._t)) + 1  # least overlap any near-duplicate partner needs
        return max(0, n - need + 1)

    def _prefix(self, items: list[int], n: int) -> list[int]:
        k = self._prefix_len(n)
        if k == 0:
            return []
        return sorted(items, key=self._rank_of)[:k]

    def _rebuild(self) -> None:
        order = sorted(self._df, key=lambda it: (self._df[it], it))
        self._rank = {it: r for r, it in enumerate(order)}
        self._next_new = -1
        self._index = {}
        for i, ids in enumerate(self._docs):
            items, _ = self._items(ids)
            for it in self._prefix(items, len(ids)):
                self._index.setdefault(it, []).append(i)
        self._rebuild_at = 2 * len(self._docs)

    # --- queries ------------------------------------------------------------------------------

    def find(self, text: str) -> Match | None:
        """The first added text with ROUGE-L > threshold against `text`, or None."""
        return self._find(self._ids(text))

    def _find(self, ids: list[int]) -> Match | None:
        m = len(ids)
        if m == 0:
            return None  # no tokens: F is 0 against anything
        items, counts = self._items(ids)
        seen: set[int] = set()
        masks = None
        t = self._t
        for it in self._prefix(items, m):
            for j in self._index.get(it, ()):
                if j in seen:
                    continue
                seen.add(j)
                doc = self._docs[j]
                n = len(doc)
                if 2 * min(m, n) <= t * (m + n):
                    continue
                other = self._counts[j]
                if len(other) < len(counts):
                    inter = sum(min(c, counts.get(tok, 0)) for tok, c in other.items())
                else:
                    inter = sum(min(c, other.get(tok, 0)) for tok, c in counts.items())
                if 2 * inter <= t * (m + n):
                    continue
                if masks is None:
                    masks = match_masks(ids)
                self.lcs_computed += 1
                f = f_measure(lcs_from_masks(masks, m, doc), m, n)
                if f > self.threshold:
                    self.candidates_seen += len(seen)
                    return Match(j, f)
        self.candidates_seen += len(seen)
        return None

    def add(self, text: str) -> int:
        """Add a text unconditionally (seeds, or kept texts on resume); returns its index."""
        return self._add(self._ids(text))

    def _add(self, ids: list[int]) -> int:
        i = len(self._docs)
        items, counts = self._items(ids)
        self._docs.append(ids)
        self._counts.append(counts)
        for it in items:
            self._df[it] = self._df.get(it, 0) + 1
        if len(self._docs) >= self._rebuild_at:
            self._rebuild()
        else:
            for it in self._prefix(items, len(ids)):
                self._index.setdefault(it, []).append(i)
        return i

    def check_and_add(self, text: str) -> Match | None:
        """None and the text is added, or the match that makes it a near-duplicate."""
        ids = self._ids(text)
        hit = self._find(ids)
        if hit is None:
            self._add(ids)
        return hit


def naive_keep(texts: Sequence[str], threshold: float = 0.7) -> list[int]:
    """Indices kept by the all-pairs computation (a reference for tests; quadratic)."""
    kept: list[list[str]] = []
    out = []
    for i, text in enumerate(texts):
        toks = tokenize(text)
        if all(f_measure(lcs_length(toks, k), len(toks), len(k)) <= threshold for k in kept):
            kept.append(toks)
            out.append(i)
    return out
