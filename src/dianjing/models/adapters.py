"""Adapters through PEFT (LoRA, DoRA, IA3, prompt tuning) or full fine-tuning, from one config,
for both routes: a causal LM (the chat route) or the backbone of a model with a task head.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch

from dianjing.config import AdapterConfig
from dianjing.errors import ConfigError

# IA3 scales the input of feed-forward output projections and the output of the others; these
# name fragments mark the feed-forward ones across architectures (Llama/Gemma down_proj, GPT-2
# c_proj, OPT/BART fc2, T5 w2 and out_proj, BERT's output.dense)
FEEDFORWARD_HINTS = ("down", "fc2", "out_proj", "w2", "c_proj")
ENCODER_FEEDFORWARD_HINTS = (*FEEDFORWARD_HINTS, "output")  # BERT-style backbones (output.dense)


@contextlib.contextmanager
def peft_quiet():
    """Around PEFT's model wrapping: it reads transformers' deprecated `is_gradient_checkpointing`
    alias, which warns on every run and leaves nothing for a user to do."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
        yield


def linear_names(module: torch.nn.Module, exclude: torch.nn.Module | None = None) -> list[str]:
    """The names (last component) of every linear layer in `module`, except `exclude` (an output layer)."""
    names = set()
    for name, mod in module.named_modules():
        if isinstance(mod, torch.nn.Linear) and mod is not exclude:
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def peft_config(cfg: AdapterConfig, targets: list[str], task_type=None, ff_hints=FEEDFORWARD_HINTS):
    """The PEFT config for adapter.method over `targets`."""
    from peft import IA3Config, LoraConfig, PromptTuningConfig

    kw = {"task_type": task_type} if task_type is not None else {}
    match cfg.method:
        case "lora" | "dora":
            return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                              use_dora=cfg.method == "dora", **kw)
        case "ia3":
            ff = [t for t in targets if any(k in t for k in ff_hints)]
            return IA3Config(target_modules=targets, feedforward_modules=ff, **kw)
        case "prompt_tuning":
            return PromptTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, **kw)
    raise ConfigError(f"adapter.method: unknown method {cfg.method!r}")


def attach(model, cfg: AdapterConfig, *, body: torch.nn.Module | None = None):
    """Make `model` trainable according to adapter.method; returns the model to train.

    Without `body` the model is a causal LM and PEFT wraps it (`get_peft_model`, which saves as
    an `adapter/` folder). With `body` (the backbone of a model with a task head) the adapter is
    injected into the backbone only and everything outside it (the head) trains in full; the
    adapter weights are fp32 whatever the backbone's dtype.
    """
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    inner = model if body is None else body
    targets = (linear_names(inner, exclude=inner.get_output_embeddings() if body is None else None)
               if cfg.target_modules == "all-linear" else cfg.target_modules)
    if not targets and cfg.method != "prompt_tuning":
        raise ConfigError("adapter.target_modules: the model has no linear layers to adapt")
    if isinstance(cfg.target_modules, list) and cfg.method != "prompt_tuning":
        # PEFT fails only when no name matches: a misspelt name beside a right one would leave
        # that layer quietly unadapted (a name matches a module path or its end, as in PEFT)
        paths = [name for name, _ in inner.named_modules()]
        unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in paths)]
        if unknown:
            linear = linear_names(inner, exclude=inner.get_output_embeddings() if body is None else None)
            raise ConfigError(f"adapter.target_modules: {', '.join(map(repr, unknown))} not in the model",
                              fix=f"use 'all-linear' or names from: {', '.join(linear)}")
    if body is None:
        from peft import TaskType, get_peft_model

        try:
            with peft_quiet():
                return get_peft_model(model, peft_config(cfg, targets, TaskType.CAUSAL_LM))
        except ValueError as e:
            raise ConfigError(f"adapter: PEFT cannot apply {cfg.method} to this model: {e}") from None
    if cfg.method == "prompt_tuning":
        raise ConfigError("adapter.method: prompt_tuning needs a generative model (task.type sft)",
                          fix="use lora, dora, ia3 or full for a model with a task head")
    from peft import inject_adapter_in_model

    for p in model.parameters():
        p.requires_grad_(False)
    try:
        inject_adapter_in_model(peft_config(cfg, targets, ff_hints=ENCODER_FEEDFORWARD_HINTS), body)
    except ValueError as e:
        raise ConfigError(f"adapter: PEFT cannot apply {cfg.method} to this backbone: {e}") from None
    in_body = set()
    for n, p in body.named_parameters():
        in_body.add(id(p))
        if "lora_" in n or "ia3_" in n:
            p.requires_grad_(True)
            p.data = p.data.float()
    for p in model.parameters():  # the head
        if id(p) not in in_body:
            p.requires_grad_(True)
    return model


def count_params(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


# adapter.method auto (classify, pair and tag's default, experiments/defaults): on a small backbone full
# fine-tuning measured better than LoRA for a new head (MiniLM, 23M: BBC topics 96.4% against 68.1%, WNUT-16
# F1 44.1 against 37.7) at 0.8-1.9x the time; above FULL_BELOW it was not measured and costs 4x the optimizer
# memory, so LoRA stays there
FULL_BELOW = 150e6
FULL_LR = 1e-4  # the body's rate that measured best with full fine-tuning (LoRA's default 2e-4 is for adapters)
SPECIALISTS = ("classify", "pair", "tag", "extract-qa")


def checkpoint_params(model_path: str) -> int | None:
    """Parameters in a model folder's safetensors files, read from their headers (no weights loaded);
    None when the folder has none (a .bin-only checkpoint, or not a folder)."""
    from safetensors import safe_open

    files = sorted(Path(model_path).glob("*.safetensors")) if Path(model_path).is_dir() else []
    if not files:
        return None
    total = 0
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():
                n = 1
                for d in fh.get_slice(name).get_shape():
                    n *= d
                total += n
    return total


def resolve_auto(cfg, model_path: str) -> tuple[str, str]:
    """adapter.method auto → (full or lora, the sentence that says why). Full fine-tuning of a specialist
    backbone under FULL_BELOW parameters also sets train.lr to FULL_LR where the config leaves it unset."""
    if cfg.task.type not in SPECIALISTS:
        return "lora", ("adapter.method auto: lora (full fine-tuning is chosen only for a specialist head's "
                        "small backbone)")
    n = checkpoint_params(model_path)
    if n is None:
        return "lora", f"adapter.method auto: lora ({model_path} has no safetensors file to count its parameters in)"
    if n >= FULL_BELOW:
        return "lora", (f"adapter.method auto: lora (the backbone has {n / 1e6:.0f}M parameters, "
                        f"{FULL_BELOW / 1e6:.0f}M or more)")
    said = (f"adapter.method auto: full fine-tuning (the backbone has {n / 1e6:.1f}M parameters, under "
            f"{FULL_BELOW / 1e6:.0f}M)")
    if "lr" not in cfg.train.model_fields_set:
        cfg.train.lr = FULL_LR
        said += f", train.lr {FULL_LR:g}"
    return "full", said + "; adapter.method=lora keeps an adapter"
