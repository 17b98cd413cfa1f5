"""dianjing's written-out attention for compiled blocks on a CPU (model.attn_implementation: written_out).

Inside a block compiled by inductor, attention written out as two batched products and a softmax runs
faster on a CPU than PyTorch's flash kernel at the lengths dianjing trains (bench/attention.py). The
models' own eager attention does that, with two costs that this version does not have:

- it copies K and V once per query head (`repeat_kv`, grouped-query attention). Here the query heads
  that share a KV head are stacked along the rows instead, so one product per KV head reads K and V
  where they are: `[B, kv, groups*L, D] @ [B, kv, D, L]`.
- its softmax upcasts to fp32, and autograd keeps that fp32 output ([B, heads, L, L], 4 bytes a score)
  for the backward, beside the bf16 copy that the ·V product keeps. Here the softmax is a function of
  its own that keeps only the output in the scores' dtype, and its backward computes in fp32 from it.
  In fp32 runs that is the same computation as before; in bf16 the backward reads probabilities
  rounded to bf16, as PyTorch's SDPA does.

Same outputs as the eager attention (bit for bit on the CPUs measured); gradients equal in fp32 and within
bf16 rounding in bf16 (tests/unit/models/test_attention.py). Registered with transformers under NAME, for the
attention and for its mask (the eager, additive one).
"""

from __future__ import annotations

import torch

NAME = "written_out"


class _Softmax(torch.autograd.Function):
    """softmax over the last dim, computed in fp32, returned in the input's dtype; the backward keeps
    only that output: dx = y * (dy - sum(dy * y))."""

    @staticmethod
    def forward(ctx, scores):
        y = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        yf, gf = y.float(), grad.float()
        return (yf * (gf - (gf * yf).sum(-1, keepdim=True))).to(grad.dtype)


def written_out(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                softcap: float | None = None, **kwargs):
    """transformers' attention interface: query [B, H, L, D], key and value [B, kv, Lk, D], an additive
    mask [B, 1 or H, L, Lk] or None. Returns the output [B, L, H, D] and the probabilities [B, H, L, Lk]."""
    b, h, n, d = query.shape
    kv, lk = key.shape[1], key.shape[2]
    g = h // kv
    if scaling is None:
        scaling = module.head_dim ** -0.5
    s = (query.reshape(b, kv, g * n, d) @ key.transpose(2, 3)) * scaling  # heads k*g .. k*g+g-1 share KV head k
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    s = s.view(b, kv, g, n, lk)
    if attention_mask is not None:
        m = attention_mask[:, :, :, :lk]
        s = s + (m[:, :, None] if m.shape[1] == 1 else m.reshape(b, kv, g, n, lk))
    p = _Softmax.apply(s)
    if dropout and module.training:
        p = torch.nn.functional.dropout(p, p=dropout)
    out = p.view(b, kv, g * n, lk) @ value
    return out.view(b, h, n, d).transpose(1, 2).contiguous(), p.view(b, h, n, lk)


def register() -> str:
    """Make NAME a transformers attention implementation (once per process; idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, written_out)
    AttentionMaskInterface.register(NAME, eager_mask)
    return NAME


def fits(model) -> bool:
    """Whether the model's own eager attention is the computation written_out() does, checked on it:
    both run on small random inputs through the model's first attention module (with whatever it holds:
    attention sinks, for one, would make them differ) and must agree."""
    import sys

    fn = getattr(sys.modules.get(type(model).__module__), "eager_attention_forward", None)
    module = next((m for m in model.modules() if hasattr(m, "num_key_value_groups") and hasattr(m, "head_dim")),
                  None)
    if fn is None or module is None:
        return False
    try:
        d, g = module.head_dim, module.num_key_value_groups
        w = next(module.parameters())
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, x, 5, d, generator=gen).to(w) for x in (2 * g, 2, 2))
        mask = torch.zeros(1, 1, 5, 5).masked_fill(torch.ones(5, 5).triu(1).bool(), -1e9).to(w)
        with torch.no_grad():
            want, _ = fn(module, q, k, v, mask, scaling=d ** -0.5)
            got, _ = written_out(module, q, k, v, mask, scaling=d ** -0.5)
    except Exception:  # an eager attention that needs more than this: keep it
        return False
    return want.shape == got.shape and torch.allclose(want.float(), got.float(), rtol=1e-3, atol=1e-3)
