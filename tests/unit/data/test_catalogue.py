"""LLaMA-Factory's dataset_info.json as a catalogue: its entries read as LLaMA-Factory reads them."""

import json

import pytest

from dianjing.config import DataFile, load_config
from dianjing.data.catalogue import expand
from dianjing.data.load import load_conversations
from dianjing.errors import ConfigError, DataError
from tests.helpers import SHARED_DATA

# entries in LLaMA-Factory's own words (data/README.md), over files in their layouts
INFO = {
    "plain": {"file_name": "plain.json"},
    "renamed": {"file_name": "qa.jsonl", "columns": {"prompt": "question", "response": "answer",
                                                      "system": "system_prompt"}},
    "chats": {"file_name": "chats.json", "formatting": "sharegpt", "columns": {"messages": "dialog"},
              "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer",
                       "assistant_tag": "agent"}},
    "openai": {"file_name": "openai.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                        "assistant_tag": "assistant", "system_tag": "system"}},
    "dpo_demo": {"file_name": "dpo.json", "ranking": True, "formatting": "sharegpt",
                 "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
    "folder": {"file_name": "parts"},
    "alpaca_en": {"hf_hub_url": "llamafactory/alpaca_en", "ms_hub_url": "llamafactory/alpaca_en"},
    "adgen_eval": {"hf_hub_url": "HasturOfficial/adgen", "split": "validation", "subset": "x", "num_samples": 10,
                   "columns": {"prompt": "content", "response": "summary"}},
    "mllm_demo": {"file_name": "mllm.json", "formatting": "sharegpt",
                  "columns": {"messages": "messages", "images": "images"}},
    "kto_demo": {"file_name": "kto.json", "columns": {"kto_tag": "label"}},
    "ms_only": {"ms_hub_url": "AI-ModelScope/x"},
    "missing": {"file_name": "not-there.json"},
}


@pytest.fixture
def lf(tmp_path):
    """A LLaMA-Factory data folder: dataset_info.json with its files next to it."""
    d = tmp_path / "data"
    (d / "parts").mkdir(parents=True)
    (d / "dataset_info.json").write_text(json.dumps(INFO), encoding="utf-8")
    (d / "plain.json").write_text(json.dumps([{"instruction": "Hi", "input": "", "output": "Hello"}]))
    (d / "qa.jsonl").write_text(json.dumps({"question": "2+2?", "answer": "4", "system_prompt": "Be brief."}) + "\n")
    (d / "chats.json").write_text(json.dumps([{"dialog": [{"speaker": "customer", "text": "Late order."},
                                                          {"speaker": "agent", "text": "Checking."}]}]))
    (d / "openai.json").write_text(json.dumps([{"messages": [{"role": "system", "content": "S"},
                                                             {"role": "user", "content": "Hi"},
                                                             {"role": "assistant", "content": "Hello"}]}]))
    (d / "dpo.json").write_text(json.dumps([{"conversations": [{"from": "human", "value": "2+2?"}],
                                             "chosen": {"from": "gpt", "value": "4"},
                                             "rejected": {"from": "gpt", "value": "5"}}]))
    for i in (1, 2):
        (d / "parts" / f"part{i}.jsonl").write_text(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n")
    return d


def _load(catalogue, name, *sets):
    logged = []
    cfg = load_config(None, [f"data.files=[{{catalogue: {catalogue}, name: {name}}}]", *sets])
    convs, report = load_conversations(cfg.data, log=logged.append)
    return convs, report, logged


def _turns(conv):
    return [(m.role, m.content) for m in conv.messages]


def test_an_entry_reads_its_file_next_to_dataset_info(lf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # file_name is relative to dataset_info.json, not to where dianjing runs
    convs, report, logged = _load("data/dataset_info.json", "plain")
    assert _turns(convs[0]) == [("user", "Hi"), ("assistant", "Hello")]
    assert report.files[0]["path"] == "data/plain.json" and report.files[0]["format"] == "alpaca"
    assert any("entry 'plain'" in m and "as alpaca" in m for m in logged)
    convs, _, _ = _load("data", "plain")  # the folder that holds dataset_info.json
    assert len(convs) == 1


def test_columns_and_tags_become_a_column_mapping(lf):
    convs, _, _ = _load(lf, "renamed")
    assert _turns(convs[0]) == [("system", "Be brief."), ("user", "2+2?"), ("assistant", "4")]
    convs, report, _ = _load(lf, "chats")
    assert _turns(convs[0]) == [("user", "Late order."), ("assistant", "Checking.")]
    assert report.files[0]["format"] == "sharegpt" and not report.files[0]["detected"]
    convs, _, _ = _load(lf, "openai")
    assert _turns(convs[0]) == [("system", "S"), ("user", "Hi"), ("assistant", "Hello")]


def test_a_ranking_entry_is_a_preference_file(lf):
    with pytest.raises(DataError, match="this is a preference file"):
        _load(lf, "dpo_demo")
    convs, _, _ = _load(lf, "dpo_demo", "data.preference=chosen")
    assert _turns(convs[0]) == [("user", "2+2?"), ("assistant", "4")]


def test_a_folder_entry_reads_each_of_its_files(lf):
    convs, report, _ = _load(lf, "folder")
    assert [c.messages[1].content for c in convs] == ["a1", "a2"]
    assert [f["path"] for f in report.files] == [str(lf / "parts" / "part1.jsonl"), str(lf / "parts" / "part2.jsonl")]


def test_hub_entries_become_hub_data_entries(lf):
    logged = []
    got = expand(DataFile(catalogue=str(lf), name="alpaca_en"), log=logged.append)
    assert got == [DataFile(hub="llamafactory/alpaca_en", split="train", format="alpaca")]
    got = expand(DataFile(catalogue=str(lf), name="adgen_eval"), log=logged.append)
    assert got == [DataFile(hub="HasturOfficial/adgen", split="validation", subset="x", format="alpaca",
                            columns={"instruction": "content", "output": "summary"})]
    assert any("num_samples is not used" in m for m in logged)


@pytest.mark.parametrize("name, words", [
    ("mllm_demo", "columns.images: dianjing trains on text only"),
    ("kto_demo", "columns.kto_tag: dianjing trains on text only; KTO tags cannot be used"),
    ("ms_only", "ms_hub_url: only hf_hub_url and file_name entries can be read"),
    ("missing", "file_name 'not-there.json'"),
])
def test_what_cannot_be_read_is_refused_naming_the_entry(lf, name, words):
    with pytest.raises(DataError) as e:
        _load(lf, name)
    assert str(e.value).startswith(f"{lf / 'dataset_info.json'} entry '{name}': ") and words in str(e.value)


def test_an_unknown_name_lists_the_closest_and_the_entries(lf):
    with pytest.raises(ConfigError) as e:
        _load(lf, "plian")
    msg = str(e.value)
    assert msg.startswith("data.files[0].name = 'plian': no such entry in") and "did you mean 'plain'" in msg
    assert "its entries: plain, renamed, chats" in msg


def test_a_missing_catalogue_says_what_to_give(tmp_path):
    with pytest.raises(ConfigError, match="give LLaMA-Factory's dataset_info.json, or the folder that holds it"):
        _load(tmp_path / "nowhere", "x")


def test_a_data_path_at_a_llama_factory_folder_points_at_the_catalogue(lf):
    cfg = load_config(None, [f"data.files={lf}"])
    with pytest.raises(DataError, match=r"catalogue: .*, name: NAME"):
        load_conversations(cfg.data, log=lambda *_: None)


@pytest.mark.skipif(not (SHARED_DATA / "instruct" / "identity.json").is_file(), reason="needs ../shared/data")
def test_llama_factory_demo_files_through_their_own_entries(tmp_path):
    """LLaMA-Factory's demo files with the entries its dataset_info.json gives them (read where they are:
    a file_name that is an absolute path is read as it is)."""
    info = {n: {"file_name": str(SHARED_DATA / "instruct" / f"{n}.json")}
            for n in ("identity", "alpaca_en_demo", "alpaca_zh_demo")}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    cfg = load_config(None, ["data.files=[" + ", ".join(f"{{catalogue: {tmp_path}, name: {n}}}" for n in info)
                             + "]"])
    convs, report = load_conversations(cfg.data, log=lambda *_: None)
    assert [(f["records"], f["kept"]) for f in report.files] == [(91, 91), (999, 999), (1000, 1000)]
    assert all(f["format"] == "alpaca" for f in report.files)
