"""read_task as a whole, and checking evaluation examples against the training labels."""

import pytest

from dianjing.data.specialist_readers import TagExample, TextExample, check_labels, check_tags, label_list, read_task
from dianjing.errors import DataError
from tests.unit.data.specialist_readers.files import write_file, write_jsonl


def test_nothing_usable_is_an_error(tmp_path):
    p = write_file(tmp_path, "d.csv", "text,label\n ,a\n")
    with pytest.raises(DataError, match="no usable"):
        read_task([p], "classify", on_error="skip")


def test_check_labels_unseen(tmp_path):
    p = write_jsonl(tmp_path, "ev.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "meh"}])
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


def test_check_tags_unknown_type(tmp_path):
    p = write_file(tmp_path, "ev.conll", "a B-PER\nb I-PER\n\nc I-LOC\n\nd B-EVENT\n")
    exs, rep = read_task([p], "tag")
    known = set(label_list([TagExample("w", ["x", "y"], ["B-PER", "B-LOC"])]))
    with pytest.raises(DataError) as e:
        check_tags(exs, known, rep, "stop")
    assert f"{p}:6" in str(e.value) and "'EVENT'" in str(e.value)
    kept = check_tags(exs, known, rep, "skip")
    assert [x.tokens for x in kept] == [["a", "b"], ["c"]]
    assert rep.rejected == {"tag type not seen in training: 'EVENT'": 1} and rep.kept == 2
