"""A run prints no deprecation warnings: transformers 5.x renamed gradient checkpointing and the
KV-cache argument, and every run used to warn about both (and about PEFT's alias read)."""

import warnings

from dianjing.config import load_config
from dianjing.infer.generate import SamplingParams, complete
from dianjing.infer.load import load_run
from dianjing.train.loop import train


def test_train_and_generate_without_deprecation_warnings(tiny_llama, alpaca_file, tmp_path):
    cfg = load_config(None, [f"model.name={tiny_llama}", f"data.files={alpaca_file}", f"train.output_dir={tmp_path / 'r'}",
                             "train.max_steps=2", "model.gradient_checkpointing=true", "model.precision=fp32"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run, _ = train(cfg, log=lambda *_: None)
        model, tok, template = load_run(run, precision="fp32", log=lambda *_: None)
        complete(model, tok, template, [{"role": "user", "content": "hi"}], SamplingParams(max_new_tokens=3))
    deprecations = [str(w.message) for w in caught
                    if issubclass(w.category, (FutureWarning, DeprecationWarning)) and "deprecat" in str(w.message)]
    assert not deprecations, deprecations
