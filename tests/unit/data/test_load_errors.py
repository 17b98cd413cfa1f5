"""A bad record's stop error names its file and line once (it used to print them twice)."""

import json

import pytest

from dianjing.config import load_config
from dianjing.data.load import load_conversations
from dianjing.errors import DataError


def test_a_bad_sharegpt_role_names_the_place_once(tmp_path):
    f = tmp_path / "s.jsonl"
    rows = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "x"}]},
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, [f"data.files={f}", "model.name=x"])
    with pytest.raises(DataError) as e:
        load_conversations(cfg.data, log=lambda *_: None)
    msg = str(e.value)
    assert msg.count(f"{f}:1") == 1 and "conversations[1].from" in msg and "robot" in msg
    assert "data.on_error=skip" in msg
