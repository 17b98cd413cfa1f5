"""The place a bad record's message names, pinned for every reader: `file:line: …` where a record is a
line (JSONL, CSV), `file record N: …` where it is an item (a JSON list, Parquet, a saved dataset),
`NAME[split] record N: …` for a split of a dataset. The place is named once, the field after it."""

import json

import pytest

from dianjing.config import load_config
from dianjing.data.load import load_conversations
from dianjing.errors import DataError

ROWS = [{"instruction": "Say one.", "output": "One."}, {"instruction": "Say two.", "output": None},
        {"instruction": "Say three.", "output": "Three."}]
WHAT = "field 'output': missing"


def _message(entry: str) -> str:
    cfg = load_config(None, [f"data.files=[{entry}]"])
    with pytest.raises(DataError) as e:
        load_conversations(cfg.data, log=lambda *_: None)
    return str(e.value)


def _check(msg: str, place: str) -> None:
    assert msg.startswith(f"{place}: {WHAT}\n  fix: "), msg
    assert msg.count(place) == 1, msg


def test_jsonl(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    _check(_message(str(f)), f"{f}:2")


def test_json_array(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    _check(_message(str(f)), f"{f} record 2")


def test_csv(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("instruction,output\nSay one.,One.\nSay two.\nSay three.,Three.\n", encoding="utf-8")
    _check(_message(str(f)), f"{f}:3")  # the header is line 1


def test_parquet(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    f = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), f)
    _check(_message(str(f)), f"{f} record 2")


def test_saved_dataset_and_its_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    one, both = tmp_path / "one", tmp_path / "both"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(one))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(both))
    _check(_message(f"{{path: {one}}}"), f"{one} record 2")
    _check(_message(f"{{path: {both}, split: train}}"), f"{both}[train] record 2")
    _check(_message(f"{{hub: {both}}}"), f"{both}[train] record 2")


def test_a_column_mapping_error_names_the_place_once(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps([{"q": "a", "a": "b"}, {"q": "c"}]), encoding="utf-8")
    msg = _message(f"{{path: {f}, columns: {{instruction: q, output: a}}}}")
    assert msg.startswith(f"{f} record 2: columns.output names the field 'a', which this record does not have\n")
    assert msg.count(f"{f} record 2") == 1
