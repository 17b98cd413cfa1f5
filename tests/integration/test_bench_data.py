"""bench/sft_vs_trl.py's data file: the one its dianjing worker trains on, and what --write-data writes for
bench/step_budget.py, must be read by dianjing as messages with every character kept."""

from __future__ import annotations

from dianjing.config import DataConfig
from dianjing.data.load import load_conversations
from tests.helpers import load_script


def test_bench_examples_read_back_as_messages(tmp_path):
    mod = load_script("bench/sft_vs_trl.py")
    examples = [{"user": 'Given the passage\n\n"A quote" and a tab\there, answer:', "assistant": "subjective idealism"},
                {"user": "Second?", "assistant": "Line one.\nLine two — ünïcode."}]
    path = mod.write_messages(tmp_path / "longprompt.jsonl", examples)
    convs, report = load_conversations(DataConfig(files=[str(path)]), log=lambda *_: None)
    assert report.files[0]["format"] == "messages" and not report.skipped
    assert [[(m.role, m.content) for m in c.messages] for c in convs] == [
        [("user", e["user"]), ("assistant", e["assistant"])] for e in examples]
