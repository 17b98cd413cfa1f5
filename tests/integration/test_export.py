"""export(): a LoRA run merged into its base and written as a plain Hugging Face folder that
transformers alone loads, with the run's logits and its chat template; never over an existing folder."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dianjing.errors import DianjingError
from dianjing.export import export
from dianjing.infer.load import load_run
from dianjing.train.loop import train
from tests.helpers import sft_config, write_alpaca

IDS = torch.tensor([[5, 6, 7, 8, 9, 10]])
QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def lora_run(tiny_llama, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    cfg = sft_config(tiny_llama, write_alpaca(tmp / "data.jsonl"), tmp / "run", "train.max_steps=2",
                     "model.precision=fp32", "data.eval_fraction=0")
    run_dir, summary = train(cfg, **QUIET)
    assert summary["steps"] == 2
    return run_dir


def test_exported_folder_is_plain_transformers_with_the_merged_logits(lora_run, tiny_llama, tmp_path):
    out = tmp_path / "exported"
    out.mkdir()  # an existing empty folder is fine
    assert export(lora_run, out, dtype="fp32", **QUIET) == out
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not any("lora" in n or "base_model" in n for n in model.state_dict())  # merged, not an adapter
    assert not (out / "adapter_config.json").exists()
    merged, _, _ = load_run(lora_run, precision="fp32", merge=True, **QUIET)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    with torch.no_grad():
        got = model(input_ids=IDS).logits
        torch.testing.assert_close(got, merged(input_ids=IDS).logits, rtol=1e-5, atol=1e-5)
        # and the adapter is in there: two steps moved the logits away from the base model's
        assert (got - base(input_ids=IDS).logits).abs().max() > 1e-4


def test_exported_tokenizer_carries_the_run_chat_template(lora_run, tmp_path):
    out = export(lora_run, tmp_path / "exported", dtype="fp32", **QUIET)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.chat_template
    assert "add_bos" not in tok.chat_template  # dianjing's own variable is resolved for other engines
    _, _, template = load_run(lora_run, precision="fp32", **QUIET)
    messages = [{"role": "user", "content": "Say the number 3."}, {"role": "assistant", "content": "3."},
                {"role": "user", "content": "Say the number 4."}]
    got = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert got == template.render(messages, add_generation_prompt=True)


def test_default_export_is_bf16(lora_run, tmp_path):
    out = export(lora_run, tmp_path / "exported", **QUIET)
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_export_refuses_a_non_empty_folder(lora_run, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DianjingError) as e:
        export(lora_run, out, dtype="fp32", **QUIET)
    assert str(out) in str(e.value) and "not empty" in str(e.value)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "taken.tmp").exists()


def test_export_of_a_folder_that_is_not_a_run_says_so(tmp_path):
    with pytest.raises(DianjingError):
        export(tmp_path / "nowhere", tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()
