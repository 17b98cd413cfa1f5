"""Question sets: MT-Bench's and self-instruct's formats, instruction files, bad records counted, the shipped set."""

import json
from collections import Counter

import pytest

from dianjing.errors import DataError
from dianjing.eval.questions import NO_CATEGORY, read_questions


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return str(path)


def _quiet(*_):
    pass


def test_mt_bench_format(tmp_path):
    p = _write(tmp_path / "question.jsonl", [
        {"question_id": 81, "category": "writing", "turns": ["Write a blog post.", "Rewrite it as a limerick."]},
        {"question_id": 111, "category": "math", "turns": ["2+2?", "and 3+3?"], "reference": ["4", "6"]},
        {"question_id": 112, "turns": ["Highest mountain of Taiwan?"], "reference": "Yushan, 3,952 m.",
         "short_answer": "Yushan"},
        {"question_id": 113, "turns": ["q"], "short_answer": [1]}])
    qs, rep = read_questions(p, log=_quiet)
    assert rep.format == "mt-bench" and rep.kept == 3
    assert rep.skipped.counts == {"field 'short_answer': expected a text, or a list of at most 1 texts (one per turn)": 1}
    assert qs[2].references == ("Yushan, 3,952 m.",) and qs[2].short_answer(0) == "Yushan" and qs[0].short_answer(0) is None
    assert qs[0].id == "81" and qs[0].turns == ("Write a blog post.", "Rewrite it as a limerick.")
    assert qs[0].reference(0) is None and qs[1].reference(1) == "6" and qs[1].category == "math"


def test_self_instruct_user_oriented_format(tmp_path):
    p = _write(tmp_path / "user_oriented_instructions.jsonl", [
        {"id": "user_oriented_task_0", "motivation_app": "Grammarly", "instruction": "Fix the grammar.",
         "instances": [{"input": "He go home.", "output": "He goes home."}]},
        {"id": "user_oriented_task_1", "motivation_app": "Gmail", "instruction": "Write a reply.",
         "instances": [{"input": "", "output": "Thanks!"}, {"input": "Hi", "output": "Hello"}]}])
    qs, rep = read_questions(p, log=_quiet)
    assert rep.format == "self-instruct" and [q.id for q in qs] == [
        "user_oriented_task_0", "user_oriented_task_1#1", "user_oriented_task_1#2"]
    assert qs[0].turns == ("Fix the grammar.\n\nHe go home.",) and qs[0].references == ("He goes home.",)
    assert qs[1].turns == ("Write a reply.",) and qs[0].category == "Grammarly"


def test_missing_fields_are_counted_by_reason_or_stop_with_file_and_line(tmp_path):
    p = _write(tmp_path / "q.jsonl", [
        {"question_id": 1, "category": "maths", "turns": ["1+1?"]},
        {"question_id": 2, "category": "maths"},  # no turns
        {"category": "maths", "turns": ["x"]},  # no id
        {"question_id": 4, "turns": ["no category"]},
        {"question_id": 5, "turns": [""]},
        {"question_id": 1, "turns": ["the same id"]},
        {"question_id": 7, "turns": ["q"], "reference": [3]},
        "not json at all"])
    qs, rep = read_questions(p, "skip", log=_quiet)
    assert [q.id for q in qs] == ["1", "4"] and qs[1].category == NO_CATEGORY
    skipped = rep.skipped.counts
    assert skipped["field 'turns': missing"] == 1 and skipped["field 'question_id': missing"] == 1
    assert skipped["field 'turns[0]': empty"] == 1 and skipped["field 'reference[0]': expected text, got int"] == 1
    assert any("already used at" in r for r in skipped) and rep.records == 8 and sum(skipped.values()) == 6
    assert rep.notes == Counter({"no category: kept under (none)": 1})
    with pytest.raises(DataError, match=r"q.jsonl:2: field 'turns': missing"):
        read_questions(p, "stop", log=_quiet)


def test_an_instruction_file_is_a_question_set(tmp_path):
    p = _write(tmp_path / "a.jsonl", [{"instruction": "Say hi.", "input": "", "output": "Hi!"}])
    qs, rep = read_questions(p, log=_quiet)
    assert rep.format == "chat (alpaca)" and qs[0].turns == ("Say hi.",) and qs[0].references == ("Hi!",)


def test_the_shipped_set():
    qs, rep = read_questions("builtin:questions", "stop", log=_quiet)
    assert len(qs) == 80 and rep.skipped.total == 0 and len({q.id for q in qs}) == 80
    cats = Counter(q.category for q in qs)
    assert set(cats) == {"knowledge", "writing", "rewriting", "translation", "reasoning", "maths", "coding",
                         "refusal", "identity"}
    assert Counter(q.lang for q in qs) == {"zh-Hant": 40, "en": 40}
    for q in qs:  # references where there is one right answer, none for refusals
        if q.category in ("knowledge", "translation", "reasoning", "maths", "coding", "identity"):
            assert q.references, q
        if q.category == "refusal":
            assert not q.references, q
    yushan = next(q for q in qs if "台灣最高的山" in q.turns[0])
    assert "玉山" in yushan.references[0] and "3,952" in yushan.references[0] and yushan.short_answer(0) == "玉山"
    from dianjing.eval.metrics import contains_answer

    shorts = [q for q in qs if q.short_answers]
    assert len(shorts) == 39 and all(contains_answer(q.references[0], q.short_answer(0)) for q in shorts)
