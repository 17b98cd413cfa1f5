"""A data.max_length too small for an extractive-QA window is a ConfigError naming the key and
the smallest value that works (it was a bare ValueError with a traceback)."""

import pytest
from transformers import AutoTokenizer

from dianjing.data.specialist_readers.common import QAExample
from dianjing.errors import ConfigError
from dianjing.specialist.encode import Encoder, EncodeStats
from tests.tiny import build_bert


def test_qa_window_too_small_names_data_max_length(tmp_path):
    tok = AutoTokenizer.from_pretrained(str(build_bert(tmp_path / "bert")))
    ex = QAExample("f.jsonl:1", "1", "What is the capital of France?", "Paris is the capital of France. " * 4,
                   [("Paris", 0)])
    with pytest.raises(ConfigError) as e:
        Encoder(tok, 12, False).encode_qa([ex], 4, EncodeStats(), training=True)
    msg = str(e.value)
    assert "data.max_length is 12" in msg and "raise data.max_length to at least" in msg
    need = int(msg.rsplit("at least", 1)[1].split()[0])
    assert Encoder(tok, need, False).encode_qa([ex], 4, EncodeStats(), training=True)  # the fix it names works
