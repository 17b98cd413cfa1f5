"""Load a run folder (base + adapter, or full model) or a bare model, with its chat template."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dianjing.data.templates import ChatTemplate, choose_template
from dianjing.errors import DianjingError
from dianjing.models.load import load_model, load_tokenizer, resolve_model
from dianjing.precision import for_inference


def is_run(path: str | Path) -> bool:
    p = Path(path)
    return (p / "run.json").exists() and (p / "template.json").exists()


def load_run(path: str | Path, precision: str = "auto", merge: bool = True, log=print):
    """Returns (model, tokenizer, template) ready for generation."""
    p = Path(path)
    if is_run(p):
        info = json.loads((p / "run.json").read_text())
        tok = load_tokenizer(str(p / "tokenizer"), log=lambda *_: None)
        template = ChatTemplate.from_json(json.loads((p / "template.json").read_text()))
        dtype = for_inference(precision).frozen
        if info["method"] == "full":
            model = load_model(str(p / "model"), dtype)
        else:
            from peft import PeftModel

            base = load_model(info["base_model"], dtype)
            model = PeftModel.from_pretrained(base, str(p / "adapter"))
            if merge and info["method"] in ("lora", "dora", "ia3"):
                model = model.merge_and_unload()
        model.eval()
        return model, tok, template
    if p.exists() and not (p / "config.json").exists() and p.is_dir():
        ckpts = p / "checkpoints"
        hint = (f"it has checkpoints but no final outputs: finish it with `dianjing train --resume {p}`"
                if ckpts.exists() else "pass a run folder printed by `dianjing train`, or a model")
        raise DianjingError(f"{p} is neither a finished run nor a model folder", fix=hint)
    path_or_id = resolve_model(str(path), log=log)
    tok = load_tokenizer(path_or_id, log=log)
    template, why = choose_template("auto", tok)
    log(why)
    model = load_model(path_or_id, for_inference(precision).frozen)
    model.eval()
    return model, tok, template
