"""LoRA's update folded into the frozen layer's own product.

PEFT computes an adapted layer as `base(x) + B(A(x)) * s`: the frozen product, then the rank-r
products, then an add over the whole output. The second rank-r product (`u @ B^T`, r = 16 columns
in) writes as many values as the frozen product for 1/40 of its work, and on a 2-core CPU it ran at
36–65 GFLOP/s inside a training step (bench/matmul_shapes.py; bench/results/2026-12-02-lora-shapes.txt),
a tenth of the frozen products' speed; the add reads and writes the output once more.

Here the layer is one product over concatenated operands:

    y = [x, s·u] @ [W, B]^T + bias,   u = x @ A^T

so the frozen product and the adapter's update share one GEMM (its inner dimension grows from `in`
to `in + r`, and the sum is accumulated in fp32 inside the GEMM and rounded once). The backward
does the same: `dy @ [W, B]` gives the frozen path's input gradient and `dy @ B` in one product.
The adapter's gradients are the same formulas PEFT's autograd computes:

    dB = dy^T @ (s·u),   du = s · (dy @ B),   dA = du^T @ x,   dx = dy @ W + du @ A

Only plain LoRA layers take this path: one active adapter, no dropout, not merged, a frozen base
weight, and an input already in the base weight's (low-precision) dtype. Anything else — DoRA,
dropout, several adapters, disabled or merged adapters, fp32 runs — runs PEFT's own forward, so the
fold never changes what an fp32 run computes.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


class LoRALinear(torch.autograd.Function):
    """`x @ W^T + bias + s · (x @ A^T) @ B^T` as one product; W and bias frozen, A and B trained."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scale):
        a, b = lora_a.to(x.dtype), lora_b.to(x.dtype)
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        su = F.linear(x2, a) * scale  # [tokens, r]
        y = F.linear(torch.cat([x2, su], -1), torch.cat([weight, b], 1), bias)
        ctx.save_for_backward(x2, su, weight, a, b)
        ctx.scale = scale
        ctx.shape = shape
        ctx.dtypes = (lora_a.dtype, lora_b.dtype)
        return y.view(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, dy):
        x2, su, weight, a, b = ctx.saved_tensors
        n = x2.shape[1]
        dy2 = dy.reshape(-1, dy.shape[-1]).to(x2.dtype)
        d = dy2 @ torch.cat([weight, b], 1)  # [tokens, in + r]: dy @ W and dy @ B in one product
        du = d[:, n:] * ctx.scale
        need_x, _, _, need_a, need_b, _ = ctx.needs_input_grad
        dx = torch.addmm(d[:, :n], du, a).view(ctx.shape) if need_x else None
        da = (du.t() @ x2).to(ctx.dtypes[0]) if need_a else None
        db = (dy2.t() @ su).to(ctx.dtypes[1]) if need_b else None
        return dx, None, None, da, db, None


def _plain(layer) -> str | None:
    """The one active adapter of a PEFT LoRA Linear this fold computes exactly, or None."""
    base = getattr(layer, "base_layer", None)
    if not isinstance(base, torch.nn.Linear) or base.weight.requires_grad:
        return None
    if base.bias is not None and base.bias.requires_grad:
        return None
    if getattr(layer, "fan_in_fan_out", False) or getattr(layer, "lora_variant", {}):
        return None  # DoRA and the other variants have their own forward
    if any(getattr(layer, "use_dora", {}).values()) or any(getattr(layer, "lora_bias", {}).values()):
        return None
    active = list(getattr(layer, "active_adapters", []))
    if len(active) != 1 or active[0] not in layer.lora_A:
        return None
    name = active[0]
    if not isinstance(layer.lora_dropout[name], torch.nn.Identity):
        return None
    return name


def _forward(self, x, *args, **kwargs):
    """A PEFT LoRA Linear's forward: folded where the layer and its input allow it, PEFT's otherwise."""
    name = None
    if not (args or kwargs or self.disable_adapters or self.merged):
        name = _plain(self)
    w = self.base_layer.weight
    if name is None or x.dtype != w.dtype or w.dtype == torch.float32:
        return type(self).forward(self, x, *args, **kwargs)
    return LoRALinear.apply(x, w, self.base_layer.bias, self.lora_A[name].weight, self.lora_B[name].weight,
                            float(self.scaling[name]))


def fold(model) -> int:
    """Give every plain LoRA Linear of `model` the folded forward (decided again at each call, so a
    layer later merged, disabled or given a second adapter runs PEFT's). Returns how many layers."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # pragma: no cover - peft is a dependency
        return 0
    n = 0
    for m in model.modules():
        if type(m) is LoraLinear and _plain(m) is not None:  # exact type: PEFT's subclasses keep their forward
            m.forward = types.MethodType(_forward, m)
            n += 1
    return n
