"""dianjing's C softmax cross-entropy kernel: the same losses and gradients as PyTorch, and a clear
fallback (with its reason) where it cannot be built."""

import shutil

import pytest
import torch

from dianjing.train import softmax_xent as sx

needs_cc = pytest.mark.skipif(not any(shutil.which(c) for c in ("cc", "gcc", "clang")),
                              reason="no C compiler: the kernel cannot be built here (the fallback is tested below)")


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A kernel state of its own, built into a temporary cache."""
    monkeypatch.setattr(sx, "_STATE", {})
    monkeypatch.setenv("DIANJING_CACHE", str(tmp_path))
    return tmp_path


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cap", [None, 30.0])
@pytest.mark.parametrize("shape,threads", [((1000, 37), 2), ((1003, 1), 3), ((17, 5), 1), ((4099, 64), 2)])
def test_losses_and_gradients_equal_pytorchs(dtype, cap, shape, threads, monkeypatch):
    """Vocabularies that are not a multiple of the C code's block, one row, more threads than blocks."""
    assert sx.available(), sx.why()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    g = torch.Generator().manual_seed(shape[0])
    z = (torch.randn(*shape, generator=g) * 6).to(dtype)
    y = torch.randint(0, shape[0], (shape[1],), generator=g)
    ref_loss, ref_grad = sx._reference(z, y, cap or 0.0)
    got = z.clone()
    loss = sx.xent_(got, y, cap, grad=True)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-4)
    tol = 1e-5 if dtype == torch.float32 else 8e-3  # bf16 stores the gradient in 8 bits of mantissa
    torch.testing.assert_close(got.float(), ref_grad.to(dtype).float(), rtol=tol, atol=tol * 1e-2)
    # the gradients of a column sum to zero (softmax minus one-hot), up to the soft-cap's factor
    if cap is None and dtype == torch.float32:
        assert got.sum(0).abs().max() < 1e-5


@needs_cc
def test_loss_only_leaves_the_logits_alone():
    assert sx.available(), sx.why()
    z = torch.randn(300, 8).bfloat16()
    before = z.clone()
    sx.xent_(z, torch.randint(0, 300, (8,)), 30.0, grad=False)
    assert torch.equal(z, before)


@needs_cc
def test_extreme_logits_stay_finite():
    """A dominant logit (softmax 1 - tiny) and very negative ones: no inf or nan from the exp's range."""
    z = torch.full((500, 3), -1e4)
    z[7] = 1e4
    y = torch.tensor([7, 3, 499])
    loss = sx.xent_(z.clone(), y, None, grad=False)
    assert torch.isfinite(loss).all()
    assert loss[0] == 0 and loss[1] == pytest.approx(2e4, rel=1e-6)


@needs_cc
def test_built_once_into_the_cache_then_reused(fresh):
    assert sx.available(), sx.why()
    assert "C kernel" in sx.why()
    built = list((fresh / "kernels").glob("softmax_xent-*.so"))
    assert len(built) == 1
    mtime = built[0].stat().st_mtime_ns
    sx._STATE.clear()
    assert sx.available()
    assert built[0].stat().st_mtime_ns == mtime  # loaded, not rebuilt


@needs_cc
def test_the_first_check_can_run_inside_the_losss_own_forward(fresh):
    """The first call of the fused loss builds and checks the kernel inside an autograd forward, where grad
    mode is off; the check's PyTorch reference switches it on for itself (it used to raise there)."""
    with torch.no_grad():
        assert sx.available(), sx.why()
    assert "C kernel" in sx.why()


def test_switched_off_by_the_environment(fresh, monkeypatch):
    monkeypatch.setenv("DIANJING_SOFTMAX_KERNEL", "0")
    assert not sx.available()
    assert sx.why() == "PyTorch (DIANJING_SOFTMAX_KERNEL=0)"


def test_no_compiler_falls_back_and_says_so(fresh, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert not sx.available()
    assert "no C compiler" in sx.why()


def test_a_failing_build_falls_back_and_says_why(fresh, monkeypatch, tmp_path):
    cc = tmp_path / "bad-cc"
    cc.write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo bad-cc 1.0; exit 0; }\necho 'bad-cc: cannot build' >&2; exit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    assert not sx.available()
    assert "failed: bad-cc: cannot build" in sx.why()
    assert not list((fresh / "kernels").glob("*"))  # nothing half-written left behind


@needs_cc
def test_a_kernel_that_disagrees_with_pytorch_is_not_used(fresh, monkeypatch):
    """The check before first use: a kernel whose numbers are wrong is refused, and the log says so."""
    real = sx._run

    def wrong(lib, z, y, cap, grad, threads):
        return real(lib, z, y, cap, grad, threads) + 0.5

    monkeypatch.setattr(sx, "_run", wrong)
    assert not sx.available()
    assert "losses differ from PyTorch's" in sx.why()


def test_the_loss_logs_which_softmax_it_uses(tiny_llama, monkeypatch):
    from transformers import AutoModelForCausalLM

    from dianjing.train import loss as loss_mod

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    fn = loss_mod.SFTLoss(model, "sparse", log=lambda *_: None)
    assert fn.describe() == f"logits: sparse, softmax in {sx.why()}"
    monkeypatch.setattr(loss_mod, "USE_KERNEL", False)
    assert fn.describe() == "logits: sparse, softmax in PyTorch (USE_KERNEL off)"
    assert loss_mod.SFTLoss(model, "dense", log=lambda *_: None).describe() == "logits: dense"


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_results_do_not_depend_on_the_thread_count(dtype, monkeypatch):
    """A torchrun rank runs fewer threads than one process: the same logits must give bit-identical losses
    and gradients, or a two-process run drifts from the one-process run it must match."""
    assert sx.available(), sx.why()
    g = torch.Generator().manual_seed(3)
    z = (torch.randn(3 * sx.PART + 100, 9, generator=g) * 5).to(dtype)
    y = torch.randint(0, z.shape[0], (9,), generator=g)
    out = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        zz = z.clone()
        out.append((sx.xent_(zz, y, 30.0, grad=True), zz))
    for loss, grad in out[1:]:
        assert torch.equal(loss, out[0][0]) and torch.equal(grad, out[0][1])
