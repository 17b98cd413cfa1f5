"""Adapters through PEFT (LoRA, DoRA, IA3, prompt tuning) or full fine-tuning, from one config."""

from __future__ import annotations

import torch

from dianjing.config import AdapterConfig
from dianjing.errors import ConfigError


def _linear_names(model) -> list[str]:
    """Every linear projection in the transformer blocks (not the output layer)."""
    out_emb = model.get_output_embeddings()
    names = set()
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and mod is not out_emb:
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def attach(model, cfg: AdapterConfig):
    """Wrap the model for training according to adapter.method; returns the model to train."""
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import IA3Config, LoraConfig, PromptTuningConfig, TaskType, get_peft_model

    targets = _linear_names(model) if cfg.target_modules == "all-linear" else cfg.target_modules
    if not targets:
        raise ConfigError("adapter.target_modules: the model has no linear layers to adapt")
    match cfg.method:
        case "lora" | "dora":
            pcfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.r, lora_alpha=cfg.alpha,
                              lora_dropout=cfg.dropout, target_modules=targets,
                              use_dora=cfg.method == "dora")
        case "ia3":
            ff = [t for t in targets if any(k in t for k in ("down", "fc2", "out_proj", "w2", "c_proj"))]
            pcfg = IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=targets,
                             feedforward_modules=ff)
        case "prompt_tuning":
            pcfg = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens)
        case _:
            raise ConfigError(f"adapter.method: unknown method {cfg.method!r}")
    try:
        return get_peft_model(model, pcfg)
    except ValueError as e:
        raise ConfigError(f"adapter: PEFT cannot apply {cfg.method} to this model: {e}") from None


def count_params(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
