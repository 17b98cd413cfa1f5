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
- The device is the CPU: dianjing does not yet move models or batches to an accelerator
  (that is the GPU issue's work). Autocast follows the device the tensors are on, never
  "cuda because CUDA exists", which on a GPU machine left a CPU run without autocast.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


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


def resolve(precision: str) -> torch.dtype:
    """'auto' | 'bf16' | 'fp32' → the dtype (auto: bf16 where its matmuls are faster here)."""
    if precision == "bf16" or (precision == "auto" and bf16_supported()):
        return torch.bfloat16
    return torch.float32


def device() -> torch.device:
    """The device dianjing computes on (the CPU, until models and batches can move)."""
    return torch.device("cpu")


def for_training(precision: str, *, full: bool, adapter_compute: str = "fp32", fp32_head: bool = False) -> Precision:
    """A training run's precision.

    `full`: the whole model is trained (so it is loaded in fp32); `adapter_compute`: the config's
    adapter.compute ('bf16' keeps adapted layers' inputs in bf16 under autocast); `fp32_head`:
    the model has a newly initialised fp32 head (specialists)."""
    dtype = resolve(precision)
    bf16 = dtype == torch.bfloat16
    autocast = bf16 and (full or adapter_compute == "bf16" or fp32_head)
    return Precision(device(), dtype, frozen=dtype, trained=torch.float32,
                     autocast_dtype=torch.bfloat16 if autocast else None)


def for_inference(precision: str) -> Precision:
    """Generation and scoring: every weight in the resolved dtype, no autocast."""
    dtype = resolve(precision)
    return Precision(device(), dtype, frozen=dtype, trained=dtype, autocast_dtype=None)


def from_name(name: str) -> torch.dtype:
    """run.json's 'bfloat16' / 'float32' (or 'bf16' / 'fp32') → the dtype."""
    return torch.bfloat16 if name in ("bfloat16", "bf16") else torch.float32


_BF16_FAST: bool | None = None


def bf16_supported() -> bool:
    """Is bf16 matmul actually faster than fp32 here? Measured once, not guessed from flags.

    CPUs with AVX-512 BF16 or AMX run bf16 about 2.5x faster than fp32; CPUs without it
    (AVX2 only) emulate it, sometimes hundreds of times slower.
    """
    global _BF16_FAST
    if _BF16_FAST is None:  # on the device runs compute on (the CPU), whatever else the machine has
        _BF16_FAST = matmul_gflops(torch.bfloat16, n=256) > 1.3 * matmul_gflops(torch.float32, n=256)
    return _BF16_FAST


def matmul_gflops(dtype: torch.dtype, n: int = 1024, seconds: float = 0.2) -> float:
    """Measured square-matmul throughput in GFLOP/s for a dtype on this machine."""
    import time

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    reps, start = 0, time.perf_counter()
    while True:
        a @ b
        reps += 1
        spent = time.perf_counter() - start
        if spent > seconds:
            return 2 * n ** 3 * reps / spent / 1e9
