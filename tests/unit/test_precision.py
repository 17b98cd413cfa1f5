"""dianjing.precision: one decision of device, frozen/trained dtype and autocast per run."""

import pytest
import torch

from dianjing import peak, precision


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
    p = precision.for_training("bf16", full=True, device_setting="cpu")
    assert p.device.type == "cpu"
    w = torch.randn(8, 8)
    with p.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert (w @ w).dtype == torch.bfloat16
    monkeypatch.setattr(precision, "_BF16_FAST", None)
    precision.bf16_supported()  # measured on the CPU, CUDA not consulted


def test_auto_resolves_by_measurement(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda on=None: False)
    assert precision.resolve("auto") == torch.float32
    monkeypatch.setattr(precision, "bf16_supported", lambda on=None: True)
    assert precision.resolve("auto") == torch.bfloat16
    assert precision.resolve("fp32") == torch.float32
    assert precision.from_name("bfloat16") == precision.from_name("bf16") == torch.bfloat16


# -- the device decision (no GPU needed: CUDA's answers are faked) ---------------------------
class _FakeCuda:
    def __init__(self, monkeypatch, count=2, bf16=True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
        monkeypatch.setattr(torch.version, "cuda", "12.8")


def test_auto_picks_cuda_when_present_and_the_local_rank_picks_the_gpu(monkeypatch):
    _FakeCuda(monkeypatch)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert precision.device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's second process on this machine
    assert precision.device("auto") == torch.device("cuda", 1)
    assert precision.device("cuda") == torch.device("cuda", 1)
    assert precision.device("cuda:0") == torch.device("cuda", 0)  # an explicit index wins
    assert precision.device("cpu") == torch.device("cpu")
    # what config.yaml pins: the kind, so that a resumed run under torchrun again spreads over the GPUs
    assert precision.pinned("auto", torch.device("cuda", 1)) == "cuda"
    assert precision.pinned("cuda:0", torch.device("cuda", 0)) == "cuda:0"
    assert precision.pinned("auto", torch.device("cpu")) == "cpu"


def test_auto_is_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "_mps_available", lambda: False)
    assert precision.device("auto") == torch.device("cpu")
    monkeypatch.setattr(precision, "_mps_available", lambda: True)
    assert precision.device("auto") == torch.device("mps")


@pytest.mark.parametrize("setting,count,local,words", [
    ("cuda", 0, None, "cuda asked for"),
    ("cuda:2", 2, None, "GPU 2 asked for, but 2 GPU(s)"),
    ("auto", 2, "3", "LOCAL_RANK=3"),  # more processes than GPUs
    ("gpu", 1, None, "is not a device"),
    ("mps", 0, None, "no Apple GPU"),
])
def test_a_device_that_is_not_there_is_an_error_naming_the_key(monkeypatch, setting, count, local, words):
    _FakeCuda(monkeypatch, count=count)
    monkeypatch.setattr(precision, "_mps_available", lambda: False)
    if local:
        monkeypatch.setenv("LOCAL_RANK", local)
    else:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(precision.DianjingError) as e:
        precision.device(setting)
    assert "model.device" in str(e.value) and words in str(e.value) and e.value.fix


@pytest.mark.parametrize("bf16", [True, False])
def test_on_cuda_bf16_is_asked_of_the_gpu_and_autocast_is_cuda(monkeypatch, bf16):
    _FakeCuda(monkeypatch, bf16=bf16)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(peak, "matmul_gflops", lambda *a, **k: pytest.fail("measured the CPU for a GPU run"))
    p = precision.for_training("auto", full=True, device_setting="auto")
    assert p.device == torch.device("cuda", 0)
    assert p.dtype == (torch.bfloat16 if bf16 else torch.float32) and p.trained == torch.float32
    if bf16:
        assert p.autocast().device == "cuda" and p.autocast().fast_dtype == torch.bfloat16
    inf = precision.for_inference("auto", "cuda:1")
    assert inf.device == torch.device("cuda", 1) and inf.frozen == p.dtype and inf.autocast_dtype is None


def test_config_validates_model_device():
    from dianjing.config import RunConfig
    from pydantic import ValidationError

    assert RunConfig.model_validate({"model": {"device": "cuda:3"}}).model.device == "cuda:3"
    with pytest.raises(ValidationError):
        RunConfig.model_validate({"model": {"device": "gpu0"}})


def test_batches_move_to_the_device_and_stay_put_on_the_cpu():
    b = {"input_ids": torch.ones(2, 3, dtype=torch.long), "n": 3}
    assert precision.to_device(b, torch.device("cpu")) is b
    moved = precision.to_device(b, torch.device("meta"))
    assert moved["input_ids"].device.type == "meta" and moved["n"] == 3
