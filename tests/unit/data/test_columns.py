"""Column mappings: a file's own field and role names are mapped onto a format's keys before detection."""

import argparse
import json

import pytest

from dianjing.cli.common import add_config_options, config_from_args
from dianjing.config import DataFile, dump_config, load_config
from dianjing.data.load import load_conversations
from dianjing.errors import ConfigError, DataError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _load(entry: str, *sets: str):
    logged = []
    cfg = load_config(None, [f"data.files=[{entry}]", *sets])
    convs, report = load_conversations(cfg.data, log=logged.append)
    return convs, report, logged


def _turns(conv):
    return [(m.role, m.content) for m in conv.messages]


def test_dolly_maps_onto_alpaca(tmp_path):
    f = _jsonl(tmp_path / "dolly.jsonl", [
        {"instruction": "Who wrote it?", "context": "Hamlet is a play by Shakespeare.", "response": "Shakespeare.",
         "category": "closed_qa"},
        {"instruction": "Name a colour.", "context": "", "response": "Blue.", "category": "brainstorming"}])
    convs, report, logged = _load(f"{{path: {f}, columns: {{input: context, output: response}}}}")
    assert _turns(convs[0]) == [("user", "Who wrote it?\n\nHamlet is a play by Shakespeare."),
                                ("assistant", "Shakespeare.")]
    assert _turns(convs[1]) == [("user", "Name a colour."), ("assistant", "Blue.")]
    assert report.files[0]["format"] == "alpaca" and report.files[0]["detected"]
    assert any("input ← context" in m and "output ← response" in m for m in logged)


def test_question_answer_maps_onto_alpaca_and_prompt_response_onto_prompt_completion(tmp_path):
    qa = tmp_path / "qa.csv"
    qa.write_text("question,answer\nWhat is 2+2?,4\n", encoding="utf-8")
    convs, report, _ = _load(f"{{path: {qa}, columns: {{instruction: question, output: answer}}}}")
    assert _turns(convs[0]) == [("user", "What is 2+2?"), ("assistant", "4")]
    assert report.files[0]["format"] == "alpaca"
    pr = _jsonl(tmp_path / "pr.jsonl", [{"prompt": "Say hi.", "response": "Hi!"}])
    convs, report, _ = _load(f"{{path: {pr}, columns: {{completion: response}}}}")
    assert _turns(convs[0]) == [("user", "Say hi."), ("assistant", "Hi!")]
    assert report.files[0]["format"] == "prompt_completion"


def test_nested_keys_and_role_names_of_a_chat_log(tmp_path):
    f = _jsonl(tmp_path / "support.jsonl", [{"dialog": [
        {"speaker": "customer", "text": "My kettle is late."}, {"speaker": "agent", "text": "Sorry, checking."},
        {"speaker": "customer", "text": "Thanks."}, {"speaker": "agent", "text": "It ships today."}]}])
    convs, report, _ = _load(f"{{path: {f}, columns: {{conversations: dialog, from: speaker, value: text}}, "
                             "roles: {user: customer, assistant: agent}}")
    assert [m.role for m in convs[0].messages] == ["user", "assistant", "user", "assistant"]
    assert convs[0].messages[-1].content == "It ships today."
    assert report.files[0]["format"] == "sharegpt"


def test_sharegpt_turns_map_onto_the_messages_format(tmp_path):
    # LLaMA-Factory's own example: {messages: conversations, role: from, content: value, user: human, ...}
    f = _jsonl(tmp_path / "sg.jsonl", [{"conversations": [{"from": "human", "value": "Hi"},
                                                          {"from": "gpt", "value": "Hello"}]}])
    convs, report, _ = _load(f"{{path: {f}, columns: {{messages: conversations, role: from, content: value}}, "
                             "roles: {user: human, assistant: gpt}}")
    assert _turns(convs[0]) == [("user", "Hi"), ("assistant", "Hello")]
    assert report.files[0]["format"] == "messages"


def test_a_mapped_field_a_record_lacks_names_the_place_and_the_key_once(tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "response": "b"}, {"instruction": "c", "reply": "d"}])
    with pytest.raises(DataError) as e:
        _load(f"{{path: {f}, columns: {{output: response}}}}")
    msg = str(e.value)
    assert msg.startswith(f"{f}:2: columns.output names the field 'response', which this record does not have")
    assert msg.count(f"{f}:2") == 1 and msg.count("columns.output") == 2  # the message, and the fix saying where
    assert "instruction, reply" in msg and "data.on_error=skip" in msg


def test_a_mapped_turn_key_a_turn_lacks_is_named_with_the_turn(tmp_path):
    f = _jsonl(tmp_path / "s.jsonl", [{"dialog": [{"speaker": "human", "text": "hi"}, {"speaker": "gpt"}]}])
    with pytest.raises(DataError) as e:
        _load(f"{{path: {f}, columns: {{conversations: dialog, from: speaker, value: text}}}}")
    # the record's fields are renamed first, so the turn is named by the key the format reads
    assert str(e.value).startswith(f"{f}:1: columns.value names the field 'text', which turn conversations[1] "
                                   "does not have")


def test_with_skip_such_records_are_counted_under_one_reason(tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"q": "a", "a": "b"}, {"q": "c"}, {"q": "e"}, {"q": "f", "a": "g"}])
    convs, report, _ = _load(f"{{path: {f}, columns: {{instruction: q, output: a}}}}", "data.on_error=skip")
    assert len(convs) == 2 and report.skips.total == 2 and len(report.skipped) == 1
    assert report.files[0]["records"] == 4 and report.files[0]["kept"] == 2


def test_an_unknown_mapping_key_fails_when_the_config_loads():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["data.files=[{path: a.jsonl, columns: {outptu: answer}}]"])
    assert "data.files.0" in str(e.value) and "did you mean 'output'" in str(e.value)
    with pytest.raises(ConfigError, match="roles: unknown key 'human'"):
        load_config(None, ["data.files=[{path: a.jsonl, roles: {human: user}}]"])


def test_a_data_entry_has_exactly_one_source():
    for entry, words in (("{path: a.jsonl, hub: org/x}", "got path and hub"), ("{format: alpaca}", "exactly one of"),
                         ("{catalogue: dataset_info.json}", "catalogue and name go together"),
                         ("{path: a.jsonl, revision: main}", "revision only applies to hub datasets"),
                         ("{catalogue: d.json, name: x, columns: {output: y}}", "from the catalogue")):
        with pytest.raises(ConfigError, match="data.files.0") as e:
            load_config(None, [f"data.files=[{entry}]"])
        assert words in str(e.value), str(e.value)


def test_an_entry_is_written_back_with_what_it_sets_only():
    cfg = load_config(None, ["data.files=[{path: a.jsonl, columns: {output: answer}}, {hub: org/x, split: test}]"])
    text = dump_config(cfg)
    assert "- path: a.jsonl\n    format: auto\n    columns:\n      output: answer\n" in text
    assert "revision" not in text and "streaming" not in text
    again = load_config(None, [f"data.files={json.dumps(cfg.data.model_dump(mode='json')['files'])}"])
    assert again.data.files == cfg.data.files


def _args(*argv):
    p = argparse.ArgumentParser()
    add_config_options(p)
    return p.parse_args(list(argv))


def test_the_columns_flag_maps_the_data_files(tmp_path):
    cfg = config_from_args(_args("--data", "a.jsonl", "b.jsonl", "--columns", "input=context", "output=response"))
    assert [f.columns for f in cfg.data.files] == [{"input": "context", "output": "response"}] * 2
    assert cfg.data.files[0] == DataFile(path="a.jsonl", columns={"input": "context", "output": "response"})
    with pytest.raises(ConfigError, match="expected KEY=FIELD"):
        config_from_args(_args("--data", "a.jsonl", "--columns", "input"))
    with pytest.raises(ConfigError, match="--columns: columns: unknown key 'inptu'"):
        config_from_args(_args("--data", "a.jsonl", "--columns", "inptu=context"))
    plain = config_from_args(_args("--data", "a.jsonl"))
    assert plain.data.files == [DataFile(path="a.jsonl")]
