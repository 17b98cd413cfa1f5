"""Judge statistics: the swap rule, the tie-adjusted win rate, its bootstrap interval, agreement, per category."""

import pytest

from dianjing.eval import judge_stats as S


def test_a_verdict_maps_to_the_side_in_that_position():
    assert S.game_winner("A", ("a", "b")) == "a" and S.game_winner("A", ("b", "a")) == "b"
    assert S.game_winner("B", ("b", "a")) == "a" and S.game_winner("C", ("a", "b")) == "tie"
    assert S.game_winner(None, ("a", "b")) is None


def test_two_orders_agree_or_make_a_tie():
    assert S.outcome("a", "a") == ("win", True) and S.outcome("b", "b") == ("loss", True)
    assert S.outcome("tie", "tie") == ("tie", True)
    assert S.outcome("a", "b") == ("tie", False)  # flipped with the order
    assert S.outcome("a", "tie") == ("tie", False)
    assert S.outcome(None, "a") == (None, None)  # not guessed from the other game


def _unit(verdicts, category="c", a="x", b="yy"):
    w1 = S.game_winner(verdicts[0], ("a", "b"))
    w2 = S.game_winner(verdicts[1], ("b", "a"))
    out, agree = S.outcome(w1, w2)
    return {"category": category, "outcome": out, "agree": agree, "positions": list(verdicts),
            "unparsed": [] if None not in verdicts else ["no verdict in the reply"], "answer_a": a, "answer_b": b}


def test_a_judge_that_always_prefers_the_first_position_gives_only_ties():
    s = S.pairwise_summary([_unit(("A", "A")) for _ in range(20)], bootstrap=200)
    assert (s["wins"], s["ties"], s["losses"], s["n"]) == (0, 20, 0, 20)
    assert s["win_rate"] == 0.5 and s["ci"] == [0.5, 0.5]
    assert s["agreement"] == 0.0 and s["first_position_picked"] == 1.0


def test_win_rate_counts_ties_half_and_unjudged_turns_are_left_out_and_counted():
    units = [_unit(("A", "B"))] * 3 + [_unit(("B", "A"))] + [_unit(("C", "C"))] * 2 + [_unit(("A", None))] * 4
    s = S.pairwise_summary(units, bootstrap=200)
    assert (s["wins"], s["losses"], s["ties"], s["n"]) == (3, 1, 2, 6)
    assert s["win_rate"] == pytest.approx((3 + 2 / 2) / 6, abs=1e-4)
    assert s["unjudged"] == 4 and s["unjudged_by_reason"] == {"no verdict in the reply": 4}
    assert s["agreement"] == 1.0
    assert s["answer_length"]["a"]["chars"] == 1 and s["answer_length"]["b"]["chars"] == 2


def test_the_interval_widens_with_fewer_questions_and_is_seeded():
    pattern = ["win", "win", "tie", "loss"]  # the same proportions at every size
    widths = []
    for n in (80, 20, 8):
        ci = S.win_stats(pattern * (n // 4), bootstrap=2000, seed=1)["ci"]
        assert ci[0] < 0.625 < ci[1]
        widths.append(ci[1] - ci[0])
    assert widths[0] < widths[1] < widths[2]
    assert S.bootstrap_interval([1, 0, 0.5, 1], seed=3) == S.bootstrap_interval([1, 0, 0.5, 1], seed=3)
    assert S.bootstrap_interval([]) is None


def test_per_category_results():
    units = [_unit(("A", "B"), "maths")] * 2 + [_unit(("B", "A"), "writing")]
    s = S.pairwise_summary(units, bootstrap=100)
    assert s["by_category"]["maths"]["win_rate"] == 1.0 and s["by_category"]["writing"]["win_rate"] == 0.0
    assert s["by_category"]["maths"]["n"] == 2


def test_single_grading_summary():
    units = [{"side": "a", "category": "maths", "rating": r, "unparsed": None, "answer": "x"} for r in (6.0, 8.0)]
    units.append({"side": "a", "category": "maths", "rating": None, "unparsed": "empty reply", "answer": "x"})
    s = S.single_summary(units, bootstrap=100)["a"]
    assert s["n"] == 2 and s["mean"] == 7.0 and s["unjudged"] == 1 and s["unjudged_by_reason"] == {"empty reply": 1}
    assert s["histogram"] == {"6": 1, "8": 1} and s["by_category"]["maths"]["mean"] == 7.0
