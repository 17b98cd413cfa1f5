"""Many processes on the CPU (gloo, 2 processes): DDP LoRA and FSDP2 full fine-tuning give the
one-process run's losses and gradients with the same global batch; the ranks' data are disjoint;
a rank killed mid-run stops the run, which resumes (with as many processes, or fewer) to the same losses.

Tolerance. Both sides compute in fp32 on the same examples. A 2-process step sums two partial
losses (each over half the batch, padded to its own longest example) where one process sums
one; only the order of floating-point additions differs, which moves per-step losses and
gradients by ~1e-7 relative (measured: at most 1 in the 6th decimal of the logged values).
We allow 1e-5 relative on losses, and 1e-4 relative on gradient elements plus 1e-5 of the
tensor's largest element (an element near 0 is the difference of larger terms, so its own
relative error is large: 7e-4 measured on one of 12,800), far below what a wrong
normalisation would give (a gradient averaged instead of summed is off by 2x; a rank
dropping its examples moves the loss by ~1e-1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dianjing.config import dump_config
from dianjing.train.loop import train
from tests.helpers import run_cli, sft_config, write_alpaca

WORKER = Path(__file__).with_name("dist_worker.py")
# 21 examples, 4 per micro-batch: the epoch's last batch has one example, so rank 1 computes a stand-in
BASE = ("train.batch_size=4", "train.grad_accum=2", "train.lr=5e-3", "train.warmup_ratio=0", "train.threads=1",
        "model.precision=fp32", "train.compile=off", "train.save_every=2", "train.seed=3")
FULL = ("adapter.method=full", "train.lr=1e-3", "train.parallel=fsdp")


@pytest.fixture
def data(tmp_path) -> Path:
    return write_alpaca(tmp_path / "data.jsonl", n=21)


def _torchrun(*args, env=None, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _same_history(got: list[dict], want: list[dict]) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        for key in ("loss", "grad_norm", "eval_loss", "tokens", "supervised_tokens"):
            if key in w:
                assert g[key] == pytest.approx(w[key], rel=1e-5), (key, g, w)


@pytest.mark.parametrize("extra", [(), FULL], ids=["ddp-lora", "fsdp2-full"])
def test_two_processes_match_one(tiny_llama, data, tmp_path, extra):
    """`dianjing train --nproc 2` against the one-process run: the logged history and the saved weights."""
    ref, _ = train(sft_config(tiny_llama, data, tmp_path / "one", "train.max_steps=4", "data.eval_fraction=0.1",
                              *extra, base=BASE), log=lambda *_: None)
    two = tmp_path / "two"
    sets = [a for s in (*BASE, *extra, "train.max_steps=4", "data.eval_fraction=0.1") for a in ("--set", s)]
    r = run_cli("train", "--nproc", "2", "--model", tiny_llama, "--data", data, "-o", two, *sets)
    assert r.returncode == 0, r.stderr[-4000:]
    assert f"parallel: {'fsdp' if extra else 'ddp'} over 2 processes" in r.stderr
    assert r.stderr.count("device: cpu") == 1  # one voice: rank 0's
    _same_history(_metrics(two), _metrics(ref))
    summary = json.loads((two / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["parallel"] == ("fsdp" if extra else "ddp")
    from safetensors.torch import load_file

    name = "model/model.safetensors" if extra else "adapter/adapter_model.safetensors"
    a, b = load_file(str(ref / name)), load_file(str(two / name))
    assert sorted(a) == sorted(b)
    # each rank pads its half-batch to its own width, so the fp32 products round differently from the one
    # process's; Adam's normalised update turns those ~1e-7 gradient differences into up to ~2e-6 in a few
    # near-zero weights after 4 steps (1.7e-6 measured with the C softmax kernel; a wrong average or a
    # missed gradient is orders of magnitude larger)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=5e-6)
    if extra:  # the sharded checkpoints went through DCP
        assert (two / "checkpoints" / "step-00000004" / "sharded").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), FULL], ids=["ddp-lora", "fsdp2-full"])
def test_gradients_match_and_ranks_see_disjoint_data(tiny_llama, data, tmp_path, extra):
    """Every step's synchronised gradients, not only the losses (FSDP2 on gloo has summed where it
    should average: pytorch#162338; dianjing sums on purpose and divides by the global targets)."""
    runs = {}
    for n in (1, 2):
        cfg = sft_config(tiny_llama, data, tmp_path / f"run{n}", "train.max_steps=3", "data.eval_fraction=0",
                         *extra, base=BASE)
        path = tmp_path / f"cfg{n}.yaml"
        path.write_text(dump_config(cfg))
        out = tmp_path / f"out{n}"
        if n == 1:
            r = subprocess.run([sys.executable, str(WORKER), str(path), str(out)], capture_output=True, text=True,
                               timeout=240)
        else:
            r = _torchrun(WORKER, path, out)
        assert r.returncode == 0, r.stderr[-4000:]
        runs[n] = out
    one, two = torch.load(runs[1] / "grads.pt"), torch.load(runs[2] / "grads.pt")
    assert len(one) == len(two) == 3
    for step, (g1, g2) in enumerate(zip(one, two)):
        assert sorted(g1) == sorted(g2) and g1
        for name in g1:
            scale = float(g1[name].abs().max())  # elements near 0 differ by rounding of the larger ones
            torch.testing.assert_close(g2[name], g1[name], rtol=1e-4, atol=1e-5 * scale,
                                       msg=lambda m: f"step {step + 1} {name}: {m}")
    # 3 steps x 2 micro-batches = the whole epoch of 21 examples: each exactly once, split between the ranks
    seen = [json.loads((runs[2] / f"seen-{r}.json").read_text()) for r in (0, 1)]
    flat = [sorted(i for b in s for i in b) for s in seen]
    assert not set(flat[0]) & set(flat[1])
    assert sorted(flat[0] + flat[1]) == sorted(i for b in json.loads((runs[1] / "seen-0.json").read_text())
                                               for i in b) == list(range(21))
    assert seen[1][-1] == []  # the last batch had one example: rank 1 computed a stand-in with weight 0
    assert all(abs(len(a) - len(b)) <= 1 for a, b in zip(*seen))  # balanced


@pytest.mark.slow
@pytest.mark.parametrize("extra,resume_nproc", [((), 2), (FULL, 1)], ids=["ddp-lora", "fsdp2-full-to-one"])
def test_a_killed_rank_stops_the_run_which_resumes_to_the_same_losses(tiny_llama, data, tmp_path, extra,
                                                                      resume_nproc):
    ref, _ = train(sft_config(tiny_llama, data, tmp_path / "ref", "train.max_steps=6", "data.eval_fraction=0",
                              *extra, base=BASE), log=lambda *_: None)
    run = tmp_path / "killed"
    sets = [a for s in (*BASE, *extra, "train.max_steps=6", "data.eval_fraction=0") for a in ("--set", s)]
    env = {**os.environ, "DIANJING_FAULT": "rank-dies:1:3"}  # rank 1 dies starting step 4 (after step-2's save)
    r = subprocess.run([sys.executable, "-m", "dianjing.cli", "train", "--nproc", "2", "--model", str(tiny_llama),
                        "--data", str(data), "-o", str(run), *sets], capture_output=True, text=True, timeout=240,
                       env=env)
    assert r.returncode != 0
    assert "rank      : 1" in r.stderr and "SIGKILL" in r.stderr  # torchrun names the rank and the cause
    assert f"dianjing train --nproc 2 --resume {run}" in r.stderr
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert ckpts == ["step-00000002"]
    assert not (run / "run.json").exists()
    r = run_cli("train", "--nproc", resume_nproc, "--resume", run)
    assert r.returncode == 0, r.stderr[-4000:]
    _same_history(_metrics(run), _metrics(ref))
