"""Reading a GGUF file: a bad file is a ModelError that names it and says what to do; anything
else (out of memory, a bug) keeps its own type and traceback instead of becoming 'cannot read'."""

import pytest

from dianjing.errors import ModelError
from dianjing.models import load


def test_a_bad_gguf_is_a_model_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF not really")
    with pytest.raises(ModelError) as e:
        load.convert_gguf(bad, out=tmp_path / "out", log=lambda *_: None)
    assert "broken.gguf" in str(e.value) and "fix:" in str(e.value)


def test_other_failures_are_not_called_unreadable(tmp_path, monkeypatch):
    import transformers

    def boom(*a, **k):
        raise MemoryError("out of memory")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    with pytest.raises(MemoryError):
        load.convert_gguf(f, out=tmp_path / "out", log=lambda *_: None)
