"""classify and pair records: fields found or named, rejections (stop / skip), the label repair."""

import json

import pytest

from dianjing.data.specialist_readers import FIX_LABEL_SPACE, TextExample, read_task
from dianjing.errors import DataError
from tests.unit.data.specialist_readers.files import write_file, write_jsonl


def test_classify_csv_tsv_jsonwrite_jsonl(tmp_path):
    csv_p = write_file(tmp_path, "a.csv", "id,review,sentiment\n1,good film, pos \n2,bad film,neg\n")
    tsv_p = write_file(tmp_path, "b.tsv", "sentence\tlabel\nfine\t1\n")
    json_p = write_file(tmp_path, "c.json", json.dumps([{"text": "yes", "label": True}, {"text": 5, "label": 0}]))
    jsonl_p = write_jsonl(tmp_path, "d.jsonl", [{"Content": "好", "Category": "正面"}])
    exs, rep = read_task([csv_p, tsv_p, json_p, jsonl_p], "classify")
    assert exs == [
        TextExample(f"{csv_p}:2", "good film", None, "pos"),
        TextExample(f"{csv_p}:3", "bad film", None, "neg"),
        TextExample(f"{tsv_p}:2", "fine", None, "1"),
        TextExample(f"{json_p} record 1", "yes", None, "True"),
        TextExample(f"{json_p} record 2", "5", None, "0"),
        TextExample(f"{jsonl_p}:1", "好", None, "正面"),
    ]
    assert rep.kept == 6 and not rep.rejected
    assert rep.fixed == {FIX_LABEL_SPACE: 1}
    assert rep.samples[FIX_LABEL_SPACE] == [f"{csv_p}:2: ' pos ' became 'pos'"]
    assert rep.files == [csv_p, tsv_p, json_p, jsonl_p]


def test_classify_explicit_fields_and_unlabelled(tmp_path):
    p = write_jsonl(tmp_path, "d.jsonl", [{"body": "x", "y": "a"}, {"body": "z"}])
    exs, _ = read_task([p], "classify", text_field="body", label_field="y", require_labels=False)
    assert exs == [TextExample(f"{p}:1", "x", None, "a"), TextExample(f"{p}:2", "z", None, None)]
    exs, _ = read_task([p], "classify", text_field="body", require_labels=False)
    assert [e.label for e in exs] == [None, None]


def test_classify_no_field_names_fields_and_config_key(tmp_path):
    p = write_jsonl(tmp_path, "d.jsonl", [{"body": "x", "label": "a"}])
    with pytest.raises(DataError) as e:
        read_task([p], "classify")
    assert "'body'" in str(e.value) and "task.text_field" in str(e.value)
    p2 = write_jsonl(tmp_path, "e.jsonl", [{"text": "x", "y": "a"}])
    with pytest.raises(DataError) as e:
        read_task([p2], "classify")
    assert "'y'" in str(e.value) and "task.label_field" in str(e.value)
    with pytest.raises(DataError, match="task.text_field"):
        read_task([p2], "classify", text_field="nope")


def test_classify_rejections_stop_and_skip(tmp_path):
    p = write_file(tmp_path, "data.csv", "text,label\nok,a\n   ,b\nfine,\nalso,b\n,a\n")
    with pytest.raises(DataError) as e:
        read_task([p], "classify")
    assert f"{p}:3" in str(e.value) and "empty text" in str(e.value) and "'text'" in str(e.value)
    assert "on_error=skip" in str(e.value)
    exs, rep = read_task([p], "classify", on_error="skip")
    assert [(x.text, x.label) for x in exs] == [("ok", "a"), ("also", "b")]
    assert rep.kept == 2
    assert rep.rejected == {"empty text": 2, "missing label": 1}
    assert rep.samples["missing label"] == [f"{p}:4: missing label: 'label' is blank"]
    assert rep.samples["empty text"][0].startswith(f"{p}:3: ")
    assert f"rejected 2: empty text ({p}:3, {p}:6)" in rep.lines()
    s = rep.summary()
    assert s["kept"] == 2 and s["rejected"]["missing label"] == 1


def test_missing_label_stop_names_line_and_field(tmp_path):
    p = write_jsonl(tmp_path, "d.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    with pytest.raises(DataError) as e:
        read_task([p], "classify")
    assert f"{p}:2" in str(e.value) and "missing label" in str(e.value) and "'label'" in str(e.value)
    assert e.value.fix


def test_skip_counts_unreadable_jsonl_lines(tmp_path):
    p = write_file(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n{not json\n{"text": "b", "label": "y"}\n')
    exs, rep = read_task([p], "classify", on_error="skip")
    assert len(exs) == 2 and rep.rejected == {"unreadable line": 1}
    assert rep.samples["unreadable line"][0].startswith(f"{p}:2: ")


def test_pair_auto_detected_pairs_and_override(tmp_path):
    a = write_jsonl(tmp_path, "a.jsonl", [{"premise": "p", "hypothesis": "h", "label": "entailment"}])
    b = write_file(tmp_path, "b.csv", "question1,question2,label\nq1,q2,1\n")
    c = write_jsonl(tmp_path, "c.jsonl", [{"question": "q", "sentence": "s", "label": 0}])
    d = write_jsonl(tmp_path, "d.jsonl", [{"text": "t", "text_pair": "u", "label": "x", "sentence": "no"}])
    exs, _ = read_task([a, b, c, d], "pair")
    assert exs == [TextExample(f"{a}:1", "p", "h", "entailment"), TextExample(f"{b}:2", "q1", "q2", "1"),
                   TextExample(f"{c}:1", "q", "s", "0"), TextExample(f"{d}:1", "t", "u", "x")]
    e = write_jsonl(tmp_path, "e.jsonl", [{"left": "l", "right": "r", "label": "x"}])
    exs, _ = read_task([e], "pair", text_field="left", text_b_field="right")
    assert exs == [TextExample(f"{e}:1", "l", "r", "x")]
    with pytest.raises(DataError) as err:
        read_task([e], "pair")
    assert "task.text_b_field" in str(err.value) and "'left'" in str(err.value)


def test_pair_either_text_empty_rejected(tmp_path):
    p = write_jsonl(tmp_path, "d.jsonl", [{"sentence1": "a", "sentence2": "", "label": "x"},
                                     {"sentence1": " ", "sentence2": "b", "label": "x"},
                                     {"sentence1": "a", "sentence2": "b", "label": "x"}])
    with pytest.raises(DataError) as e:
        read_task([p], "pair")
    assert f"{p}:1" in str(e.value) and "'sentence2'" in str(e.value)
    exs, rep = read_task([p], "pair", on_error="skip")
    assert len(exs) == 1 and rep.rejected == {"empty text": 2}
