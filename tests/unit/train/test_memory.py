"""train.malloc_mmap_threshold_mb: freed activations go back to the OS instead of staying in the heap."""

import subprocess
import sys

import pytest

from dianjing.config import load_config

SCRIPT = r"""
import sys, psutil, torch
from dianjing.train.memory import set_mmap_threshold
if sys.argv[1] == "set":
    assert set_mmap_threshold(4)
rss = lambda: psutil.Process().memory_info().rss / 2**20
torch.ones(5 * 2**18)  # a 5 MB block allocated and freed: glibc's adaptive threshold rises above 5 MB
base = rss()
blocks = [torch.ones(5 * 2**18) for _ in range(60)]  # 300 MB of 5 MB activations
del blocks[:-1]  # a step ends: all but the newest are freed
print(rss() - base)
"""


def _env(**extra) -> dict:
    """This environment without PyTorch's huge-page switch (a fresh process decides it), plus `extra`."""
    import os

    return {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"} | extra


def retained_mb(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True,
                         env=_env())  # glibc's own behaviour
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_fixed_mmap_threshold_returns_freed_blocks_to_the_os():
    # glibc's default keeps the freed blocks below the newest one in the heap; the fixed threshold unmaps them
    assert retained_mb("default") > 200
    assert retained_mb("set") < 50


def test_threshold_is_configurable_and_can_be_switched_off():
    assert load_config(None, []).train.malloc_mmap_threshold_mb == 16
    assert load_config(None, ["train.malloc_mmap_threshold_mb=null"]).train.malloc_mmap_threshold_mb is None


def test_logits_blocks_do_not_outlive_the_call(monkeypatch):
    """The output layer's logits blocks are freed when its forward returns: kept across steps they stayed
    resident through the body's backward, where a step's memory peaks (0.4 GiB of Gemma's fp32 peak)."""
    import gc
    import weakref

    import torch

    from dianjing.train import loss as L

    seen = []
    real = L._buffer

    def spy(blocks, *a):
        out = real(blocks, *a)
        seen.extend(weakref.ref(b) for b in blocks.values())
        return out

    monkeypatch.setattr(L, "_buffer", spy)
    monkeypatch.setattr(L, "CHUNK_ELEMENTS", 64 * 5)  # several chunks share the call's blocks
    h = torch.randn(23, 8, requires_grad=True)
    w = torch.randn(64, 8)
    loss = L.FusedLinearCrossEntropy.apply(h, w, None, torch.randint(0, 64, (23,)), 30.0)
    assert seen, "the CPU branch did not use the reused blocks"
    assert len({id(r()) for r in seen if r() is not None}) <= 3  # one block per slot, reused by every chunk
    gc.collect()
    assert all(r() is None for r in seen)
    loss.backward()  # the gradients were computed in the forward and saved apart from the blocks
    assert h.grad is not None and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0


def _thp_mode() -> str:
    from dianjing.train.memory import thp_mode

    return thp_mode() or "none"


@pytest.mark.skipif(_thp_mode() not in ("always", "madvise"), reason="transparent huge pages are off here")
def test_logits_blocks_ask_for_huge_pages():
    """A fresh block is advised MADV_HUGEPAGE before it is touched: under THP=madvise it is backed by 2 MB
    pages (128 page faults for 256 MB instead of 65k), which a plain tensor of the same size is not."""
    import torch

    from dianjing.train import loss as L
    from dianjing.train.memory import huge_page_kb, huge_pages

    blocks: dict = {}
    t = L._buffer(blocks, 64, 2**16, torch.float32, 0, 64 * 2**16)  # 16 MB
    t.fill_(1.0)
    assert huge_page_kb(t) > 0 or _thp_mode() == "always"
    huge_pages(torch.empty(3))  # smaller than a huge page: nothing to advise, no error


def test_the_heap_is_trimmed_before_each_backward_on_cpu(tiny_llama, alpaca_file, tmp_path, monkeypatch):
    """On the CPU the forward's freed blocks go back to the OS before the backward, once per micro-batch."""
    from dianjing.train import loop
    from tests.helpers import sft_config

    calls = []
    monkeypatch.setattr(loop, "return_freed_memory", lambda: calls.append(1) or True)
    cfg = sft_config(tiny_llama, alpaca_file, tmp_path / "run", "train.max_steps=2",
                     "train.grad_accum=2")
    trainer = loop.Trainer(cfg, tmp_path / "run", log=lambda *_: None)
    calls.clear()  # setup trims once after loading the tokenizer
    trainer.run()
    assert len(calls) == 4  # 2 steps x 2 micro-batches


HUGE = r"""
import os, sys, torch
from dianjing.train.memory import torch_huge_pages
if sys.argv[1] == "late":
    torch.empty(4 << 20, dtype=torch.uint8)  # a large block before the setting: PyTorch has read it
on, why = torch_huge_pages()
from dianjing.train.memory import huge_page_kb
x = torch.empty(64 << 20, dtype=torch.uint8)
x.fill_(1)
print(on, huge_page_kb(x) > 0, os.environ.get("THP_MEM_ALLOC_ENABLE"), why, sep="|")
"""


def _huge(mode: str, **env) -> list[str]:
    out = subprocess.run([sys.executable, "-c", HUGE, mode], capture_output=True, text=True, check=True,
                         env=_env(**env))
    return out.stdout.strip().split("|")


@pytest.mark.skipif(_thp_mode() != "madvise", reason="transparent huge pages are not per-block (madvise) here")
def test_torch_huge_pages_turns_on_pytorchs_2mb_blocks_before_the_first_large_block():
    on, aligned, env, _ = _huge("early")
    assert (on, aligned, env) == ("True", "True", "1")
    # too late: PyTorch already read the variable; said so, with what to do
    on, aligned, env, why = _huge("late")
    assert (on, aligned) == ("False", "False")
    assert "before Python starts" in why and env == "1"
    # the user's own value stays
    on, aligned, env, why = _huge("early", THP_MEM_ALLOC_ENABLE="0")
    assert (on, aligned, env) == ("False", "False", "0") and "left as it is" in why


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
    from dianjing.train.memory import thp_mode

    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert thp_mode(f) == "madvise"
    f.write_text("[never]\n")
    assert thp_mode(f) == "never"
    assert thp_mode(tmp_path / "missing") is None


def test_the_trainer_asks_for_huge_pages_unless_switched_off(tiny_llama, alpaca_file, tmp_path, monkeypatch):
    from dianjing.train import loop
    from tests.helpers import sft_config

    calls = []
    monkeypatch.setattr(loop, "torch_huge_pages", lambda: calls.append(1) or (True, "2 MB pages"))
    lines = []
    loop.Trainer(sft_config(tiny_llama, alpaca_file, tmp_path / "on", "train.max_steps=1"), tmp_path / "on",
                 log=lines.append)
    assert calls == [1] and "memory: 2 MB pages" in lines
    loop.Trainer(sft_config(tiny_llama, alpaca_file, tmp_path / "off", "train.max_steps=1",
                            "train.huge_pages=false"), tmp_path / "off", log=lines.append)
    assert calls == [1]
