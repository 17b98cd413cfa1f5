"""Load a run folder (base + adapter, or full model) or a bare model, with its chat template."""

from __future__ import annotations

from pathlib import Path

from dianjing.data.templates import choose_template
from dianjing.models.adapters import peft_quiet
from dianjing.models.load import load_model, load_tokenizer, resolve_model
from dianjing.precision import for_inference
from dianjing.run_folder import CHAT_ADAPTER, CHAT_FULL, SPECIALIST, UNFINISHED, RunFolder, is_chat_run


def is_run(path: str | Path) -> bool:
    """Is this a finished chat run (one that chat, serve and export take)?"""
    return is_chat_run(path)


def load_run(path: str | Path, precision: str = "auto", merge: bool = True, log=print, command: str = "dianjing chat",
             device: str = "auto"):
    """Returns (model, tokenizer, template) ready for generation: a chat run, or a bare model.

    The model is on `device` (auto | cpu | cuda | cuda:N | mps, see dianjing.precision), which is
    resolved before anything is read, so a device this machine lacks fails at once, naming --device."""
    prec = for_inference(precision, device)
    dtype = prec.frozen
    p = Path(path)
    run = RunFolder(p)
    kind = run.kind()
    if kind in (CHAT_ADAPTER, CHAT_FULL):
        info = run.info()
        tok = load_tokenizer(str(run.tokenizer), log=lambda *_: None)
        template = run.template()
        if kind == CHAT_FULL:
            model = load_model(str(run.model), dtype)
        else:
            from peft import PeftModel

            base = load_model(info["base_model"], dtype, log=log)
            with peft_quiet():
                model = PeftModel.from_pretrained(base, str(run.adapter))
            if merge and info["method"] in ("lora", "dora", "ia3"):
                model = model.merge_and_unload()
        model.to(prec.device).eval()
        return model, tok, template
    if kind in (SPECIALIST, UNFINISHED) or (p.is_dir() and not (p / "config.json").exists()):
        run.require(CHAT_ADAPTER, CHAT_FULL, command=command)  # says what the folder is and what fits it
    path_or_id = resolve_model(str(path), log=log)
    tok = load_tokenizer(path_or_id, log=log)
    template, why = choose_template("auto", tok)
    log(why)
    model = load_model(path_or_id, dtype, log=log).to(prec.device)
    model.eval()
    return model, tok, template
