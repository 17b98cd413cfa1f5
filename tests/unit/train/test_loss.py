"""The sparse-logit loss equals the model's own dense loss, in value and in gradients."""

import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from dianjing.train import loss as loss_mod
from dianjing.train.loss import FusedLinearCrossEntropy, SFTLoss


def _batch(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (3, 17), generator=g)
    attn = torch.ones_like(ids)
    attn[1, 12:] = 0  # padding
    mask = torch.rand(3, 17, generator=g) > 0.4
    mask &= attn.bool()
    mask[:, 0] = False
    return {"input_ids": ids, "attention_mask": attn, "mask": mask}


def _branch(monkeypatch, branch):
    """kernel: the CPU branch with the C softmax (it must have been built: the test machine has a compiler);
    cpu: the CPU branch with PyTorch's softmax; accelerator: plain tensors per chunk."""
    monkeypatch.setattr(loss_mod, "REUSE_CPU_BUFFERS", branch != "accelerator")
    monkeypatch.setattr(loss_mod, "USE_KERNEL", branch == "kernel")
    if branch == "kernel":
        if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
            pytest.skip("no C compiler: the kernel cannot be built here")
        assert loss_mod.softmax_xent.available(), loss_mod.softmax_xent.why()
    calls = []
    real = loss_mod.softmax_xent.xent_
    monkeypatch.setattr(loss_mod.softmax_xent, "xent_", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _hf_loss(model, b):
    labels = b["input_ids"].masked_fill(~b["mask"], -100)
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=labels)
    return out.loss * int(b["mask"][:, 1:].sum())


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
@pytest.mark.parametrize("chunk_elements", [1 << 26, 1000])  # one chunk, and many (with a ragged tail)
@pytest.mark.parametrize("branch", ["kernel", "cpu", "accelerator"])
def test_sparse_equals_dense(request, fixture, chunk_elements, branch, monkeypatch):
    """Every branch of the fused loss: the CPU's reused blocks with the C softmax kernel and with
    PyTorch's, and the plain per-chunk tensors a GPU runs (exercised here on CPU tensors; the same
    code runs on CUDA, to the same tolerance)."""
    calls = _branch(monkeypatch, branch)
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", chunk_elements)
    path = request.getfixturevalue(fixture)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    b = _batch(model.config.vocab_size)
    sparse = SFTLoss(model, "sparse", log=lambda *_: None)
    assert sparse.mode == "sparse"
    if fixture == "tiny_gemma":
        assert sparse.softcap == 30.0  # the soft-capped path is the one under test

    ref = _hf_loss(model, b)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    got, n = sparse(b)
    got.backward()
    assert n == int(b["mask"][:, 1:].sum())
    torch.testing.assert_close(got, ref.detach(), rtol=1e-5, atol=1e-4)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name], rtol=1e-4, atol=1e-5)  # fp32 summation order
    assert bool(calls) == (branch == "kernel")  # the branch under test is the one that ran


def test_fused_ce_with_bias_matches_autograd():
    torch.manual_seed(0)
    h = torch.randn(7, 5, requires_grad=True)
    w = torch.randn(11, 5, requires_grad=True)
    bias = torch.randn(11, requires_grad=True)
    y = torch.randint(0, 11, (7,))
    FusedLinearCrossEntropy.apply(h, w, bias, y, None).backward()
    got = [t.grad.clone() for t in (h, w, bias)]
    for t in (h, w, bias):
        t.grad = None
    torch.nn.functional.cross_entropy(h @ w.t() + bias, y, reduction="sum").backward()
    for a, t in zip(got, (h, w, bias)):
        torch.testing.assert_close(a, t.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("branch", ["kernel", "cpu", "accelerator"])
def test_fused_ce_bf16_weights_both_branches_agree(branch, monkeypatch):
    """bf16 frozen weights with an fp32 body output: products in bf16, softmax in fp32, on every branch."""
    calls = _branch(monkeypatch, branch)
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", 64)
    torch.manual_seed(1)
    h = torch.randn(9, 16, requires_grad=True)
    w = torch.randn(13, 16).bfloat16()
    y = torch.randint(0, 13, (9,))
    got = FusedLinearCrossEntropy.apply(h, w, None, y, 30.0)
    got.backward()
    z = torch.tanh((h.bfloat16() @ w.t()).float() / 30.0) * 30.0
    h2 = h.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(torch.tanh((h2.bfloat16() @ w.t()).float() / 30.0) * 30.0, y,
                                            reduction="sum")
    ref.backward()
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(z, y, reduction="sum").detach(),
                               rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(h.grad, h2.grad, rtol=2e-2, atol=2e-2)  # the bf16 product of the gradient
    assert bool(calls) == (branch == "kernel")


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_a_packed_row_gives_the_padded_batchs_loss_and_gradients(request, fixture, impl):
    """Packing without padding keeps examples apart: the same loss and gradients as the padded batch
    (Gemma's sliding-window layers included), so no example attends to another."""
    from dianjing.data.batching import collate, collate_packed
    from dianjing.data.render import Rendered

    path = request.getfixturevalue(fixture)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation=impl)
    g = torch.Generator().manual_seed(5)
    exs = []
    for n in (9, 23, 14):  # the 23-token one is longer than Gemma's 16-token sliding window
        ids = torch.randint(4, model.config.vocab_size, (n,), generator=g).tolist()
        mask = [False] * 3 + (torch.rand(n - 3, generator=g) > 0.3).tolist()
        exs.append(Rendered(input_ids=ids, mask=mask))
    loss = SFTLoss(model, "sparse", log=lambda *_: None)
    padded, packed = collate(exs, 0), collate_packed(exs, 0)
    assert packed["input_ids"].shape == (1, 46)
    want, n1 = loss(padded)
    want.backward()
    ref = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    got, n2 = loss(packed)
    got.backward()
    assert n1 == n2 == int(padded["mask"][:, 1:].sum())
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-4)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[k], rtol=1e-4, atol=1e-5)
    # and with position ids that do not restart, the examples would see each other: the loss moves
    joined = dict(packed, position_ids=torch.arange(46)[None])
    assert abs(float(loss(joined)[0].detach()) - float(want.detach())) > 1e-2


def test_right_padding_is_recognised():
    from dianjing.train.loss import right_padded

    assert right_padded(torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]]))
    assert not right_padded(torch.tensor([[1, 1, 1], [0, 1, 1]]))  # left padding
    assert not right_padded(torch.tensor([[1, 0, 1]]))  # a hole


@pytest.mark.parametrize("left", [False, True])
def test_the_padding_mask_is_dropped_only_for_right_padding(tiny_llama, left, monkeypatch):
    """A right-padded batch reaches the body without its mask (SDPA's causal kernel); a left-padded one keeps
    it (there the padding comes before real tokens and would be attended). Both give the masked loss."""
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    b = _batch(model.config.vocab_size)
    if left:  # move row 1's padding to the front
        n = int(b["attention_mask"][1].sum())
        for key in ("input_ids", "attention_mask", "mask"):
            b[key][1] = torch.cat([b[key][1, n:], b[key][1, :n]])
    fn = SFTLoss(model, "sparse", log=lambda *_: None)
    seen = []
    real = fn.decoder.forward
    monkeypatch.setattr(fn.decoder, "forward", lambda *a, **k: seen.append("attention_mask" in k) or real(*a, **k))
    got, _ = fn(b)
    assert seen == [left]
    if not left:
        torch.testing.assert_close(got, _hf_loss(model, b).detach(), rtol=1e-5, atol=1e-4)
