"""The output layer alone: where its time goes, and what the chunk size and a fused softmax would change.

    python bench/output_layer.py                          # Gemma 3 270M's shapes: vocab 262,144, hidden 640, bf16, cap 30
    python bench/output_layer.py --rows 512 2048 --chunks 24 25 26 27 --repeat 3
    python bench/output_layer.py --vocab 49152 --hidden 576 --softcap 0   # SmolLM2-135M's

The sparse SFT loss (src/dianjing/train/loss.py, FusedLinearCrossEntropy) computes the logits of the supervised
rows chunk by chunk, laid out [vocab, rows], with the gradient in the same pass: a bf16 product, the softmax
and its gradient in fp32 (a bf16 → fp32 copy, max, exp, sum, divide, the −1 at the targets, a copy back to
bf16) and a second bf16 product for the input gradient. This bench runs that function on random weights and
hidden states of a model's shapes, for several chunk sizes (CHUNK_ELEMENTS = 2^k logits per chunk), and
splits one chunk's time into the two products and the elementwise softmax work, beside the same products at
the machine's measured matmul peak (dianjing.peak). Each size runs both softmax paths of loss.py: PyTorch's
passes over an fp32 copy, and dianjing's C kernel (src/dianjing/train/softmax_xent.c: two passes over the bf16
block); each row is checked against the first (loss and input gradient, relative). --fused adds the variant
measured and dropped on 2026-12-01: the softmax and its gradient in one torch.compile'd function.

Numbers from a loaded machine are not figures: the load average is printed; measure on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from dianjing.train import loss as L  # noqa: E402


def timed(fn, repeat: int) -> float:
    """Best of `repeat` wall times of fn() (after one warm-up call), seconds."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def parts(w: torch.Tensor, h: torch.Tensor, y: torch.Tensor, repeat: int, softmax: str, cap: float | None) -> dict:
    """One chunk's pieces, timed apart: the logits product, the input-gradient product, the elementwise work
    (the softmax and its gradient, as loss.py runs them: in PyTorch, or in the C kernel)."""
    vocab, m = w.shape[0], h.shape[0]
    zl = torch.empty(vocab, m, dtype=w.dtype)
    z = torch.empty(vocab, m, dtype=torch.float32)
    t = torch.empty(vocab, m, dtype=torch.float32)
    cols = torch.arange(m)
    t_logits = timed(lambda: torch.mm(w, h.t(), out=zl), repeat)

    def elementwise():  # loss.py's PyTorch path, pass for pass
        z.copy_(zl)
        if cap:
            z.div_(cap).tanh_()
            t.copy_(z)
            z.mul_(cap)
        z[y, cols]
        mx = z.amax(0, keepdim=True)
        z.sub_(mx).exp_()
        denom = z.sum(0, keepdim=True)
        z.div_(denom)
        z[y, cols] -= 1.0
        if cap:
            z.mul_(t.square_().neg_().add_(1.0))
        zl.copy_(z)

    def kernel():
        L.softmax_xent.xent_(zl, y, cap, grad=True)

    torch.mm(w, h.t(), out=zl)
    t_elem = timed(kernel if softmax == "kernel" else elementwise, repeat)
    g = zl
    t_grad = timed(lambda: g.t() @ w, repeat)
    return {"logits_product_s": t_logits, "elementwise_s": t_elem, "input_grad_product_s": t_grad}


def fused_softmax_grad():
    """(bf16 logits [vocab, m], targets [m]) → (sum of losses, bf16 d loss / d logits), compiled: the reductions
    and the gradient read the bf16 block and write the bf16 gradient without an fp32 copy of it."""
    def f(zl: torch.Tensor, y: torch.Tensor):
        z = zl.float()
        mx = z.amax(0, keepdim=True)
        e = (z - mx).exp()
        denom = e.sum(0, keepdim=True)
        rows = torch.arange(z.shape[0], device=z.device)[:, None]
        hit = rows == y[None, :]
        z_y = (z * hit).sum(0)
        loss = (mx[0] + denom[0].log() - z_y).sum()
        g = (e / denom - hit.to(z.dtype)).to(zl.dtype)
        return loss, g
    return torch.compile(f, dynamic=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=262144)
    ap.add_argument("--hidden", type=int, default=640)
    ap.add_argument("--rows", type=int, nargs="+", default=[1024], help="supervised rows per call (default 1024)")
    ap.add_argument("--chunks", type=int, nargs="+", default=[25, 26, 27],
                    help="CHUNK_ELEMENTS as powers of two (default 25 26 27; the loss uses 26)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16",
                    help="the weights' and hidden states' dtype (default bf16; fp32 is what precision auto trains in "
                         "where bf16 products are not faster, e.g. an AVX2-only CPU)")
    ap.add_argument("--softcap", type=float, default=30.0,
                    help="the logit soft-cap (default 30, Gemma 3's final_logit_softcapping; 0 for none)")
    ap.add_argument("--softmax", nargs="+", choices=["pytorch", "kernel"], default=["pytorch", "kernel"],
                    help="the softmax paths to time (default both: loss.py's PyTorch passes and the C kernel)")
    ap.add_argument("--fused", action="store_true",
                    help="also time the torch.compile'd softmax variant (measured 1.6-2.3x slower on 2026-12-01 and "
                         "dropped; it has no soft-cap, so it needs --softcap 0)")
    args = ap.parse_args()
    cap = args.softcap or None
    if "kernel" in args.softmax:
        print(f"softmax kernel: {L.softmax_xent.why()}", flush=True)

    from dianjing.peak import matmul_peak

    torch.manual_seed(0)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    peak = matmul_peak(torch.device("cpu"), dtype)
    peak_gflops = peak.gflops
    print(f"load average {os.getloadavg()[0]:.2f}, threads {torch.get_num_threads()}, {args.dtype} matmul peak "
          f"{peak_gflops:.0f} GFLOP/s", flush=True)
    w = (torch.randn(args.vocab, args.hidden) * 0.02).to(dtype)
    out = {"vocab": args.vocab, "hidden": args.hidden, "dtype": args.dtype, "peak_gflops": peak_gflops, "runs": []}
    for n in args.rows:
        h = torch.randn(n, args.hidden, dtype=dtype, requires_grad=True)
        y = torch.randint(0, args.vocab, (n,))
        flops = 2 * 2 * args.vocab * args.hidden * n  # logits product + input-gradient product
        ref = None
        for k in args.chunks:
            for softmax in args.softmax:
                L.CHUNK_ELEMENTS = 1 << k
                L.USE_KERNEL = softmax == "kernel"

                def call():
                    return L.FusedLinearCrossEntropy.apply(h, w, None, y, cap)

                s = timed(call, args.repeat)
                loss = call()
                loss.backward()
                if ref is None:
                    ref = (loss.item(), h.grad.clone())
                rel_loss = abs(loss.item() - ref[0]) / abs(ref[0])
                rel_grad = ((h.grad.float() - ref[1].float()).norm() / ref[1].float().norm()).item()
                h.grad = None
                rows_per_chunk = max(1, min(n, (1 << k) // args.vocab))
                piece = parts(w, h.detach()[:rows_per_chunk], y[:rows_per_chunk], args.repeat, softmax, cap)
                chunks = -(-n // rows_per_chunk)
                row = {"rows": n, "chunk_log2": k, "softmax": softmax, "rows_per_chunk": rows_per_chunk,
                       "seconds": round(s, 4), "gflops": round(flops / s / 1e9, 1),
                       "at_peak_s": round(flops / (peak_gflops * 1e9), 4),
                       **{key: round(v * chunks, 4) for key, v in piece.items()},
                       "loss_rel_diff": rel_loss, "grad_rel_diff": rel_grad}
                out["runs"].append(row)
                print(f"rows {n:5d}  chunk 2^{k} ({rows_per_chunk:4d} rows), softmax {softmax:7s}: {s:.3f} s, "
                      f"{row['gflops']:.0f} GFLOP/s of products (at peak {row['at_peak_s']:.3f} s); per call: logits "
                      f"product {row['logits_product_s']:.3f} s, elementwise {row['elementwise_s']:.3f} s, input-grad "
                      f"product {row['input_grad_product_s']:.3f} s; against the first row: loss {rel_loss:.1e}, "
                      f"input gradient {rel_grad:.1e} relative", flush=True)
        if args.fused and cap is None:
            L.CHUNK_ELEMENTS = 1 << 26
            f = fused_softmax_grad()
            m = max(1, min(n, (1 << 26) // args.vocab))
            zl = torch.empty(args.vocab, m, dtype=torch.bfloat16)
            hd = h.detach()
            t0 = time.perf_counter()

            def fused_call():
                total = torch.zeros(())
                gh = torch.empty_like(hd)
                for s0 in range(0, n, m):
                    hc, yc = hd[s0:s0 + m], y[s0:s0 + m]
                    zc = torch.mm(w, hc.t(), out=zl[:, :hc.shape[0]]) if hc.shape[0] == m else torch.mm(w, hc.t())
                    lo, g = f(zc, yc)
                    total += lo
                    gh[s0:s0 + hc.shape[0]] = g.t() @ w
                return total, gh

            fused_call()
            compile_s = time.perf_counter() - t0
            s = timed(fused_call, args.repeat)
            lo, gh = fused_call()
            rel_loss = abs(lo.item() - ref[0]) / abs(ref[0])
            rel_grad = ((gh.float() - ref[1].float()).norm() / ref[1].float().norm()).item()
            row = {"rows": n, "variant": "fused softmax (torch.compile)", "seconds": round(s, 4),
                   "compile_s": round(compile_s, 1), "loss_rel_diff": rel_loss, "grad_rel_diff": rel_grad}
            out["runs"].append(row)
            print(f"rows {n:5d}  fused softmax, chunk 2^26: {s:.3f} s (first call with compile {compile_s:.1f} s); "
                  f"against the reference: loss {rel_loss:.1e}, input gradient {rel_grad:.1e} relative", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
