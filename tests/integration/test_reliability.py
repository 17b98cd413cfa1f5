"""Faults injected for real: SIGKILL at random points and mid-save, NaN steps, a full disk,
an unwritable folder, pickle weights."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from dianjing.errors import DianjingError, ModelError
from dianjing.train import checkpoint, loop
from dianjing.train.loss import SFTLoss
from dianjing.train.loop import train
from tests.helpers import logged_losses, sft_config

COMMON = ["train.batch_size=2", "train.lr=5e-3", "train.warmup_ratio=0", "train.threads=1",
          "data.eval_fraction=0", "adapter.dropout=0.1", "train.max_steps=30", "train.save_every=3",
          "train.keep_last_n=2", "model.precision=fp32"]


def _start(model, data, out, *args, env=None):
    cmd = [sys.executable, "-m", "dianjing.cli", "train", *args]
    if not args:
        cmd += ["--model", str(model), "--data", str(data), "-o", str(out)]
        for c in COMMON:
            cmd += ["--set", c]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _lines(path):
    try:
        return path.read_text().count("\n")
    except FileNotFoundError:
        return 0


def test_sigkill_at_random_points_then_resume_matches_uninterrupted(tiny_llama, alpaca_file, tmp_path):
    ref, _ = train(sft_config(tiny_llama, alpaca_file, tmp_path / "ref", base=COMMON), log=lambda *_: None)
    want = logged_losses(ref, steps=True)
    out = tmp_path / "killed"
    rng = random.Random(1234)
    # 1) killed in the middle of writing the step-6 checkpoint (weights written, no marker yet)
    p = _start(tiny_llama, alpaca_file, out, env={"DIANJING_FAULT": "checkpoint-half-written:6"})
    assert p.wait(timeout=300) == -signal.SIGKILL
    assert (out / "checkpoints" / ".tmp-step-00000006").exists()  # the half-written save is there...
    kills = 1
    # 2) then killed again at random steps, resuming each time, until the run completes
    while True:
        p = _start(tiny_llama, alpaca_file, out, "--resume", str(out))
        target = _lines(out / "metrics.jsonl") + rng.randint(1, 6)
        deadline = time.time() + 120
        while p.poll() is None and _lines(out / "metrics.jsonl") < target and time.time() < deadline:
            time.sleep(0.01)
        if p.poll() is not None:
            assert p.returncode == 0, p.stderr.read()[-2000:]
            break
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        assert kills < 20
    assert kills >= 3
    got = logged_losses(out, steps=True)
    assert [s for s, _ in got] == list(range(1, 31))
    assert got == want  # identical per-step losses, bit for bit
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_half_written_checkpoint_is_never_trusted(tiny_llama, alpaca_file, tmp_path):
    out = tmp_path / "r"
    p = _start(tiny_llama, alpaca_file, out, env={"DIANJING_FAULT": "checkpoint-half-written:6"})
    assert p.wait(timeout=300) == -signal.SIGKILL
    said = []
    last = checkpoint.latest_checkpoint(out / "checkpoints", log=said.append)
    assert last.name == "step-00000003"
    # a renamed but unmarked folder (e.g. copied by hand, or a crash on another filesystem) is skipped too
    (out / "checkpoints" / ".tmp-step-00000006").rename(out / "checkpoints" / "step-00000006")
    assert checkpoint.latest_checkpoint(out / "checkpoints", log=said.append).name == "step-00000003"
    assert any("no completion marker" in s for s in said)


def test_nan_steps_are_skipped_and_counted(tiny_llama, alpaca_file, tmp_path, monkeypatch):
    real = SFTLoss.__call__
    calls = {"n": 0}

    def sometimes_nan(self, batch):
        calls["n"] += 1
        loss, n = real(self, batch)
        return (loss * float("nan"), n) if calls["n"] in (3, 7) else (loss, n)

    monkeypatch.setattr(SFTLoss, "__call__", sometimes_nan)
    cfg = sft_config(tiny_llama, alpaca_file, tmp_path / "r", "train.max_steps=10", base=COMMON)
    run_dir, summary = train(cfg, log=lambda *_: None)
    assert summary["skipped_steps"] == 2 and summary["steps"] == 10
    assert all(torch.isfinite(torch.tensor(l)) for _, l in logged_losses(run_dir, steps=True))


def test_too_many_bad_steps_stop_with_a_usable_checkpoint(tiny_llama, alpaca_file, tmp_path, monkeypatch):
    real = SFTLoss.__call__
    calls = {"n": 0}

    def nan_after_4(self, batch):
        calls["n"] += 1
        loss, n = real(self, batch)
        return (loss + float("inf"), n) if calls["n"] > 4 else (loss, n)

    monkeypatch.setattr(SFTLoss, "__call__", nan_after_4)
    with pytest.raises(DianjingError, match="3 steps in a row") as e:
        train(sft_config(tiny_llama, alpaca_file, tmp_path / "r", "train.max_bad_steps=3", base=COMMON),
              log=lambda *_: None)
    assert "--resume" in str(e.value)
    last = checkpoint.latest_checkpoint(tmp_path / "r" / "checkpoints", log=lambda *_: None)
    assert last is not None and last.name == "step-00000007"
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(str(last / "trainable.safetensors")).values())


def test_disk_full_during_checkpoint(tiny_llama, alpaca_file, tmp_path, monkeypatch):
    real = checkpoint.save_file

    def full(tensors, filename, *a, **k):
        if "step-00000006" in filename:
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(tensors, filename, *a, **k)

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(DianjingError) as e:
        train(sft_config(tiny_llama, alpaca_file, tmp_path / "r", base=COMMON), log=lambda *_: None)
    assert "step-00000006" in str(e.value) and "No space left" in str(e.value)
    names = [p.name for p in (tmp_path / "r" / "checkpoints").iterdir()]
    assert names == ["step-00000003"]  # nothing half-written left behind


def test_unwritable_output_folder_is_named(tiny_llama, alpaca_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DianjingError, match=str(blocker / "run")):
        train(sft_config(tiny_llama, alpaca_file, blocker / "run", base=COMMON), log=lambda *_: None)


def test_pickle_weights_are_refused(tmp_path):
    from dianjing.models.load import load_model

    (tmp_path / "config.json").write_text("{}")
    torch.save({"w": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pickle"):
        load_model(str(tmp_path), torch.float32)


def test_checkpoint_optimizer_state_loads_weights_only(tiny_llama, alpaca_file, tmp_path):
    """Even a checkpoint whose checksums were forged cannot run code: torch.load(weights_only=True)."""
    import hashlib

    cfg = sft_config(tiny_llama, alpaca_file, tmp_path / "r", "train.max_steps=3", base=COMMON)
    train(cfg, log=lambda *_: None)
    ck = checkpoint.list_checkpoints(tmp_path / "r" / "checkpoints")[-1]
    flag = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    torch.save({"optimizer": Evil()}, ck / "optimizer.pt")
    sums = json.loads((ck / "COMPLETE").read_text())
    sums["optimizer.pt"] = hashlib.sha256((ck / "optimizer.pt").read_bytes()).hexdigest()
    (ck / "COMPLETE").write_text(json.dumps(sums))
    trainer = loop.Trainer(cfg, tmp_path / "r", log=lambda *_: None)
    with pytest.raises(DianjingError, match="refused"):
        checkpoint.load_checkpoint(ck, trainer.model, trainer.optimizer, trainer.scheduler)
    assert not flag.exists()
