"""Device, frozen-weight dtype, trained dtype and autocast: decided once per run, here.

Every command asks this module instead of deciding for itself: training (chat SFT and
specialists) through `for_training`, generation (chat, serve, eval, predict, the local
teacher) through `for_inference`. The training run pins the resolved precision into its
config.yaml, so a resumed run computes as the steps before it did (`precision: auto` is a
speed measurement, and can come out differently under load).

The rules:
- `model.precision` auto → bf16 where this machine's bf16 matmuls are faster than fp32
  (`bf16_supported`, measured once on the run's device), else fp32.
- Weights that are trained always keep fp32 masters (adapters, heads, and the whole model in
  full fine-tuning), so the optimizer's updates are not lost to bf16 rounding.
- Frozen weights (the base under an adapter) live in the run's dtype: bf16 halves their memory.
- Autocast (bf16 compute over fp32 weights) is on in bf16 runs whenever some computation
  would otherwise run in fp32: full fine-tuning (fp32 masters), adapters with
  `adapter.compute: bf16` (PEFT would cast each adapted layer's input to fp32), and fp32 heads.
- The device (`model.device`): auto → CUDA when present (under torchrun, the process's
  LOCAL_RANK picks the GPU), else Apple's MPS, else the CPU; `cpu`, `cuda`, `cuda:N` and `mps`
  ask for one. A training run pins the kind it resolved to ('cuda', not 'cuda:3', so that a
  run resumed under torchrun still gives each process its own GPU).
- bf16 is measured on that device: on CUDA, `torch.cuda.is_bf16_supported()` (Ampere and
  later); on the CPU and MPS, a bf16 matmul has to beat fp32.
- Autocast follows the device the tensors are on, never "cuda because CUDA exists", which on
  a GPU machine left a CPU run without autocast.

MFU's denominator, the device's matmul peak, is measured here too (`matmul_peak`): the best of
the shapes the models run and a few squares, once per machine, dtype, thread count and torch
version, cached in peak.json under the dianjing cache (DIANJING_REMEASURE_PEAK=1 measures again).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from dianjing.config import DEVICE_PATTERN
from dianjing.errors import DianjingError


@dataclass(frozen=True)
class Precision:
    """How a run computes."""

    device: torch.device
    dtype: torch.dtype  # the run's precision: what config.yaml pins and run.json records
    frozen: torch.dtype  # weights that are not trained
    trained: torch.dtype  # weights that are trained (fp32 masters)
    autocast_dtype: torch.dtype | None  # None: no autocast

    @property
    def name(self) -> str:
        """'bf16' or 'fp32'."""
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def load_dtype(self, trains_base: bool) -> torch.dtype:
        """The dtype to load the base weights in: fp32 masters if they are trained."""
        return self.trained if trains_base else self.frozen

    def autocast(self):
        """A context manager for the forward pass (and its backward): autocast on the run's device, or nothing."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def resolve(precision: str, on: torch.device | None = None) -> torch.dtype:
    """'auto' | 'bf16' | 'fp32' → the dtype (auto: bf16 where its matmuls are faster on `on`)."""
    if precision == "bf16" or (precision == "auto" and bf16_supported(on)):
        return torch.bfloat16
    return torch.float32


def local_rank() -> int | None:
    """This process's index on its machine under torchrun (LOCAL_RANK), or None outside it."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None and value.isdigit() else None


def device(setting: str = "auto", key: str = "model.device") -> torch.device:
    """The device to compute on: `setting` is auto | cpu | cuda | cuda:N | mps.

    auto and a bare 'cuda' take the GPU of this process's LOCAL_RANK under torchrun (GPU 0
    outside it); a device that is not there is an error naming `key`, not a silent CPU run."""
    setting = (setting or "auto").strip().lower()
    if not re.match(DEVICE_PATTERN, setting):
        raise DianjingError(f"{key}: '{setting}' is not a device", fix="use auto, cpu, cuda, cuda:N or mps")
    cuda = torch.cuda.is_available()
    if setting == "auto":
        if cuda:
            setting = "cuda"
        elif _mps_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    if setting.startswith("cuda"):
        if not cuda:
            build = "a CPU build of torch" if torch.version.cuda is None else "no GPU visible"
            raise DianjingError(f"{key}: {setting} asked for, but this machine has {build}",
                                fix="set model.device: auto (or cpu), or install a CUDA build of torch "
                                    "on a machine with a GPU")
        count = torch.cuda.device_count()
        index = int(setting.split(":")[1]) if ":" in setting else (local_rank() or 0)
        if index >= count:
            raise DianjingError(f"{key}: GPU {index} asked for, but {count} GPU(s) are visible"
                                + (f" (LOCAL_RANK={local_rank()})" if ":" not in setting else ""),
                                fix="start no more processes per machine than it has GPUs, or check "
                                    "CUDA_VISIBLE_DEVICES")
        return torch.device("cuda", index)
    if setting == "mps" and not _mps_available():
        raise DianjingError(f"{key}: mps asked for, but this torch or machine has no Apple GPU",
                            fix="set model.device: auto or cpu")
    return torch.device(setting)


def pinned(setting: str, dev: torch.device) -> str:
    """What a run's config.yaml records for its device: the kind ('cuda'), or the explicit index asked for."""
    return setting if setting not in ("auto", "") else dev.type


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def for_training(precision: str, *, full: bool, adapter_compute: str = "fp32", fp32_head: bool = False,
                 device_setting: str = "auto") -> Precision:
    """A training run's precision.

    `full`: the whole model is trained (so it is loaded in fp32); `adapter_compute`: the config's
    adapter.compute ('bf16' keeps adapted layers' inputs in bf16 under autocast); `fp32_head`:
    the model has a newly initialised fp32 head (specialists); `device_setting`: model.device."""
    dev = device(device_setting)
    dtype = resolve(precision, dev)
    bf16 = dtype == torch.bfloat16
    autocast = bf16 and (full or adapter_compute == "bf16" or fp32_head)
    return Precision(dev, dtype, frozen=dtype, trained=torch.float32,
                     autocast_dtype=torch.bfloat16 if autocast else None)


def for_inference(precision: str, device_setting: str = "auto", key: str = "--device") -> Precision:
    """Generation and scoring: every weight in the resolved dtype, no autocast."""
    dev = device(device_setting, key=key)
    dtype = resolve(precision, dev)
    return Precision(dev, dtype, frozen=dtype, trained=dtype, autocast_dtype=None)


def from_name(name: str) -> torch.dtype:
    """run.json's 'bfloat16' / 'float32' (or 'bf16' / 'fp32') → the dtype."""
    return torch.bfloat16 if name in ("bfloat16", "bf16") else torch.float32


_BF16_FAST: bool | None = None  # the CPU's answer, measured once


def bf16_supported(on: torch.device | None = None) -> bool:
    """Is bf16 matmul actually fast on this device? Measured (CPU, MPS) or asked (CUDA), never guessed.

    CPUs with AVX-512 BF16 or AMX run bf16 about 2.5x faster than fp32; CPUs without it
    (AVX2 only) emulate it, sometimes hundreds of times slower. GPUs from Ampere on have bf16
    tensor cores (`torch.cuda.is_bf16_supported`); older ones emulate it.
    """
    global _BF16_FAST
    kind = on.type if on is not None else "cpu"
    if kind == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if kind == "mps":
        try:
            return matmul_gflops(torch.bfloat16, n=256, on=on) > matmul_gflops(torch.float32, n=256, on=on)
        except (RuntimeError, TypeError):  # an MPS without bf16 (before macOS 14)
            return False
    if _BF16_FAST is None:  # on the CPU, whatever else the machine has
        _BF16_FAST = matmul_gflops(torch.bfloat16, n=256) > 1.3 * matmul_gflops(torch.float32, n=256)
    return _BF16_FAST


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
    load, threads, began = _load(), torch.get_num_threads(), time.perf_counter()
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
    best = max(got, key=got.get)
    return Peak(gflops=round(got[best], 1), shape=tuple(int(d) for d in best.split("x")), dtype=_dtype_name(dtype),
                family=_family(on, dtype), capability=_capability(on), threads=threads, torch=torch.__version__,
                device=device_name(on), shapes={k: round(v, 1) for k, v in got.items()}, skipped=skipped,
                seconds=round(time.perf_counter() - began, 2), load=load,
                measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def peak_key(on: torch.device, dtype: torch.dtype) -> str:
    """The cache key of a peak: what it depends on (device model, dtype, threads, torch version)."""
    return f"{device_name(on)} | {_dtype_name(dtype)} | {torch.get_num_threads()} threads | torch {torch.__version__}"


def peak_cache_path() -> Path:
    """peak.json in the dianjing cache (DIANJING_CACHE, else ~/.cache/dianjing); DIANJING_PEAK_CACHE names
    another file (the test suite's, so that peaks measured while tests load the machine stay out of yours)."""
    from dianjing.models.load import cache_dir

    return Path(os.environ.get("DIANJING_PEAK_CACHE") or cache_dir() / "peak.json")


def _busy(peak: Peak, on: torch.device) -> bool:
    """A CPU probe that ran while other work held more than half the cores: too low to keep as the peak."""
    return on.type == "cpu" and peak.load is not None and peak.load > 0.5 * (os.cpu_count() or 1)


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


_PEAKS: dict[str, Peak] = {}  # this process's peaks, by peak_key


def matmul_peak(on: torch.device | None = None, dtype: torch.dtype = torch.bfloat16,
                remeasure: bool = False) -> Peak:
    """The device's matmul peak for a dtype, measured once per machine (`measure_peak`) and cached.

    Looked up in this process's peaks, then in peak.json (`peak_cache_path()`), keyed by
    `peak_key`; else measured and written there. DIANJING_REMEASURE_PEAK=1 skips peak.json (this
    process measures once and writes the new figure); `remeasure=True` measures again regardless."""
    on = on or torch.device("cpu")
    key = peak_key(on, dtype)
    if not remeasure and key in _PEAKS:
        return _PEAKS[key]
    path = peak_cache_path()
    env = os.environ.get(REMEASURE_ENV, "").strip().lower() in ("1", "true", "yes")
    found = None if remeasure or env else _peak_from(_read_peaks(path).get(key))
    if found is None:
        found = measure_peak(on, dtype)
        if not _busy(found, on):  # a busy machine's figure serves this process only; the next one measures again
            _write_peak(path, key, found)
    _PEAKS[key] = found
    return found


def peak_gflops(on: torch.device, dtype: torch.dtype) -> float:
    """The device's matmul peak for a dtype in GFLOP/s (the MFU denominator): `matmul_peak(on, dtype).gflops`."""
    return matmul_peak(on, dtype).gflops


def device_name(on: torch.device) -> str:
    """A person's name for the device: the GPU's model, or the CPU's."""
    if on.type == "cuda":
        return torch.cuda.get_device_name(on)
    if on.type == "mps":
        return "Apple GPU (MPS)"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "CPU"


def peak_device_memory_mb(on: torch.device) -> float | None:
    """Peak memory allocated on a GPU in this process (None on the CPU, whose peak is the RSS)."""
    if on.type == "cuda":
        return round(torch.cuda.max_memory_allocated(on) / 2**20, 1)
    if on.type == "mps":
        return round(torch.mps.driver_allocated_memory() / 2**20, 1)
    return None


def to_device(batch: dict, on: torch.device) -> dict:
    """A batch's tensors on the device; from pinned memory without blocking the host on CUDA."""
    if on.type == "cpu":
        return batch
    cuda = on.type == "cuda"
    return {k: (v.pin_memory().to(on, non_blocking=True) if cuda else v.to(on))
            if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
