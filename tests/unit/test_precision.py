"""dianjing.precision: one decision of device, frozen/trained dtype and autocast per run."""

import pytest
import torch

from dianjing import precision


@pytest.mark.parametrize("setting,full,compute,head,frozen,autocast", [
    ("fp32", False, "bf16", False, torch.float32, None),
    ("fp32", True, "bf16", True, torch.float32, None),
    ("bf16", False, "fp32", False, torch.bfloat16, None),  # PEFT's own fp32 adapter products
    ("bf16", False, "bf16", False, torch.bfloat16, torch.bfloat16),
    ("bf16", True, "fp32", False, torch.bfloat16, torch.bfloat16),  # full: fp32 masters under autocast
    ("bf16", False, "fp32", True, torch.bfloat16, torch.bfloat16),  # an fp32 specialist head
])
def test_training_rules(setting, full, compute, head, frozen, autocast):
    p = precision.for_training(setting, full=full, adapter_compute=compute, fp32_head=head)
    assert p.frozen == frozen and p.trained == torch.float32 and p.autocast_dtype == autocast
    assert p.name == setting and p.dtype == frozen
    assert p.load_dtype(trains_base=full) == (torch.float32 if full else frozen)


def test_inference_has_no_autocast_and_one_dtype():
    p = precision.for_inference("bf16")
    assert p.frozen == p.trained == torch.bfloat16 and p.autocast_dtype is None
    with p.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_autocast_follows_the_device_not_the_presence_of_cuda(monkeypatch):
    """The bug: autocast picked 'cuda' whenever CUDA existed while the tensors stayed on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: pytest.fail("asked CUDA"))
    p = precision.for_training("bf16", full=True)
    assert p.device.type == "cpu"
    w = torch.randn(8, 8)
    with p.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert (w @ w).dtype == torch.bfloat16
    monkeypatch.setattr(precision, "_BF16_FAST", None)
    precision.bf16_supported()  # measured on the CPU, CUDA not consulted


def test_auto_resolves_by_measurement(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda: False)
    assert precision.resolve("auto") == torch.float32
    monkeypatch.setattr(precision, "bf16_supported", lambda: True)
    assert precision.resolve("auto") == torch.bfloat16
    assert precision.resolve("fp32") == torch.float32
    assert precision.from_name("bfloat16") == precision.from_name("bf16") == torch.bfloat16
