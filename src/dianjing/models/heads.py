"""Task heads on a pre-trained backbone: the transformers `AutoModelFor…` class where the
architecture has one, otherwise dianjing's own linear head over the backbone's hidden states
(so any backbone works, decoder-only ones included). Heads are trained in fp32, always in full.
"""

from __future__ import annotations

import torch
from torch import nn

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
                h = h[torch.arange(h.shape[0], device=h.device), last]
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


def backbone_of(model) -> nn.Module:
    """The pre-trained body of a model with a head (where adapters go)."""
    if isinstance(model, OwnHead):
        return model.backbone
    return getattr(model, model.base_model_prefix)


def head_params(model) -> list[tuple[str, nn.Parameter]]:
    """The head's parameters: everything outside the backbone."""
    body = {id(p) for p in backbone_of(model).parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) not in body]


def head_parameter_ids(model) -> set[int]:
    return {id(p) for _, p in head_params(model)}
