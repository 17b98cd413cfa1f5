"""The setup contract: a builder that leaves a field out is named with the contract; the loop's
package imports no route package; and no import goes against the data flow."""

import ast
from pathlib import Path

import pytest
import torch

from dianjing.errors import DianjingError
from dianjing.routes import ROUTES, builder_for
from dianjing.train.setup import Setup

SRC = Path(__file__).resolve().parents[3] / "src" / "dianjing"


def _setup(**over):
    model = torch.nn.Linear(2, 2)
    kw = dict(model=model, param_groups=[{"params": list(model.parameters())}], train_set=[], eval_set=[],
              collate=lambda exs: {}, loss=lambda b: (torch.zeros(()), 0), count_targets=lambda b: 0,
              flops_per_token=0, flops_per_target=0, save=lambda run: None, summarize=lambda s: {},
              info={"base_model": "b", "model_name": "m", "method": "lora", "dtype": "float32"})
    return Setup(**{**kw, **over})


def test_a_complete_setup_passes():
    assert _setup().check("sft").model is not None


@pytest.mark.parametrize("over,says", [
    ({"loss": None}, "missing loss"),
    ({"collate": "not a function"}, "collate is not callable"),
    ({"param_groups": [{"params": []}]}, "no trainable parameter"),
    ({"info": {"base_model": "b"}}, "info has no 'model_name'"),
])
def test_an_incomplete_setup_names_the_contract(over, says):
    with pytest.raises(DianjingError) as e:
        _setup(**over).check("classify")
    assert "classify builder returned an incomplete Setup" in str(e.value) and says in str(e.value)
    assert "dianjing.train.setup.Setup" in str(e.value)


def test_every_task_type_has_a_builder():
    from typing import get_args

    from dianjing.config import TaskConfig

    assert set(ROUTES) == set(get_args(TaskConfig.model_fields["type"].annotation))
    assert all(callable(builder_for(t)) for t in ROUTES)


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("dianjing")}


# a package may not import these (the stages after it in the data flow, or the routes built on it)
ROUTE_PACKAGES = ("dianjing.specialist", "dianjing.teacher", "dianjing.generalist", "dianjing.lifelong")
FORBIDDEN = {
    "data": ("dianjing.train", "dianjing.infer", *ROUTE_PACKAGES, "dianjing.cli", "dianjing.models"),
    "models": ("dianjing.train", "dianjing.infer", *ROUTE_PACKAGES, "dianjing.cli"),
    "train": (*ROUTE_PACKAGES, "dianjing.cli", "dianjing.infer"),
    "eval": ("dianjing.train", *ROUTE_PACKAGES, "dianjing.cli"),
    "infer": ("dianjing.train", *ROUTE_PACKAGES, "dianjing.cli"),
}


# the judge sends its requests through the teacher's OpenAI client (concurrency, retries, journal,
# several endpoints): one client for both, not a copy in eval/
SHARED_CLIENT = {("eval/judge.py", m) for m in ("dianjing.teacher.client", "dianjing.teacher.settings",
                                                "dianjing.teacher.store")}


def test_no_import_goes_against_the_flow():
    wrong = []
    for package, banned in FORBIDDEN.items():
        for path in sorted((SRC / package).rglob("*.py")):
            for module in _imports(path):
                if module.startswith(banned) and (str(path.relative_to(SRC).as_posix()).removeprefix("dianjing/"),
                                                  module) not in SHARED_CLIENT:
                    wrong.append(f"{path.relative_to(SRC)} imports {module}")
    assert not wrong, wrong
