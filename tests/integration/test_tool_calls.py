"""A tiny model trained on the bundled tool-calling demo set (assets/tool_calls_demo.jsonl) learns to
call tools: greedy generation from prompts that need one emits calls that parse_tool_calls reads back
as OpenAI-style calls to the listed tools, with JSON-object arguments.

The model is tests/tiny.py's kind (2 layers, random) but 64 wide, with a byte-level BPE tokenizer
trained here on the demo set's own rendered text: with the 400-token test tokenizer the tool list
alone is 1,000 tokens and a 32-wide model does not learn the call format in a minute."""

import json
from importlib import resources

import pytest
import torch

from dianjing.config import DataConfig
from dianjing.data.load import load_conversations
from dianjing.data.templates import BUILTIN_TEMPLATES, ChatTemplate
from dianjing.data.tools import parse_tool_calls
from dianjing.infer.generate import SamplingParams, stream
from dianjing.infer.load import load_run
from dianjing.train.loop import train
from tests.helpers import sft_config

DEMO = str(resources.files("dianjing.assets").joinpath("tool_calls_demo.jsonl"))
N_PROMPTS = 10


def _records() -> list[dict]:
    with open(DEMO, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def tool_model(tmp_path_factory):
    """A random 2-layer Llama (hidden 64) with a BPE tokenizer trained on the demo set as rendered."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("models") / "tools"
    plain = ChatTemplate("plain", BUILTIN_TEMPLATES["plain"], "<s>", "</s>", False)
    convs, _ = load_conversations(DataConfig(files=[DEMO]), log=lambda *_: None)
    texts = [plain.render(c.as_dicts(), tools=c.tool_specs()) for c in convs]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1000, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>")
    tok.save_pretrained(str(folder))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      initializer_range=0.2, tie_word_embeddings=False)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(str(folder))
    return folder


def test_a_tiny_model_trained_on_the_demo_set_emits_parseable_calls(tool_model, tmp_path):
    cfg = sft_config(tool_model, DEMO, tmp_path / "run", "train.epochs=20", "adapter.method=full",
                     "data.max_length=2048", "data.eval_fraction=0", "model.precision=fp32")
    run_dir, summary = train(cfg, log=lambda *_: None)
    assert summary["steps"] == 280  # 53 conversations, batches of 4, 20 epochs
    model, tok, template = load_run(run_dir, precision="fp32", log=lambda *_: None)
    assert template.name == "plain" and template.supports_tools  # the built-in tool format
    prompts = [r for r in _records() if r["messages"][1].get("tool_calls")][:N_PROMPTS]  # user, then a call
    good, outputs = 0, []
    for rec in prompts:
        names = {t["function"]["name"] for t in rec["tools"]}
        text = template.render(rec["messages"][:1], add_generation_prompt=True, tools=rec["tools"])
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out = "".join(stream(model, tok, ids, SamplingParams(max_new_tokens=60, temperature=0),
                             template.stop_strings))
        outputs.append(out)
        _, calls = parse_tool_calls(out, template)
        good += any(c["type"] == "function" and c["function"]["name"] in names
                    and isinstance(json.loads(c["function"]["arguments"]), dict) for c in calls)
    # deterministic here (fp32, one thread, seeded): 6 of the 10; an untrained model makes none
    assert good >= 3, outputs
