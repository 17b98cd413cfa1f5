"""A pre-trained backbone with a task head: the transformers `AutoModelFor…` class where the
architecture has one, otherwise dianjing's own linear head over the backbone's hidden states
(so any backbone works, decoder-only ones included).

Adapters (LoRA/DoRA/IA3) go into the backbone only; the head is always trained in full.
What a run saves is exactly the trained tensors (head + adapter, or everything for full
fine-tuning) in one safetensors file; loading rebuilds the same model from the base and
puts them back, checking that every saved tensor found its place.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from dianjing.config import AdapterConfig, TaskConfig
from dianjing.errors import ConfigError, ModelError
from dianjing.models.load import refuse_pickle_weights

AUTO_CLASSES = {"classify": "AutoModelForSequenceClassification", "pair": "AutoModelForSequenceClassification",
                "tag": "AutoModelForTokenClassification", "extract-qa": "AutoModelForQuestionAnswering"}
MAPPINGS = {"classify": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
            "pair": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
            "tag": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
            "extract-qa": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"}


def has_auto_head(model_type: str, task: str) -> bool:
    from transformers.models.auto import modeling_auto

    return getattr(modeling_auto, MAPPINGS[task]).get(model_type) is not None


class OwnHead(nn.Module):
    """Backbone hidden states → dropout → linear. classify/pair pool one vector per row."""

    def __init__(self, backbone, task: str, num_labels: int, pooling: str, dropout: float):
        super().__init__()
        self.backbone, self.task, self.pooling = backbone, task, pooling
        hidden = backbone.config.get_text_config().hidden_size
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 2 if task == "extract-qa" else num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        if self.task in ("classify", "pair"):
            if self.pooling == "first":
                h = h[:, 0]
            elif self.pooling == "mean":
                m = attention_mask.unsqueeze(-1).to(h.dtype)
                h = (h * m).sum(1) / m.sum(1).clamp(min=1)
            else:  # last real token (right padding)
                last = attention_mask.sum(1) - 1
                h = h[torch.arange(h.shape[0]), last]
        return self.head(self.dropout(h.float() if self.head.weight.dtype == torch.float32 else h))


def head_logits(model, batch: dict) -> torch.Tensor:
    """classify/pair [B, C]; tag [B, T, C]; extract-qa [B, T, 2] (start, end)."""
    kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if "token_type_ids" in batch:
        kw["token_type_ids"] = batch["token_type_ids"]
    out = model(**kw)
    if isinstance(out, torch.Tensor):
        return out
    if getattr(out, "start_logits", None) is not None:
        return torch.stack([out.start_logits, out.end_logits], dim=-1)
    return out.logits


def _backbone(model) -> nn.Module:
    if isinstance(model, OwnHead):
        return model.backbone
    return getattr(model, model.base_model_prefix)


def _head_params(model) -> list[tuple[str, nn.Parameter]]:
    body = {id(p) for p in _backbone(model).parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) not in body]


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
    for _, p in _head_params(model):
        p.data = p.data.float()
    model.dianjing_head = kind
    _attach(model, acfg)
    return model, kind


def _attach(model, acfg: AdapterConfig) -> None:
    if acfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return
    if acfg.method == "prompt_tuning":
        raise ConfigError("adapter.method: prompt_tuning is for generative (sft) tasks",
                          fix="use lora, dora, ia3 or full for a specialist head")
    from peft import IA3Config, LoraConfig, inject_adapter_in_model

    body = _backbone(model)
    for p in model.parameters():
        p.requires_grad_(False)
    names = sorted({n.rsplit(".", 1)[-1] for n, m in body.named_modules() if isinstance(m, nn.Linear)})
    targets = names if acfg.target_modules == "all-linear" else acfg.target_modules
    if not targets:
        raise ConfigError("adapter.target_modules: the backbone has no linear layers to adapt")
    if acfg.method == "ia3":
        ff = [t for t in targets if any(k in t for k in ("down", "fc2", "out_proj", "w2", "c_proj", "output"))]
        pcfg = IA3Config(target_modules=targets, feedforward_modules=ff)
    else:
        pcfg = LoraConfig(r=acfg.r, lora_alpha=acfg.alpha, lora_dropout=acfg.dropout, target_modules=targets,
                          use_dora=acfg.method == "dora")
    try:
        inject_adapter_in_model(pcfg, body)
    except ValueError as e:
        raise ConfigError(f"adapter: PEFT cannot apply {acfg.method} to this backbone: {e}") from None
    for n, p in body.named_parameters():
        if "lora_" in n or "ia3_" in n:
            p.requires_grad_(True)
            p.data = p.data.float()
    for _, p in _head_params(model):
        p.requires_grad_(True)


def head_parameter_ids(model) -> set[int]:
    return {id(p) for _, p in _head_params(model)}


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
