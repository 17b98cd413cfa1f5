"""Text → tokens, defined once: the ROUGE tokenizer and the extractive-QA answer normaliser.

Which characters are CJK is decided here and nowhere else (`_is_cjk`, `_HAN_KANA`,
`_HANGUL`); the two consumers below read them differently, on purpose.

**ROUGE / de-duplication tokens** (:func:`tokenize`), used by ROUGE-L in
:mod:`dianjing.eval.metrics`, by the teacher's near-duplicate filter and length filters and
by the generalist's held-out scoring. The rules, applied to the lowercased text:

* Han ideographs (with 々, 〇 and the Hangzhou numerals), kana (also half-width katakana) and
  bopomofo: **one token per character**. Chinese and Japanese are written without spaces,
  so a character is the only split that needs no dictionary.
* Hangul: **words, split like Latin**. Korean puts spaces between words (eojeol), so
  `한국어 문장` is two tokens, `["한국어", "문장"]`. A syllable is not a unit of meaning, and
  matching per syllable would make unrelated Korean sentences overlap on their particles
  (은/는/이/가/다) and look like near-duplicates.
* Any other run of letters and digits (`str.isalnum` characters: Latin, Cyrillic, Greek,
  digits, Hangul …) is one token, lowercased: `Hello世界` → `["hello", "世", "界"]`,
  `GPT4` → `["gpt4"]`.
* `_` **is a separator**, like every other non-letter: `a_b` → `["a", "b"]`. It is what
  rouge-score's default tokenizer does (it keeps only `[a-z0-9]` runs), so English ROUGE-L
  here equals rouge-score's; a regex `\\w` would have kept `a_b` whole.
* Punctuation (ASCII, full-width, CJK such as 。，「」・), symbols and emoji: dropped.

The tokenizer is one compiled regex: the de-duplication of 50,000 instructions tokenizes
each of them once and must stay fast.

**Extractive-QA answers** (:func:`normalize_answer`, :func:`answer_tokens`), used by EM/F1
in :mod:`dianjing.eval.metrics`. These follow the official scorers instead, because their
numbers must be comparable with published ones: English as the SQuAD v1.1 script
(lowercase, drop ASCII punctuation and the articles a/an/the, split on whitespace); any
answer containing CJK -- here Han, kana, bopomofo *and Hangul* -- or CJK/full-width
punctuation per character, as the DRCD and CMRC 2018 scripts score Chinese.
"""

from __future__ import annotations

import re
import string
import unicodedata

__all__ = ["tokenize", "normalize_answer", "answer_tokens"]

# Han (radicals, ideographs, extensions, compatibility ideographs, 々 〇 and the Hangzhou
# numerals), kana (incl. half-width katakana) and bopomofo; without the kana block's two
# punctuation marks ゠ and ・ (U+30A0, U+30FB), which are `_KANA_PUNCT`.
_HAN_KANA = (
    "\u2e80-\u2fdf"
    "\u3005\u3007\u3021-\u3029\u3038-\u303b"
    "\u3040-\u309f\u30a1-\u30fa\u30fc-\u30ff"
    "\u3100-\u312f"
    "\u31a0-\u31bf\u31f0-\u31ff"
    "\u3400-\u4dbf"
    "\u4e00-\u9fff"
    "\uf900-\ufaff"
    "\uff66-\uff9f"
    "\U00020000-\U0003134f"
)
# Hangul: jamo, compatibility jamo, jamo extensions A/B and the syllables.
_HANGUL = "\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff"
_KANA_PUNCT = "\u30a0\u30fb"

_CJK_RE = re.compile(f"[{_HAN_KANA}{_KANA_PUNCT}{_HANGUL}]")


def _is_cjk(ch: str) -> bool:
    """Whether `ch` is a CJK character: Han, kana, bopomofo or Hangul."""
    return _CJK_RE.match(ch) is not None


# --------------------------------------------------------------------------- ROUGE tokens

# A Han/kana character alone, or a run of word characters that are neither Han/kana nor `_`
# (Hangul falls in the second branch; ゠ ・ in neither, as they are not word characters).
_TOKEN_RE = re.compile(f"[{_HAN_KANA}]|[^\\W_{_HAN_KANA}]+")


def tokenize(text: str) -> list[str]:
    """ROUGE tokens of `text`: each Han/kana character alone, other letter/digit runs as
    lowercased words (Hangul included), `_`, punctuation and symbols separate and dropped."""
    return _TOKEN_RE.findall(text.lower())


# --------------------------------------------------------------------------- QA answers

_ASCII_PUNCT = frozenset(string.punctuation)
# Full-width forms of every ASCII punctuation character (！＂＃ … ｛｜｝～).
_FULLWIDTH_PUNCT = frozenset(chr(ord(c) + 0xFEE0) for c in string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
# CJK symbols and punctuation (、。「」〈〉【】, ideographic space) and the full-width /
# half-width forms block (，！？（）ＡＢ１２ …): text containing them is scored as Chinese
# even when it has no ideograph, so that e.g. "。" normalises to "" as in DRCD/CMRC.
_CJK_CONTEXT_RE = re.compile("[\u3000-\u303f\uff00-\uffef]")


def _is_cjk_punct(ch: str) -> bool:
    """Punctuation removed from Chinese answers: ASCII punctuation, its full-width forms and
    every Unicode punctuation character (，。！？；：「」『』、（）《》“”‘’—…·【】〈〉 …)."""
    return ch in _ASCII_PUNCT or ch in _FULLWIDTH_PUNCT or unicodedata.category(ch)[0] == "P"


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
