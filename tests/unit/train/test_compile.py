"""train.compile: which models get their blocks compiled, and that the choice is pinned for --resume."""


import torch
import yaml
from transformers import AutoModelForCausalLM

from dianjing.config import load_config
from dianjing.train import compile as comp
from dianjing.train import loop
from tests.helpers import sft_config


def test_find_blocks_is_the_decoder_layers(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    blocks = comp.find_blocks(model)
    assert blocks == list(model.model.layers)
    assert len(blocks) == model.config.num_hidden_layers


def test_decide(tiny_llama, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert comp.decide("off", model)[0] is False
    on, why = comp.decide("on", model)
    assert on and "train.compile: on" in why
    on, why = comp.decide("auto", model)  # a tiny model: the compile would not pay back
    assert not on and "parameters" in why
    monkeypatch.setattr(comp, "AUTO_MIN_PARAMS", 0)
    monkeypatch.setattr(comp, "_cxx", lambda: "g++")
    assert comp.decide("auto", model)[0] is True
    monkeypatch.setattr(comp, "_cxx", lambda: None)
    on, why = comp.decide("auto", model)
    assert not on and "C++ compiler" in why
    assert comp.decide("auto", torch.nn.Linear(2, 2))[0] is False  # nothing repeated to compile


def test_auto_is_pinned_in_the_run_config(tiny_llama, alpaca_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = sft_config(tiny_llama, alpaca_file, run, "train.max_steps=1", base=())
    (run / "config.yaml").write_text("placeholder")
    trainer = loop.Trainer(cfg, run, log=lambda *_: None)
    assert trainer.compiled is False
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["compile"] == "off" and saved["model"]["precision"] in ("fp32", "bf16")
    again = load_config(run / "config.yaml")  # what --resume reads: the pinned values, not 'auto'
    assert again.train.compile == "off" and again.model.precision == saved["model"]["precision"]
