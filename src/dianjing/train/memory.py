"""Where the CPU's memory goes back to the OS: glibc's heap settings, trimming, and huge pages.

A training step on the CPU peaks in its backward. What is resident there is the weights, the live
activations, and whatever the allocator kept: free heap chunks that were never returned, and large
blocks backed by 4 KB pages. These helpers are used by the loop (the threshold, a trim before each
backward), by the fused loss (its logits blocks ask for 2 MB pages) and by setup (a trim after the
tokenizer is let go). Each is a no-op where there is no glibc or no Linux.
"""

from __future__ import annotations

import ctypes
import functools
import sys

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
