"""extract-qa data: SQuAD JSON and HF squad records, offset repair, dropped answers, ids; DRCD."""

import json

import pytest

from dianjing.data.specialist_readers import (FIX_DROP_EMPTY, FIX_DROP_NOT_FOUND, FIX_DUP_ID, FIX_ID, FIX_OFFSET,
                                              QAExample, read_task)
from dianjing.errors import DataError
from tests.helpers import SHARED_DATA
from tests.unit.data.specialist_readers.files import write_file, write_jsonl

DRCD = SHARED_DATA / "qa" / "DRCD_dev.json"


def _squad(paragraphs):
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": paragraphs}]}


def test_squad_json_and_offset_repair_picks_nearest(tmp_path):
    ctx = "cat one. cat two. cat three."
    p = write_file(tmp_path, "s.json", json.dumps(_squad([{"context": ctx, "qas": [
        {"id": "q1", "question": "which?", "answers": [{"text": "cat", "answer_start": 16}]},
        {"id": "q2", "question": "exact?", "answers": [{"text": "two", "answer_start": 13}]},
        {"id": "q3", "question": "start?", "answers": [{"text": "cat", "answer_start": 1}]},
    ]}])))
    exs, rep = read_task([p], "extract-qa")
    assert exs == [
        QAExample(f"{p}: data[0].paragraphs[0].qas[0] (id q1)", "q1", "which?", ctx, [("cat", 18)]),
        QAExample(f"{p}: data[0].paragraphs[0].qas[1] (id q2)", "q2", "exact?", ctx, [("two", 13)]),
        QAExample(f"{p}: data[0].paragraphs[0].qas[2] (id q3)", "q3", "start?", ctx, [("cat", 0)]),
    ]
    assert rep.fixed == {FIX_OFFSET: 2}
    assert rep.samples[FIX_OFFSET][0].startswith(f"{p}: data[0].paragraphs[0].qas[0] (id q1): ")


def test_squad_rejections_and_drops(tmp_path):
    ctx = "Paris is in France."
    p = write_file(tmp_path, "s.json", json.dumps(_squad([
        {"context": ctx, "qas": [
            {"id": "a", "question": " ", "answers": [{"text": "Paris", "answer_start": 0}]},
            {"id": "b", "question": "q?", "answers": []},
            {"id": "c", "question": "q?", "answers": [], "is_impossible": True},
            {"id": "d", "question": "q?", "answers": [{"text": "Rome", "answer_start": 0}]},
            {"id": "e", "question": "q?", "answers": [{"text": "Rome", "answer_start": 0},
                                                       {"text": "", "answer_start": 3},
                                                       {"text": "France", "answer_start": 12}]},
            {"question": "no id?", "answers": [{"text": "Paris", "answer_start": 0}]},
        ]},
        {"context": "", "qas": [{"id": "f", "question": "q?", "answers": [{"text": "x", "answer_start": 0}]}]},
    ])))
    with pytest.raises(DataError) as e:
        read_task([p], "extract-qa")
    assert f"{p}: data[0].paragraphs[0].qas[0] (id a)" in str(e.value) and "empty question" in str(e.value)
    exs, rep = read_task([p], "extract-qa", on_error="skip")
    assert [(x.id, x.answers) for x in exs] == [("e", [("France", 12)]), (f"{p}#6", [("Paris", 0)])]
    assert rep.rejected == {"empty question": 1, "no answer (unanswerable questions are not supported)": 2,
                            "answer text not found in context": 1, "empty context": 1}
    # drops on a kept question are counted; those on a rejected one are explained by its rejection
    assert rep.fixed == {FIX_DROP_NOT_FOUND: 1, FIX_DROP_EMPTY: 1, FIX_ID: 1}
    assert rep.samples["answer text not found in context"][0].startswith(
        f"{p}: data[0].paragraphs[0].qas[3] (id d): ")
    # without labels required, unanswerable questions are kept with no answers
    exs, rep = read_task([p], "extract-qa", on_error="skip", require_labels=False)
    assert [x.id for x in exs] == ["b", "c", "d", "e", f"{p}#6"]
    assert exs[2].answers == []


def test_hf_squad_jsonl_and_json_list(tmp_path):
    rows = [{"id": "1", "title": "t", "question": "where?", "context": "in 台北 and 台北",
             "answers": {"text": ["台北"], "answer_start": [9]}},
            {"id": "2", "question": "who?", "context": "Ann met Bob.",
             "answers": [{"text": "Bob", "answer_start": 8}]},
            {"id": "1", "question": "again?", "context": "x y", "answers": {"text": ["y"], "answer_start": [2]}}]
    p = write_jsonl(tmp_path, "q.jsonl", rows)
    exs, rep = read_task([p], "extract-qa")
    assert exs == [QAExample(f"{p}:1", "1", "where?", "in 台北 and 台北", [("台北", 10)]),
                   QAExample(f"{p}:2", "2", "who?", "Ann met Bob.", [("Bob", 8)]),
                   QAExample(f"{p}:3", "1#2", "again?", "x y", [("y", 2)])]
    assert rep.fixed == {FIX_OFFSET: 1, FIX_DUP_ID: 1}
    j = write_file(tmp_path, "q.json", json.dumps(rows[1:2]))
    exs, _ = read_task([j], "extract-qa")
    assert exs == [QAExample(f"{j} record 1", "2", "who?", "Ann met Bob.", [("Bob", 8)])]
    bad = write_jsonl(tmp_path, "bad.jsonl", [{"id": "1", "question": "q", "context": "c",
                                          "answers": {"text": ["c"], "answer_start": []}}])
    with pytest.raises(DataError) as e:
        read_task([bad], "extract-qa")
    assert f"{bad}:1" in str(e.value) and "answers" in str(e.value)


@pytest.mark.skipif(not DRCD.exists(), reason="DRCD_dev.json not present")
def test_drcd_dev_smoke():
    exs, rep = read_task([str(DRCD)], "extract-qa")
    assert len(exs) == 3524 and rep.kept == 3524 and not rep.rejected
    assert all(ex.answers for ex in exs)
    assert all(ex.context[s:s + len(t)] == t for ex in exs for t, s in ex.answers)
    assert sum(rep.fixed.values()) == 0  # DRCD's offsets are character offsets that all match
    assert len({ex.id for ex in exs}) == 3524
