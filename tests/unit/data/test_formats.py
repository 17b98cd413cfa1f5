import json

import pytest

from dianjing.config import DataConfig
from dianjing.data.load import load_conversations
from dianjing.errors import DataError

EXPECTED = [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"),
            ("user", "2+2?"), ("assistant", "4")]

SAME_CONVERSATION = {
    "alpaca": {"system": "Be brief.", "history": [["Hi", "Hello!"]], "instruction": "2+2?", "input": "",
               "output": "4"},
    "sharegpt": {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                                   {"from": "gpt", "value": "Hello!"}, {"from": "human", "value": "2+2?"},
                                   {"from": "gpt", "value": "4"}]},
    "messages": {"messages": [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                              {"role": "assistant", "content": "Hello!"},
                              {"role": "user", "content": "2+2?"},
                              {"role": "assistant", "content": [{"type": "text", "value": "4"}]}]},
}


def _load(tmp_path, rows, fmt="auto", name="d.jsonl", **kw):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return load_conversations(DataConfig(files=[{"path": str(p), "format": fmt}], **kw), log=lambda *_: None)


@pytest.mark.parametrize("fmt", sorted(SAME_CONVERSATION))
def test_each_format_gives_the_same_conversation(tmp_path, fmt):
    for declared in (fmt, "auto"):
        convs, report = _load(tmp_path, [SAME_CONVERSATION[fmt]], declared)
        assert [(m.role, m.content) for m in convs[0].messages] == EXPECTED
        assert report.files[0]["format"] == fmt


def test_prompt_completion_and_alpaca_input(tmp_path):
    convs, _ = _load(tmp_path, [{"prompt": "Q", "completion": "A"}])
    assert [(m.role, m.content) for m in convs[0].messages] == [("user", "Q"), ("assistant", "A")]
    convs, _ = _load(tmp_path, [{"instruction": "Translate", "input": "你好", "output": "Hello"}])
    assert convs[0].messages[0].content == "Translate\n\n你好"


def test_sharegpt_role_aliases_and_loss_weight(tmp_path):
    convs, _ = _load(tmp_path, [{"conversations": [{"from": "user", "value": "a"}, {"from": "chatgpt", "value": "b"}]}])
    assert convs[0].messages[1].role == "assistant"
    convs, _ = _load(tmp_path, [{"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "loss_weight": 0.0},
        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d", "loss_weight": 1.0}]}])
    assert [m.train for m in convs[0].messages if m.role == "assistant"] == [False, True]


def test_json_csv_parquet_files_combine(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "i1", "output": "o1"}]))
    (tmp_path / "b.csv").write_text("\ufeffprompt,completion\r\n\"p, 1\",c1\r\n", encoding="utf-8")
    pq.write_table(pa.table({"prompt": ["p2"], "completion": ["c2"]}), tmp_path / "c.parquet")
    cfg = DataConfig(files=[str(tmp_path / n) for n in ("a.json", "b.csv", "c.parquet")])
    convs, report = load_conversations(cfg, log=lambda *_: None)
    assert [c.messages[-1].content for c in convs] == ["o1", "c1", "c2"]
    assert convs[1].messages[0].content == "p, 1"  # BOM and CRLF handled
    assert [f["format"] for f in report.files] == ["alpaca", "prompt_completion", "prompt_completion"]


def test_detection_is_logged(tmp_path):
    said = []
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    load_conversations(DataConfig(files=[str(p)]), log=said.append)
    assert any("detected format 'prompt_completion'" in s for s in said)


@pytest.mark.parametrize("row, field, what", [
    ({"instruction": "x"}, "output", "missing"),
    ({"instruction": 3.5, "output": ["no"]}, "output", "expected text"),
    ({"conversations": [{"from": "robot", "value": "x"}]}, "conversations[0].from", "unknown role"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, "<turns>", "expected 'user'"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                   {"role": "assistant", "content": "z"}]}, "<turns>", "after 'assistant'"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]}, "<turns>", "empty"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].type", "text"),
])
def test_bad_record_names_file_line_and_field(tmp_path, row, field, what):
    good = {"instruction": "ok", "output": "ok"} if "instruction" in row else row
    rows = [good, row] if "instruction" in row else [row]
    with pytest.raises(DataError) as e:
        _load(tmp_path, rows, fmt="auto")
    line = len(rows)
    assert f"d.jsonl:{line}" in str(e.value)
    assert field in str(e.value) and what in str(e.value)


def test_skip_mode_counts_every_bad_record(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"prompt": "a", "completion": "b"}\n{not json}\n\xff\xfe\n'
                  b'{"prompt": "c"}\n{"prompt": "e", "completion": "f"}\n')
    with pytest.raises(DataError, match="d.jsonl:2"):
        load_conversations(DataConfig(files=[{"path": str(p), "format": "prompt_completion"}]), log=lambda *_: None)
    convs, report = load_conversations(
        DataConfig(files=[{"path": str(p), "format": "prompt_completion"}], on_error="skip"), log=lambda *_: None)
    assert len(convs) == 2
    assert sum(report.skipped.values()) == 3
    assert report.files[0]["records"] == 5


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_conversations(DataConfig(files=[str(tmp_path / "nope.jsonl")]))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unknown data file type"):
        load_conversations(DataConfig(files=[str(tmp_path / "x.txt")]))


def test_builtin_default_dataset_is_valid():
    convs, report = load_conversations(DataConfig(), log=lambda *_: None)
    assert len(convs) >= 300 and not report.skipped
    firsts = [c.messages[-1].content for c in convs if c.messages[-2].content.strip() in ("你是誰？", "Who are you?")]
    assert firsts and all(f.startswith(("我是點睛", "I am Dianjing")) for f in firsts)
