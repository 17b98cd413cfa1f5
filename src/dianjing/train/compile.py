"""Compile the transformer blocks with torch.compile (inductor) for training.

Eager PyTorch runs each small operation of a block on its own: RMSNorm's square, mean,
rsqrt and scale, rotary embeddings, SiLU times the up projection, each adapter's scale and
add — every one reads and writes a whole activation. Inductor fuses those into a few
loops per block, which on a 2-core CPU was worth 174 → 218 tokens/s and 2.4 → 1.8 GiB on
SmolLM2 (bench/sft_vs_trl.py --order grouped, Alpaca), for a one-time compile of about 40 s
at the first step (a few seconds once inductor's on-disk cache holds the graphs).

Only the repeated blocks are compiled (one graph shared by every block of a kind, with
dynamic sequence lengths), not the embedding, the loss or the optimiser. A block that
fails to compile runs eagerly (dynamo's suppress_errors), so compiling can only cost time.
"""

from __future__ import annotations

import os
import shutil

import torch

# below this many parameters a run is short and the compile (tens of seconds) is not repaid
AUTO_MIN_PARAMS = 50_000_000


def _cxx() -> str | None:
    """A C++ compiler inductor can use on CPU (it writes and builds C++ kernels)."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def find_blocks(model) -> list[torch.nn.Module]:
    """The transformer blocks: the longest ModuleList whose children are all of one class."""
    best: list[torch.nn.Module] = []
    for mod in model.modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > len(best):
            kinds = {type(c) for c in mod}
            if len(kinds) == 1:
                best = list(mod)
    return best


def decide(setting: str, model, device: torch.device | None = None) -> tuple[bool, str]:
    """Whether to compile, and why (for the log). On a GPU inductor writes Triton kernels (it needs
    the triton package); on the CPU, C++ ones (it needs a C++ compiler)."""
    if setting == "off":
        return False, "compile: off (train.compile)"
    blocks = find_blocks(model)
    if not blocks:
        return False, "compile: off (no repeated transformer blocks found)"
    if setting == "on":
        return True, f"compile: {len(blocks)} blocks with torch.compile (train.compile: on)"
    n = sum(p.numel() for p in model.parameters())
    if device is not None and device.type == "cuda":
        import importlib.util

        if importlib.util.find_spec("triton") is None:
            return False, "compile: off (torch.compile on a GPU needs the triton package: pip install triton)"
    elif device is not None and device.type == "mps":
        return False, "compile: off (inductor's MPS backend is experimental; train.compile: on tries it)"
    elif _cxx() is None:
        return False, ("compile: off (no C++ compiler for torch.compile on CPU; install g++ for ~20% faster "
                       "steps, or set train.compile: off to silence this)")
    if n < AUTO_MIN_PARAMS:
        return False, f"compile: off ({n / 1e6:.0f}M parameters: the one-time compile would not pay back)"
    return True, (f"compile: {len(blocks)} blocks with torch.compile (about a minute at the first step; "
                  "train.compile: off to skip)")


def budget_unused(why: str, whole_blocks: bool) -> str:
    """The log line of a run with model.activation_budget whose blocks are not compiled: it cannot act."""
    return (f"model.activation_budget: no effect ({why}): "
            + ("whole blocks are recomputed" if whole_blocks else "nothing is recomputed"))


def compile_blocks(model, activation_budget: float | None = None) -> int:
    """Compile every block in place (parameter names and the state dict do not change).

    `activation_budget` (model.activation_budget): the share of a block's activations that its compiled
    backward may keep, between 0 (keep the fewest: recompute nearly the whole forward) and 1 (None:
    inductor's default partition, which keeps what the backward reads). Inside it, AOTAutograd's
    partitioner keeps the tensors that cost the most FLOPs to recompute per byte (products' outputs)
    and recomputes the rest (norms, activations, softmax). The setting is torch's process-wide one, read
    when a graph is first compiled (the first step, and any recompile): each call sets it, so a run in
    the same process as another gets its own."""
    import torch._dynamo
    import torch._functorch.config as functorch_config

    functorch_config.activation_memory_budget = 1.0 if activation_budget is None else float(activation_budget)

    torch._dynamo.config.suppress_errors = True  # a block that cannot compile runs eagerly
    blocks = find_blocks(model)
    # the blocks share one graph per kind (Gemma 3 has sliding-window and global blocks) and grad
    # mode; leave room for those and for a few shape specialisations before dynamo gives up
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    setattr(cfg, name, max(getattr(cfg, name), 32))
    for b in blocks:
        b.compile(dynamic=True)
    return len(blocks)


def eager():
    """A context in which compiled blocks run eagerly (evaluation: no second compile for no-grad graphs)."""
    return torch.compiler.set_stance("force_eager")
