"""The output layer's softmax cross-entropy on the CPU, in a small C kernel (softmax_xent.c).

On this project's 2-core CPU the element-wise work between the output layer's two products
(fp32 copy, soft-cap, max, exp, sum, divide, one-hot, the soft-cap's derivative, the copy
back to bf16) took 1.06 s of the 2.21 s that 2,048 supervised rows of Gemma 3's 262k-word
output layer cost, more than either product (bench/output_layer.py, 2026-12-01): about fifteen
PyTorch passes over each 256 MB chunk. The kernel takes two passes and needs no fp32 copy.

It is built on first use with the system's C compiler (`cc -O3 -march=native`, about a second)
into the dianjing cache, keyed by the source, the compiler and the CPU's flags, and checked
against PyTorch on a small random chunk before it is used. Where there is no compiler, the build
fails or the check disagrees, the loss runs the PyTorch path and `why()` says so (the training
log prints it). DIANJING_SOFTMAX_KERNEL=0 turns it off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("softmax_xent.c")
BLK = 16  # rows per block in the C source
PART = 4096  # vocabulary rows per range a thread takes (a multiple of BLK); fixed, so results do not depend on threads
_STATE: dict = {}  # "lib" (ctypes library or None), "why" (one line for the log), "pool"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("DIANJING_SOFTMAX_KERNEL", "1") == "0":
        return None, "PyTorch (DIANJING_SOFTMAX_KERNEL=0)"
    cc = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None or shutil.which(cc) is None:
        return None, "PyTorch (no C compiler for dianjing's softmax kernel; install gcc for a faster output layer)"
    from dianjing.models.load import cache_dir

    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"PyTorch ({cc} --version failed: {e})"
    source = SOURCE.read_bytes()
    last = ""
    for flags in (["-O3", "-march=native"], ["-O3"]):
        key = hashlib.sha256(source + version.encode() + " ".join(flags).encode() + _cpu_flags().encode()
                             + platform.machine().encode()).hexdigest()[:16]
        out = cache_dir() / "kernels" / f"softmax_xent-{key}.so"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
            os.close(fd)
            cmd = [cc, *flags, "-fPIC", "-shared", "-o", tmp, str(SOURCE)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                os.unlink(tmp)
                last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
                continue
            os.replace(tmp, out)  # atomic: ranks of a torchrun job building at once do not clash
        try:
            lib = ctypes.CDLL(str(out))
        except OSError as e:
            last = str(e)
            continue
        vp, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
        lib.dj_xent_stats.argtypes = [vp, ctypes.c_int, i64, i64, i64, f32, vp, vp]
        lib.dj_xent_grad.argtypes = [vp, ctypes.c_int, i64, i64, i64, f32, vp, vp]
        lib.dj_xent_target.argtypes = [vp, ctypes.c_int, i64, f32, vp, vp]
        lib.dj_xent_stats.restype = lib.dj_xent_grad.restype = ctypes.c_int
        lib.dj_xent_target.restype = None
        return lib, f"dianjing's C kernel ({Path(cc).name} {' '.join(flags)})"
    return None, f"PyTorch (building dianjing's softmax kernel with {cc} failed: {last})"


def _reference(z: torch.Tensor, y: torch.Tensor, cap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """What the kernel computes, in PyTorch: per-column losses and d loss / d logits ([vocab, rows] layout).

    Grad mode is switched on here: the first check can run inside the loss's own autograd forward
    (where it is off), and would otherwise fail there."""
    with torch.enable_grad():
        z = z.float().t().detach().requires_grad_(True)
        x = torch.tanh(z / cap) * cap if cap else z
        losses = torch.nn.functional.cross_entropy(x, y, reduction="none")
        losses.sum().backward()
    return losses.detach(), z.grad.t()


def _check(lib) -> str | None:
    """Compare the kernel with PyTorch on a small chunk (bf16 and fp32, capped and not): None when it agrees."""
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        for cap in (0.0, 30.0):
            z = (torch.randn(1000, 37, generator=g) * 8).to(dtype)
            y = torch.randint(0, 1000, (37,), generator=g)
            ref_loss, ref_grad = _reference(z, y, cap)
            zz = z.clone()
            loss = _run(lib, zz, y, cap, grad=True, threads=2)
            if not torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-4):
                return f"its losses differ from PyTorch's by {(loss - ref_loss).abs().max().item():.2e}"
            tol = 1e-5 if dtype == torch.float32 else 1e-2
            if not torch.allclose(zz.float(), ref_grad, rtol=tol, atol=tol * 1e-2):
                return f"its gradients differ from PyTorch's by {(zz.float() - ref_grad).abs().max().item():.2e}"
    return None


def _lib():
    if "why" not in _STATE:
        lib, why = _build()
        if lib is not None:
            bad = _check(lib)
            if bad:
                lib, why = None, f"PyTorch (dianjing's softmax kernel was built but {bad}; please report it)"
        _STATE["lib"], _STATE["why"] = lib, why
    return _STATE["lib"]


def available() -> bool:
    """Whether the kernel is built, loaded and checked (builds it on the first call)."""
    return _lib() is not None


def why() -> str:
    """One line for the log: which softmax the output layer uses, and why."""
    _lib()
    return _STATE["why"]


def _pool(threads: int) -> ThreadPoolExecutor:
    pool = _STATE.get("pool")
    if pool is None or pool._max_workers != threads:
        if pool is not None:
            pool.shutdown(wait=False)
        pool = _STATE["pool"] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dianjing-xent")
    return pool


def _run(lib, z: torch.Tensor, y: torch.Tensor, cap: float, grad: bool, threads: int) -> torch.Tensor:
    vocab, m = z.shape
    bf16 = int(z.dtype == torch.bfloat16)
    y = y.to(torch.int64).contiguous()
    # fixed ranges of the vocabulary, whatever the thread count, combined in a fixed order: the losses
    # and gradients do not depend on how many threads (or processes of a torchrun job) there are
    bounds = [(s, min(vocab, s + PART)) for s in range(0, vocab, PART)]
    threads = max(1, min(threads, len(bounds)))
    mx = torch.empty(len(bounds), m)
    sm = torch.empty(len(bounds), m)
    zp, yp = z.data_ptr(), y.data_ptr()

    def stats(i):
        v0, v1 = bounds[i]
        return lib.dj_xent_stats(zp, bf16, m, v0, v1, cap, mx[i].data_ptr(), sm[i].data_ptr())

    def grads(i):
        v0, v1 = bounds[i]
        return lib.dj_xent_grad(zp, bf16, m, v0, v1, cap, lse.data_ptr(), yp)

    def each(fn):
        codes = list(_pool(threads).map(fn, range(len(bounds)))) if threads > 1 else [fn(i) for i in range(len(bounds))]
        if any(codes):
            raise MemoryError("dianjing's softmax kernel could not allocate its row buffers")

    xy = torch.empty(m)
    lib.dj_xent_target(zp, bf16, m, cap, yp, xy.data_ptr())
    each(stats)
    top = mx.amax(0)
    total = torch.zeros(m)
    for i in range(len(bounds)):  # in order: the same sum for any thread count
        total += sm[i] * torch.exp(mx[i] - top)
    lse = (top + total.log()).contiguous()
    if grad:
        each(grads)
    return lse - xy


def xent_(z: torch.Tensor, y: torch.Tensor, cap: float | None, grad: bool) -> torch.Tensor:
    """Per-column cross-entropy of a contiguous CPU chunk of logits z [vocab, rows] (bf16 or fp32) against
    targets y [rows], with the logits soft-capped at `cap` (Gemma) when given. With grad=True, z is
    overwritten with d loss / d logits (of the summed loss), in z's dtype. Call only when available()."""
    if z.dtype not in (torch.bfloat16, torch.float32) or not z.is_contiguous() or z.device.type != "cpu":
        raise ValueError("xent_ needs a contiguous CPU bf16 or fp32 tensor")
    return _run(_lib(), z, y, float(cap or 0.0), grad, torch.get_num_threads())
