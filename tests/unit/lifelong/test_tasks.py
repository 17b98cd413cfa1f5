"""Every format cast as question answering; bad data, empty tasks, markers and unfitting metrics fail
before any training, naming the task and the place."""

import json

import pytest

from dianjing.errors import DianjingError
from dianjing.lifelong.sequence import load_sequence
from dianjing.lifelong.tasks import read_all, read_task
from tests.helpers import write_jsonl, write_sequence


def _seq(tmp_path, *tasks, **top):
    return load_sequence(write_sequence(tmp_path / "seq.yaml", {"tasks": list(tasks), **top}))


def _task(name, file, fmt, metric="em", **kw):
    return {"name": name, "files": [file], "format": fmt, "metric": metric, "eval_examples": 1, **kw}


def test_each_format_becomes_prompt_and_answers(tmp_path):
    write_jsonl(tmp_path / "qa.jsonl", [{"passage": "Paris is in France.", "q": "Where is Paris?", "a": ["France", "FR"]},
                                        {"q": "2+2?", "a": 4}])
    write_jsonl(tmp_path / "cls.jsonl", [{"text": "great", "label": "pos"}, {"text": "bad", "label": "neg"},
                                         {"text": "fine", "label": "pos"}])
    write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Say hi.\n", "completion": " hi<|endoftext|>"}] * 2)
    write_jsonl(tmp_path / "al.jsonl", [{"instruction": "Add.", "input": "1 2", "output": "3"},
                                        {"instruction": "Greet.", "output": "hello"}])
    squad = {"data": [{"paragraphs": [{"context": "台北是首都。", "qas": [
        {"id": "1", "question": "首都是哪裡？", "answers": [{"text": "台北", "answer_start": 0}]},
        {"id": "2", "question": "什麼是首都？", "answers": [{"text": "台北", "answer_start": 0}]}]}]}]}
    (tmp_path / "sq.json").write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    seq = _seq(tmp_path,
               _task("qa", "qa.jsonl", "qa", fields={"context": "passage", "question": "q", "answer": "a"},
                     eval_files=["qa.jsonl"]),
               _task("cls", "cls.jsonl", "classify", "accuracy", eval_files=["cls.jsonl"]),
               _task("pc", "pc.jsonl", "prompt_completion"), _task("al", "al.jsonl", "alpaca", eval_files=["al.jsonl"]),
               _task("sq", "sq.json", "squad", "f1"))
    qa, cls, pc, al, sq = read_all(seq, seed=0)
    assert [(e.prompt, e.answers) for e in qa.train] == [("Paris is in France.\nWhere is Paris?", ["France", "FR"]),
                                                         ("2+2?", ["4"])]
    assert qa.train[0].where.endswith("qa.jsonl:1")
    assert cls.train[0].prompt == "great\nWhich of these is it: neg, pos?" and cls.labels == ["neg", "pos"]
    assert cls.majority_rate() == pytest.approx(200 / 3)
    assert [(e.prompt, e.answer) for e in pc.train + pc.eval] == [("Say hi.", "hi")] * 2
    assert [(e.prompt, e.answer) for e in al.train] == [("Add.\n1 2", "3"), ("Greet.", "hello")]
    assert {e.prompt for e in sq.train + sq.eval} == {"台北是首都。\n首都是哪裡？", "台北是首都。\n什麼是首都？"}
    assert sq.train[0].answers == ["台北"]


def test_classify_question_is_the_tasks_own_when_given(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"text": "t", "label": "x"}, {"text": "u", "label": "y"}])
    (data,) = read_all(_seq(tmp_path, _task("c", "c.jsonl", "classify", "accuracy", question="Which?",
                                            eval_files=["c.jsonl"])), 0)
    assert data.train[0].prompt == "t\nWhich?"


def test_held_out_split_is_seeded_and_max_examples_caps_training(tmp_path):
    write_jsonl(tmp_path / "q.jsonl", [{"question": f"q{i}", "answer": f"a{i}"} for i in range(20)])
    seq = _seq(tmp_path, {**_task("q", "q.jsonl", "qa"), "eval_examples": 5, "max_examples": 7})
    a, b = read_task(seq, 0, seed=3), read_task(seq, 0, seed=3)
    assert [e.prompt for e in a.eval] == [e.prompt for e in b.eval] and len(a.eval) == 5 and len(a.train) == 7
    assert not {e.prompt for e in a.eval} & {e.prompt for e in a.train}
    assert [e.prompt for e in read_task(seq, 0, seed=4).eval] != [e.prompt for e in a.eval]


@pytest.mark.parametrize("rows, fmt, metric, want", [
    ([{"question": "q"}], "qa", "em", "task 'bad' (tasks[1]): "),
    ([{"question": "q", "answer": ""}] * 3, "qa", "em", "field 'answer'"),
    ([{"text": "t", "label": "only"}] * 3, "classify", "accuracy", "every training answer is 'only'"),
    ([{"question": f"q{i}", "answer": f"a{i}"} for i in range(60)], "qa", "accuracy", "a small set of labels"),
    ([{"question": "q __ans__ x", "answer": "a"}] * 3, "qa", "em", "contains '__ans__'"),
    ([{"question": "q", "answer": "see __t1__"}] * 3, "qa", "em", "the generation token"),
    ([], "qa", "em", "the task has no examples"),
    (["not an object"], "qa", "em", "expected an object"),
])
def test_bad_task_data_fails_naming_task_and_place(tmp_path, rows, fmt, metric, want):
    write_jsonl(tmp_path / "ok.jsonl", [{"question": "q", "answer": "a"}] * 3)
    write_jsonl(tmp_path / "bad.jsonl", rows)
    seq = _seq(tmp_path, _task("t1", "ok.jsonl", "qa"), _task("bad", "bad.jsonl", fmt, metric))
    with pytest.raises(DianjingError) as e:
        read_all(seq, seed=0)
    assert want in str(e.value) and "task 'bad' (tasks[1])" in str(e.value), str(e.value)


def test_unparseable_file_names_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "a"}\n{not json\n', encoding="utf-8")
    with pytest.raises(DianjingError) as e:
        read_all(_seq(tmp_path, _task("bad", "bad.jsonl", "qa")), 0)
    assert "task 'bad' (tasks[0])" in str(e.value) and "bad.jsonl:2" in str(e.value)


def test_accuracy_refuses_held_out_labels_training_never_saw(tmp_path):
    write_jsonl(tmp_path / "tr.jsonl", [{"text": "t", "label": "x"}, {"text": "u", "label": "y"}])
    write_jsonl(tmp_path / "ev.jsonl", [{"text": "v", "label": "z"}])
    with pytest.raises(DianjingError, match=r"ev.jsonl:1: the held-out label 'z' is not among the training labels"):
        read_all(_seq(tmp_path, _task("c", "tr.jsonl", "classify", "accuracy", eval_files=["ev.jsonl"])), 0)


def test_holding_out_everything_is_refused(tmp_path):
    write_jsonl(tmp_path / "q.jsonl", [{"question": "q", "answer": "a"}] * 3)
    with pytest.raises(DianjingError, match="eval_examples 3 would hold out all 3"):
        read_all(_seq(tmp_path, {**_task("q", "q.jsonl", "qa"), "eval_examples": 3}), 0)
