"""One device: the inference loaders put the model where dianjing.precision decides, and generation
and scoring create every tensor on the model's device, never on torch's default one.

This machine has no GPU, so the second half is checked two ways that can fail on the CPU:
- torch's default device is set to 'meta' while a CPU model generates: a tensor created without
  naming a device would land on meta, and a forward pre-hook refuses any input that is not on the
  model's device (without it, such input would be read as garbage);
- the model itself is moved to 'meta' (eager attention, which needs no data): the KV batch and its
  mask must follow it there.
"""

from __future__ import annotations

import pytest
import torch

from dianjing import precision
from dianjing.errors import DianjingError
from dianjing.generalist.score import option_logprobs
from dianjing.infer.generate import (SamplingParams, decode_step, generate_batch, merge, model_device, prefill,
                                     stream)
from dianjing.infer.load import load_run
from dianjing.infer.models import load_models

QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def lm(tiny_llama):
    model, tok, _ = load_run(tiny_llama, precision="fp32", device="cpu", **QUIET)
    return model, tok


def _prompts(tok) -> list[list[int]]:
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    # different lengths: left padding, and rows that finish early leave the batch (select, trim)
    return [enc("USER: What is the capital of France? The quick brown fox\nAI:"), enc("USER: hi\nAI:"), enc("1 + 2 =")]


class InputsOnModelDevice:
    """A forward pre-hook that fails at once when a tensor argument is not on the model's device."""

    def __init__(self, model):
        self.device = next(model.parameters()).device
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, _module, args, kwargs):
        self.calls += 1
        for name, value in [*enumerate(args), *kwargs.items()]:
            if isinstance(value, torch.Tensor) and value.device != self.device:
                raise AssertionError(f"{name} is on {value.device}, the model on {self.device}")


def _everything(model, tok) -> tuple:
    prompts = _prompts(tok)
    greedy = SamplingParams(max_new_tokens=10, temperature=0)
    sampled = SamplingParams(max_new_tokens=10, temperature=0.9, top_p=0.8, seed=3)
    batch, last = prefill(model, prompts[:2], tok.pad_token_id)
    conts = [[tok(" Paris is", add_special_tokens=False)["input_ids"], [5]], [[7, 8, 9]]]
    return (list(stream(model, tok, prompts[0], greedy)), list(stream(model, tok, prompts[1], sampled)),
            generate_batch(model, tok, prompts, greedy), generate_batch(model, tok, prompts, sampled),
            option_logprobs(model, batch, last, conts, tok.pad_token_id, max_rows=2))


def test_generation_and_scoring_create_no_tensor_off_the_models_device(lm):
    model, tok = lm
    want = _everything(model, tok)
    hook = InputsOnModelDevice(model)
    try:
        with torch.device("meta"):  # anything made without a device lands here, off the (CPU) model's device
            got = _everything(model, tok)
    finally:
        hook.handle.remove()
    assert hook.calls > 10  # the check ran on every forward pass (prefill, decode steps, option rows)
    assert got == want  # and the CPU results are unchanged, bit for bit


def test_the_kv_batch_follows_a_model_on_another_device(tiny_llama):
    model, tok, _ = load_run(tiny_llama, precision="fp32", device="cpu", **QUIET)
    model.config._attn_implementation = "eager"  # the sdpa mask path reads values, which meta tensors lack
    model.to("meta")
    assert model_device(model) == torch.device("meta")
    a, logits = prefill(model, _prompts(tok)[:2], tok.pad_token_id)
    b, _ = prefill(model, _prompts(tok)[2:], tok.pad_token_id)
    assert a.mask.device.type == "meta" and logits.device.type == "meta"
    assert all(layer.keys.device.type == "meta" for layer in a.cache.layers)
    out = decode_step(model, a, [5, 6])
    assert out.shape[0] == 2 and a.mask.device.type == "meta"
    joined = merge(a, b)
    assert joined.rows == 3 and joined.mask.device.type == "meta"


def test_model_device_of_a_module_without_a_device_attribute():
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert model_device(torch.nn.Identity()) == torch.device("cpu")  # no parameters: the host


def test_load_run_returns_the_model_on_the_cpu_when_asked(lm):
    model, _ = lm
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def _elsewhere(monkeypatch) -> list[str]:
    """precision.device answers 'meta' (standing in for a GPU) and records what it was asked."""
    asked = []

    def fake(setting="auto", key="model.device"):
        asked.append(setting)
        return torch.device("meta")

    monkeypatch.setattr(precision, "device", fake)
    return asked


def test_load_run_moves_the_model_to_the_device_precision_decides(tiny_llama, monkeypatch):
    asked = _elsewhere(monkeypatch)
    model, _, _ = load_run(tiny_llama, precision="fp32", device="cuda:1", **QUIET)
    assert asked == ["cuda:1"]
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_load_models_moves_the_served_model(tiny_llama, monkeypatch):
    asked = _elsewhere(monkeypatch)
    models = load_models([str(tiny_llama)], precision="fp32", device="cuda", **QUIET)
    assert set(asked) == {"cuda"}
    assert {p.device.type for p in models.model.parameters()} == {"meta"}


@pytest.mark.parametrize("loader", [load_run, lambda path, **kw: load_models([path], **kw)])
def test_a_missing_gpu_fails_before_anything_is_read(loader, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DianjingError) as e:
        loader(str(tmp_path / "does-not-exist"), precision="fp32", device="cuda", **QUIET)
    assert "--device: cuda asked for" in str(e.value) and e.value.fix  # not "does not exist": nothing was read
