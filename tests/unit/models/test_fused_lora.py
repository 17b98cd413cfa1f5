"""The folded LoRA layer ([x, s·xA] @ [W, B]^T) computes what PEFT's layer computes: the same output and
the same gradients for the input and both adapter matrices; layers it cannot fold run PEFT's forward."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from dianjing.models.fused_lora import LoRALinear, fold
from tests.tiny import build_model


def _layer(n_in=24, n_out=40, r=4, bias=True, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_out, n_in, generator=g, dtype=dtype)
    b = torch.randn(n_out, generator=g, dtype=dtype) if bias else None
    a = torch.randn(r, n_in, generator=g, dtype=dtype).requires_grad_()
    bb = torch.randn(n_out, r, generator=g, dtype=dtype).requires_grad_()
    return w, b, a, bb


@pytest.mark.parametrize("bias", [True, False])
def test_the_fold_has_peft_s_output_and_gradients_exactly_in_float64(bias):
    w, b, a, bb = _layer(bias=bias)
    x = torch.randn(3, 5, 24, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(3, 5, 40, dtype=torch.float64)
    ref = torch.nn.functional.linear(x, w, b) + (x @ a.t()) @ bb.t() * 2.5
    ref.backward(dy)
    want = [t.grad.clone() for t in (x, a, bb)]
    for t in (x, a, bb):
        t.grad = None
    y = LoRALinear.apply(x, w, b, a, bb, 2.5)
    y.backward(dy)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    for got, exp in zip((x.grad, a.grad, bb.grad), want):
        torch.testing.assert_close(got, exp, rtol=1e-12, atol=1e-12)


def test_gradcheck():
    w, b, a, bb = _layer(n_in=6, n_out=5, r=2)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a, bb: LoRALinear.apply(x, w, b, a, bb, 0.7), (x, a, bb))


def _peft(tmp_path, dropout=0.0, dtype=torch.bfloat16):
    folder = build_model(tmp_path / "m", kind="llama")
    base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    for p in base.parameters():
        p.requires_grad_(False)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules="all-linear"))
    for p in model.parameters():  # fp32 adapter weights over bf16 frozen ones, as dianjing trains them
        if p.requires_grad:
            p.data = p.data.float()
            if p.data.abs().max() == 0:  # B starts at zero: give it values so that it takes part
                p.data.normal_(0, 0.05, generator=torch.Generator().manual_seed(p.numel()))
    for m in model.modules():
        if hasattr(m, "cast_input_dtype_enabled"):
            m.cast_input_dtype_enabled = False
    return model


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids).logits.float()
    loss = out.square().mean()
    loss.backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_a_bf16_peft_model_folded_trains_as_peft_s_does(tmp_path):
    model = _peft(tmp_path)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    ref_out, ref_grads = _loss_and_grads(model, ids)
    folded = copy.deepcopy(model)
    n = fold(folded)
    assert n == sum(1 for m in model.modules() if type(m).__name__ == "Linear" and hasattr(m, "lora_A"))
    assert n > 0
    out, grads = _loss_and_grads(folded, ids)
    # one rounding to bf16 instead of two (the fold adds the update inside the GEMM): bf16-sized differences
    assert (out - ref_out).abs().max() <= 0.05 * ref_out.abs().max()
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        rel = (grads[k] - ref_grads[k]).norm() / ref_grads[k].norm()
        assert rel < 0.05, (k, rel.item())
    # and it did take the folded path: the layer's forward is ours, and its output is not PEFT's bit for bit
    assert not torch.equal(out, ref_out)


def test_layers_it_cannot_fold_run_peft_s_forward(tmp_path):
    with_dropout = _peft(tmp_path / "d", dropout=0.1)
    assert fold(with_dropout) == 0
    model = _peft(tmp_path / "p")
    ids = torch.randint(0, 100, (1, 7), generator=torch.Generator().manual_seed(2))
    fold(model)
    # fp32 input (an fp32 run): PEFT's forward, bit for bit
    fp32 = copy.deepcopy(model).float()
    ref = copy.deepcopy(fp32)
    for m in ref.modules():
        if "forward" in vars(m):
            del m.forward
    with torch.no_grad():
        assert torch.equal(fp32(input_ids=ids).logits, ref(input_ids=ids).logits)
    # adapters disabled: the base model's output, as PEFT's own layers give it
    peft_ref = copy.deepcopy(model)
    for m in peft_ref.modules():
        if "forward" in vars(m):
            del m.forward
    with torch.no_grad(), model.disable_adapter(), peft_ref.disable_adapter():
        off, want = model(input_ids=ids).logits, peft_ref(input_ids=ids).logits
    with torch.no_grad():
        on = model(input_ids=ids).logits
    assert torch.equal(off, want) and not torch.equal(off, on)
