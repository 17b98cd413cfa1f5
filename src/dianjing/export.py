"""Merge a run's adapter into its base and write a plain Hugging Face folder.

The folder loads with transformers alone (no dianjing, no PEFT), carries the chat
template the run was trained with, and is what vLLM or llama.cpp's converter read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from dianjing.errors import DianjingError
from dianjing.infer.load import load_run
from dianjing.run_folder import CHAT_ADAPTER, CHAT_FULL, RunFolder


def export(run_dir: str | Path, out: str | Path, dtype: str = "bf16", log=print) -> Path:
    run_dir, out = Path(run_dir), Path(out)
    run = RunFolder(run_dir)
    run.require(CHAT_ADAPTER, CHAT_FULL, command="dianjing export")
    if out.exists() and any(out.iterdir()):
        raise DianjingError(f"{out} exists and is not empty", fix="choose an empty or new --out folder")
    info = run.info()
    if info["method"] == "prompt_tuning":
        raise DianjingError("a prompt-tuning adapter cannot be merged into the weights",
                            fix="serve it with `dianjing chat` instead, or train with adapter.method=lora")
    model, tok, template = load_run(run_dir, precision="fp32", merge=True, log=log)
    model = model.to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.chat_template = template.source if template.name == "model" else _standalone(template)
    tok.save_pretrained(str(tmp))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out


def _standalone(template) -> str:
    """A built-in template without dianjing's add_bos variable, for other engines."""
    src = template.source
    bos = "{% if add_bos and bos_token %}{{ bos_token }}{% endif %}"
    return src.replace(bos, "{{ bos_token }}" if template.add_bos else "")
