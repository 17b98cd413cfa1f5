"""Evaluation metrics for specialist heads: classification, BIO tagging and extractive QA.

Pure Python, no dependencies.

* Classification: :func:`accuracy` and :func:`macro_f1` (equal to scikit-learn's
  ``f1_score(average="macro")`` over the union of gold and predicted labels).
* Sequence tagging: :func:`entity_spans` decodes BIO (IOB2) tags the way conlleval and
  seqeval's default mode do, and :func:`entity_prf` scores exact entity matches with
  micro-averaged precision/recall/F1, like seqeval's ``classification_report`` micro avg.
* Extractive QA (SQuAD v1.1, DRCD, CMRC 2018): :func:`normalize_answer`,
  :func:`answer_tokens`, :func:`qa_exact`, :func:`qa_f1` and :func:`squad_scores`.

  Chinese answers (any text containing CJK characters -- Han, kana or hangul -- or CJK /
  full-width punctuation such as 。，「」) are scored per character after lowercasing and
  removing punctuation (ASCII and full-width/CJK) and all whitespace, as the DRCD and
  CMRC 2018 evaluation scripts do: every CJK character is one token, and a run of Latin
  letters/digits inside Chinese text is one token, so "2008年北京Olympics" gives
  ["2008", "年", "北", "京", "olympics"]. We remove every Unicode punctuation character,
  a superset of the fixed list in CMRC's ``remove_punctuation``. English (text with none
  of the above) is scored exactly as the official SQuAD v1.1 script: lowercase, drop
  ASCII punctuation, drop the articles a/an/the, split on whitespace.

  F1 defaults to SQuAD's bag-of-tokens overlap. The CMRC 2018 script instead uses the
  longest common *substring* of the two token lists; pass ``mode="lcs"`` for that.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

__all__ = [
    "accuracy",
    "macro_f1",
    "entity_spans",
    "entity_prf",
    "normalize_answer",
    "answer_tokens",
    "qa_exact",
    "qa_f1",
    "squad_scores",
]


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

# Han (radicals, ideographs, extensions, compatibility, 々 〇 and Suzhou numerals),
# bopomofo, kana (incl. half-width katakana) and hangul.
_CJK_RE = re.compile(
    "["
    "\u1100-\u11ff"
    "\u2e80-\u2fdf"
    "\u3005\u3007\u3021-\u3029\u3038-\u303b"
    "\u3040-\u30ff"
    "\u3100-\u318f"
    "\u31a0-\u31bf\u31f0-\u31ff"
    "\u3400-\u4dbf"
    "\u4e00-\u9fff"
    "\ua960-\ua97f"
    "\uac00-\ud7af\ud7b0-\ud7ff"
    "\uf900-\ufaff"
    "\uff66-\uff9f"
    "\U00020000-\U0003134f"
    "]"
)

_ASCII_PUNCT = frozenset(string.punctuation)
# Full-width forms of every ASCII punctuation character (！＂＃ … ｛｜｝～).
_FULLWIDTH_PUNCT = frozenset(chr(ord(c) + 0xFEE0) for c in string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def _is_cjk(ch: str) -> bool:
    return _CJK_RE.match(ch) is not None


def _is_cjk_punct(ch: str) -> bool:
    """Punctuation removed from Chinese answers: ASCII punctuation, its full-width forms and
    every Unicode punctuation character (，。！？；：「」『』、（）《》“”‘’—…·【】〈〉 …)."""
    return ch in _ASCII_PUNCT or ch in _FULLWIDTH_PUNCT or unicodedata.category(ch)[0] == "P"


# CJK symbols and punctuation (、。「」〈〉【】, ideographic space) and the full-width /
# half-width forms block (，！？（）ＡＢ１２ …): text containing them is scored as Chinese
# even when it has no ideograph, so that e.g. "。" normalises to "" as in DRCD/CMRC.
_CJK_CONTEXT_RE = re.compile("[\u3000-\u303f\uff00-\uffef]")


def _has_cjk(s: str) -> bool:
    """Whether ``s`` is scored the Chinese way (per character) rather than as SQuAD."""
    return _CJK_RE.search(s) is not None or _CJK_CONTEXT_RE.search(s) is not None


def _squad_normalize(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _ASCII_PUNCT)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def _cjk_strip(s: str) -> str:
    """Lowercase and remove punctuation, keeping whitespace (used to split runs)."""
    return "".join(ch for ch in s.lower() if not _is_cjk_punct(ch))


def normalize_answer(s: str) -> str:
    """Normalise an answer for exact match.

    Text containing CJK characters or CJK/full-width punctuation: lowercase, remove ASCII
    and CJK/full-width punctuation (every Unicode punctuation character) and all
    whitespace (DRCD / CMRC 2018). Otherwise SQuAD v1.1: lowercase, remove ASCII
    punctuation, remove whole-word articles a/an/the, collapse whitespace.
    """
    if _has_cjk(s):
        return "".join(_cjk_strip(s).split())
    return _squad_normalize(s)


def answer_tokens(s: str) -> list[str]:
    """Tokens used for QA F1.

    Without CJK: the SQuAD v1.1 tokens (``normalize_answer(s).split()``). With CJK: each CJK
    character is a token; a run of other letters/digits (with any combining marks) is one
    token; any other leftover symbol is a token by itself. Whitespace in the original text
    separates runs ("new york 纽约" -> ["new", "york", "纽", "约"]) while removed
    punctuation does not ("U.S.A.美国" -> ["usa", "美", "国"]). Concatenated, the tokens
    always equal ``normalize_answer(s)``.
    """
    if not _has_cjk(s):
        return _squad_normalize(s).split()
    tokens: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            tokens.append("".join(run))
            run.clear()

    for ch in _cjk_strip(s):
        if ch.isspace():
            flush()
        elif _is_cjk(ch):
            flush()
            tokens.append(ch)
        elif ch.isalnum() or (run and unicodedata.category(ch)[0] == "M"):
            run.append(ch)
        else:
            flush()
            tokens.append(ch)
    flush()
    return tokens


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
