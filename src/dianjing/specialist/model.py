"""A specialist model: a pre-trained backbone with a task head (`models.heads`) and its adapter
(`models.adapters.attach`, the same as the chat route's), built from a run's config.

Adapters (LoRA/DoRA/IA3) go into the backbone only; the head is always trained in full.
What a run saves is exactly the trained tensors (head + adapter, or everything for full
fine-tuning) in one safetensors file; loading rebuilds the same model from the base and
puts them back, checking that every saved tensor found its place.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dianjing.config import AdapterConfig, TaskConfig
from dianjing.errors import ConfigError, ModelError
from dianjing.models.adapters import attach
from dianjing.models.heads import AUTO_CLASSES, OwnHead, backbone_of, has_auto_head, head_params
from dianjing.models.load import refuse_pickle_weights

def build(path: str, task: str, num_labels: int, tcfg: TaskConfig, acfg: AdapterConfig, dtype: torch.dtype,
          pad_token_id: int | None, encoder_style: bool, trust_remote_code: bool = False, log=print,
          random_init: bool = False):
    """The model to train; `random_init` builds the same architecture with fresh weights (the
    from-scratch baseline that shows what pre-training buys)."""
    import transformers
    from transformers import AutoConfig, AutoModel

    refuse_pickle_weights(path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read a model config from {path}: {e}") from None
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    kind = tcfg.head
    if kind == "auto":
        kind = "transformers" if has_auto_head(config.model_type, task) else "own"
    if kind == "transformers" and not has_auto_head(config.model_type, task):
        raise ConfigError(f"task.head: transformers has no {AUTO_CLASSES[task]} for '{config.model_type}'",
                          fix="use task.head=own (a linear head over the backbone's hidden states)")
    common = dict(trust_remote_code=trust_remote_code)
    if kind == "transformers":
        cls = getattr(transformers, AUTO_CLASSES[task])
        config.num_labels = 2 if task == "extract-qa" else num_labels
        if pad_token_id is not None:
            config.pad_token_id = pad_token_id
        if hasattr(config, "classifier_dropout"):
            config.classifier_dropout = tcfg.classifier_dropout
        if random_init:
            model = cls.from_config(config, dtype=dtype, **common)
        else:
            model = cls.from_pretrained(path, config=config, dtype=dtype, use_safetensors=True, **common)
    else:
        if random_init:
            backbone = AutoModel.from_config(config, dtype=dtype, **common)
        else:
            backbone = AutoModel.from_pretrained(path, dtype=dtype, use_safetensors=True, **common)
        pooling = tcfg.pooling if tcfg.pooling != "auto" else ("first" if encoder_style else "last")
        model = OwnHead(backbone, task, num_labels, pooling, tcfg.classifier_dropout)
    # heads train in fp32 whatever the backbone's dtype
    for _, p in head_params(model):
        p.data = p.data.float()
    model.dianjing_head = kind
    if acfg.method == "prompt_tuning":
        raise ConfigError("adapter.method: prompt_tuning is for generative (sft) tasks",
                          fix="use lora, dora, ia3 or full for a specialist head")
    attach(model, acfg, body=backbone_of(model))  # adapters in the backbone; the head trains in full
    return model, kind


# -- the run folder -------------------------------------------------------------------
def save(model, out: Path, info: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    # a from-scratch baseline has random frozen weights that no base folder holds: save them all
    everything = info.get("random_init", False)
    state = {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad or everything}
    save_file(state, str(out / "weights.safetensors"))
    (out / "specialist.json").write_text(json.dumps(info, indent=1, ensure_ascii=False), encoding="utf-8")


def load(out: Path, info: dict, dtype: torch.dtype, log=print):
    """Rebuild the trained model from its base and the saved tensors."""
    from safetensors.torch import load_file

    from dianjing.config import AdapterConfig, TaskConfig

    tcfg, acfg = TaskConfig(**info["task"]), AdapterConfig(**info["adapter"])
    model, _ = build(info["base_model"], info["task"]["type"], len(info["labels"]) or 2, tcfg, acfg, dtype,
                     info.get("pad_token_id"), info["encoder_style"], log=log)
    saved = load_file(str(out / "weights.safetensors"))
    own = dict(model.named_parameters())
    missing = [k for k in saved if k not in own]
    if missing:
        raise ModelError(f"{out / 'weights.safetensors'}: {len(missing)} saved tensors have no place in the model "
                         f"(first: {missing[0]})", fix="was the base model changed since training?")
    with torch.no_grad():
        for k, v in saved.items():
            own[k].copy_(v.to(own[k].dtype))
    model.eval()
    return model
