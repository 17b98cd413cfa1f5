"""Attention alone, forward + backward, at the shapes dianjing trains: which CPU path is fastest.

    python bench/attention.py                              # Gemma 3 270M: 4 heads, 1 KV head, head_dim 256, bf16
    python bench/attention.py --lengths 256 512 --batch 8 --repeat 3
    python bench/attention.py --heads 9 --kv-heads 3 --head-dim 64   # SmolLM2-135M

The step budget (bench/step_budget.py, 2026-12-01) put attention at 14% of a Gemma step, at 226 GFLOP/s of
useful (causal) work against a ~1,100 GFLOP/s bf16 peak. This bench times, for a batch of rows with padding
at the end (the length-grouped batches' shape: lengths spread over the last quarter of L):

  sdpa-mask    torch's scaled_dot_product_attention with the boolean causal + padding mask transformers
               builds (what a training step runs today);
  sdpa-causal  the same with is_causal=True and no mask (padding attended to: only a speed reference);
  math         the two products and a softmax written out (the full L x L, masked half included);
  math-compiled  the same under torch.compile: what model.attn_implementation auto runs inside dianjing's
               compiled blocks on a CPU (the model's eager attention, its mask and softmax fused by inductor);
  flex         torch.compile'd flex_attention with a causal + padding block mask, which skips fully masked
               blocks (the masked half) instead of computing them (no backward on the CPU in torch 2.13);
  written-out  dianjing's written-out attention (dianjing.models.attention: one product per KV head, a
               softmax that keeps only its output) with the additive mask, compiled with dynamic shapes as
               dianjing compiles its blocks: what model.attn_implementation auto runs on a CPU.

Useful FLOPs count the causal half only: 4 * B * H * L^2 / 2 * D forward, twice that backward. Outputs and
the query gradient are checked against sdpa-mask on the rows' real positions. Numbers from a loaded machine
are not figures: the load average is printed; measure on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from output_layer import timed  # bench/ is on the path when this file runs: best of `repeat` after a warm-up


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=1)
    ap.add_argument("--head-dim", type=int, default=256)
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--paths", nargs="+", default=["sdpa-mask", "sdpa-causal", "math", "math-compiled", "written-out", "flex"])
    args = ap.parse_args()
    dt = torch.bfloat16
    B, H, K, D = args.batch, args.heads, args.kv_heads, args.head_dim
    print(f"load average {os.getloadavg()[0]:.2f}, threads {torch.get_num_threads()}, torch {torch.__version__}",
          flush=True)
    out = []
    for L in args.lengths:
        g = torch.Generator().manual_seed(L)
        lengths = torch.randint(3 * L // 4, L + 1, (B,), generator=g)
        lengths[0] = L
        q0 = torch.randn(B, H, L, D, generator=g).to(dt)
        k0 = torch.randn(B, K, L, D, generator=g).to(dt)
        v0 = torch.randn(B, K, L, D, generator=g).to(dt)
        go = torch.randn(B, H, L, D, generator=g).to(dt)
        pos = torch.arange(L)
        valid = pos[None, :] < lengths[:, None]  # [B, L]
        mask = (pos[None, :, None] >= pos[None, None, :]) & valid[:, None, :]  # [B, Lq, Lk]: causal + padding
        mask = mask[:, None]  # [B, 1, Lq, Lk]
        useful = 4 * B * H * (L * L / 2) * D * 3  # causal half, forward + backward (2x)

        def rep(t):
            return t.repeat_interleave(H // K, dim=1)

        def sdpa_mask(q, k, v):
            return F.scaled_dot_product_attention(q, rep(k), rep(v), attn_mask=mask)

        def sdpa_causal(q, k, v):
            return F.scaled_dot_product_attention(q, rep(k), rep(v), is_causal=True)

        def math(q, k, v):
            s = (q @ rep(k).transpose(-1, -2)) * D ** -0.5
            s = s.float().masked_fill(~mask, float("-inf"))
            return s.softmax(-1).to(dt) @ rep(v)

        fns = {"sdpa-mask": sdpa_mask, "sdpa-causal": sdpa_causal, "math": math,
               "math-compiled": torch.compile(math, dynamic=False)}
        if "written-out" in args.paths:
            import types

            from dianjing.models.attention import written_out

            additive = torch.zeros(mask.shape, dtype=dt).masked_fill(~mask, torch.finfo(dt).min)
            module = types.SimpleNamespace(head_dim=D, training=True)

            def interface(q, k, v):  # q [B, H, L, D] in, out [B, L, H, D] as the model's code returns it
                return written_out(module, q, k, v, additive, scaling=D ** -0.5)[0].transpose(1, 2)

            fns["written-out"] = torch.compile(interface, dynamic=True)
        if "flex" in args.paths:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention

            def mask_mod(b, h, qi, ki):
                return (qi >= ki) & (ki < lengths[b])

            block = create_block_mask(mask_mod, B, None, L, L, device="cpu")
            compiled = torch.compile(flex_attention, dynamic=False)

            def flex(q, k, v):
                return compiled(q, k, v, block_mask=block, enable_gqa=K != H)

            fns["flex"] = flex
        ref = None
        for name in args.paths:
            fn = fns[name]

            def step():
                q = q0.clone().requires_grad_(True)
                k = k0.clone().requires_grad_(True)
                v = v0.clone().requires_grad_(True)
                o = fn(q, k, v)
                o.backward(go)
                return o.detach(), q.grad

            t0 = time.perf_counter()
            try:
                o, gq = step()
            except Exception as e:  # a path this torch cannot run: say so and go on
                print(f"L {L:4d}  {name:11s}: failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})", flush=True)
                continue
            first = time.perf_counter() - t0
            s = timed(step, args.repeat)
            sel = valid[:, None, :, None].expand_as(o)
            if ref is None:
                ref = (o, gq)
            do = ((o.float() - ref[0].float())[sel].norm() / ref[0].float()[sel].norm()).item()
            dg = ((gq.float() - ref[1].float())[sel].norm() / ref[1].float()[sel].norm()).item()
            row = {"L": L, "path": name, "seconds": round(s, 4), "first_call_s": round(first, 2),
                   "useful_gflops": round(useful / s / 1e9, 1), "out_rel_diff": do, "grad_q_rel_diff": dg}
            out.append(row)
            print(f"L {L:4d}  {name:11s}: {s * 1e3:8.1f} ms fwd+bwd, {row['useful_gflops']:6.1f} GFLOP/s useful "
                  f"(first call {first:.1f} s); against {args.paths[0]}: output {do:.1e}, query grad {dg:.1e}",
                  flush=True)
    print(json.dumps({"batch": B, "heads": H, "kv_heads": K, "head_dim": D, "runs": out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
