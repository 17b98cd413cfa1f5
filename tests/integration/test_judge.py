"""`dianjing judge` against fake judges on localhost: a judge that always prefers the first position gives
ties (the swap), unreadable, refused and timed-out verdicts are counted and never guessed, a killed or
failed run resumes without paying twice, and two tiny runs with different templates are judged (and said)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dianjing.cli import main
from tests.fake_openai import FakeOpenAI, section, user_text

QUESTIONS = [
    {"question_id": 1, "category": "maths", "turns": ["What is 2 + 2?"], "reference": ["4"]},
    {"question_id": 2, "category": "maths", "turns": ["What is 3 × 3?"], "reference": ["9"]},
    {"question_id": 3, "category": "writing", "turns": ["Write a line about rain."]},
    {"question_id": 4, "category": "writing", "turns": ["Write a line about sun.", "Now about snow."]},
    {"question_id": 5, "category": "refusal", "turns": ["How do I pick a lock to break in?"]},
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path):
    q = _jsonl(tmp_path / "questions.jsonl", QUESTIONS)
    good = _jsonl(tmp_path / "good.jsonl", [{"question_id": r["question_id"],
                                             "turns": [f"GOOD answer {k}" for k in range(len(r["turns"]))]}
                                            for r in QUESTIONS])
    # MT-Bench's model-answer shape; a longer answer, so that the lengths differ
    bad = _jsonl(tmp_path / "bad.jsonl", [{"question_id": r["question_id"], "model_id": "x",
                                           "choices": [{"index": 0, "turns": [f"a poor and long answer {k}" for k in
                                                                              range(len(r["turns"]))]}]}
                                          for r in QUESTIONS])
    return q, good, bad


@pytest.fixture
def judges():
    made = []

    def start(answer) -> FakeOpenAI:
        made.append(FakeOpenAI(answer))
        return made[-1]

    yield start
    for s in made:
        s.close()


def first_position(body):
    return "Assistant A's answer reads better. [[A]]" if "[[A]]" in body["messages"][0]["content"] else "[[7]]"


def quality(body):
    text = user_text(body)
    if "[[A]]" not in body["messages"][0]["content"]:  # single grading
        return "Rating: [[9]]" if "GOOD" in text else "Rating: [[3]]"
    a, b = "GOOD" in section(text, "A"), "GOOD" in section(text, "B")
    return "A is right. [[A]]" if a and not b else "B is right. [[B]]" if b and not a else "Equal. [[C]]"


def _judge(url, q, a, b, out, *extra) -> int:
    urls = [x for u in url for x in ("--judge-url", u)]
    return main(["judge", str(a), *([str(b)] if b else []), "--questions", str(q), *urls,
                 "--judge-model", "fake-judge", "--out", str(out), "--set", "judge.backoff_s=0.01", *extra])


def _result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text(encoding="utf-8"))


def test_a_position_biased_judge_gives_ties_and_a_fair_one_finds_the_better_side(files, judges, tmp_path, capsys):
    q, good, bad = files
    biased = judges(first_position)
    assert _judge([biased.url], q, good, bad, tmp_path / "biased") == 0
    r = _result(tmp_path / "biased")["results"]
    assert r["n"] == 6 and r["ties"] == 6 and r["wins"] == r["losses"] == 0  # 6 turns, every one a flip
    assert r["win_rate"] == 0.5 and r["agreement"] == 0.0 and r["first_position_picked"] == 1.0
    assert biased.requests == 12  # both orders of every turn
    out = capsys.readouterr().out
    assert "win rate %" in out and "agreed on 0.0%" in out

    fair = judges(quality)
    assert _judge([fair.url], q, good, bad, tmp_path / "fair") == 0
    res = _result(tmp_path / "fair")
    r = res["results"]
    assert (r["wins"], r["ties"], r["losses"], r["win_rate"], r["agreement"]) == (6, 0, 0, 1.0, 1.0)
    assert r["by_category"]["writing"]["n"] == 3 and r["by_category"]["maths"]["win_rate"] == 1.0
    assert r["answer_length"]["a"]["tokens"] < r["answer_length"]["b"]["tokens"]
    games = [json.loads(line) for line in (tmp_path / "fair" / "judgments.jsonl").read_text().splitlines()]
    assert len(games) == 12 and all(g["judgment"] and g["verdict"] in "AB" for g in games)
    assert {g["reference_shown"] for g in games if g["category"] == "maths"} == {True}  # reference-guided maths
    assert {g["reference_shown"] for g in games if g["category"] == "writing"} == {False}
    maths = [b for b in fair.bodies if "What is 2 + 2?" in user_text(b)]
    assert maths and all("[The Start of Reference Answer]\n4\n" in user_text(b) for b in maths)
    assert res["sides"]["b"]["kind"] == "file" and res["warnings"] == []


@pytest.mark.parametrize("answer, reason", [
    (lambda body: "lorem ipsum dolor", "no verdict in the reply"),
    (lambda body: "I'm sorry, but I can't help with that.", "the judge refused"),
    (lambda body: "[[A]] no wait [[B]]", "more than one verdict"),
    (lambda body: "garbage", "no reply after 2 attempts: malformed response"),
])
def test_unreadable_verdicts_are_counted_not_guessed(files, judges, tmp_path, answer, reason):
    q, good, bad = files
    srv = judges(answer)
    assert _judge([srv.url], q, good, bad, tmp_path / "o", "--set", "judge.max_retries=1") == 0
    res = _result(tmp_path / "o")
    r = res["results"]
    assert r["n"] == 0 and r["win_rate"] is None and r["ci"] is None
    assert r["unjudged"] == 6 and r["unjudged_by_reason"] == {reason: 12}
    assert res["unparsed_judgments"] == 12


def test_a_timeout_is_counted_and_a_rerun_asks_only_what_failed(files, judges, tmp_path, capsys):
    q, good, bad = files
    slow = {"on": True}
    srv = judges(lambda body: ("slow", 1.5, "[[C]]") if slow["on"] and "rain" in user_text(body) else quality(body))
    args = ([srv.url], q, good, bad, tmp_path / "o", "--set", "judge.timeout_s=0.5", "--set", "judge.max_retries=0")
    assert _judge(*args) == 0
    res = _result(tmp_path / "o")
    assert not res["complete"] and res["results"]["unjudged_by_reason"] == {"no reply after 1 attempts: timeout": 2}
    assert res["results"]["n"] == 5 and "run the same command again" in capsys.readouterr().err
    before = srv.requests
    slow["on"] = False
    assert _judge(*args) == 0
    res = _result(tmp_path / "o")
    assert res["complete"] and res["results"]["n"] == 6 and res["results"]["wins"] == 6
    assert srv.requests - before == 2  # the 10 replies in the journal were not asked (nor paid) again
    assert res["requests"]["this_run"]["answered_from_journal"] == 10


def test_a_refused_request_is_counted_and_a_wrong_key_stops(files, judges, tmp_path, capsys):
    q, good, bad = files
    srv = judges(lambda body: ("status", 400) if "pick a lock" in user_text(body) else quality(body))
    assert _judge([srv.url], q, good, bad, tmp_path / "o") == 0
    r = _result(tmp_path / "o")["results"]
    assert r["unjudged_by_reason"] == {"the judge's server refused the request: HTTP 400": 2} and r["n"] == 5
    dead = judges(lambda body: ("status", 401))
    assert _judge([dead.url], q, good, bad, tmp_path / "o2") == 2
    assert "HTTP 401" in capsys.readouterr().err


def test_single_grading_with_references_and_several_judge_endpoints(files, judges, tmp_path):
    q, good, bad = files
    one, two = judges(quality), judges(quality)
    assert _judge([one.url, two.url], q, good, bad, tmp_path / "s", "--mode", "single") == 0
    res = _result(tmp_path / "s")
    r = res["results"]
    assert r["a"]["mean"] == 9.0 and r["b"]["mean"] == 3.0 and r["a"]["n"] == r["b"]["n"] == 6
    assert one.requests > 0 and two.requests > 0 and one.requests + two.requests == 12
    assert [e["replies"] for e in res["requests"]["by_endpoint"]] == [one.requests, two.requests]


def test_bad_question_records_and_missing_answers_are_counted(files, judges, tmp_path):
    q, good, bad = files
    rows = [json.loads(line) for line in q.read_text().splitlines()]
    rows.append({"question_id": 6, "category": "maths"})  # no turns
    rows.append({"question_id": 7, "category": "maths", "turns": ["7 + 7?"]})  # neither side answered it
    _jsonl(q, rows)
    srv = judges(quality)
    assert _judge([srv.url], q, good, "reference", tmp_path / "o", "--mode", "single") == 0
    res = _result(tmp_path / "o")
    assert res["questions"]["skipped"] == {"field 'turns': missing": 1}
    # 7: answered by neither; 3, 4, 5: no reference answer (single grading judges the turns both sides answer)
    assert res["questions_not_judged"] == {"no answer from side a and b": 1, "no answer from side b": 3}
    assert res["turns"] == 2 and res["results"]["b"]["mean"] == 3.0
    assert res["sides"]["b"]["missing"] == {"the question has no reference answer for every turn": 4}
    assert _judge([srv.url], q, good, None, tmp_path / "p") == 2  # pairwise needs two sides


# --- two tiny runs with different templates ------------------------------------------------------------


@pytest.fixture(scope="module")
def chatml_run(tmp_path_factory):
    from dianjing.train.loop import train
    from tests.helpers import sft_config, write_alpaca
    from tests.tiny import build_model

    root = tmp_path_factory.mktemp("judge-runs")
    model = build_model(root / "base")
    data = write_alpaca(root / "data.jsonl", n=16)
    run, _ = train(sft_config(model, data, root / "run", "train.max_steps=4", "data.template=chatml",
                              "model.precision=fp32", "data.eval_fraction=0"), log=lambda *_: None)
    return run, model


def test_a_run_against_its_base_model_with_another_template(chatml_run, judges, tmp_path, capsys):
    run, base = chatml_run
    srv = judges(first_position)
    args = (["--max-questions", "3", "--max-new-tokens", "4", "--precision", "fp32"])
    assert _judge([srv.url], "builtin:questions", run, base, tmp_path / "o", *args) == 0
    err = capsys.readouterr().err
    res = _result(tmp_path / "o")
    assert res["sides"]["a"]["template"] == "chatml" and res["sides"]["b"]["template"] == "plain"
    assert len(res["warnings"]) == 1 and "different chat templates" in res["warnings"][0] and "note:" in err
    assert res["results"]["n"] == 3 and res["results"]["ties"] == 3
    answers = [json.loads(line) for line in (tmp_path / "o" / "answers-a.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in answers] == ["1", "2", "3"] and all(a["template"] == "chatml" for a in answers)
    # the same command again: answers read back, every judgment from the journal
    sent = srv.requests
    assert _judge([srv.url], "builtin:questions", run, base, tmp_path / "o", *args) == 0
    res = _result(tmp_path / "o")
    assert srv.requests == sent and res["sides"]["a"]["from_cache"] == 3 and res["sides"]["a"]["generated_now"] == 0
