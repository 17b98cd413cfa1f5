"""eval.text.tokenize: the one ROUGE tokenizer, its stated rules (CJK per character, Hangul as
words, `_` a separator, punctuation and emoji dropped), and that every consumer (teacher
de-duplication and filters, generalist scoring) now gets exactly these tokens and scores."""

import itertools
import random

import pytest

from dianjing.eval import metrics, text
from dianjing.eval.text import answer_tokens, tokenize

# (text, its tokens by the stated rules): zh, ko, ja, en, digits, underscores, punctuation, emoji
MIXED = [
    ("寫一首關於台北的詩。", list("寫一首關於台北的詩")),
    ("한국어 문장을 번역하세요", ["한국어", "문장을", "번역하세요"]),
    ("日本語のテキスト、カタカナ・ひらがな", list("日本語のテキスト") + list("カタカナひらがな")),
    ("Hello世界", ["hello", "世", "界"]),
    ("snake_case_name = 42", ["snake", "case", "name", "42"]),
    ("GPT-4 scored 86.4% on MMLU!", ["gpt", "4", "scored", "86", "4", "on", "mmlu"]),
    ("Emoji 🎉 are dropped 👍🏽", ["emoji", "are", "dropped"]),
    ("全形標點，！？「引號」ＡＢＣ１２３", list("全形標點引號") + ["ａｂｃ１２３"]),
    ("2008年北京Olympics", ["2008", "年", "北", "京", "olympics"]),
    ("서울2024년 a_b", ["서울2024년", "a", "b"]),
    ("Ünïcödé Straße", ["ünïcödé", "straße"]),
    ("...!? ___ —", []),
    ("", []),
]


@pytest.mark.parametrize("s, tokens", MIXED)
def test_tokens_follow_the_stated_rules(s, tokens):
    assert tokenize(s) == tokens


def test_hangul_is_split_on_spaces_like_latin():
    # the generalist scorer used to give five tokens (one per syllable), the dedup two
    assert tokenize("한국어 문장") == ["한국어", "문장"]
    # words, not syllables: sentences sharing only a particle/syllable do not overlap
    assert metrics.rouge_l("나는 학교에 간다", "나는 집에 간다") == pytest.approx(2 / 3)


def test_underscore_is_a_separator():
    assert tokenize("a_b") == ["a", "b"]
    assert tokenize("_a__b_") == ["a", "b"]


def test_cjk_characters_are_single_tokens():
    assert tokenize("Hello世界") == ["hello", "世", "界"]
    assert tokenize("時々〇") == ["時", "々", "〇"]  # iteration mark and ideographic zero are Han
    assert tokenize("ｶﾀｶﾅ") == ["ｶ", "ﾀ", "ｶ", "ﾅ"]  # half-width katakana
    assert tokenize("・゠") == []  # the kana block's punctuation is dropped like all punctuation


def test_qa_answers_keep_the_drcd_rule_for_hangul():
    # QA EM/F1 scores any CJK answer per character (DRCD / CMRC), Hangul included: a
    # deliberate difference from ROUGE tokens, for comparability with the official scripts
    assert answer_tokens("한국어 문장") == list("한국어문장")
    assert text._is_cjk("한") and text._is_cjk("漢") and text._is_cjk("か") and not text._is_cjk("a")


# --------------------------------------------------------------------------- one tokenizer everywhere


def test_teacher_and_generalist_use_the_same_tokens_and_rouge():
    from dianjing.generalist import score
    from dianjing.teacher import dedup, filters

    assert dedup.tokenize is filters.tokenize is tokenize
    strings = [s for s, _ in MIXED]
    for s in strings:
        assert dedup.tokenize(s) == tokenize(s)
    for a, b in itertools.product(strings, repeat=2):
        assert score.rouge_l(a, b) == dedup.rouge_l(a, b) == metrics.rouge_l(a, b)
    # a text against itself is 1.0 in both, with tokens or without ('' and punctuation-only)
    assert all(score.rouge_l(s, s) == 1.0 for s in strings)


def test_deduper_agrees_with_naive_keep_on_mixed_scripts():
    from dianjing.teacher.dedup import Deduper, naive_keep

    rng = random.Random(3)
    pieces = ["寫一首", "關於", "台北", "的詩", "한국어", "문장을", "번역", "日本語", "のテキスト", "snake_case",
              "write", "a", "poem", "about", "the", "sea", "2024", "年", "!", "🎉", "、"]
    texts = []
    for _ in range(300):
        if texts and rng.random() < 0.4:
            base = rng.choice(texts).split(" ")
            base[rng.randrange(len(base))] = rng.choice(pieces)
            texts.append(" ".join(base))
        else:
            texts.append(" ".join(rng.choice(pieces) for _ in range(rng.randrange(1, 9))))
    for threshold in (0.5, 0.7):
        dd = Deduper(threshold)
        ours = [i for i, t in enumerate(texts) if dd.check_and_add(t) is None]
        assert ours == naive_keep(texts, threshold)
        assert 0 < len(ours) < len(texts)
