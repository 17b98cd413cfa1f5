import os
import tempfile
from pathlib import Path

import pytest

# Matmul peaks measured while the suite loads the machine go to a file of the suite's own, never into the
# user's ~/.cache/dianjing/peak.json (where they would become every later run's MFU denominator).
os.environ.setdefault("DIANJING_PEAK_CACHE", str(Path(tempfile.gettempdir()) / f"dianjing-test-peak-{os.getpid()}.json"))

from tests.helpers import write_alpaca
from tests.tiny import build_model, build_tokenizer


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("models") / "llama")


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("models") / "gemma3", kind="gemma3")


@pytest.fixture(scope="session")
def tiny_nopad(tmp_path_factory) -> Path:
    """No chat template and no pad token: dianjing must still work and say what it chose."""
    return build_model(tmp_path_factory.mktemp("models") / "nopad", pad=False)


@pytest.fixture(scope="session")
def make_tokenizer(tmp_path_factory):
    """make_tokenizer(**kw): tests/tiny.py's build_tokenizer(folder, **kw), built once per set of arguments
    in a session (a tokenizer takes ~1 s to train). Tests must not change the tokenizer they get."""
    made = {}

    def make(**kw):
        key = tuple(sorted(kw.items()))
        if key not in made:
            made[key] = build_tokenizer(tmp_path_factory.mktemp("tok"), **kw)
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_tokenizer(make_tokenizer):
    """The tiny byte-level BPE tokenizer: pad, bos and eos tokens, no chat template."""
    return make_tokenizer()


@pytest.fixture
def alpaca_file(tmp_path) -> Path:
    return write_alpaca(tmp_path / "tiny.jsonl")


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Runs set train.threads; restore torch's thread count so one test cannot change the
    floating-point summation order (and so the exact numbers) of the tests after it."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


_HUGE_PAGES_ENV = os.environ.get("THP_MEM_ALLOC_ENABLE")  # as the suite was started


@pytest.fixture(autouse=True)
def _restore_huge_pages_env():
    """A Trainer sets THP_MEM_ALLOC_ENABLE in os.environ (train.huge_pages), session fixtures included:
    every test starts, and leaves, with the value the suite was started with, so that the subprocesses
    of a test see the environment they would have had."""

    def restore():
        if _HUGE_PAGES_ENV is None:
            os.environ.pop("THP_MEM_ALLOC_ENABLE", None)
        else:
            os.environ["THP_MEM_ALLOC_ENABLE"] = _HUGE_PAGES_ENV

    restore()
    yield
    restore()


@pytest.fixture
def peak_cache(tmp_path, monkeypatch):
    """peak.json in a temporary cache, no peaks in this process, no forced re-measuring (dianjing.peak)."""
    from dianjing import peak

    monkeypatch.setenv("DIANJING_CACHE", str(tmp_path))
    monkeypatch.delenv("DIANJING_PEAK_CACHE", raising=False)
    monkeypatch.delenv(peak.REMEASURE_ENV, raising=False)
    monkeypatch.setattr(peak, "_PEAKS", {})
    return tmp_path / "peak.json"
