"""Hub datasets and folders written by save_to_disk. Never the network: datasets built here, and the
hub's offline mode for the error a run gets without the network."""

import json

import pytest

from dianjing.config import load_config
from dianjing.data.load import load_conversations
from dianjing.errors import DataError, DianjingError

datasets = pytest.importorskip("datasets")

ROWS = [{"question": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(5)]
QA = "columns: {instruction: question, output: answer}"


@pytest.fixture(autouse=True)
def _quiet_and_offline(monkeypatch):
    """No progress bars, and the hub unreachable for sure: a test that reached for it would fail, not download."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def _load(entry: str, *sets: str):
    cfg = load_config(None, [f"data.files=[{entry}]", *sets])
    return load_conversations(cfg.data, log=lambda *_: None)


def test_a_saved_dataset_reads_by_path_and_by_hub(tmp_path):
    folder = tmp_path / "qa"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))
    for key in ("path", "hub"):
        convs, report = _load(f"{{{key}: {folder}, {QA}}}")
        assert len(convs) == 5 and [m.content for m in convs[4].messages] == ["What is 4+4?", "8"]
        assert report.files[0]["format"] == "alpaca" and report.files[0]["records"] == 5
        assert convs[0].source == f"{folder} record 1"


def test_a_saved_dataset_dict_reads_its_split(tmp_path):
    folder = tmp_path / "qa"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                          "test": datasets.Dataset.from_list(ROWS[:2])}).save_to_disk(str(folder))
    convs, _ = _load(f"{{path: {folder}, {QA}}}")
    assert len(convs) == 5 and convs[0].source == f"{folder}[train] record 1"
    convs, _ = _load(f"{{path: {folder}, split: test, {QA}}}")
    assert len(convs) == 2 and convs[1].source == f"{folder}[test] record 2"
    with pytest.raises(DianjingError, match=r"has no split 'dev'; it has train, test") as e:
        _load(f"{{path: {folder}, split: dev, {QA}}}")
    assert "fix: set split to one of them" in str(e.value)


def test_without_a_train_split_the_only_split_is_read_and_several_need_a_choice(tmp_path):
    only, two = tmp_path / "only", tmp_path / "two"
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(only))
    convs, _ = _load(f"{{path: {only}, {QA}}}")
    assert len(convs) == 5 and convs[0].source == f"{only}[validation] record 1"
    datasets.DatasetDict({"a": datasets.Dataset.from_list(ROWS), "b": datasets.Dataset.from_list(ROWS)}).save_to_disk(
        str(two))
    with pytest.raises(DianjingError, match="has the splits a, b, and none is named train"):
        _load(f"{{path: {two}, {QA}}}")


def test_data_max_examples_stops_reading_early(tmp_path):
    folder = tmp_path / "qa"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))
    convs, report = _load(f"{{path: {folder}, {QA}}}", "data.max_examples=2")
    assert len(convs) == 2 and report.files[0]["records"] == 2


def test_streaming_a_local_folder_of_files_as_a_hub_dataset(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    convs, report = _load(f"{{hub: {folder}, streaming: true, {QA}}}", "data.max_examples=3")
    assert len(convs) == 3 and convs[0].source == f"{folder}[train] record 1"


def test_offline_the_error_names_the_entry_and_how_to_make_a_local_copy():
    with pytest.raises(DianjingError) as e:
        _load("{hub: someone/some-dataset, split: validation, revision: v2}")
    msg = str(e.value)
    assert msg.startswith("data.files[0].hub = 'someone/some-dataset': a hub dataset needs the network")
    assert ("datasets.load_dataset('someone/some-dataset', split='validation', revision='v2').save_to_disk('DIR')"
            in msg)
    assert "{path: DIR}" in msg


def test_hub_only_settings_and_a_split_on_a_plain_file(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"split 'test' is set, but .*a\.jsonl is a file, which has no splits"):
        _load(f"{{path: {f}, split: test}}")
    folder = tmp_path / "qa"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))
    with pytest.raises(DianjingError, match="is a local folder, which has no revision"):
        _load(f"{{hub: {folder}, revision: main}}")


def test_a_plain_folder_is_refused_with_what_would_work(tmp_path):
    with pytest.raises(DataError, match="is a folder; name the data files in it") as e:
        _load(f"{{path: {tmp_path}}}")
    assert "save_to_disk" in str(e.value)
