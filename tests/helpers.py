"""Helpers shared by the tests: a tiny run's config, the losses a run logged, the CLI in a subprocess,
and where the shared data sets live. Fixtures (tiny models, tokenizers, data files) are in conftest.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from dianjing.config import RunConfig, load_config

REPO = Path(__file__).resolve().parents[1]
# the data sets shared between checkouts (../shared/data next to the repository); tests that need one skip without it
SHARED_DATA = REPO.parent / "shared" / "data"



def load_script(relpath: str) -> ModuleType:
    """A script of the repository that is not a package module (bench/…, scripts/…), imported by path. It is
    registered in sys.modules under its file name, as dataclasses defined in it need."""
    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


# a quick, deterministic tiny run: big enough steps to learn in a few dozen, one thread, a small eval split
FAST = ("train.batch_size=4", "train.lr=5e-3", "train.warmup_ratio=0", "train.threads=1", "data.eval_fraction=0.1")


def write_alpaca(path: Path, answer: str = "The number is {}.", n: int = 24) -> Path:
    """An alpaca file of `n` records "Say the number i." -> answer.format(i)."""
    rows = [{"instruction": f"Say the number {i}.", "input": "", "output": answer.format(i)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sft_config(model, data, out, *extra: str, base: tuple[str, ...] | list[str] = FAST) -> RunConfig:
    """A run config for `model` on `data` writing to `out`: the `base` overrides, then `extra` (later ones win)."""
    return load_config(None, [f"model.name={model}", f"data.files={data}", f"train.output_dir={out}",
                              *base, *extra])


def specialist_config(model, data, out, task: str, *extra: str, eval_data=None) -> RunConfig:
    """A specialist run config (task.type=`task`) on one data file, and optionally one eval file."""
    sets = [f"model.name={model}", f"task.type={task}", f"train.output_dir={out}", "train.threads=1",
            "model.gradient_checkpointing=false", "data.max_length=64", "train.batch_size=8",
            "train.log_every=1", *extra]
    cfg = load_config(None, sets)
    cfg.data.files = [cfg.data.files[0].model_copy(update={"path": str(data)})]
    if eval_data:
        cfg.data.eval_files = [cfg.data.files[0].model_copy(update={"path": str(eval_data)})]
    return cfg


def logged_losses(run_dir, *, steps: bool = False) -> list:
    """The training losses in run_dir/metrics.jsonl, in order; with steps=True as (step, loss) pairs."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) if steps else r["loss"] for r in rows if "loss" in r]


def run_cli(*args, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """`python -m dianjing.cli ARGS` in a subprocess, output captured; check=True asserts it exited 0."""
    r = subprocess.run([sys.executable, "-m", "dianjing.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def lcs_dp(a, b) -> int:
    """Textbook dynamic-programming LCS length: the reference the fast LCS is checked against."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


# --- lifelong (continual) runs: tiny tasks and sequence files ----------------------------------

def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def colour_tasks(folder: Path, n: int = 8) -> tuple[Path, Path, Path]:
    """Three tasks a tiny model can memorise, with disjoint answers: after learning a later one, a model
    that kept nothing of an earlier one cannot give any of its answers (forgetting is certain)."""
    out = []
    for name, letter, (x, y) in (("t1", "a", ("red", "blue")), ("t2", "b", ("green", "gold")),
                                 ("t3", "c", ("pink", "grey"))):
        out.append(write_jsonl(folder / f"{name}.jsonl",
                               [{"question": f"{letter} {i}", "answer": x if i < n // 2 else y} for i in range(n)]))
    return tuple(out)


def write_sequence(path: Path, tree: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(tree, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def colour_sequence(folder: Path, model, strategy: str = "lamol", tasks: int = 2, **train) -> Path:
    """A fast, deterministic sequence over the colour tasks (full fine-tuning, fp32, one thread); each task is
    scored on its own training examples."""
    files = colour_tasks(folder)
    tree = {
        "strategy": strategy, "lamol": {"gamma": 2.0}, "max_length": 48,
        "model": {"name": str(model), "precision": "fp32"}, "adapter": {"method": "full"},
        "train": {"epochs": 30, "batch_size": 4, "lr": 5e-3, "warmup_ratio": 0, "threads": 1,
                  "save_every": 1000, "eval_every": 1000, **train},
        "tasks": [{"name": f.stem, "files": [f.name], "eval_files": [f.name], "format": "qa", "metric": "accuracy"}
                  for f in files[:tasks]],
    }
    return write_sequence(folder / "seq.yaml", tree)
