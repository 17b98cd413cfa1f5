"""ROUGE-L de-duplication: tokens, LCS, and the indexed kept set equal to the all-pairs one."""

import random

import pytest

from tests.helpers import lcs_dp as _lcs_dp
from dianjing.teacher.dedup import Deduper, f_measure, lcs_length, rouge_l, tokenize


def _naive_keep(texts, threshold=0.7):
    """The all-pairs reference: each text against every kept one, textbook DP LCS."""
    kept, out = [], []
    for i, text in enumerate(texts):
        toks = tokenize(text)
        if all(f_measure(_lcs_dp(toks, k), len(toks), len(k)) <= threshold for k in kept):
            kept.append(toks)
            out.append(i)
    return out


def test_tokenize_splits_cjk_into_characters_and_lowercases_words():
    assert tokenize("Write a POEM about 台北的雨, in 3 lines!") == [
        "write", "a", "poem", "about", "台", "北", "的", "雨", "in", "3", "lines"]
    assert tokenize("日本語のテキスト") == list("日本語のテキスト")
    assert tokenize("...!?") == []


def test_bit_parallel_lcs_matches_dynamic_programming():
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.randrange(6) for _ in range(rng.randrange(0, 90))]
        b = [rng.randrange(6) for _ in range(rng.randrange(0, 90))]
        assert lcs_length(a, b) == _lcs_dp(a, b)


def test_f_measure_is_rouge_scores_formula():
    # rouge-score: p = lcs/len(prediction), r = lcs/len(target), f = 2pr/(p+r); bench/dedup.py checks
    # the kept set against rouge-score itself
    assert f_measure(7, 10, 10) == 2 * 0.7 * 0.7 / (0.7 + 0.7)
    assert f_measure(3, 4, 9) == 2 * (3 / 9) * (3 / 4) / (3 / 9 + 3 / 4)
    assert f_measure(0, 3, 3) == f_measure(2, 0, 3) == 0.0
    assert rouge_l("寫一首關於台北的詩", "寫一首關於高雄的詩") == f_measure(7, 9, 9)


def _corpus(n, seed=1):
    """Instructions with many near-duplicates: English, Traditional Chinese, mixed, empty-token ones."""
    rng = random.Random(seed)
    words = ("write describe explain list give classify translate summarize the a of poem story sea city "
             "rain history three short long reasons ways examples about for in to data model").split()
    zh = "寫一首關於台北的雨詩請描述城市歷史三個理由解釋分類下列句子情緒翻譯成英文摘要這段文章"
    out = []
    for _ in range(n):
        r = rng.random()
        if out and r < 0.45:  # perturb an earlier one
            base = rng.choice(out)
            toks = base.split(" ") if " " in base else list(base)
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                if op == 0 and len(toks) > 1:
                    del toks[rng.randrange(len(toks))]
                elif op == 1:
                    toks.insert(rng.randrange(len(toks) + 1), rng.choice(words) if " " in base else rng.choice(zh))
                elif toks:
                    toks[rng.randrange(len(toks))] = rng.choice(words) if " " in base else rng.choice(zh)
            out.append((" " if " " in base else "").join(toks))
        elif r < 0.7:
            out.append("".join(rng.choice(zh) for _ in range(rng.randrange(4, 20))))
        elif r < 0.75:
            out.append(rng.choice(["", "!!!", "?"]))
        else:
            out.append(" ".join(rng.choice(words) for _ in range(rng.randrange(2, 16))).capitalize() + ".")
    return out


@pytest.mark.parametrize("threshold", [0.7, 0.5, 0.9])
def test_kept_set_equals_the_all_pairs_computation(threshold):
    texts = _corpus(400)
    dd = Deduper(threshold)
    ours = [i for i, t in enumerate(texts) if dd.check_and_add(t) is None]
    assert ours == _naive_keep(texts, threshold)
    assert 0 < len(ours) < len(texts)  # the corpus really has near-duplicates
    assert dd.lcs_computed < len(texts) * len(ours) / 20  # and far fewer LCSs than all pairs


def test_match_names_the_similar_text_and_seeds_count():
    dd = Deduper()
    dd.add("Write a poem about the sea.")
    hit = dd.check_and_add("Write a poem about the sea!")
    assert hit is not None and hit.index == 0 and hit.score == 1.0
    assert dd.check_and_add("請寫一首關於台北的詩") is None
    assert dd.check_and_add("請寫一首關於台北的新詩") is not None
    assert dd.check_and_add("請寫一首關於高雄港口夜景的長篇散文") is None
    assert len(dd) == 3


def test_boundary_equal_to_threshold_is_kept():
    # 14 tokens vs 6 tokens sharing an LCS of 7? no: F = 2L/(m+n) = 0.7 exactly with L=7, m+n=20
    a = "a b c d e f g h i j"
    b = "a b c d e f g x y z"
    assert rouge_l(a, b) == pytest.approx(0.7)
    dd = Deduper(0.7)
    dd.add(a)
    assert (dd.find(b) is None) == (rouge_l(a, b) <= 0.7)


def test_threshold_must_be_a_fraction():
    with pytest.raises(ValueError):
        Deduper(1.0)
