"""Task registries and mixtures: the YAML a user writes, validated by pydantic (extra="forbid").

A *registry* lists tasks: where each task's records come from, which cluster it belongs to
(sentiment, topic, paraphrase, NLI, extractive QA, …), how it is scored, and its instruction
templates. A *mixture* names one or more registries, which tasks or clusters to train on,
which clusters to hold out, and how to mix. `dianjing mix` turns a mixture into a training
file; `dianjing eval RUN --mixture M --held-out` scores the held-out clusters.

    tasks:
      - name: movie_sentiment
        dataset: movie_reviews          # held out together with every task of the same dataset
        source: movie_reviews.jsonl     # relative to this file; or t0:<file stem>
        fields: {text: review}          # template variable -> record field
        cluster: sentiment
        metric: accuracy                # accuracy | exact_match | rouge_l | squad_f1
        options: [negative, positive]   # or the name of a field holding each record's options
        templates:
          - name: plain
            input: "{{ text }}\\nIs this review positive or negative?"
            target: "{{ options[label] }}"
          - name: write_review
            input: "Write a {{ options[label] }} movie review."
            target: "{{ text }}"
            turned_around: true
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, PrivateAttr, field_validator, model_validator

# _Strict: the one pydantic base of every config model (extra="forbid", validate_assignment)
from dianjing.config import _Strict, read_yaml_tree, validate
from dianjing.errors import ConfigError

METRICS = ("accuracy", "exact_match", "rouge_l", "squad_f1")
BUILTIN_PREFIX = "builtin:"
T0_PREFIX = "t0:"
T0_REGISTRY = "t0"  # in a mixture's `registries`: the registry built from the T0 folder
T0_ENV = "DIANJING_T0_DIR"
T0_DEFAULT = Path("..") / "shared" / "data" / "multitask" / "t0"  # relative to the working directory


class Template(_Strict):
    name: str
    input: str = Field(description="Jinja over the record's fields: the instruction the model sees")
    target: str = Field(description="Jinja: the answer the model learns to give")
    turned_around: bool = Field(False, description="asks for the input given the output (FLAN's inverted "
                                                   "templates); never gets an options suffix, not used for "
                                                   "held-out scoring")
    options_suffix: bool | None = Field(None, description="false: this template lists the options itself")
    options: list[str] | None = Field(None, description="this template's own answer words (else the task's)")
    chain_of_thought: bool = Field(False, description="uses {{ rationale }}; only for records that have one")


class Task(_Strict):
    name: str
    dataset: str | None = Field(None, description="dataset id; default the task name. Tasks of one dataset "
                                                  "are held out together")
    source: str = Field(description="file (relative to the registry, or absolute) or t0:<file stem>")
    format: Literal["auto", "jsonl", "json", "csv"] = "auto"
    fields: dict[str, str] = Field(default_factory=dict, description="template variable -> record field")
    cluster: str
    metric: Literal["accuracy", "exact_match", "rouge_l", "squad_f1"] = "accuracy"
    answer_field: str | None = Field(None, description="field with the gold answer(s) for EM/F1 (a string or "
                                                       "a list); default the rendered target")
    options: list[str] | str | None = Field(None, description="answer choices: a fixed list, or the name of "
                                                              "a field holding each record's list")
    rationale_field: str | None = Field(None, description="field with a chain-of-thought rationale")
    templates: list[Template] = Field(min_length=1)

    @property
    def dataset_id(self) -> str:
        return self.dataset or self.name

    @model_validator(mode="after")
    def _check(self) -> "Task":
        dup = _repeated(t.name for t in self.templates)
        if dup:
            raise ValueError(f"task '{self.name}': template names must be unique, repeated: {dup}")
        if any(t.chain_of_thought for t in self.templates) and not self.rationale_field:
            raise ValueError(f"task '{self.name}' has a chain_of_thought template but no rationale_field")
        if isinstance(self.options, list) and len(self.options) < 2:
            raise ValueError(f"task '{self.name}': options must list at least two answers")
        return self


def _repeated(names) -> list[str]:
    """The names that occur more than once, sorted."""
    names = list(names)
    return sorted({n for n in names if names.count(n) > 1})


class _FromFile(_Strict):
    """A model read from a YAML file, which remembers where (set by the loader, not part of the YAML)."""

    _base_dir: Path | None = PrivateAttr(None)
    _origin: str = PrivateAttr("")

    @property
    def base_dir(self) -> Path | None:
        """The folder relative paths in this YAML are resolved against."""
        return self._base_dir

    @property
    def origin(self) -> str:
        return self._origin


class Registry(_FromFile):
    t0_dir: str | None = Field(None, description="folder of the rendered T0 files, for t0: sources")
    tasks: list[Task] = Field(min_length=1)


    @model_validator(mode="after")
    def _unique(self) -> "Registry":
        dup = _repeated(t.name for t in self.tasks)
        if dup:
            raise ValueError(f"task names must be unique, repeated: {dup}")
        return self


class Include(_Strict):
    clusters: list[str] | None = Field(None, description="clusters to train on; default all not held out")
    tasks: list[str] | None = Field(None, description="tasks to train on, besides those of `clusters`")


class Mixing(_Strict):
    method: Literal["proportional", "temperature"] = "proportional"
    cap: int = Field(3000, ge=1, description="examples a dataset counts with at most (FLAN: 3,000)")
    temperature: float = Field(1.0, gt=0, description="temperature mixing: rate ∝ min(n, cap)^(1/T)")
    total: int | None = Field(None, ge=1, description="examples to write; default the sum of capped sizes")


class TemplatePolicy(_Strict):
    policy: Literal["round_robin", "random"] = "round_robin"
    turned_around: bool = Field(True, description="train on turned-around templates too")
    options_suffix: bool = Field(True, description="append FLAN's 'OPTIONS:' list to classification prompts")
    chain_of_thought: bool = Field(True, description="use chain-of-thought templates where records have rationales")


class FewShot(_Strict):
    k: int = Field(0, ge=0, description="exemplars per few-shot prompt")
    ratio: float = Field(0.0, ge=0.0, le=1.0, description="fraction of training prompts that are few-shot")


class EvalSettings(_Strict):
    max_per_task: int = Field(100, ge=1, description="held-out examples scored per task")
    templates_per_dataset: int | None = Field(None, ge=1, description="score at most this many templates "
                                                                     "per held-out dataset (a seeded sample)")
    shots: int = Field(0, ge=0, description="exemplars in held-out prompts (0: zero-shot)")


class Mixture(_FromFile):
    registries: list[str] = Field(min_length=1, description="registry files (relative to this file), or t0")
    t0_dir: str | None = Field(None, description=f"T0 folder (default ${T0_ENV}, else {T0_DEFAULT})")
    include: Include = Field(default_factory=Include)
    exclude_tasks: list[str] = Field(default_factory=list)
    held_out: list[str] = Field(default_factory=list, description="clusters kept out of training")
    mixing: Mixing = Field(default_factory=Mixing)
    seed: int = 0
    templates: TemplatePolicy = Field(default_factory=TemplatePolicy)
    few_shot: FewShot = Field(default_factory=FewShot)
    max_chars: int | None = Field(None, ge=1, description="drop (and count) training examples whose prompt + "
                                                         "answer are longer than this")
    output_format: Literal["prompt_completion", "messages"] = "prompt_completion"
    on_error: Literal["stop", "skip"] = Field("skip", description="bad records: stop, or skip and count them")
    eval: EvalSettings = Field(default_factory=EvalSettings)


    @field_validator("registries", mode="before")
    @classmethod
    def _one(cls, v):
        return [v] if isinstance(v, str) else v


def builtin_path(name: str) -> Path:
    """builtin:NAME → a YAML shipped in dianjing/assets/generalist."""
    folder = Path(str(resources.files("dianjing.assets").joinpath("generalist")))
    p = folder / (name if name.endswith((".yaml", ".yml")) else name + ".yaml")
    if not p.is_file():
        known = sorted(f.stem for f in folder.glob("*.yaml"))
        raise ConfigError(f"no built-in generalist file '{name}'", fix=f"use one of: {', '.join(known)}")
    return p


def resolve_yaml(path: str | Path) -> Path:
    s = str(path)
    if s.startswith(BUILTIN_PREFIX):
        return builtin_path(s[len(BUILTIN_PREFIX):])
    p = Path(s).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p} does not exist", fix="check the path (or use builtin:NAME for a shipped example)")
    return p


def _read_yaml(p: Path, overrides: list[str] | None = None) -> dict:
    return read_yaml_tree(p, overrides, "")


def load_registry(path: str | Path) -> Registry:
    p = resolve_yaml(path)
    reg = validate(Registry, _read_yaml(p), str(p), "task registry")
    reg._base_dir, reg._origin = p.parent.resolve(), str(p)
    return reg


def load_mixture(path: str | Path, overrides: list[str] | None = None) -> Mixture:
    """Read a mixture YAML (a path or builtin:NAME); `overrides` are key=value like --set."""
    p = resolve_yaml(path)
    mix = validate(Mixture, _read_yaml(p, overrides), str(p), "mixture")
    mix._base_dir, mix._origin = p.parent.resolve(), str(p)
    return mix


def t0_dir_for(mix: Mixture | None = None, registry: Registry | None = None) -> Path:
    """Where the rendered T0 files are: the YAML's t0_dir, else $DIANJING_T0_DIR, else ../shared/…/t0."""
    for holder in (registry, mix):
        if holder is not None and holder.t0_dir:
            p = Path(holder.t0_dir).expanduser()
            if not p.is_absolute() and holder.base_dir is not None:
                p = holder.base_dir / p
            if p.is_dir():
                return p
            raise ConfigError(f"{holder.origin or 'the YAML'}: t0_dir: {p} is not a folder",
                              fix="point t0_dir at the folder of <dataset>_<template>.jsonl files")
    tried = []
    env = os.environ.get(T0_ENV)
    if env:
        if Path(env).is_dir():
            return Path(env)
        tried.append(f"${T0_ENV}={env}")
    if T0_DEFAULT.is_dir():
        return T0_DEFAULT.resolve()
    tried.append(str(T0_DEFAULT.resolve()))
    raise ConfigError("cannot find the T0 data folder (tried " + ", ".join(tried) + ")",
                      fix=f"set t0_dir in the mixture, or export {T0_ENV}=/path/to/multitask/t0")


def load_registries(mix: Mixture, log=print) -> list[Registry]:
    """The mixture's registries; `t0` is built from the T0 folder on the fly."""
    regs = []
    for ref in mix.registries:
        if ref == T0_REGISTRY:
            from dianjing.generalist.t0 import build_registry

            folder = t0_dir_for(mix)
            regs.append(build_registry(folder, log=log))
            continue
        if ref.startswith(BUILTIN_PREFIX) or Path(ref).is_absolute():
            regs.append(load_registry(ref))
        else:
            regs.append(load_registry((mix.base_dir or Path.cwd()) / ref))
    seen: dict[str, str] = {}
    for r in regs:
        for t in r.tasks:
            if t.name in seen:
                raise ConfigError(f"task '{t.name}' is defined in both {seen[t.name]} and {r.origin}",
                                  fix="rename one of them; task names must be unique across a mixture's registries")
            seen[t.name] = r.origin
    return regs


def dump_registry(reg: Registry) -> str:
    data = reg.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
