"""The sequence file: the tasks to learn one after another, the strategy, and the run's settings.

    strategy: lamol                 # sequential | lamol | replay | multitask
    lamol: {lm_lambda: 0.25, gamma: 0.2, top_k: 20, gen_token: per_task}
    model: {name: gemma-3-270m}     # the run config's sections model, adapter, train: every stage's
    adapter: {method: lora}
    train: {epochs: 2, batch_size: 8}
    max_length: 512                 # tokens per example (a LAMOL example: generation token + question + answer)
    tasks:
      - name: sentiment
        files: [reviews.jsonl]      # relative to this file
        format: classify            # qa | classify | prompt_completion | alpaca | squad
        fields: {text: review, label: stars}
        question: Is this review positive or negative?
        metric: accuracy            # accuracy | em | f1 | rouge_l
        train: {epochs: 3}          # this task's own train settings (over the train section)

Unknown keys and wrong types fail before any work, naming the task and the key; `--set key=value`
overrides apply to this file's keys (`--set lamol.gamma=0.5`, `--set train.lr=1e-4`).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from dianjing.config import AdapterConfig, ModelConfig, RunConfig, TrainConfig, _Strict, read_yaml_tree
from dianjing.errors import ConfigError

STRATEGIES = ("sequential", "lamol", "replay", "multitask")
METRICS = ("accuracy", "em", "f1", "rouge_l")
# the keys each format reads, which `fields` may rename to the file's own
FORMAT_KEYS = {
    "qa": ("context", "question", "answer"),
    "classify": ("text", "label"),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "input", "output"),
    "squad": (),
}
BUILTIN_PREFIX = "builtin:"


class LamolSettings(_Strict):
    lm_lambda: float = Field(0.25, ge=0.0, description="weight of the language-modelling loss (whole examples "
                                                       "after the generation token) beside the QA loss: QA + λ·LM")
    gamma: float = Field(0.2, gt=0.0, description="examples replayed before each new task: ⌈γ·|its training set|⌉, "
                                                  "shared evenly among the earlier tasks (lamol: generated; replay: "
                                                  "real ones, as many)")
    top_k: int = Field(20, ge=0, description="pseudo-examples are sampled from the k likeliest tokens (0: all)")
    temperature: float = Field(1.0, gt=0.0, description="sampling temperature of the pseudo-examples")
    gen_token: Literal["per_task", "shared"] = Field(
        "per_task", description="per_task: one generation token per task (the paper's best variant, LAMOL^TASK); "
                                "shared: one for all (LAMOL^GEN)")
    batch_size: int = Field(16, ge=1, description="sequences generated at once")


class Markers(_Strict):
    """Plain-text markers (not new tokens): the run's vocabulary and embeddings stay the base model's."""
    answer: str = Field("__ans__", min_length=1, description="between the question and the answer")
    shared_gen: str = Field("__gen__", min_length=1, description="the generation token when gen_token: shared")
    task_gen: str = Field("__{task}__", description="the generation token of a task (gen_token: per_task)")

    @field_validator("task_gen")
    @classmethod
    def _has_task(cls, v: str) -> str:
        if "{task}" not in v:
            raise ValueError("must contain {task}, the place of the task's name")
        return v


class TaskSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="letters, digits, _ . -")
    files: list[str] = Field(min_length=1, description="training data files (relative to the sequence file)")
    format: Literal["qa", "classify", "prompt_completion", "alpaca", "squad"] = Field(
        description="how a record becomes question + answer (docs/lifelong.md)")
    fields: dict[str, str] = Field(default_factory=dict, description="the format's keys → this file's field names")
    question: str | None = Field(None, description="classify: the question after the text (default: one that "
                                                   "lists the labels)")
    metric: Literal["accuracy", "em", "f1", "rouge_l"] = Field(description="how the task is scored")
    eval_files: list[str] = Field(default_factory=list, description="held-out data (default: eval_examples of "
                                                                    "the files are held out)")
    eval_examples: int = Field(50, ge=1, description="examples held out of files when there are no eval_files")
    max_examples: int | None = Field(None, ge=1, description="training examples at most (after the held-out ones)")
    max_answer_tokens: int | None = Field(None, ge=1, description="evaluation: tokens generated per answer "
                                                                  "(default: the longest training answer + 8)")
    train: dict[str, Any] = Field(default_factory=dict, description="this task's own train settings")

    @field_validator("files", "eval_files", mode="before")
    @classmethod
    def _one_path(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _fields_fit_format(self) -> TaskSpec:
        known = FORMAT_KEYS[self.format]
        unknown = sorted(set(self.fields) - set(known))
        if unknown:
            raise ValueError(f"fields: {', '.join(map(repr, unknown))} is not a key of format {self.format} "
                             f"({', '.join(known) if known else 'which reads SQuAD JSON and takes no fields'})")
        if self.question is not None and self.format != "classify":
            raise ValueError(f"question applies to format classify only (format {self.format} reads the question "
                             "from the data)")
        return self


class Sequence(_Strict):
    strategy: Literal["sequential", "lamol", "replay", "multitask"] = Field(
        "lamol", description="sequential: fine-tune task after task (the lower bound); lamol: also learn to "
                             "generate examples, replay generated ones; replay: replay stored real ones; multitask: "
                             "all tasks at once (the upper bound)")
    tasks: list[TaskSpec] = Field(min_length=1, description="in the order they are learned")
    lamol: LamolSettings = Field(default_factory=LamolSettings)
    markers: Markers = Field(default_factory=Markers)
    max_length: int = Field(512, ge=16, description="tokens per example; longer ones are dropped and counted")
    eval_batch_size: int = Field(16, ge=1, description="evaluation prompts decoded at once")
    model: ModelConfig = Field(default_factory=ModelConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _names_unique(self) -> Sequence:
        seen = set()
        for t in self.tasks:
            if t.name in seen:
                raise ValueError(f"task name {t.name!r} is used twice: names must be unique")
            seen.add(t.name)
        return self

    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.tasks if t.name == name)

    def gen_text(self, task: str) -> str:
        """The generation token (plain text) that starts a generated example of `task`."""
        if self.lamol.gen_token == "shared":
            return self.markers.shared_gen
        return self.markers.task_gen.replace("{task}", task)


def load_sequence(path: str | Path, overrides: list[str] | None = None) -> Sequence:
    """Read and validate a sequence file; relative data paths become absolute (against the file's folder)."""
    p = Path(path)
    tree = read_yaml_tree(p, overrides, "tasks/strategy/lamol/model/adapter/train")
    seq = validate_tree(tree, str(p))
    base = p.resolve().parent
    for t in seq.tasks:
        t.files = [_absolute(f, base) for f in t.files]
        t.eval_files = [_absolute(f, base) for f in t.eval_files]
    return seq


def validate_tree(tree: dict, source: str) -> Sequence:
    """The Sequence of a YAML tree, with each error naming its key (and task: `tasks[1] (news).train.lr`)."""
    try:
        seq = Sequence.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(f"{source}: invalid sequence file:\n  " + "\n  ".join(_describe(x, tree) for x in e.errors()),
                          fix="docs/lifelong.md lists every key of a sequence file") from None
    for i, t in enumerate(seq.tasks):
        stage_train(seq, t, source=f"{source}: tasks[{i}] ({t.name}).train")  # its train settings are checked now
    return seq


def stage_train(seq: Sequence, task: TaskSpec | None, source: str = "sequence") -> TrainConfig:
    """The train section of a stage: the sequence's, with the task's own settings over it."""
    merged = {**seq.train.model_dump(), **(task.train if task is not None else {})}
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(f"{source}: " + "; ".join(_describe(x, merged, TrainConfig) for x in e.errors()),
                          fix="a task's train settings are keys of the train section (docs/configuration.md)") from None


def stage_config(seq: Sequence, tasks: list[TaskSpec], out_dir: Path) -> RunConfig:
    """The run config of one stage: task.type lifelong, the sequence's model and adapter, its train settings."""
    t = stage_train(seq, tasks[0] if len(tasks) == 1 else None)
    t.output_dir = str(out_dir)
    return RunConfig.model_validate({
        "task": {"type": "lifelong"}, "model": seq.model.model_dump(), "adapter": seq.adapter.model_dump(),
        "train": t.model_dump(), "data": {"files": [], "eval_fraction": 0.0, "max_length": seq.max_length}})


def dump(seq: Sequence) -> str:
    return yaml.safe_dump(seq.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _absolute(path: str, base: Path) -> str:
    if path.startswith(BUILTIN_PREFIX):
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _describe(err: dict, tree: dict, cls=Sequence) -> str:
    """One validation error as 'key: problem', the task named by index and name."""
    loc = list(err["loc"])
    parts, node, model = [], tree, cls
    for i, part in enumerate(loc):
        if isinstance(part, int):
            name = node[part].get("name") if isinstance(node, list) and part < len(node) \
                and isinstance(node[part], dict) else None
            parts[-1] += f"[{part}]" + (f" ({name})" if name else "")
        else:
            parts.append(str(part))
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
        if i < len(loc) - 1 and model is not None and not isinstance(part, int):
            model = _submodel(model, part)
    key = ".".join(parts)
    if err["type"] == "extra_forbidden":
        known = list(getattr(model, "model_fields", {}))
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        return f"unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close
                                         else f" (known: {', '.join(known)})" if known else "")
    if err["type"] == "missing":
        return f"'{key}' is required"
    return f"'{key}': {err['msg']}" if key else err["msg"]


def _has(node, part) -> bool:
    return (isinstance(node, dict) and part in node) or (isinstance(node, list) and isinstance(part, int)
                                                          and part < len(node))


def _submodel(model, field: str):
    """The pydantic model a field of `model` holds (through list[...]), or None."""
    import typing

    info = getattr(model, "model_fields", {}).get(field)
    if info is None:
        return None
    ann = info.annotation
    for arg in (ann, *typing.get_args(ann)):
        if isinstance(arg, type) and hasattr(arg, "model_fields"):
            return arg
    return None
