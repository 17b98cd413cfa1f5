"""Where the CPU's memory goes: glibc's heap settings, trimming, and huge pages.

A training step on the CPU makes and frees many large blocks (activations, attention scores), and
peaks in its backward. Each fresh block is page-faulted in by the kernel, which on 4 KB pages costs
more than the kernels that fill it; what stays resident at the peak is the weights, the live
activations, and whatever the allocator kept (free heap chunks never returned). These helpers are
used by the loop (2 MB pages for PyTorch's large blocks before the model loads, the mmap threshold,
a trim before each backward), by the fused loss (its logits blocks ask for 2 MB pages themselves, for
runs where PyTorch's own huge pages are off) and by setup (a trim after the tokenizer is let go).
Each is a no-op where there is no glibc or no Linux.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path

import torch


@functools.cache
def _libc():
    """The C library, once per process; None where there is no glibc (not Linux, or no libc.so.6)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _call(name: str, *args) -> int | None:
    """libc's `name`(*args), or None where there is no such function."""
    fn = getattr(_libc(), name, None)
    return None if fn is None else fn(*args)


def set_mmap_threshold(mb: float) -> bool:
    """glibc's mallopt(M_MMAP_THRESHOLD): blocks of at least `mb` MB get their own mapping.

    glibc's default threshold adapts upwards to 32 MB, so the activations of a training step
    (mostly 1-30 MB each on these models) come from the heap, and the heap fragments: a
    step's free blocks rarely coalesce into a block the next step can reuse and are not
    returned to the OS, and resident memory grows step after step. A fixed threshold maps
    those blocks on their own and unmaps them on free. The cost is the page faults of
    mapping them again each step. Returns False where there is no glibc."""
    return _call("mallopt", -3, int(mb * 2**20)) == 1  # M_MMAP_THRESHOLD = -3


def return_freed_memory() -> bool:
    """glibc's malloc_trim(0): give the heap's free pages back to the OS, so that what was freed (a
    large tokenizer's many small blocks) stops counting in the process's memory. False without glibc."""
    return bool(_call("malloc_trim", 0))


def huge_pages(t: torch.Tensor) -> None:
    """Ask Linux to back a fresh, untouched block with 2 MB pages (madvise MADV_HUGEPAGE), where
    transparent huge pages are on for blocks that ask (the common "madvise" setting): a 256 MB logits
    block then costs 128 page faults per call instead of 65k. No effect elsewhere, never an error."""
    size, page = t.numel() * t.element_size(), 1 << 21
    start = -(-t.data_ptr() // page) * page
    end = (t.data_ptr() + size) // page * page
    if end - start >= page:
        _call("madvise", ctypes.c_void_p(start), ctypes.c_size_t(end - start), 14)  # MADV_HUGEPAGE


THP_ENV = "THP_MEM_ALLOC_ENABLE"  # read by PyTorch's CPU allocator (c10 alloc_cpu) at its first block of 2 MB+
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(path: Path = _THP_MODE) -> str | None:
    """Linux's transparent huge page mode: always, madvise or never; None where it cannot be read."""
    try:
        text = path.read_text()
    except OSError:
        return None
    picked = [w[1:-1] for w in text.split() if w.startswith("[") and w.endswith("]")]
    return picked[0] if picked else None


def huge_page_kb(t: torch.Tensor, smaps: str = "/proc/self/smaps") -> int:
    """How much of a tensor's block is backed by 2 MB pages (AnonHugePages of the mappings it spans)."""
    lo, hi = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
    kb, inside = 0, False
    try:
        with open(smaps) as f:
            for line in f:
                head = line.split(maxsplit=1)[0]
                if "-" in head and not head.endswith(":"):
                    a, b = (int(x, 16) for x in head.split("-"))
                    inside = a < hi and b > lo
                elif inside and head == "AnonHugePages:":
                    kb += int(line.split()[1])
    except OSError:
        return 0
    return kb


def _torch_blocks_get_huge_pages() -> bool:
    """Whether a fresh 32 MB PyTorch block, once touched, is backed by 2 MB pages."""
    t = torch.empty(32 << 20, dtype=torch.uint8)
    t.fill_(1)
    return huge_page_kb(t) > 0


def torch_huge_pages() -> tuple[bool, str]:
    """Turn on PyTorch's 2 MB pages for its CPU blocks of 2 MB and more (THP_MEM_ALLOC_ENABLE=1: it
    advises MADV_HUGEPAGE for each). A fresh 75 MB block of attention scores then costs
    38 page faults instead of 19k: filling one took 27 ms on 4 KB pages and 4 ms on 2 MB pages
    (2-core EPYC, 2026-12-04). Returns whether it is on, and why (for the log).

    PyTorch reads the variable once, at its first large block, so this must run before the model is
    loaded; a process that already made one is told to set the variable before Python starts. A value
    the user set is left as it is."""
    if not sys.platform.startswith("linux"):
        return False, "not Linux"
    mode = thp_mode()
    if mode == "always":
        return True, "2 MB pages for large blocks (transparent huge pages: always, for every process)"
    if mode == "never":
        return False, "transparent huge pages are off on this system (/sys/kernel/mm/transparent_hugepage/enabled: never)"
    if os.environ.get(THP_ENV, "1") != "1":
        return False, f"{THP_ENV}={os.environ[THP_ENV]} in the environment, left as it is"
    os.environ.setdefault(THP_ENV, "1")
    if not _torch_blocks_get_huge_pages():
        return False, (f"a test block got no 2 MB pages: PyTorch reads {THP_ENV} once, at its first large block, "
                       f"and had made one before this run set it (set {THP_ENV}=1 in the environment before "
                       "Python starts), or the kernel had no free 2 MB pages")
    return True, f"2 MB pages for PyTorch's large CPU blocks ({THP_ENV}=1, transparent huge pages: {mode})"
