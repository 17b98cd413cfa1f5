"""The judge's prompts and the strict reading of its verdicts: one verdict or none, never a guess."""

import pytest

from dianjing.eval import judge_prompts as P


@pytest.mark.parametrize("text, want", [
    ("A explains better. [[A]]", ("A", "")),
    ("[[B]]", ("B", "")),
    ("Both are fine. Verdict: [[C]]", ("C", "")),
    ("[[A]] ... to repeat: [[ A ]]", ("A", "")),  # the same verdict twice is one verdict
    ("[[A]] or maybe [[B]]", (None, P.SEVERAL)),
    ("Assistant A is better.", (None, P.NO_VERDICT)),  # no tag: not read as A
    ("[A]", (None, P.NO_VERDICT)),
    ("[[D]]", (None, P.NO_VERDICT)),
    ("I'm sorry, but I can't help with evaluating this.", (None, P.REFUSED)),
    ("抱歉，我無法評估這個問題。", (None, P.REFUSED)),
    ("  \n", (None, P.EMPTY)),
])
def test_pairwise_verdicts_are_read_strictly(text, want):
    assert P.parse_pairwise(text) == want


@pytest.mark.parametrize("text, want", [
    ("Correct and clear. Rating: [[7]]", (7.0, "")),
    ("Rating: [[8.5]]", (8.5, "")),
    ("[[10]] [[10]]", (10.0, "")),
    ("Rating: [[0]]", (None, P.OUT_OF_RANGE)),
    ("Rating: [[11]]", (None, P.OUT_OF_RANGE)),
    ("[[3]] then [[4]]", (None, P.SEVERAL)),
    ("Rating: 7/10", (None, P.NO_VERDICT)),
    ("I cannot rate this answer.", (None, P.REFUSED)),
])
def test_ratings_are_read_strictly(text, want):
    assert P.parse_rating(text) == want


def test_pairwise_prompt_shows_both_answers_in_the_given_order_and_the_reference_only_when_given():
    system, user = P.pairwise_prompt(["2+2?"], ["four"], ["five"], None)
    assert "[[A]]" in system and "[[C]]" in system and "length" in system and "Reference" not in user
    assert user.index("four") < user.index("five") and "[User Question]\n2+2?" in user
    system, user = P.pairwise_prompt(["2+2?"], ["five"], ["four"], "4")
    assert P.PAIR_REF_NOTE in system and "[The Start of Reference Answer]\n4\n" in user
    assert user.index("five") < user.index("four")


def test_multi_turn_prompts_show_the_conversation_and_judge_the_last_turn():
    system, user = P.pairwise_prompt(["Write a poem.", "Now in English."], ["詩", "poem"], ["x", "y"], None)
    assert P.MULTI_NOTE in system
    assert "### User:\nWrite a poem." in user and "### Assistant A:\n詩" in user and "### Assistant B:\ny" in user
    system, user = P.single_prompt(["q1", "q2"], ["a1", "a2"], None)
    assert P.MULTI_NOTE in system and "### Assistant:\na2" in user and "Rating: [[5]]" in system
