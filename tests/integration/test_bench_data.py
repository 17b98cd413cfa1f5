"""bench/sft_vs_trl.py's data file: the one its dianjing worker trains on, and what --write-data writes for
bench/step_budget.py, must be read by dianjing as messages with every character kept."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dianjing.config import DataConfig
from dianjing.data.load import load_conversations

ROOT = Path(__file__).resolve().parents[2]


def test_bench_examples_read_back_as_messages(tmp_path):
    spec = importlib.util.spec_from_file_location("sft_vs_trl", ROOT / "bench" / "sft_vs_trl.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    examples = [{"user": 'Given the passage\n\n"A quote" and a tab\there, answer:', "assistant": "subjective idealism"},
                {"user": "Second?", "assistant": "Line one.\nLine two — ünïcode."}]
    path = mod.write_messages(tmp_path / "longprompt.jsonl", examples)
    convs, report = load_conversations(DataConfig(files=[str(path)]), log=lambda *_: None)
    assert report.files[0]["format"] == "messages" and not report.skipped
    assert [[(m.role, m.content) for m in c.messages] for c in convs] == [
        [("user", e["user"]), ("assistant", e["assistant"])] for e in examples]
