"""The matmul peak of a device: the denominator of MFU, measured honestly and once per machine.

`matmul_peak(device, dtype)` times the shapes the models actually run (their projections) and a few
squares, with warm-up, keeps the best, names the kernel family (AMX, AVX-512 BF16, AVX2 from the CPU
flags, with the measured bf16/fp32 ratio as evidence) and caches the result in peak.json under the
dianjing cache, keyed by device, dtype, thread count and torch version (DIANJING_REMEASURE_PEAK=1
measures again; a probe run on a busy machine is not cached). train/loop.py's MFU, `dianjing doctor`,
`dianjing cost` and the benches all read this figure.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dianjing.precision import device_name

def _sync(on: torch.device) -> None:
    if on.type == "cuda":
        torch.cuda.synchronize(on)
    elif on.type == "mps":
        torch.mps.synchronize()


def matmul_gflops(dtype: torch.dtype, n: int = 1024, seconds: float = 0.2, on: torch.device | None = None) -> float:
    """Measured square-matmul throughput in GFLOP/s for a dtype on a device (the CPU by default).

    One size, so not the device's peak (see `matmul_peak`): `bf16_supported` compares two of these."""
    return _shape_gflops(dtype, (n, n, n), seconds, on or torch.device("cpu"))


# -- the matmul peak: the denominator of MFU -------------------------------------------------
# A peak measured on one small square product is not the device's peak: on a Xeon with AMX a
# bf16 1024² product reaches ~400 GFLOP/s, a 2048² one ~900, and the model's own F.linear
# shapes ~820, so MFU against the 1024² figure came out twice too high. The probe below times
# the shapes the models run, plus squares, and keeps the best; it is cached per machine.
#
# A shape is (M, K, N): F.linear of M tokens × K features in by an N×K weight (2·M·K·N FLOPs).
CPU_SHAPES: tuple[tuple[int, int, int], ...] = (
    (1024, 1024, 1024), (2048, 2048, 2048), (3072, 3072, 3072), (4096, 4096, 4096),
    (2048, 640, 2048), (2048, 2048, 640),  # Gemma 3 270M: MLP gate/up and down over 2048 tokens
    (2048, 1152, 6912), (2048, 6912, 1152),  # Gemma 3 1B: MLP gate/up and down
    (4096, 576, 1536),  # SmolLM2-135M: MLP gate/up over 4096 tokens
)
# a GPU's tensor cores need large products to approach their peak
CUDA_SHAPES: tuple[tuple[int, int, int], ...] = (
    (4096, 4096, 4096), (8192, 8192, 8192), (8192, 1152, 6912), (8192, 6912, 1152),
)
PEAK_BUDGET_S = 4.0  # the whole probe, per dtype: short timed windows, big shapes skipped when they do not fit
PEAK_CACHE_VERSION = 1
REMEASURE_ENV = "DIANJING_REMEASURE_PEAK"


def shape_label(shape: tuple[int, int, int]) -> str:
    """'2048x640x2048': tokens × features in × features out."""
    return "x".join(str(d) for d in shape)


@dataclass
class Peak:
    """A measured matmul peak, with what it was measured on and how."""

    gflops: float  # the best shape's throughput
    shape: tuple[int, int, int]  # the shape that reached it: (tokens, in, out)
    dtype: str  # 'bf16' | 'fp32'
    family: str  # the kernel family the hardware offers for this dtype: AMX, AVX-512 BF16, AVX-512, AVX2, …
    capability: str  # the CPU's: torch.backends.cpu.get_cpu_capability(); a GPU's: sm_XY
    threads: int
    torch: str
    device: str  # device_name(): the CPU's or GPU's model
    shapes: dict[str, float]  # every measured shape's GFLOP/s, by shape_label
    skipped: list[str]  # shapes not measured, each with why
    seconds: float  # how long the probe took
    load: float | None  # the 1-minute load average when the probe started (None where unknown)
    measured_at: str  # ISO time
    others: float | None = None  # cores' worth of CPU time other work took while the probe ran (None: unknown)
    cached: bool = False  # read from peak.json rather than measured in this process

    @property
    def label(self) -> str:
        return shape_label(self.shape)


def cpu_flags(text: str | None = None, path: str | os.PathLike = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags: from `text` (cpuinfo's contents) or the file at `path`; empty where unknown."""
    if text is None:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):  # x86 says flags, Arm says Features
            return set(value.split())
    return set()


def kernel_family(dtype: torch.dtype, flags: set[str] | None = None) -> str:
    """The matmul kernel family the CPU offers for a dtype, from its flags (`cpu_flags()` by default).

    bf16: 'AMX' (amx_bf16 + amx_tile matrix tiles), else 'AVX-512 BF16' (vector bf16 dot products),
    else the vector ISA, which converts bf16 to fp32. fp32 and other dtypes: the vector ISA,
    'AVX-512' or 'AVX2' ('generic' for neither): AMX has no fp32 tiles."""
    flags = cpu_flags() if flags is None else flags
    if dtype == torch.bfloat16:
        if {"amx_bf16", "amx_tile"} <= flags:
            return "AMX"
        if "avx512_bf16" in flags:
            return "AVX-512 BF16"
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2"
    return "generic"


def bf16_evidence(bf16: Peak, fp32: Peak) -> str:
    """What the measured bf16/fp32 ratio says about the bf16 kernels that actually ran.

    Vector bf16 instructions (AVX-512 BF16) give at most ~2× fp32; well above that (2.5× here)
    only matrix units (AMX tiles) explain it. The flags say what the CPU has, the ratio what ran."""
    ratio = bf16.gflops / max(fp32.gflops, 1e-9)
    said = f"measured bf16/fp32 = {ratio:.1f}× ({bf16.gflops:.0f} / {fp32.gflops:.0f} GFLOP/s)"
    if ratio >= 2.5:
        return said + (": more than vector bf16 gives (≤2×), so the AMX tiles are in use" if bf16.family == "AMX"
                       else f": consistent with fast bf16 kernels ({bf16.family})")
    if ratio >= 1.3:
        return said + (": vector-bf16 speed; the CPU has AMX but the measurement does not show it in use "
                       "(an older oneDNN in torch, or a busy machine)" if bf16.family == "AMX"
                       else f": native bf16 kernels ({bf16.family})")
    return said + ": bf16 is not faster than fp32 here (converted or emulated)"


def _capability(on: torch.device) -> str:
    if on.type == "cuda":
        major, minor = torch.cuda.get_device_capability(on)
        return f"sm_{major}{minor}"
    if on.type == "mps":
        return "mps"
    get = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return get() if get else "unknown"


def _family(on: torch.device, dtype: torch.dtype) -> str:
    if on.type == "cuda":
        return "CUDA " + _capability(on)
    if on.type == "mps":
        return "MPS"
    return kernel_family(dtype)


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}.get(dtype, str(dtype))


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # Windows
        return None


def _cpu_seconds(stat: str = "/proc/stat") -> tuple[float, float] | None:
    """(CPU seconds all cores have spent busy or stolen by the hypervisor, CPU seconds of this process), since
    boot and since it started; None where /proc/stat cannot be read (not Linux)."""
    try:
        with open(stat, encoding="ascii") as f:
            fields = f.readline().split()
        # cpu user nice system idle iowait irq softirq steal [guest guest_nice: already in user and nice]
        ticks = [int(v) for v in fields[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    if len(ticks) < 8:
        return None
    busy = sum(ticks) - ticks[3] - ticks[4]
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def others_during(before: tuple[float, float] | None, after: tuple[float, float] | None, wall: float) -> float | None:
    """Cores' worth of CPU time that other work (other processes, or the hypervisor's other guests) took
    between two `_cpu_seconds` readings `wall` seconds apart; None where either is unknown."""
    if before is None or after is None or wall <= 0:
        return None
    return round(max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / wall, 2)


def _shape_gflops(dtype: torch.dtype, shape: tuple[int, int, int], seconds: float, on: torch.device) -> float:
    """GFLOP/s of F.linear over one (tokens, in, out) shape: warmed up, then timed for `seconds`."""
    import time

    import torch.nn.functional as F

    m, k, n = shape
    x, w = torch.randn(m, k, device=on).to(dtype), torch.randn(n, k, device=on).to(dtype)
    start = time.perf_counter()
    F.linear(x, w)  # warm-up: the first call picks (and on AMX, JIT-compiles) the kernel
    _sync(on)
    if time.perf_counter() - start < seconds / 4:  # a second warm-up where it is cheap
        F.linear(x, w)
        _sync(on)
    reps, start = 0, time.perf_counter()
    while True:
        F.linear(x, w)
        reps += 1
        if reps % 8 == 0 or on.type == "cpu":
            _sync(on)
            spent = time.perf_counter() - start
            if spent > seconds:
                return 2 * m * k * n * reps / spent / 1e9


def measure_peak(on: torch.device | None = None, dtype: torch.dtype = torch.bfloat16,
                 budget_s: float = PEAK_BUDGET_S, shapes=None) -> Peak:
    """Measure the device's matmul peak for a dtype: the best of the shapes the models run and a few squares.

    Shapes are timed cheapest first, each warmed up and then timed for a short window; a shape
    whose estimated time no longer fits in `budget_s` is skipped (the first is always measured),
    and so are the larger squares once a square comes out clearly slower than the one before.
    Uncached: `matmul_peak` / `peak_gflops` read and write the per-machine cache."""
    import time
    from datetime import datetime, timezone

    on = on or torch.device("cpu")
    shapes = sorted(shapes or (CUDA_SHAPES if on.type == "cuda" else CPU_SHAPES), key=lambda s: s[0] * s[1] * s[2])
    window = max(0.02, 0.5 * budget_s / len(shapes))
    load, threads, cpu, began = _load(), torch.get_num_threads(), _cpu_seconds(), time.perf_counter()
    got: dict[str, float] = {}
    skipped: list[str] = []
    last_square, squares_done = None, False
    for shape in shapes:
        label, square = shape_label(shape), shape[0] == shape[1] == shape[2]
        if square and squares_done:
            skipped.append(f"{label} (a smaller square was clearly faster)")
            continue
        if got:  # warm-up and at least one timed product at the slowest rate seen so far, plus the window
            rep = 2 * shape[0] * shape[1] * shape[2] / (min(got.values()) * 1e9)
            if time.perf_counter() - began + 2 * rep + window > budget_s:
                skipped.append(f"{label} (would not fit in the {budget_s:g} s budget)")
                continue
        got[label] = rate = _shape_gflops(dtype, shape, window, on)
        if square:
            if last_square is not None and rate < 0.85 * last_square:
                squares_done = True
            last_square = rate
    best, wall = max(got, key=got.get), time.perf_counter() - began
    others = others_during(cpu, _cpu_seconds(), wall) if on.type == "cpu" else None
    return Peak(gflops=round(got[best], 1), shape=tuple(int(d) for d in best.split("x")), dtype=_dtype_name(dtype),
                family=_family(on, dtype), capability=_capability(on), threads=threads, torch=torch.__version__,
                device=device_name(on), shapes={k: round(v, 1) for k, v in got.items()}, skipped=skipped,
                seconds=round(wall, 2), load=load, others=others,
                measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def cpu_signature(text: str | None = None, path: str | os.PathLike = "/proc/cpuinfo") -> str:
    """A short fingerprint of the CPU beyond its model name: family, model, stepping, cache size and
    flags, hashed. Virtual machines often report one name for different CPUs ("Intel(R) Xeon(R)
    Processor" was a 1.1 TFLOP/s and a 2.8 TFLOP/s bf16 machine on 2026-12-02), so the name alone would
    let one machine's peak stand for another's. Empty where cpuinfo cannot be read."""
    import hashlib

    if text is None:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if not name and fields:
            break  # the first processor's block is enough
        if name in ("vendor_id", "cpu family", "model", "stepping", "cache size", "cpu part", "cpu variant"):
            fields[name] = value.strip()
    flags = " ".join(sorted(cpu_flags(text)))
    if not fields and not flags:
        return ""
    blob = "|".join(f"{k}={v}" for k, v in sorted(fields.items())) + "|" + flags
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def peak_key(on: torch.device, dtype: torch.dtype) -> str:
    """The cache key of a peak: what it depends on (device model, dtype, threads, torch version); a
    CPU's model is its name and its cpuinfo signature."""
    name = device_name(on)
    if on.type == "cpu" and (sig := cpu_signature()):
        name = f"{name} [{sig}]"
    return f"{name} | {_dtype_name(dtype)} | {torch.get_num_threads()} threads | torch {torch.__version__}"


def peak_cache_path() -> Path:
    """peak.json in the dianjing cache (DIANJING_CACHE, else ~/.cache/dianjing); DIANJING_PEAK_CACHE names
    another file (the test suite's, so that peaks measured while tests load the machine stay out of yours)."""
    from dianjing.models.load import cache_dir

    return Path(os.environ.get("DIANJING_PEAK_CACHE") or cache_dir() / "peak.json")


BUSY_SHARE = 0.25  # other work above this share of the cores during a CPU probe: its figure is not kept


def busy(peak: Peak, on: torch.device) -> str | None:
    """Why a CPU probe's figure is too low to keep as the peak, or None: other work took more than a quarter
    of the cores while it ran, measured over the probe itself (`others`). Probes cached before that was
    measured are judged by the load average at their start, as they were (more than half the cores);
    it lags by a minute, both ways: a job that had just started read as a quiet machine."""
    if on.type != "cpu":
        return None
    cores = os.cpu_count() or 1
    if peak.others is not None:
        return f"other work took {peak.others:g} of {cores} cores while measured" if peak.others > BUSY_SHARE * cores else None
    if peak.load is not None and peak.load > 0.5 * cores:
        return f"load {peak.load:g} while measured"
    return None


def _read_peaks(path) -> dict:
    """peak.json's entries; an unreadable, corrupt or older file reads as empty (so the peak is measured again)."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != PEAK_CACHE_VERSION:
        return {}
    if not isinstance(data.get("peaks"), dict):
        return {}
    return data["peaks"]


def _peak_from(entry) -> Peak | None:
    try:
        p = Peak(**{**entry, "shape": tuple(int(d) for d in entry["shape"]), "cached": True})
        return p if isinstance(p.gflops, (int, float)) and p.gflops > 0 else None
    except (TypeError, KeyError, ValueError):
        return None


def _write_peak(path, key: str, peak: Peak) -> None:
    """Add one entry to peak.json, atomically (a temporary file renamed over it); a cache that cannot be
    written is skipped: the peak was measured all the same, and is measured again next time."""
    import json
    import tempfile
    from dataclasses import asdict

    path = Path(path)
    peaks = _read_peaks(path)
    peaks[key] = {k: v for k, v in asdict(peak).items() if k != "cached"}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".peak.", suffix=".tmp", delete=False,
                                         encoding="utf-8") as f:
            tmp = f.name
            json.dump({"version": PEAK_CACHE_VERSION, "peaks": peaks}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _best_of(kept: Peak | None, new: Peak) -> Peak:
    """A new probe merged with the cached one: each shape's best reading, and the best of them as the peak.

    A peak is a maximum. On a shared machine the same product runs at 600 or 1,100 GFLOP/s from one minute
    to the next, and one short probe can catch a slow minute (2026-12-02: 222 GFLOP/s for a shape that ran at
    809 a minute later), so measuring again can raise the peak but never lowers it. Remeasuring after a
    torch upgrade or on other hardware starts afresh: the cache key names both."""
    if kept is None:
        return new
    shapes = {**kept.shapes, **{k: max(v, kept.shapes.get(k, 0.0)) for k, v in new.shapes.items()}}
    best = kept if kept.gflops >= new.gflops else new
    return Peak(**{**best.__dict__, "shapes": shapes, "cached": False})


_PEAKS: dict[str, Peak] = {}  # this process's peaks, by peak_key


def matmul_peak(on: torch.device | None = None, dtype: torch.dtype = torch.bfloat16,
                remeasure: bool = False) -> Peak:
    """The device's matmul peak for a dtype, measured once per machine (`measure_peak`) and cached.

    Looked up in this process's peaks, then in peak.json (`peak_cache_path()`), keyed by
    `peak_key`; else measured and written there. DIANJING_REMEASURE_PEAK=1 skips peak.json (this
    process measures once and keeps the better of the new figure and the cached one, shape by shape);
    `remeasure=True` measures again regardless."""
    on = on or torch.device("cpu")
    key = peak_key(on, dtype)
    if not remeasure and key in _PEAKS:
        return _PEAKS[key]
    path = peak_cache_path()
    env = os.environ.get(REMEASURE_ENV, "").strip().lower() in ("1", "true", "yes")
    kept = _peak_from(_read_peaks(path).get(key))
    found = None if remeasure or env else kept
    if found is None:
        found = measure_peak(on, dtype)
        if not busy(found, on):
            found = _best_of(kept, found)
            _write_peak(path, key, found)
        else:  # a busy machine's figure is not cached, and does not lower a peak this process already has
            prior = _PEAKS.get(key) or kept
            if prior is not None and prior.gflops >= found.gflops:
                found = prior
    _PEAKS[key] = found
    return found


def recheck(on: torch.device, dtype: torch.dtype, achieved_gflops: float) -> tuple[Peak, str | None]:
    """The peak once more when a run computed faster than it: (peak, what was done, or None).

    A cached peak can only go up (`_best_of`), so the one way it goes wrong is too low: a probe on a
    slow or shared host is kept, and a faster host with the same CPU reads it. On 2026-12-02 an AMD
    EPYC probed 89 GFLOP/s fp32; on 2026-12-03 the same signature ran the same shapes at 176, and the
    default run printed an MFU of 144%. A run whose products alone (`achieved_gflops`, counted at
    6 FLOPs per parameter and token) beat the peak says it is stale: measure again (a few seconds),
    keep the better figure. When the new probe is no higher, the count is above what ran (the
    frozen output layer and a LoRA body without recompute run 4 of the 6), and the MFU stays over 100%."""
    kept = matmul_peak(on, dtype)
    if achieved_gflops <= kept.gflops:
        return kept, None
    new = matmul_peak(on, dtype, remeasure=True)  # a lower (busy) figure leaves `kept` in place
    if new.gflops > kept.gflops:
        why = busy(new, on)
        return new, (f"matmul peak: this run came to {achieved_gflops:.0f} GFLOP/s (6 FLOPs per parameter and token), "
                     f"above the peak of {kept.gflops:g} measured {kept.measured_at}; measured again: {new.gflops:g} "
                     f"at {new.label}" + ("" if not why else f" (not cached: {why})"))
    return kept, (f"matmul peak: this run came to {achieved_gflops:.0f} GFLOP/s (6 FLOPs per parameter and token), "
                  f"above the peak of {kept.gflops:g}; measured again, the peak is not higher ({new.gflops:g}): "
                  "the count is more than a frozen layer runs, and MFU comes out over 100%")


def peak_gflops(on: torch.device, dtype: torch.dtype) -> float:
    """The device's matmul peak for a dtype in GFLOP/s (the MFU denominator): `matmul_peak(on, dtype).gflops`."""
    return matmul_peak(on, dtype).gflops
