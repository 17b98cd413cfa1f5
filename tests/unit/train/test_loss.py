"""The sparse-logit loss equals the model's own dense loss, in value and in gradients."""

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


def _hf_loss(model, b):
    labels = b["input_ids"].masked_fill(~b["mask"], -100)
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=labels)
    return out.loss * int(b["mask"][:, 1:].sum())


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
@pytest.mark.parametrize("chunk_elements", [1 << 26, 1000])  # one chunk, and many (with a ragged tail)
def test_sparse_equals_dense(request, fixture, chunk_elements, monkeypatch):
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
