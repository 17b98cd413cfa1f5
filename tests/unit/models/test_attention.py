"""dianjing's written-out attention (model.attn_implementation: written_out) computes what the models' own
eager attention computes: grouped-query heads, additive masks (shared or per head), softcapping."""

import pytest
import torch
from transformers.models.gemma3 import modeling_gemma3
from transformers.models.llama import modeling_llama

from dianjing.models import attention
from dianjing.models.load import random_model
from tests.tiny import build_model


class _Module(torch.nn.Module):
    def __init__(self, heads, kv, d):
        super().__init__()
        self.head_dim, self.num_key_value_groups = d, heads // kv


def _inputs(dtype, b=2, h=6, kv=2, n=9, d=8, per_head=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, x, n, d, generator=g).to(dtype).requires_grad_() for x in (h, kv, kv))
    lengths = torch.tensor([n, n - 3])
    pos = torch.arange(n)
    ok = (pos[:, None] >= pos[None, :])[None] & (pos[None, None, :] < lengths[:, None, None])  # causal + padding
    mask = torch.zeros(b, 1, n, n).masked_fill(~ok[:, None], torch.finfo(dtype).min).to(dtype)
    if per_head:
        mask = mask.expand(b, h, n, n).clone()
        mask[:, 1::2, :, 0] = torch.finfo(dtype).min  # odd heads do not see the first token
    return q, k, v, mask, _Module(h, kv, d)


def _run(fn, q, k, v, mask, module, **kw):
    for t in (q, k, v):
        t.grad = None
    out, probs = fn(module, q, k, v, mask, scaling=0.3, **kw)
    out.float().square().sum().backward()
    return out.detach(), probs.detach(), [t.grad.clone() for t in (q, k, v)]


@pytest.mark.parametrize("per_head", [False, True])
def test_the_same_outputs_and_gradients_as_the_eager_attention_in_fp32(per_head):
    args = _inputs(torch.float32, per_head=per_head)
    want = _run(modeling_llama.eager_attention_forward, *args)
    got = _run(attention.written_out, *args)
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-6)
    for a, b in zip(got[2], want[2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert got[0].shape == (2, 9, 6, 8)  # [B, L, H, D], as the eager attention returns it


def test_softcap_as_gemma_computes_it():
    args = _inputs(torch.float32, h=4, kv=1)
    want = _run(modeling_gemma3.eager_attention_forward, *args, softcap=2.0)
    got = _run(attention.written_out, *args, softcap=2.0)
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
    for a, b in zip(got[2], want[2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    plain = _run(attention.written_out, *args)
    assert not torch.allclose(plain[0], got[0])  # the cap changed something


def test_bf16_forward_is_the_eager_one_and_gradients_agree_to_bf16_rounding():
    args = _inputs(torch.bfloat16, n=33, d=16)
    want = _run(modeling_llama.eager_attention_forward, *args)
    got = _run(attention.written_out, *args)
    torch.testing.assert_close(got[0].float(), want[0].float(), rtol=0.02, atol=0.02)
    for a, b in zip(got[2], want[2]):  # the backward reads bf16 probabilities instead of fp32 ones
        assert ((a.float() - b.float()).norm() / b.float().norm()) < 0.02


def test_a_tiny_model_trains_the_same_with_it(tmp_path):
    folder = build_model(tmp_path / "m", kind="llama")
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    out = {}
    for attn in ("eager", attention.NAME):
        torch.manual_seed(0)
        model = random_model(str(folder), torch.float32, attn=attn)
        assert model.config._attn_implementation == attn
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        out[attn] = (loss.item(), {n: p.grad for n, p in model.named_parameters()})
    assert out["eager"][0] == pytest.approx(out[attention.NAME][0], rel=1e-6)
    for n, g in out["eager"][1].items():
        torch.testing.assert_close(out[attention.NAME][1][n], g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_it_fits_the_plain_eager_attentions(tmp_path, kind):
    model = random_model(str(build_model(tmp_path / kind, kind=kind)), torch.float32)
    assert attention.fits(model)
    assert not attention.fits(torch.nn.Linear(2, 2))  # no eager attention in its module
