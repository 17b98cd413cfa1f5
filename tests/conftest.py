import json
from pathlib import Path

import pytest

from tests.tiny import build_model


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


@pytest.fixture
def alpaca_file(tmp_path) -> Path:
    rows = [{"instruction": f"Say the number {i}.", "input": "", "output": f"The number is {i}."}
            for i in range(24)]
    p = tmp_path / "tiny.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Runs set train.threads; restore torch's thread count so one test cannot change the
    floating-point summation order (and so the exact numbers) of the tests after it."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
