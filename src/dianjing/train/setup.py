"""The contract between a route and the one training loop.

A route (chat SFT in `train/sft.py`, specialists in `specialist/task.py`) is a builder: it
reads the data, loads the model, attaches the adapter or head and returns a `Setup`. The loop
(`train/loop.py`) takes a Setup and nothing else from the route, so it imports no route
package; `dianjing.routes` says which builder a `task.type` uses.

    def build(ctx: Context) -> Setup

The builder gets a `Context`: the config, the run folder, the resolved model path, the
tokenizer, the run's precision (`dianjing.precision`), a log function and `pin`, which
records what an 'auto' setting resolved to in the run's config.yaml.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch

from dianjing.config import RunConfig
from dianjing.errors import DianjingError
from dianjing.precision import Precision
from dianjing.run_folder import RunFolder


@dataclass
class Context:
    """What every builder is given."""

    cfg: RunConfig
    folder: RunFolder
    model_path: str
    tokenizer: object
    precision: Precision
    log: Callable[[str], None]
    pin: Callable[[object, str, str], None]  # pin(config_section, key, resolved_value)


@dataclass
class Setup:
    """What a route hands the loop. Every field is required unless it has a default.

    loss(batch) returns (summed loss, number of targets it sums over); the loop divides by the
    targets of the whole step, so gradient accumulation weighs every target the same.
    """

    model: torch.nn.Module
    param_groups: list[dict]  # optimizer groups over the trainable parameters (a group may set its own lr)
    train_set: list  # examples with `input_ids` (their lengths drive length-grouped batching)
    eval_set: list
    collate: Callable[[list], dict]  # examples → a batch with at least `attention_mask`
    loss: Callable[[dict], tuple[torch.Tensor, int]]
    count_targets: Callable[[dict], int]
    flops_per_token: float  # useful FLOPs per input token (6 × body parameters)
    flops_per_target: float  # and per supervised target (6 × output-layer parameters for the sparse loss)
    save: Callable[..., None]  # save(run, state_dict=None): the trained weights (FSDP2 passes the gathered
    # whole model's state dict), tokenizer (and template or head)
    summarize: Callable[[dict], dict]  # the loop's state → summary.json
    info: dict  # run.json: base_model, model_name, method, dtype (and task)
    eval_scores: Callable[[], dict] = field(default=lambda: {})  # the task's own held-out metrics
    compiled: bool = False  # blocks under torch.compile: evaluation runs eagerly

    def check(self, route: str) -> Setup:
        """Fail with the contract's name if a builder returned something incomplete."""
        missing = [f.name for f in fields(self) if getattr(self, f.name) is None]
        wrong = []
        for name in ("collate", "loss", "count_targets", "save", "summarize", "eval_scores"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                wrong.append(f"{name} is not callable")
        if self.param_groups is not None and not any(g.get("params") for g in self.param_groups):
            wrong.append("param_groups holds no trainable parameter")
        for key in ("base_model", "model_name", "method", "dtype"):
            if self.info is not None and key not in self.info:
                wrong.append(f"info has no '{key}'")
        if missing or wrong:
            raise DianjingError(f"the {route} builder returned an incomplete Setup: "
                                + "; ".join(([f"missing {', '.join(missing)}"] if missing else []) + wrong),
                                fix="a builder must fill every field of dianjing.train.setup.Setup")
        return self


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def base_summary(state: dict, flops: float) -> dict:
    """The figures every route's summary.json starts with."""
    return {"steps": state["step"], "tokens": state["tokens"], "supervised_tokens": state["supervised_tokens"],
            "wall_time_s": round(state["elapsed_s"], 2),
            "tokens_per_s": round(state["tokens"] / max(1e-9, state["elapsed_s"]), 2),
            "estimated_flops": flops, "peak_rss_mb": round(peak_rss_mb(), 1),
            "skipped_steps": state["skipped_steps"], "final_eval_loss": state.get("eval_loss")}


def trainable(model: torch.nn.Module) -> list[dict]:
    """One optimizer group over every parameter that requires a gradient."""
    return [{"params": [p for p in model.parameters() if p.requires_grad]}]
