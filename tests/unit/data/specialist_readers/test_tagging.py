"""tag data: CoNLL columns and token/tag records, BIO checks and the I- → B- repair."""

import json

import pytest

from dianjing.data.specialist_readers import FIX_BIO, TagExample, read_task
from dianjing.errors import DataError
from tests.unit.data.specialist_readers.files import write_file, write_jsonl


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
    p = write_file(tmp_path, "train.conll", CONLL)
    exs, rep = read_task([p], "tag")
    assert exs == [TagExample(f"{p}:3", ["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"]),
                   TagExample(f"{p}:9", ["Peter", "Blackburn"], ["B-PER", "I-PER"])]
    assert rep.kept == 2 and not rep.rejected and not rep.fixed


def test_conll_bom_crlf_and_tsv(tmp_path):
    text = "\ufeff" + "台北\tB-LOC\r\n市\tI-LOC\r\n\r\n好\tO\r\n"
    p = write_file(tmp_path, "zh.tsv", text)
    exs, _ = read_task([p], "tag")
    assert exs == [TagExample(f"{p}:1", ["台北", "市"], ["B-LOC", "I-LOC"]), TagExample(f"{p}:4", ["好"], ["O"])]


def test_conll_hyphenated_types_and_bio_repair(tmp_path):
    p = write_file(tmp_path, "w.bio", "a I-geo-loc\nb I-geo-loc\nc O\nd I-per\ne B-org\nf I-per\n")
    exs, rep = read_task([p], "tag")
    assert exs[0].tags == ["B-geo-loc", "I-geo-loc", "O", "B-per", "B-org", "B-per"]
    assert rep.fixed == {FIX_BIO: 3}
    assert rep.samples[FIX_BIO][0] == f"{p}:1: 'I-geo-loc' after 'O' became 'B-geo-loc'"
    assert any(line.startswith(f"fixed 3: {FIX_BIO} ({p}:1, {p}:4, {p}:6)") for line in rep.lines())


def test_conll_token_without_tag(tmp_path):
    p = write_file(tmp_path, "d.txt", "a O\nb\nc O\n\nd B-X\n")
    with pytest.raises(DataError) as e:
        read_task([p], "tag")
    assert f"{p}:2" in str(e.value) and "token without a tag" in str(e.value)
    exs, rep = read_task([p], "tag", on_error="skip")
    assert exs == [TagExample(f"{p}:5", ["d"], ["B-X"])]
    assert rep.rejected == {"token without a tag": 1}
    exs, rep = read_task([p], "tag", require_labels=False)
    assert exs == [TagExample(f"{p}:1", ["a", "b", "c"], None), TagExample(f"{p}:5", ["d"], ["B-X"])]


def test_conll_not_bio_names_tag_and_line(tmp_path):
    p = write_file(tmp_path, "d.iob", "a O\nb E-PER\n\nc B-\n\nd B-X\n")
    with pytest.raises(DataError) as e:
        read_task([p], "tag")
    assert f"{p}:2" in str(e.value) and "tag not in BIO form" in str(e.value) and "'E-PER'" in str(e.value)
    exs, rep = read_task([p], "tag", on_error="skip")
    assert [x.tokens for x in exs] == [["d"]]
    assert rep.rejected == {"tag not in BIO form": 2}
    assert rep.samples["tag not in BIO form"][1] == f"{p}:4: tag not in BIO form: 'B-'"


def test_conll_invalid_utf8(tmp_path):
    p = write_file(tmp_path, "d.conll", b"a O\n\nb\xff O\nc O\n\nd O\n")
    with pytest.raises(DataError) as e:
        read_task([p], "tag")
    assert f"{p}:3" in str(e.value) and "UTF-8" in str(e.value)
    exs, rep = read_task([p], "tag", on_error="skip")
    assert [x.tokens for x in exs] == [["a"], ["d"]]
    assert rep.rejected == {"not valid UTF-8": 1}


def test_tag_json_records(tmp_path):
    p = write_jsonl(tmp_path, "d.jsonl", [
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
    w = write_file(tmp_path, "w.json", json.dumps([{"words": ["a"], "labels": ["O"]}]))
    exs, _ = read_task([w], "tag")
    assert exs == [TagExample(f"{w} record 1", ["a"], ["O"])]
