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

MFU's denominator, the device's matmul peak, is measured in dianjing.peak.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

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
            from dianjing.peak import matmul_gflops

            return matmul_gflops(torch.bfloat16, n=256, on=on) > matmul_gflops(torch.float32, n=256, on=on)
        except (RuntimeError, TypeError):  # an MPS without bf16 (before macOS 14)
            return False
    if _BF16_FAST is None:  # on the CPU, whatever else the machine has
        from dianjing.peak import matmul_gflops

        _BF16_FAST = matmul_gflops(torch.bfloat16, n=256) > 1.3 * matmul_gflops(torch.float32, n=256)
    return _BF16_FAST


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
