"""train.malloc_mmap_threshold_mb: freed activations go back to the OS instead of staying in the heap."""

import subprocess
import sys

import pytest

from dianjing.config import load_config

SCRIPT = r"""
import sys, psutil, torch
from dianjing.train.loop import set_mmap_threshold
if sys.argv[1] == "set":
    assert set_mmap_threshold(4)
rss = lambda: psutil.Process().memory_info().rss / 2**20
torch.ones(5 * 2**18)  # a 5 MB block allocated and freed: glibc's adaptive threshold rises above 5 MB
base = rss()
blocks = [torch.ones(5 * 2**18) for _ in range(60)]  # 300 MB of 5 MB activations
del blocks[:-1]  # a step ends: all but the newest are freed
print(rss() - base)
"""


def retained_mb(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_fixed_mmap_threshold_returns_freed_blocks_to_the_os():
    # glibc's default keeps the freed blocks below the newest one in the heap; the fixed threshold unmaps them
    assert retained_mb("default") > 200
    assert retained_mb("set") < 50


def test_threshold_is_configurable_and_can_be_switched_off():
    assert load_config(None, []).train.malloc_mmap_threshold_mb == 16
    assert load_config(None, ["train.malloc_mmap_threshold_mb=null"]).train.malloc_mmap_threshold_mb is None
