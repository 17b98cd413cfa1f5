"""Many processes on PyTorch's own machinery: torchrun's environment, DDP and FSDP2.

One process is the same program with a world of size 1: every function here is a no-op or
an identity there, so the loop has one code path.

- `World.start`: under torchrun (WORLD_SIZE > 1) joins the process group: NCCL on GPUs, gloo
  on CPUs, with a timeout, so a lost process ends the run instead of hanging it.
- `share`: a rank's part of a global micro-batch, strided over the length-sorted batch so the
  ranks get the same number of examples and about the same number of tokens; a rank left with
  none (a last, short batch) computes a stand-in example with weight 0, because every rank must
  run the same forwards and backwards (their collectives pair up).
- `Engine`: the forward the loop calls. `ddp` wraps the model in DistributedDataParallel (only
  trainable parameters are synchronised: frozen ones have no gradient); `fsdp` shards every
  transformer block and the rest with FSDP2's `fully_shard`. Both *sum* gradients across ranks
  (a DDP communication hook; FSDP2's divide factor 1 and sum-only collectives) and the loop
  divides by the step's global number of targets, so the gradient equals a one-process run's
  with the same global batch. Summing also sidesteps FSDP2's averaging on gloo, which has
  summed instead of averaged (pytorch/pytorch#162338): the tests compare gradients, not only losses.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from dianjing.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 writes the run folder, the metrics and the progress line."""
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.size > 1

    @staticmethod
    def from_env() -> World:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return World()
        return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))

    def start(self, dev: torch.device, timeout_s: float) -> World:
        """Join the process group (once); NCCL when this process has a GPU, else gloo."""
        if self.many and not dist.is_initialized():
            cuda = dev.type == "cuda"
            if cuda:
                torch.cuda.set_device(dev)
            dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s),
                                    device_id=dev if cuda else None)
        return self

    def comm_device(self) -> torch.device:
        """Where reduced tensors live: the GPU for NCCL, the CPU for gloo."""
        if self.many and dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def sum(self, *values: float) -> list[float]:
        """The sums over all ranks of a few numbers, in one collective (float64, so counts stay exact)."""
        if not self.many:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.many:
            dist.barrier()

    def broadcast(self, value):
        """Rank 0's value of a picklable object, on every rank."""
        if not self.many:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def stop(self) -> None:
        if self.many and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = World()


def share(batch: list[int], world: World) -> tuple[list[int], float]:
    """This rank's examples of a global micro-batch, and the weight of its loss (0: a stand-in).

    Strided (rank r takes batch[r::size]): a length-grouped batch is sorted by length, so every
    rank gets examples of about the same lengths. In an epoch the ranks' parts are disjoint and
    together are the whole batch."""
    mine = batch[world.rank::world.size]
    if mine:
        return mine, 1.0
    return batch[:1], 0.0  # computed so that the collectives pair up; contributes nothing


def choose(setting: str, full: bool, n_params: int, dev: torch.device, world: World,
           shardable: bool = True) -> tuple[str, str]:
    """train.parallel → 'none' | 'ddp' | 'fsdp', and why (for the log).

    auto: one process → none; adapter runs → ddp (the trainable state is small); full fine-tuning
    → fsdp when its training state (fp32 weights, gradients and two AdamW moments: 16 bytes a
    parameter) would take more than half of one device's memory, else ddp (faster: no gathers).
    `shardable`: the route can save a gathered state dict (chat SFT; specialists not yet)."""
    if not world.many:
        return "none", "parallel: one process"
    if setting == "fsdp" and not shardable:
        raise ConfigError("train.parallel: fsdp is for chat fine-tuning; specialists train under ddp",
                          fix="set train.parallel: ddp (or auto)")
    if not shardable:
        return "ddp", f"parallel: ddp over {world.size} processes (specialists train under ddp)"
    if setting == "fsdp" and not full:
        raise ConfigError("train.parallel: fsdp shards full fine-tuning here; adapter runs synchronise only their "
                          "small trainable state", fix="set train.parallel: ddp (or auto), or adapter.method: full")
    if setting in ("ddp", "fsdp"):
        return setting, f"parallel: {setting} over {world.size} processes (train.parallel)"
    if not full:
        return "ddp", f"parallel: ddp over {world.size} processes (an adapter run: only its trainable weights sync)"
    need, have = 16 * n_params, device_memory(dev)
    if need > have / 2:
        return "fsdp", (f"parallel: fsdp over {world.size} processes (full fine-tuning needs ~{need / 2**30:.1f} GiB "
                        f"of training state, more than half of this device's {have / 2**30:.0f} GiB)")
    return "ddp", (f"parallel: ddp over {world.size} processes (full fine-tuning's ~{need / 2**30:.1f} GiB of "
                   f"training state fits one device; train.parallel: fsdp shards it)")


def device_memory(dev: torch.device) -> int:
    """Bytes of memory of one device: the GPU's, or this machine's RAM divided among its processes."""
    if dev.type == "cuda":
        return torch.cuda.get_device_properties(dev).total_memory
    import psutil

    return psutil.virtual_memory().total // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


class _Forward(torch.nn.Module):
    """The model and its loss as one module, so that DDP's and FSDP2's hooks see the forward
    (the sparse loss calls the body and the output layer itself, not the model's forward)."""

    def __init__(self, model: torch.nn.Module, loss):
        super().__init__()
        self.model = model
        self._loss = loss

    def forward(self, batch: dict):
        return self._loss(batch)


def _sum_hook(_, bucket):
    """DDP communication hook: the sum of the ranks' gradients (DDP's own averages)."""
    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


class Engine:
    """The forward of one micro-batch, and the gradient synchronisation around it."""

    def __init__(self, model: torch.nn.Module, loss, mode: str = "none", world: World = SINGLE,
                 dev: torch.device | None = None, blocks: list | None = None, bf16: bool = False):
        self.mode, self.world, self.model = mode, world, model
        module = _Forward(model, loss)
        if mode == "ddp":
            import inspect

            ddp = torch.nn.parallel.DistributedDataParallel
            # buffers (rotary tables) are the same on every rank: no broadcast before each forward
            quiet = "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
            module = ddp(module, device_ids=[dev] if dev is not None and dev.type == "cuda" else None,
                         find_unused_parameters=False,
                         **({"forward_sync_buffers": False} if quiet else {"broadcast_buffers": False}))
            module.register_comm_hook(None, _sum_hook)
        elif mode == "fsdp":
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
                else MixedPrecisionPolicy()
            for block in blocks or []:
                fully_shard(block, mp_policy=mp)
            fully_shard(module, mp_policy=mp)
            for m in [module, *(blocks or [])]:
                m.set_gradient_divide_factor(1.0)
                m.set_force_sum_reduction_for_comms(True)
        self.module = module

    def __call__(self, batch: dict):
        return self.module(batch)

    def sync(self, last: bool):
        """Around a micro-batch's backward: synchronise gradients only on the step's last one."""
        if self.mode == "ddp" and not last:
            return self.module.no_sync()
        if self.mode == "fsdp":
            self.module.set_requires_gradient_sync(last)
            self.module.set_is_last_backward(last)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def gathered(self):
        """The whole model usable outside the loss's forward (a task's own metrics, saving): FSDP2's
        root parameters gathered; the blocks gather their own in their forward."""
        if self.mode != "fsdp":
            yield
            return
        self.module.unshard()
        try:
            yield
        finally:
            self.module.reshard()

    def clip(self, params: list, max_norm: float | None) -> float:
        """The gradient norm over all ranks' shards (and clipping to max_norm)."""
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, foreach=None)
        if hasattr(norm, "full_tensor"):  # an FSDP2 DTensor: the sum over the shards
            norm = norm.full_tensor()
        if max_norm:
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return float(norm)

    def full_state(self) -> dict | None:
        """FSDP2: the whole model's state dict, gathered to the CPU of rank 0 (None elsewhere); else None."""
        if self.mode != "fsdp":
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return sd if self.world.main else None


def remap_groups(groups: list[dict], before: dict[int, str], model: torch.nn.Module) -> list[dict]:
    """Optimizer groups over the parameters FSDP2 put in place of the originals (matched by name)."""
    now = dict(model.named_parameters())
    return [{**g, "params": [now[before[id(p)]] for p in g["params"]]} for g in groups]
