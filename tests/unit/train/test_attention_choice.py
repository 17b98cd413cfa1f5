"""model.attn_implementation auto: SDPA, switched to dianjing's written-out attention where the blocks are
compiled on a CPU and rows are short (the model's eager code where its attention takes other inputs); they
give the same outputs and gradients."""

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
    assert load_attention("written_out") == "written_out"


def test_compiled_cpu_blocks_switch_to_the_written_out_attention(tmp_path):
    said = []
    model = _model(tmp_path)
    cpu = torch.device("cpu")
    assert written_out_attention(model, False, cpu, 512, said.append) == "sdpa"  # not compiled: SDPA
    assert written_out_attention(model, True, cpu, WRITTEN_OUT_MAX_LENGTH + 1, said.append) == "sdpa"  # long rows
    assert model.config._attn_implementation == "sdpa" and not said
    assert written_out_attention(model, True, cpu, 512, said.append) == "written_out"
    assert model.config._attn_implementation == "written_out"
    assert len(said) == 1 and "written_out" in said[0] and "auto" in said[0]
    assert written_out_attention(model, True, torch.device("meta"), 512, said.append) == "written_out"  # chosen


def test_a_model_whose_eager_attention_takes_more_keeps_its_own(tmp_path, monkeypatch):
    from dianjing.models import attention

    model = _model(tmp_path)
    attn = model.model.layers[0].self_attn
    attn.sinks = torch.nn.Parameter(torch.zeros(attn.config.num_attention_heads))

    def with_sinks(module, query, key, value, attention_mask, scaling=None, **kw):  # gpt-oss's kind
        s = (query @ modeling.repeat_kv(key, module.num_key_value_groups).transpose(2, 3)) * scaling
        s = torch.cat([s + attention_mask, module.sinks.view(1, -1, 1, 1).expand(*s.shape[:3], 1)], -1)
        p = s.softmax(-1)[..., :-1]
        return (p @ modeling.repeat_kv(value, module.num_key_value_groups)).transpose(1, 2), p

    from transformers.models.gemma3 import modeling_gemma3 as modeling

    monkeypatch.setattr(modeling, "eager_attention_forward", with_sinks)
    assert not attention.fits(model)
    assert written_out_attention(model, True, torch.device("cpu"), 512, lambda *_: None) == "eager"
    assert model.config._attn_implementation == "eager"


def test_a_gpu_keeps_sdpa(tmp_path):
    model = _model(tmp_path)
    assert written_out_attention(model, True, torch.device("meta"), 512, print) == "sdpa"
    assert model.config._attn_implementation == "sdpa"


def test_the_written_out_attention_trains_as_sdpa_does(tmp_path):
    ids = torch.randint(0, 100, (2, 11), generator=torch.Generator().manual_seed(0))
    out = {}
    for attn in ("sdpa", "written_out", "eager"):
        torch.manual_seed(0)
        model = _model(tmp_path / attn)
        if attn == "written_out":
            written_out_attention(model, True, torch.device("cpu"), 512, lambda *_: None)
        elif attn == "eager":
            model.set_attn_implementation("eager")
        assert model.config._attn_implementation == attn
        logits = model(input_ids=ids).logits
        logits.square().mean().backward()
        out[attn] = (logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    for attn in ("written_out", "eager"):
        torch.testing.assert_close(out[attn][0], out["sdpa"][0], rtol=1e-4, atol=1e-5)
        assert out[attn][1].keys() == out["sdpa"][1].keys()
        for n, g in out["sdpa"][1].items():
            torch.testing.assert_close(out[attn][1][n], g, rtol=1e-3, atol=1e-5)
