"""Metrics, defined once: ROUGE-L, classification, BIO entities and extractive QA.

Pure Python, no dependencies. Tokens come from :mod:`dianjing.eval.text`.

* ROUGE-L (generalist held-out scoring, teacher de-duplication): :func:`lcs_length`,
  :func:`f_measure` and :func:`rouge_l` on :func:`~dianjing.eval.text.tokenize` tokens.
  The F-measure is rouge-score's (β = 1, p = LCS/|pred|, r = LCS/|ref|, f = 2pr/(p+r), in
  that floating-point order), so English scores equal rouge-score's. The LCS is computed
  bit-parallel (Hyyrö 2004: per token of one sequence, one big-int add, and, or over a
  bit row of the other); :func:`match_masks` and :func:`lcs_from_masks` expose the two
  halves so that the de-duplicator builds one side's masks once and reuses them.
* Classification: :func:`accuracy` and :func:`macro_f1` (equal to scikit-learn's
  ``f1_score(average="macro")`` over the union of gold and predicted labels).
* Sequence tagging: :func:`entity_spans` decodes BIO (IOB2) tags the way conlleval and
  seqeval's default mode do, and :func:`entity_prf` scores exact entity matches with
  micro-averaged precision/recall/F1, like seqeval's ``classification_report`` micro avg.
* Extractive QA (SQuAD v1.1, DRCD, CMRC 2018): :func:`qa_exact`, :func:`qa_f1` and
  :func:`squad_scores`, on :func:`~dianjing.eval.text.normalize_answer` and
  :func:`~dianjing.eval.text.answer_tokens` (see there for the English and Chinese rules).
  F1 defaults to SQuAD's bag-of-tokens overlap. The CMRC 2018 script instead uses the
  longest common *substring* of the two token lists; pass ``mode="lcs"`` for that.
* Generated answers (``dianjing eval`` on chat runs): the QA EM and F1 above, ROUGE-L,
  :func:`contains_answer` (the reference's answer tokens appear, in order and together, in the
  answer: "台灣最高的山是玉山" contains "玉山") and :func:`perplexity` of the references (the
  model's mean negative log-likelihood per reference token, and its exponential).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from dianjing.eval.text import answer_tokens, normalize_answer, tokenize

__all__ = [
    "lcs_length",
    "f_measure",
    "rouge_l",
    "rouge_l_tokens",
    "accuracy",
    "macro_f1",
    "entity_spans",
    "entity_prf",
    "normalize_answer",
    "answer_tokens",
    "qa_exact",
    "qa_f1",
    "squad_scores",
    "contains_answer",
    "perplexity",
]


# --------------------------------------------------------------------------- ROUGE-L


def match_masks(a: Sequence) -> dict:
    """For each distinct item of `a`, an int with bit i set where ``a[i]`` is that item."""
    masks: dict = {}
    for i, x in enumerate(a):
        masks[x] = masks.get(x, 0) | (1 << i)
    return masks


def lcs_from_masks(masks: dict, m: int, b: Sequence) -> int:
    """LCS length of `b` and the length-`m` sequence whose :func:`match_masks` is `masks`."""
    # V holds a 0 bit for each row where the LCS grew; V = (V + U) | (V − U), U = V & match(b_j)
    full = (1 << m) - 1
    v = full
    get = masks.get
    for x in b:
        match = get(x)
        if match:
            u = v & match
            v = ((v + u) | (v - u)) & full
    return m - v.bit_count()


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence, bit-parallel over the longer sequence."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    return lcs_from_masks(match_masks(a), len(a), b)


def f_measure(lcs: int, m: int, n: int) -> float:
    """ROUGE-L F1 from an LCS length, the reference length `m` and the prediction length `n`,
    in rouge-score's floating-point order. 0.0 when nothing is shared, so also when either
    side is empty (:func:`rouge_l_tokens` adds the both-empty case)."""
    if lcs == 0 or m == 0 or n == 0:
        return 0.0
    p, r = lcs / n, lcs / m
    return 2 * p * r / (p + r)


def rouge_l_tokens(pred: Sequence, ref: Sequence) -> float:
    """ROUGE-L F1 of two token sequences.

    Both empty: 1.0 (the two are identical; rouge-score would say 0.0, but a model that
    correctly produces nothing should not score as a total miss). One empty: 0.0.
    """
    if not pred and not ref:
        return 1.0
    return f_measure(lcs_length(pred, ref), len(ref), len(pred))


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 of a predicted and a reference text on :func:`~dianjing.eval.text.tokenize`
    tokens; see :func:`rouge_l_tokens` for texts without tokens ('' or only punctuation)."""
    return rouge_l_tokens(tokenize(pred), tokenize(ref))


# --------------------------------------------------------------------------- classification


def _check_same_length(pred: list, gold: list) -> None:
    if len(pred) != len(gold):
        raise ValueError(f"pred and gold differ in length: {len(pred)} != {len(gold)}")


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def accuracy(pred: list[str], gold: list[str]) -> float:
    """Fraction of positions where ``pred`` equals ``gold``; 0.0 for empty input."""
    _check_same_length(pred, gold)
    if not gold:
        return 0.0
    return sum(p == g for p, g in zip(pred, gold)) / len(gold)


def macro_f1(pred: list[str], gold: list[str], labels: list[str] | None = None) -> float:
    """Unweighted mean of per-label F1.

    ``labels`` defaults to the sorted union of the labels seen in ``gold`` and ``pred``.
    A label with precision + recall = 0 (including one that never occurs) has F1 = 0.
    Returns 0.0 when there are no labels (empty input).
    """
    _check_same_length(pred, gold)
    if labels is None:
        labels = sorted(set(gold) | set(pred))
    if not labels:
        return 0.0
    tp: Counter[str] = Counter()
    n_pred: Counter[str] = Counter(pred)
    n_gold: Counter[str] = Counter(gold)
    for p, g in zip(pred, gold):
        if p == g:
            tp[g] += 1
    total = 0.0
    for lab in labels:
        precision = tp[lab] / n_pred[lab] if n_pred[lab] else 0.0
        recall = tp[lab] / n_gold[lab] if n_gold[lab] else 0.0
        total += _f1(precision, recall)
    return total / len(labels)


# --------------------------------------------------------------------------- BIO tagging


def _parse_tag(tag: str) -> tuple[str, str]:
    """Split a BIO tag into (prefix, type); ("O", "") for outside."""
    if tag == "O":
        return "O", ""
    prefix, sep, typ = tag.partition("-")  # first hyphen only: B-geo-loc -> geo-loc
    if sep and prefix in ("B", "I") and typ:
        return prefix, typ
    raise ValueError(f"unknown BIO tag {tag!r}: expected 'O', 'B-<type>' or 'I-<type>'")


def entity_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities ``(type, start, end_exclusive)`` of a BIO (IOB2) tag sequence.

    conlleval / seqeval-default semantics: an entity starts at ``B-X``, or at an ``I-X``
    that opens the sentence, follows ``O`` or follows a tag of another type; it continues
    over ``I-X`` of the same type. ``B-X B-X`` is two entities. Tags other than ``O``,
    ``B-*`` and ``I-*`` (e.g. IOBES ``E-``/``S-``) raise ValueError.
    """
    spans: list[tuple[str, int, int]] = []
    cur_type: str | None = None
    cur_start = 0
    for i, tag in enumerate(tags):
        prefix, typ = _parse_tag(tag)
        if prefix == "O":
            if cur_type is not None:
                spans.append((cur_type, cur_start, i))
                cur_type = None
            continue
        if prefix == "B" or typ != cur_type:
            if cur_type is not None:
                spans.append((cur_type, cur_start, i))
            cur_type, cur_start = typ, i
    if cur_type is not None:
        spans.append((cur_type, cur_start, len(tags)))
    return spans


def _prf(n_correct: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    return precision, recall, _f1(precision, recall)


def entity_prf(pred: list[list[str]], gold: list[list[str]]) -> dict:
    """Entity-level micro precision/recall/F1 over all sentences.

    An entity counts as correct only if type, start and end all match (a partial overlap
    is both a false positive and a false negative). Returns
    ``{"precision", "recall", "f1", "support", "per_type": {type: {...same keys}}}`` where
    support is the number of gold entities; ``per_type`` covers every type seen in gold or
    pred, sorted. Undefined ratios (no predicted / no gold entities) are 0.0.
    """
    if len(pred) != len(gold):
        raise ValueError(f"pred has {len(pred)} sentences but gold has {len(gold)}")
    pred_ents: set[tuple[int, str, int, int]] = set()
    gold_ents: set[tuple[int, str, int, int]] = set()
    for i, (p_tags, g_tags) in enumerate(zip(pred, gold)):
        if len(p_tags) != len(g_tags):
            raise ValueError(
                f"sentence {i}: pred has {len(p_tags)} tags but gold has {len(g_tags)}"
            )
        pred_ents.update((i, *span) for span in entity_spans(p_tags))
        gold_ents.update((i, *span) for span in entity_spans(g_tags))
    correct = pred_ents & gold_ents

    def by_type(ents: set[tuple[int, str, int, int]]) -> Counter[str]:
        return Counter(e[1] for e in ents)

    n_pred_t, n_gold_t, n_corr_t = by_type(pred_ents), by_type(gold_ents), by_type(correct)
    per_type = {}
    for typ in sorted(set(n_pred_t) | set(n_gold_t)):
        p, r, f = _prf(n_corr_t[typ], n_pred_t[typ], n_gold_t[typ])
        per_type[typ] = {"precision": p, "recall": r, "f1": f, "support": n_gold_t[typ]}
    p, r, f = _prf(len(correct), len(pred_ents), len(gold_ents))
    return {"precision": p, "recall": r, "f1": f, "support": len(gold_ents), "per_type": per_type}


# --------------------------------------------------------------------------- extractive QA


def qa_exact(pred: str, gold: str) -> float:
    """1.0 if the normalised answers are equal, else 0.0."""
    return float(normalize_answer(pred) == normalize_answer(gold))


def _longest_common_substring(a: list[str], b: list[str]) -> int:
    """Length of the longest contiguous run of tokens shared by ``a`` and ``b``."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best = cur[j]
        prev = cur
    return best


def qa_f1(pred: str, gold: str, mode: str = "overlap") -> float:
    """Token F1 between a predicted and a gold answer, on :func:`answer_tokens`.

    ``mode="overlap"`` (default, implemented as in SQuAD v1.1): the number of common tokens
    is the size of the multiset intersection of the two token bags, order ignored.
    ``mode="lcs"`` (CMRC 2018's ``calc_f1_score``): the number of common tokens is the length
    of the longest common *contiguous* token sequence, so reordered answers score lower.
    In both modes p = common/len(pred), r = common/len(gold), F1 = 2pr/(p+r), 0.0 if nothing
    is common; if either token list is empty, F1 is 1.0 when both are empty, else 0.0
    (SQuAD v2's rule; the v1.1 script would give 0.0 for two empty answers).
    """
    # Known difference from the CMRC 2018 script: it uses the "lcs" count, we default to
    # SQuAD's bag-of-tokens overlap so that Chinese and English answers share one formula.
    if mode not in ("overlap", "lcs"):
        raise ValueError(f"unknown qa_f1 mode {mode!r}: expected 'overlap' or 'lcs'")
    p_toks, g_toks = answer_tokens(pred), answer_tokens(gold)
    if not p_toks or not g_toks:
        return float(p_toks == g_toks)
    if mode == "overlap":
        common = sum((Counter(p_toks) & Counter(g_toks)).values())
    else:
        common = _longest_common_substring(p_toks, g_toks)
    if common == 0:
        return 0.0
    precision, recall = common / len(p_toks), common / len(g_toks)
    return 2 * precision * recall / (precision + recall)


def squad_scores(
    predictions: dict[str, str], references: dict[str, list[str]], *, mode: str = "overlap"
) -> dict:
    """Corpus-level SQuAD-style scores (percentages in [0, 100]).

    Each reference id scores the maximum EM and maximum F1 over its gold answers; an id
    without a prediction scores 0 and is counted in ``"missing"``. Prediction ids absent
    from ``references`` are ignored and counted in ``"extra"``. An empty gold list is
    treated as ``[""]`` (unanswerable: only an empty prediction matches) and a bare string
    as a one-answer list. ``mode`` is passed to :func:`qa_f1`.
    Returns ``{"exact_match", "f1", "count", "missing", "extra"}``.
    """
    em_total = f1_total = 0.0
    missing = 0
    for qid, golds in references.items():
        if qid not in predictions:
            missing += 1
            continue
        pred = predictions[qid]
        golds = [golds] if isinstance(golds, str) else (list(golds) or [""])
        em_total += max(qa_exact(pred, g) for g in golds)
        f1_total += max(qa_f1(pred, g, mode=mode) for g in golds)
    count = len(references)
    extra = sum(1 for qid in predictions if qid not in references)
    return {
        "exact_match": 100.0 * em_total / count if count else 0.0,
        "f1": 100.0 * f1_total / count if count else 0.0,
        "count": count,
        "missing": missing,
        "extra": extra,
    }


# --------------------------------------------------------------------------- generated answers


def contains_answer(pred: str, gold: str) -> float:
    """1.0 if the gold answer's tokens (:func:`answer_tokens`) occur as one contiguous run in the
    prediction's, else 0.0: "The answer is 42." contains "42" but not "4"; for Chinese, where every
    character is a token, it is a substring test after normalisation. An empty gold answer is
    contained only in an empty prediction."""
    g, p = answer_tokens(gold), answer_tokens(pred)
    if not g:
        return float(not p)
    n = len(g)
    return float(any(p[i:i + n] == g for i in range(len(p) - n + 1)))


def perplexity(token_logprobs: Sequence[Sequence[float]]) -> dict:
    """Corpus perplexity of references from each reference's token log-probabilities (natural log).

    ``nll`` is the mean negative log-likelihood over all tokens (every token weighs the same, as
    a training run's eval_loss does), ``perplexity`` its exponential and ``tokens`` the count.
    Empty input: nll and perplexity are None.
    """
    total = sum(-x for lps in token_logprobs for x in lps)
    n = sum(len(lps) for lps in token_logprobs)
    if n == 0:
        return {"nll": None, "perplexity": None, "tokens": 0}
    nll = total / n
    return {"nll": nll, "perplexity": math.exp(min(nll, 700.0)), "tokens": n}
