"""eval.metrics: classification, entity and QA metrics (and the QA normaliser of eval.text)
checked against hand computation."""

import random

import pytest

from dianjing.eval import metrics
from dianjing.eval.metrics import (
    accuracy,
    entity_prf,
    entity_spans,
    macro_f1,
    qa_exact,
    qa_f1,
    squad_scores,
)
from dianjing.eval.text import answer_tokens, normalize_answer

# ---------------------------------------------------------------- classification


def test_accuracy():
    assert accuracy(["a", "b", "c"], ["a", "b", "d"]) == pytest.approx(2 / 3)
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        accuracy(["a"], ["a", "b"])


def test_macro_f1_by_hand():
    gold = ["a", "a", "b", "c"]
    pred = ["a", "b", "b", "a"]
    # a: tp=1, 2 predicted, 2 gold -> P=R=1/2, F1=1/2
    # b: tp=1, 2 predicted, 1 gold -> P=1/2, R=1, F1=2/3
    # c: tp=0 -> F1=0
    assert macro_f1(pred, gold) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)


def test_macro_f1_label_set():
    # "x" is only predicted, but is part of the default union -> F1 0 for it.
    # a: P=1, R=1/2 -> F1=2/3
    assert macro_f1(["a", "x"], ["a", "a"]) == pytest.approx((2 / 3 + 0) / 2)
    assert macro_f1(["a", "x"], ["a", "a"], labels=["a"]) == pytest.approx(2 / 3)
    # an explicit label that never occurs contributes 0
    assert macro_f1(["a", "a"], ["a", "a"], labels=["a", "z"]) == pytest.approx(0.5)
    assert macro_f1([], []) == 0.0
    with pytest.raises(ValueError):
        macro_f1(["a"], [])


# ---------------------------------------------------------------- BIO entities


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        ([], []),
        (["O", "O"], []),
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
        # I- opening the sentence, and I- after O, both start an entity
        (["I-PER", "I-PER", "O", "I-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
        (["B-PER", "I-PER", "O", "I-PER"], [("PER", 0, 2), ("PER", 3, 4)]),
        # type switch inside an I- run
        (["I-PER", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 2)]),
        (["B-PER", "I-PER", "I-LOC", "I-LOC"], [("PER", 0, 2), ("LOC", 2, 4)]),
        # adjacent B-X B-X are two entities
        (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
        # split on the first hyphen only
        (
            ["B-geo-loc", "I-geo-loc", "O", "B-geo-loc", "I-geo-org"],
            [("geo-loc", 0, 2), ("geo-loc", 3, 4), ("geo-org", 4, 5)],
        ),
        (["O", "B-MISC"], [("MISC", 1, 2)]),
    ],
)
def test_entity_spans(tags, spans):
    assert entity_spans(tags) == spans


@pytest.mark.parametrize("bad", ["E-PER", "S-LOC", "B", "I", "B-", "X-PER", "o", "BPER"])
def test_entity_spans_rejects_unknown_tags(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("-", r"\-")):
        entity_spans(["O", bad])


def test_entity_prf_partial_overlap_is_wrong():
    gold = [
        ["B-PER", "I-PER", "O", "B-LOC"],  # PER(0,2) LOC(3,4)
        ["B-ORG", "I-ORG", "I-ORG", "O"],  # ORG(0,3)
    ]
    pred = [
        ["B-PER", "I-PER", "O", "B-LOC"],  # both right
        ["B-ORG", "I-ORG", "O", "B-MISC"],  # ORG(0,2) is a partial overlap; MISC spurious
    ]
    out = entity_prf(pred, gold)
    # 4 predicted, 3 gold, 2 correct
    assert out["precision"] == pytest.approx(2 / 4)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))  # 4/7
    assert out["support"] == 3
    assert list(out["per_type"]) == ["LOC", "MISC", "ORG", "PER"]
    assert out["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert out["per_type"]["LOC"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert out["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert out["per_type"]["MISC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_entity_prf_same_span_other_sentence_does_not_match():
    gold = [["B-PER", "O"], ["O", "O"]]
    pred = [["O", "O"], ["B-PER", "O"]]
    out = entity_prf(pred, gold)
    assert (out["precision"], out["recall"], out["f1"]) == (0.0, 0.0, 0.0)


def test_entity_prf_empty_and_errors():
    out = entity_prf([["O"]], [["O"]])
    assert out == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "per_type": {}}
    with pytest.raises(ValueError, match="sentence 1"):
        entity_prf([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError):
        entity_prf([["O"]], [["O"], ["O"]])


# ---------------------------------------------------------------- QA: Chinese


def test_chinese_exact_ignores_punctuation_and_spaces():
    assert normalize_answer("北京。") == "北京"
    assert qa_exact("北京。", "北京") == 1.0
    assert qa_exact(" 北 京 ", "北京") == 1.0
    assert qa_exact("「台北」", "台北") == 1.0
    assert qa_exact("《红楼梦》", "红楼梦") == 1.0
    assert qa_exact("（一九四九年）！", "一九四九年") == 1.0
    assert qa_exact("北京", "南京") == 0.0


def test_chinese_f1_is_per_character():
    assert answer_tokens("台北市") == ["台", "北", "市"]
    # P = 2/3, R = 1 -> F1 = 0.8
    assert qa_f1("台北市", "台北") == pytest.approx(0.8)
    assert qa_f1("台北", "台北市") == pytest.approx(0.8)
    # punctuation is not a token
    assert qa_f1("台北市。", "台北") == pytest.approx(0.8)


def test_mixed_chinese_english_tokens():
    assert answer_tokens("2008年北京Olympics") == ["2008", "年", "北", "京", "olympics"]
    # whitespace separates runs, removed punctuation does not
    assert answer_tokens("New York 纽约") == ["new", "york", "纽", "约"]
    assert answer_tokens("U.S.A.美国") == ["usa", "美", "国"]
    assert normalize_answer("2008年 北京 Olympics！") == "2008年北京olympics"
    # pred 5 tokens, gold 3, all 3 gold tokens present: P=3/5, R=1 -> F1=0.75
    assert qa_f1("2008年北京Olympics", "北京Olympics") == pytest.approx(0.75)
    assert qa_exact("2008年北京 Olympics", "2008年北京olympics") == 1.0


# ---------------------------------------------------------------- QA: English (SQuAD v1.1)


def test_english_squad_normalisation():
    assert normalize_answer("The Eiffel Tower!") == "eiffel tower"
    assert qa_exact("The Eiffel Tower!", "eiffel tower") == 1.0
    # articles only as whole words; whitespace collapsed
    assert normalize_answer("An  Anthem for   the theater") == "anthem for theater"
    assert answer_tokens("A cat, the   mat.") == ["cat", "mat"]
    # pred [cat, sat], gold [cat, sat, on, mat]: P=1, R=1/2 -> F1=2/3
    assert qa_f1("the cat sat", "a cat sat on mat") == pytest.approx(2 / 3)
    assert qa_f1("dog", "cat") == 0.0


def test_empty_answers():
    assert qa_f1("", "") == 1.0
    assert qa_f1("。", "") == 1.0  # both empty after normalisation
    assert qa_f1("the", "cat") == 0.0
    assert qa_f1("cat", "") == 0.0


def test_lcs_mode_differs_from_overlap():
    # same characters, different order: bag overlap sees 4 common, LCS only 2 contiguous
    assert qa_f1("北京大学", "大学北京") == pytest.approx(1.0)
    assert qa_f1("北京大学", "大学北京", mode="lcs") == pytest.approx(0.5)
    # English: "new york" is the longest common run -> P=R=2/3
    assert qa_f1("new york city", "city new york") == pytest.approx(1.0)
    assert qa_f1("new york city", "city new york", mode="lcs") == pytest.approx(2 / 3)
    # where the common tokens are contiguous the two agree
    assert qa_f1("台北市", "台北", mode="lcs") == pytest.approx(0.8)
    with pytest.raises(ValueError):
        qa_f1("a", "b", mode="bleu")


# ---------------------------------------------------------------- QA: corpus scores


def test_squad_scores_max_over_golds_and_missing():
    references = {
        "q1": ["台北", "新北市"],  # vs 台北 F1=0.8; vs 新北市 P=R=2/3 F1=2/3; EM 0
        "q2": ["Paris", "City of Paris"],  # EM 1 against the second gold
        "q3": ["x"],  # no prediction
    }
    predictions = {"q1": "台北市", "q2": "the city of Paris", "zzz": "ignored"}
    out = squad_scores(predictions, references)
    assert out["exact_match"] == pytest.approx(100 * (0 + 1 + 0) / 3)
    assert out["f1"] == pytest.approx(100 * (0.8 + 1.0 + 0) / 3)
    assert out["count"] == 3
    assert out["missing"] == 1
    assert out["extra"] == 1


def test_squad_scores_lcs_mode_and_empty():
    out = squad_scores({"q": "北京大学"}, {"q": ["大学北京"]}, mode="lcs")
    assert out["f1"] == pytest.approx(50.0)
    assert out["exact_match"] == 0.0
    assert squad_scores({}, {}) == {
        "exact_match": 0.0, "f1": 0.0, "count": 0, "missing": 0, "extra": 0,
    }


# ---------------------------------------------------------------- ROUGE-L


def test_rouge_l_empty_cases():
    # both without tokens: identical, 1.0; exactly one empty: 0.0
    assert metrics.rouge_l("", "") == 1.0
    assert metrics.rouge_l("!!!", "?") == 1.0
    assert metrics.rouge_l("a", "") == 0.0 and metrics.rouge_l("", "a") == 0.0
    assert metrics.rouge_l_tokens([], []) == 1.0 and metrics.rouge_l_tokens(["a"], []) == 0.0


def test_rouge_l_identical_and_by_hand():
    assert metrics.rouge_l("The cat sat.", "the cat sat") == 1.0
    # LCS "the cat on mat" = 4 of 6 and 6 tokens: p = r = 4/6
    assert metrics.rouge_l("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(4 / 6)
    # pred 我喜歡台北 (5), ref 我很喜歡高雄 (6), LCS 我喜歡 = 3: p = 3/5, r = 3/6
    p, r = 3 / 5, 3 / 6
    assert metrics.rouge_l("我喜歡台北", "我很喜歡高雄") == pytest.approx(2 * p * r / (p + r))
    # precision is over the prediction, recall over the reference (rouge-score's order)
    assert metrics.f_measure(3, 6, 5) == 2 * p * r / (p + r)
    assert metrics.rouge_l("a b c", "x y z") == 0.0


def test_lcs_length_matches_dynamic_programming():
    from tests.helpers import lcs_dp as dp

    rng = random.Random(0)
    for _ in range(300):
        a = [rng.randrange(5) for _ in range(rng.randrange(0, 70))]
        b = [rng.randrange(5) for _ in range(rng.randrange(0, 70))]
        assert metrics.lcs_length(a, b) == dp(a, b)
        if a:
            assert metrics.lcs_from_masks(metrics.match_masks(a), len(a), b) == dp(a, b)
