"""Preference files (chosen/rejected): recognised by their layout; data.preference=chosen trains on the chosen."""

import json

import pytest

from dianjing.config import load_config
from dianjing.data.load import load_conversations
from dianjing.errors import ConfigError, DataError

Q = "What is 2+2?"
UF = {"prompt": Q, "prompt_id": "p1", "score_chosen": 9.0, "score_rejected": 2.0,  # UltraFeedback-binarized
      "chosen": [{"role": "user", "content": Q}, {"role": "assistant", "content": "4"}],
      "rejected": [{"role": "user", "content": Q}, {"role": "assistant", "content": "5"}],
      "messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": "4"}]}
LAYOUTS = {
    "alpaca texts (LLaMA-Factory ranking)": (
        {"instruction": "Add.", "input": "2+2", "chosen": "4", "rejected": "5"},
        "alpaca", [("user", "Add.\n\n2+2"), ("assistant", "4")]),
    "prompt and texts (TRL standard)": (
        {"prompt": Q, "chosen": "4", "rejected": "5", "system": "Be brief."},
        "prompt_completion", [("system", "Be brief."), ("user", Q), ("assistant", "4")]),
    "sharegpt with one message each (LLaMA-Factory)": (
        {"conversations": [{"from": "human", "value": Q}], "chosen": {"from": "gpt", "value": "4"},
         "rejected": {"from": "gpt", "value": "5"}},
        "sharegpt", [("user", Q), ("assistant", "4")]),
    "message lists with the prompt inside (UltraFeedback-binarized)": (
        UF, "messages", [("user", Q), ("assistant", "4")]),
    "prompt messages and answer lists (TRL explicit prompt)": (
        {"prompt": [{"role": "user", "content": Q}], "chosen": [{"role": "assistant", "content": "4"}],
         "rejected": [{"role": "assistant", "content": "5"}]},
        "messages", [("user", Q), ("assistant", "4")]),
    "prompt text and answer lists": (
        {"prompt": Q, "chosen": [{"role": "assistant", "content": "4"}],
         "rejected": [{"role": "assistant", "content": "5"}]},
        "messages", [("user", Q), ("assistant", "4")]),
    "HH-RLHF transcripts": (
        {"chosen": f"\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: {Q}\n\nAssistant: 4",
         "rejected": f"\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: {Q}\n\nAssistant: 5"},
        "messages", [("user", "Hi"), ("assistant", "Hello."), ("user", Q), ("assistant", "4")]),
}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _load(path, *sets):
    logged = []
    cfg = load_config(None, [f"data.files={path}", *sets])
    convs, report = load_conversations(cfg.data, log=logged.append)
    return convs, report, logged


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_each_layout_trains_on_the_chosen_answer(tmp_path, name):
    record, fmt, turns = LAYOUTS[name]
    f = _write(tmp_path / "p.jsonl", [record])
    convs, report, logged = _load(f, "data.preference=chosen")
    assert [(m.role, m.content) for m in convs[0].messages] == turns
    assert report.files[0]["format"] == fmt and report.files[0]["preference"] == "chosen"
    assert any("a preference file" in m and "training on the chosen answers" in m for m in logged)


@pytest.mark.parametrize("on_error", ["stop", "skip"])
def test_without_the_setting_the_file_stops_saying_what_it_is_and_what_to_set(tmp_path, on_error):
    f = _write(tmp_path / "uf.jsonl", [UF, UF])
    with pytest.raises(DataError) as e:
        _load(f, f"data.on_error={on_error}")
    msg = str(e.value)
    assert msg.startswith(f"{f}:1: this is a preference file (")
    assert msg.count(str(f)) == 1 and "as in DPO data" in msg and "chosen/rejected message lists" in msg
    assert "set data.preference=chosen" in msg


def test_a_json_preference_file_is_named_by_its_record(tmp_path):
    f = tmp_path / "dpo.json"
    f.write_text(json.dumps([LAYOUTS["alpaca texts (LLaMA-Factory ranking)"][0]]), encoding="utf-8")
    with pytest.raises(DataError, match=r"dpo\.json record 1: this is a preference file \(instruction \+"):
        _load(f)


def test_columns_apply_before_the_layout_is_recognised(tmp_path):
    # Intel's orca_dpo_pairs: system, question, chosen, rejected
    f = _write(tmp_path / "orca.jsonl", [{"system": "", "question": Q, "chosen": "4", "rejected": "5"}])
    cfg = load_config(None, [f"data.files=[{{path: {f}, columns: {{instruction: question}}}}]",
                             "data.preference=chosen"])
    convs, report = load_conversations(cfg.data, log=lambda *_: None)
    assert [(m.role, m.content) for m in convs[0].messages] == [("user", Q), ("assistant", "4")]
    assert report.files[0]["format"] == "alpaca"


def test_a_later_record_without_its_chosen_answer_is_a_bad_record(tmp_path):
    good = LAYOUTS["prompt and texts (TRL standard)"][0]
    f = _write(tmp_path / "p.jsonl", [good, {"prompt": Q, "rejected": "5"}, good])
    with pytest.raises(DataError) as e:
        _load(f, "data.preference=chosen")
    assert str(e.value).startswith(f"{f}:2: field 'chosen': missing")
    convs, report, _ = _load(f, "data.preference=chosen", "data.on_error=skip")
    assert len(convs) == 2 and report.skipped == {"field 'chosen': missing": 1}


def test_a_declared_format_the_layout_does_not_read_as_is_refused(tmp_path):
    f = _write(tmp_path / "p.jsonl", [UF])
    cfg = load_config(None, [f"data.files=[{{path: {f}, format: alpaca}}]", "data.preference=chosen"])
    with pytest.raises(DataError, match="format is 'alpaca', but this preference record's chosen answer reads as "
                                        "'messages'"):
        load_conversations(cfg.data, log=lambda *_: None)


def test_a_text_answer_without_a_prompt_says_what_it_needs(tmp_path):
    f = _write(tmp_path / "p.jsonl", [{"question": Q, "chosen": "4", "rejected": "5"}])
    with pytest.raises(DataError, match="field 'chosen': a chosen answer without its prompt") as e:
        _load(f, "data.preference=chosen")
    assert "columns: {prompt: FIELD}" in str(e.value)


def test_instruction_files_are_read_as_usual_beside_preference_files(tmp_path):
    sft = _write(tmp_path / "sft.jsonl", [{"instruction": "Hi", "output": "Hello"}])
    pref = _write(tmp_path / "pref.jsonl", [LAYOUTS["HH-RLHF transcripts"][0]])
    cfg = load_config(None, [f"data.files=[{sft}, {pref}]", "data.preference=chosen"])
    convs, report = load_conversations(cfg.data, log=lambda *_: None)
    assert len(convs) == 2 and "preference" not in report.files[0] and report.files[1]["preference"] == "chosen"


def test_preference_takes_only_chosen():
    with pytest.raises(ConfigError, match="data.preference"):
        load_config(None, ["data.preference=rejected"])
