"""model.attn_implementation auto: SDPA, switched to the model's written-out (eager) attention where the
blocks are compiled on a CPU and rows are short; the two give the same outputs and gradients."""

import torch
from transformers import AutoModelForCausalLM

from dianjing.train.sft import WRITTEN_OUT_MAX_LENGTH, load_attention, written_out_attention
from tests.tiny import build_model


def _model(tmp_path, attn="sdpa"):
    folder = build_model(tmp_path / "m", kind="gemma3")
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation=attn)


def test_auto_loads_with_sdpa_and_a_setting_is_passed_through():
    assert load_attention("auto") == "sdpa" and load_attention("eager") == "eager"
    assert load_attention("flex_attention") == "flex_attention"


def test_compiled_cpu_blocks_switch_to_the_written_out_attention(tmp_path):
    said = []
    model = _model(tmp_path)
    cpu = torch.device("cpu")
    assert written_out_attention(model, False, cpu, 512, said.append) == "sdpa"  # not compiled: SDPA
    assert written_out_attention(model, True, cpu, WRITTEN_OUT_MAX_LENGTH + 1, said.append) == "sdpa"  # long rows
    assert model.config._attn_implementation == "sdpa" and not said
    assert written_out_attention(model, True, cpu, 512, said.append) == "eager"
    assert model.config._attn_implementation == "eager"
    assert len(said) == 1 and "eager" in said[0] and "auto" in said[0]
    assert written_out_attention(model, True, torch.device("meta"), 512, said.append) == "eager"  # already chosen


def test_a_gpu_keeps_sdpa(tmp_path):
    model = _model(tmp_path)
    assert written_out_attention(model, True, torch.device("meta"), 512, print) == "sdpa"
    assert model.config._attn_implementation == "sdpa"


def test_the_written_out_attention_trains_as_sdpa_does(tmp_path):
    ids = torch.randint(0, 100, (2, 11), generator=torch.Generator().manual_seed(0))
    out = {}
    for attn in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = _model(tmp_path / attn)
        if attn == "eager":
            written_out_attention(model, True, torch.device("cpu"), 512, lambda *_: None)
            assert model.config._attn_implementation == "eager"
        logits = model(input_ids=ids).logits
        logits.square().mean().backward()
        out[attn] = (logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(out["eager"][0], out["sdpa"][0], rtol=1e-4, atol=1e-5)
    for n, g in out["sdpa"][1].items():
        torch.testing.assert_close(out["eager"][1][n], g, rtol=1e-3, atol=1e-5)
