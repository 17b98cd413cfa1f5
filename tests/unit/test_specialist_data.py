import json
from pathlib import Path

import pytest

from dianjing.errors import DataError
from dianjing.specialist.data import (FIX_BIO, FIX_DROP_EMPTY, FIX_DROP_NOT_FOUND, FIX_DUP_ID, FIX_ID,
                                      FIX_LABEL_SPACE, FIX_OFFSET, QAExample, ReadReport, TagExample,
                                      TextExample, check_labels, check_tags, label_list, read_task)

DRCD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "qa" / "DRCD_dev.json"


def _write(tmp_path, name, text, encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(p)


def _jsonl(tmp_path, name, rows):
    return _write(tmp_path, name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# -- classify / pair ------------------------------------------------------------------------
def test_classify_csv_tsv_json_jsonl(tmp_path):
    csv_p = _write(tmp_path, "a.csv", "id,review,sentiment\n1,good film, pos \n2,bad film,neg\n")
    tsv_p = _write(tmp_path, "b.tsv", "sentence\tlabel\nfine\t1\n")
    json_p = _write(tmp_path, "c.json", json.dumps([{"text": "yes", "label": True}, {"text": 5, "label": 0}]))
    jsonl_p = _jsonl(tmp_path, "d.jsonl", [{"Content": "好", "Category": "正面"}])
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
    p = _jsonl(tmp_path, "d.jsonl", [{"body": "x", "y": "a"}, {"body": "z"}])
    exs, _ = read_task([p], "classify", text_field="body", label_field="y", require_labels=False)
    assert exs == [TextExample(f"{p}:1", "x", None, "a"), TextExample(f"{p}:2", "z", None, None)]
    exs, _ = read_task([p], "classify", text_field="body", require_labels=False)
    assert [e.label for e in exs] == [None, None]


def test_classify_no_field_names_fields_and_config_key(tmp_path):
    p = _jsonl(tmp_path, "d.jsonl", [{"body": "x", "label": "a"}])
    with pytest.raises(DataError) as e:
        read_task([p], "classify")
    assert "'body'" in str(e.value) and "task.text_field" in str(e.value)
    p2 = _jsonl(tmp_path, "e.jsonl", [{"text": "x", "y": "a"}])
    with pytest.raises(DataError) as e:
        read_task([p2], "classify")
    assert "'y'" in str(e.value) and "task.label_field" in str(e.value)
    with pytest.raises(DataError, match="task.text_field"):
        read_task([p2], "classify", text_field="nope")


def test_classify_rejections_stop_and_skip(tmp_path):
    p = _write(tmp_path, "data.csv", "text,label\nok,a\n   ,b\nfine,\nalso,b\n,a\n")
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
    p = _jsonl(tmp_path, "d.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    with pytest.raises(DataError) as e:
        read_task([p], "classify")
    assert f"{p}:2" in str(e.value) and "missing label" in str(e.value) and "'label'" in str(e.value)
    assert e.value.fix


def test_skip_counts_unreadable_jsonl_lines(tmp_path):
    p = _write(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n{not json\n{"text": "b", "label": "y"}\n')
    exs, rep = read_task([p], "classify", on_error="skip")
    assert len(exs) == 2 and rep.rejected == {"unreadable line": 1}
    assert rep.samples["unreadable line"][0].startswith(f"{p}:2: ")


def test_nothing_usable_is_an_error(tmp_path):
    p = _write(tmp_path, "d.csv", "text,label\n ,a\n")
    with pytest.raises(DataError, match="no usable"):
        read_task([p], "classify", on_error="skip")


def test_pair_auto_detected_pairs_and_override(tmp_path):
    a = _jsonl(tmp_path, "a.jsonl", [{"premise": "p", "hypothesis": "h", "label": "entailment"}])
    b = _write(tmp_path, "b.csv", "question1,question2,label\nq1,q2,1\n")
    c = _jsonl(tmp_path, "c.jsonl", [{"question": "q", "sentence": "s", "label": 0}])
    d = _jsonl(tmp_path, "d.jsonl", [{"text": "t", "text_pair": "u", "label": "x", "sentence": "no"}])
    exs, _ = read_task([a, b, c, d], "pair")
    assert exs == [TextExample(f"{a}:1", "p", "h", "entailment"), TextExample(f"{b}:2", "q1", "q2", "1"),
                   TextExample(f"{c}:1", "q", "s", "0"), TextExample(f"{d}:1", "t", "u", "x")]
    e = _jsonl(tmp_path, "e.jsonl", [{"left": "l", "right": "r", "label": "x"}])
    exs, _ = read_task([e], "pair", text_field="left", text_b_field="right")
    assert exs == [TextExample(f"{e}:1", "l", "r", "x")]
    with pytest.raises(DataError) as err:
        read_task([e], "pair")
    assert "task.text_b_field" in str(err.value) and "'left'" in str(err.value)


def test_pair_either_text_empty_rejected(tmp_path):
    p = _jsonl(tmp_path, "d.jsonl", [{"sentence1": "a", "sentence2": "", "label": "x"},
                                     {"sentence1": " ", "sentence2": "b", "label": "x"},
                                     {"sentence1": "a", "sentence2": "b", "label": "x"}])
    with pytest.raises(DataError) as e:
        read_task([p], "pair")
    assert f"{p}:1" in str(e.value) and "'sentence2'" in str(e.value)
    exs, rep = read_task([p], "pair", on_error="skip")
    assert len(exs) == 1 and rep.rejected == {"empty text": 2}


def test_check_labels_unseen(tmp_path):
    p = _jsonl(tmp_path, "ev.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "meh"}])
    exs, rep = read_task([p], "classify")
    with pytest.raises(DataError) as e:
        check_labels(exs, ["neg", "pos"], rep, "stop")
    assert f"{p}:2" in str(e.value) and "label not seen in training: 'meh'" in str(e.value)
    kept = check_labels(exs, ["neg", "pos"], rep, "skip")
    assert kept == [exs[0]]
    assert rep.rejected == {"label not seen in training: 'meh'": 1} and rep.kept == 1
    assert rep.samples["label not seen in training: 'meh'"][0].startswith(f"{p}:2: ")


def test_label_list():
    assert label_list([TextExample("w", "t", label=l) for l in ["b", "a", "b", None]]) == ["a", "b"]
    assert label_list([TextExample("w", "t", label=l) for l in ["10", "2", "0"]]) == ["0", "2", "10"]
    tags = [TagExample("w", ["a", "b", "c"], ["B-PER", "I-PER", "O"]), TagExample("w", ["x"], ["B-geo-loc"]),
            TagExample("w", ["y"], None)]
    assert label_list(tags) == ["O", "B-PER", "B-geo-loc", "I-PER", "I-geo-loc"]


# -- tag ----------------------------------------------------------------------------------
CONLL = ("-DOCSTART- -X- -X- O\n"
         "\n"
         "EU NNP B-NP B-ORG\n"
         "rejects VBZ B-VP O\n"
         "German JJ B-NP B-MISC\n"
         "\n"
         "   \n"
         "\n"
         "Peter\tB-PER\n"
         "Blackburn\tI-PER\n"
         "\n")


def test_conll_columns_docstart_and_blank_lines(tmp_path):
    p = _write(tmp_path, "train.conll", CONLL)
    exs, rep = read_task([p], "tag")
    assert exs == [TagExample(f"{p}:3", ["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"]),
                   TagExample(f"{p}:9", ["Peter", "Blackburn"], ["B-PER", "I-PER"])]
    assert rep.kept == 2 and not rep.rejected and not rep.fixed


def test_conll_bom_crlf_and_tsv(tmp_path):
    text = "\ufeff" + "台北\tB-LOC\r\n市\tI-LOC\r\n\r\n好\tO\r\n"
    p = _write(tmp_path, "zh.tsv", text)
    exs, _ = read_task([p], "tag")
    assert exs == [TagExample(f"{p}:1", ["台北", "市"], ["B-LOC", "I-LOC"]), TagExample(f"{p}:4", ["好"], ["O"])]


def test_conll_hyphenated_types_and_bio_repair(tmp_path):
    p = _write(tmp_path, "w.bio", "a I-geo-loc\nb I-geo-loc\nc O\nd I-per\ne B-org\nf I-per\n")
    exs, rep = read_task([p], "tag")
    assert exs[0].tags == ["B-geo-loc", "I-geo-loc", "O", "B-per", "B-org", "B-per"]
    assert rep.fixed == {FIX_BIO: 3}
    assert rep.samples[FIX_BIO][0] == f"{p}:1: 'I-geo-loc' after 'O' became 'B-geo-loc'"
    assert any(line.startswith(f"fixed 3: {FIX_BIO} ({p}:1, {p}:4, {p}:6)") for line in rep.lines())


def test_conll_token_without_tag(tmp_path):
    p = _write(tmp_path, "d.txt", "a O\nb\nc O\n\nd B-X\n")
    with pytest.raises(DataError) as e:
        read_task([p], "tag")
    assert f"{p}:2" in str(e.value) and "token without a tag" in str(e.value)
    exs, rep = read_task([p], "tag", on_error="skip")
    assert exs == [TagExample(f"{p}:5", ["d"], ["B-X"])]
    assert rep.rejected == {"token without a tag": 1}
    exs, rep = read_task([p], "tag", require_labels=False)
    assert exs == [TagExample(f"{p}:1", ["a", "b", "c"], None), TagExample(f"{p}:5", ["d"], ["B-X"])]


def test_conll_not_bio_names_tag_and_line(tmp_path):
    p = _write(tmp_path, "d.iob", "a O\nb E-PER\n\nc B-\n\nd B-X\n")
    with pytest.raises(DataError) as e:
        read_task([p], "tag")
    assert f"{p}:2" in str(e.value) and "tag not in BIO form" in str(e.value) and "'E-PER'" in str(e.value)
    exs, rep = read_task([p], "tag", on_error="skip")
    assert [x.tokens for x in exs] == [["d"]]
    assert rep.rejected == {"tag not in BIO form": 2}
    assert rep.samples["tag not in BIO form"][1] == f"{p}:4: tag not in BIO form: 'B-'"


def test_conll_invalid_utf8(tmp_path):
    p = _write(tmp_path, "d.conll", b"a O\n\nb\xff O\nc O\n\nd O\n")
    with pytest.raises(DataError) as e:
        read_task([p], "tag")
    assert f"{p}:3" in str(e.value) and "UTF-8" in str(e.value)
    exs, rep = read_task([p], "tag", on_error="skip")
    assert [x.tokens for x in exs] == [["a"], ["d"]]
    assert rep.rejected == {"not valid UTF-8": 1}


def test_tag_json_records(tmp_path):
    p = _jsonl(tmp_path, "d.jsonl", [
        {"tokens": ["EU", "rejects"], "ner_tags": ["B-ORG", "O"]},
        {"tokens": ["a", "b"], "ner_tags": ["O"]},
        {"tokens": [], "ner_tags": []},
        {"tokens": ["x"], "ner_tags": ["S-PER"]},
        {"tokens": ["y"], "ner_tags": [3]},
        {"tokens": ["z", "w"], "ner_tags": ["O", "I-MISC"]},
    ])
    with pytest.raises(DataError) as e:
        read_task([p], "tag")
    assert f"{p}:2" in str(e.value) and "tokens and tags differ in length" in str(e.value)
    exs, rep = read_task([p], "tag", on_error="skip")
    assert exs == [TagExample(f"{p}:1", ["EU", "rejects"], ["B-ORG", "O"]),
                   TagExample(f"{p}:6", ["z", "w"], ["O", "B-MISC"])]
    assert rep.rejected == {"tokens and tags differ in length": 1, "empty sentence": 1,
                            "tag not in BIO form": 1, "tags are not a list of strings": 1}
    assert rep.samples["tag not in BIO form"] == [f"{p}:4: tag not in BIO form: 'S-PER' at ner_tags[0]"]
    assert rep.fixed == {FIX_BIO: 1}
    w = _write(tmp_path, "w.json", json.dumps([{"words": ["a"], "labels": ["O"]}]))
    exs, _ = read_task([w], "tag")
    assert exs == [TagExample(f"{w} record 1", ["a"], ["O"])]


def test_check_tags_unknown_type(tmp_path):
    p = _write(tmp_path, "ev.conll", "a B-PER\nb I-PER\n\nc I-LOC\n\nd B-EVENT\n")
    exs, rep = read_task([p], "tag")
    known = set(label_list([TagExample("w", ["x", "y"], ["B-PER", "B-LOC"])]))
    with pytest.raises(DataError) as e:
        check_tags(exs, known, rep, "stop")
    assert f"{p}:6" in str(e.value) and "'EVENT'" in str(e.value)
    kept = check_tags(exs, known, rep, "skip")
    assert [x.tokens for x in kept] == [["a", "b"], ["c"]]
    assert rep.rejected == {"tag type not seen in training: 'EVENT'": 1} and rep.kept == 2


# -- extract-qa -----------------------------------------------------------------------------
def _squad(paragraphs):
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": paragraphs}]}


def test_squad_json_and_offset_repair_picks_nearest(tmp_path):
    ctx = "cat one. cat two. cat three."
    p = _write(tmp_path, "s.json", json.dumps(_squad([{"context": ctx, "qas": [
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
    p = _write(tmp_path, "s.json", json.dumps(_squad([
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
    p = _jsonl(tmp_path, "q.jsonl", rows)
    exs, rep = read_task([p], "extract-qa")
    assert exs == [QAExample(f"{p}:1", "1", "where?", "in 台北 and 台北", [("台北", 10)]),
                   QAExample(f"{p}:2", "2", "who?", "Ann met Bob.", [("Bob", 8)]),
                   QAExample(f"{p}:3", "1#2", "again?", "x y", [("y", 2)])]
    assert rep.fixed == {FIX_OFFSET: 1, FIX_DUP_ID: 1}
    j = _write(tmp_path, "q.json", json.dumps(rows[1:2]))
    exs, _ = read_task([j], "extract-qa")
    assert exs == [QAExample(f"{j} record 1", "2", "who?", "Ann met Bob.", [("Bob", 8)])]
    bad = _jsonl(tmp_path, "bad.jsonl", [{"id": "1", "question": "q", "context": "c",
                                          "answers": {"text": ["c"], "answer_start": []}}])
    with pytest.raises(DataError) as e:
        read_task([bad], "extract-qa")
    assert f"{bad}:1" in str(e.value) and "answers" in str(e.value)


def test_report_lines_and_summary():
    rep = ReadReport(files=["a.csv"])
    for i in range(5):
        rep.note(rep.rejected, "empty text", f"a.csv:{i + 2}", "empty text")
    rep.kept = 7
    assert rep.lines() == ["read 7 examples from a.csv",
                           "rejected 5: empty text (a.csv:2, a.csv:3, a.csv:4, …)"]
    assert rep.summary()["samples"]["empty text"] == ["a.csv:2: empty text", "a.csv:3: empty text",
                                                      "a.csv:4: empty text"]


@pytest.mark.skipif(not DRCD.exists(), reason="DRCD_dev.json not present")
def test_drcd_dev_smoke():
    exs, rep = read_task([str(DRCD)], "extract-qa")
    assert len(exs) == 3524 and rep.kept == 3524 and not rep.rejected
    assert all(ex.answers for ex in exs)
    assert all(ex.context[s:s + len(t)] == t for ex in exs for t, s in ex.answers)
    assert sum(rep.fixed.values()) == 0  # DRCD's offsets are character offsets that all match
    assert len({ex.id for ex in exs}) == 3524
