"""The SFT loss: cross-entropy on the supervised tokens only.

The sparse path runs the transformer body, keeps the hidden states at the positions
whose next token is supervised, and applies the output layer there alone, in chunks,
computing the gradient in the same pass (the full [batch, length, vocab] logits
tensor never exists). With Gemma's 262k-word vocabulary the output layer over every
position is most of a step's work; over the answer tokens only it is a fraction.
The dense path (the model's own forward) is kept as the reference and as a fallback.
"""

from __future__ import annotations

import torch

from dianjing.train import softmax_xent
from dianjing.train.memory import huge_pages

CHUNK_ELEMENTS = 1 << 26  # logits computed per chunk: vocab × rows ≤ 64M floats (256 MB)
REUSE_CPU_BUFFERS = True  # False runs the accelerator branch (plain tensors per chunk) on the CPU: its test
# A right-padded batch runs without its padding mask. Its padding comes after every real token and no loss
# is taken there, so the causal mask alone gives every real position the same attention (and the same
# gradients). SDPA then runs its causal kernel, which skips the masked half of the products, instead of
# computing all of them under a materialised [batch, 1, L, L] mask (bench/attention.py).
DROP_RIGHT_PADDING_MASK = True
USE_KERNEL = True  # False runs the CPU branch's softmax in PyTorch (its test, and bench/output_layer.py's baseline)


def _buffer(blocks: dict, rows: int, cols: int, dtype: torch.dtype, slot: int, capacity: int) -> torch.Tensor:
    """A contiguous [rows, cols] view of a flat block of `capacity` elements, reused by every chunk of
    one call.

    Every chunk writes into the same block, so its pages are faulted in once per call instead of once
    per chunk (on CPU a fresh 256 MB tensor costs ~65k page faults, measured at ~0.25 s per chunk on
    SmolLM2). The blocks live for one call only: kept across steps they stayed resident through the
    body's backward, where a step's memory peaks, and cost ~0.4 GiB of Gemma's fp32 peak (3.17/3.30 →
    2.79/2.83 GiB, tokens/s unchanged within the VM's noise; bench/results/2026-12-03-epyc-avx2-logits-release-ab.txt)."""
    key = (dtype, slot)
    if key not in blocks:
        blocks[key] = torch.empty(capacity, dtype=dtype)
        huge_pages(blocks[key])
    return blocks[key][: rows * cols].view(rows, cols)


class FusedLinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(softcap(W h_i + b), y_i), with the gradients computed chunk by chunk in forward.

    Logits are laid out [vocab, rows] (W @ h^T), which measured ~1.4x faster than
    h @ W^T here, and live in reused blocks on CPU. There the softmax and its gradient run in
    dianjing's C kernel (softmax_xent.py: two passes over the chunk, in place, in the products'
    dtype); without it, in PyTorch, in an fp32 block beside the bf16 one.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, targets, softcap):
        n, vocab = h.shape[0], weight.shape[0]
        chunk = max(1, min(n, CHUNK_ELEMENTS // vocab))
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        dev = h.device
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=dev) if need_w else None
        grad_b = torch.zeros(vocab, dtype=torch.float32, device=dev) if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=dev)
        # on the CPU the logits live in reused blocks (page faults cost there); on a GPU the caching
        # allocator already reuses memory, and each chunk's tensors are plain allocations
        reuse = dev.type == "cpu" and REUSE_CPU_BUFFERS
        # on the CPU the softmax and its gradient run in dianjing's C kernel (two passes over the chunk,
        # no fp32 copy) where it could be built; a bias, rare in causal LMs, takes the PyTorch path
        kernel = reuse and USE_KERNEL and bias is None and softmax_xent.available()
        # bf16 frozen weights, or a bf16 body under autocast: the products run in bf16 (each
        # into its own reused block), the softmax in fp32
        cd = torch.bfloat16 if torch.bfloat16 in (weight.dtype, h.dtype) else torch.float32
        low = cd != torch.float32
        wc = weight.to(cd)
        cap = vocab * chunk  # the blocks are this call's: no larger than its biggest chunk
        blocks: dict = {}
        for s in range(0, n, chunk):
            hc, yc = h[s:s + chunk].to(cd), targets[s:s + chunk]  # the logits product and weight gradient share it
            m_ = hc.shape[0]
            cols = torch.arange(m_, device=dev)
            if kernel:
                zl = _buffer(blocks, vocab, m_, cd, 1, cap)
                torch.mm(wc, hc.t(), out=zl)
                need = need_h or need_w
                total += softmax_xent.xent_(zl, yc, softcap, grad=need).sum()
                if need_h:
                    grad_h[s:s + m_] = zl.t() @ wc
                if need_w:
                    grad_w += (zl @ hc).float()
                continue
            if reuse:
                z = _buffer(blocks, vocab, m_, torch.float32, 0, cap)
                zl = _buffer(blocks, vocab, m_, cd, 1, cap) if low else z
                torch.mm(wc, hc.t(), out=zl)
                if low:
                    z.copy_(zl)
            else:
                zl = torch.mm(wc, hc.t())
                z = zl.float() if low else zl
            if bias is not None:
                z += bias.float()[:, None]
            if softcap:
                z.div_(softcap).tanh_()
                t = _buffer(blocks, vocab, m_, torch.float32, 2, cap).copy_(z) if reuse else z.clone()
                z.mul_(softcap)
            z_y = z[yc, cols]
            mx = z.amax(0, keepdim=True)
            z.sub_(mx).exp_()
            denom = z.sum(0, keepdim=True)
            total += (mx[0] + denom[0].log() - z_y).sum()
            if not (need_h or need_w or need_b):
                continue
            z.div_(denom)  # softmax
            z[yc, cols] -= 1.0  # d loss / d logits
            if softcap:
                z.mul_(t.square_().neg_().add_(1.0))
            if need_b:
                grad_b += z.sum(1)
            g = zl.copy_(z) if low else z  # back into the bf16 block (or tensor): no new allocation
            if need_h:
                grad_h[s:s + m_] = g.t() @ wc
            if need_w:
                grad_w += (g @ hc).float()
        ctx.save_for_backward(*(x for x in (grad_h, grad_w, grad_b) if x is not None))
        ctx.has = (need_h, need_w, need_b)
        ctx.w_dtype, ctx.h_dtype = weight.dtype, h.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = list(ctx.saved_tensors)
        need_h, need_w, need_b = ctx.has
        gh = saved.pop(0) * grad_out.to(ctx.h_dtype) if need_h else None
        gw = (saved.pop(0) * grad_out).to(ctx.w_dtype) if need_w else None
        gb = (saved.pop(0) * grad_out).to(ctx.w_dtype) if need_b else None
        return gh, gw, gb, None, None


def right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row is its tokens then padding (no padding before or between them)."""
    a = attention_mask.bool()
    return bool(a[:, 0].all() and (a[:, 1:] <= a[:, :-1]).all())


def _parts(model):
    """The transformer body, the output layer and the logit soft-cap of a causal LM (or PEFT wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings()
    softcap = getattr(base.config, "final_logit_softcapping", None)
    return decoder, head, softcap


class SFTLoss:
    """Callable: batch → (sum of token losses, number of target tokens)."""

    def __init__(self, model, mode: str = "sparse", log=print):
        self.model = model
        self.mode = mode
        self.decoder, self.head, self.softcap = _parts(model)
        prompt_learning = getattr(getattr(model, "peft_config", {}).get("default", None), "is_prompt_learning", False)
        if mode == "sparse" and (self.decoder is None or self.head is None or prompt_learning):
            log("logits: dense (this model/adapter does not expose its body and output layer separately)")
            self.mode = "dense"
        elif mode == "sparse" and not self.verify():
            log("logits: dense (the sparse output layer did not reproduce this model's logits)")
            self.mode = "dense"

    @torch.no_grad()
    def verify(self) -> bool:
        """Check on a short random sequence that body + head reproduce the model's own logits."""
        vocab = self.head.weight.shape[0]
        ids = torch.randint(0, min(vocab, 1000), (1, 12), generator=torch.Generator().manual_seed(0))
        ids = ids.to(self.head.weight.device)  # the model's device (a GPU run checks on the GPU)
        ref = self.model(input_ids=ids).logits[0].float()
        h = self.decoder(input_ids=ids).last_hidden_state[0]
        z = self.head(h).float()
        if self.softcap:
            z = torch.tanh(z / self.softcap) * self.softcap
        return ref.shape == z.shape and torch.allclose(ref, z, atol=1e-3 * max(1.0, ref.abs().max().item()))

    def describe(self) -> str:
        """The log line: which logits path, and on the CPU which softmax."""
        if self.mode != "sparse":
            return f"logits: {self.mode}"
        if self.head.weight.device.type != "cpu" or not REUSE_CPU_BUFFERS:
            return "logits: sparse"
        softmax = softmax_xent.why() if USE_KERNEL else "PyTorch (USE_KERNEL off)"
        return f"logits: sparse, softmax in {softmax}"

    @staticmethod
    def where(batch: dict) -> dict:
        """How the body is told where each row's tokens are: a packed row's position ids (a padding mask
        would join its examples), nothing for right padding (DROP_RIGHT_PADDING_MASK), else the mask."""
        if "position_ids" in batch:
            return {"position_ids": batch["position_ids"]}
        if DROP_RIGHT_PADDING_MASK and right_padded(batch["attention_mask"]):
            return {}
        return {"attention_mask": batch["attention_mask"]}

    def __call__(self, batch: dict) -> tuple[torch.Tensor, int]:
        ids, mask = batch["input_ids"], batch["mask"]
        where = self.where(batch)
        tmask = mask[:, 1:]
        targets = ids[:, 1:][tmask]
        n = int(targets.numel())
        if self.mode == "sparse":
            h = self.decoder(input_ids=ids, use_cache=False, **where).last_hidden_state
            # the label bench/step_budget.py times the output layer by: its forward computes the gradients too
            with torch.profiler.record_function("dianjing::output_layer"):
                hs = h[:, :-1][tmask]
                w = self.head.weight
                b = getattr(self.head, "bias", None)
                loss = FusedLinearCrossEntropy.apply(hs, w, b, targets, self.softcap)
            return loss, n
        logits = self.model(input_ids=ids, use_cache=False, **where).logits
        with torch.profiler.record_function("dianjing::output_layer"):  # the head's products are in the model
            logits = logits[:, -ids.shape[1]:]  # prompt tuning prepends virtual tokens
            z = logits[:, :-1][tmask].float()
            return torch.nn.functional.cross_entropy(z, targets, reduction="sum"), n
