"""Which builder a run's `task.type` uses (see `dianjing.train.setup`).

The training loop asks this table, so `train/` never imports a route package: chat SFT is
built by `train/sft.py`, the specialist heads by `specialist/task.py`, a stage of a continual
run by `lifelong/route.py`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

ROUTES = {
    "sft": "dianjing.train.sft:build",
    "classify": "dianjing.specialist.task:build",
    "pair": "dianjing.specialist.task:build",
    "tag": "dianjing.specialist.task:build",
    "extract-qa": "dianjing.specialist.task:build",
    "lifelong": "dianjing.lifelong.route:build",
}
GENERATIVE = ("sft", "lifelong")  # causal LMs trained on their own output layer (no new fp32 head)


def builder_for(task_type: str) -> Callable:
    module, name = ROUTES[task_type].split(":")
    return getattr(importlib.import_module(module), name)
