"""The run configuration: pydantic models with extra="forbid", YAML + --set overrides.

A typo in a YAML key or a wrong type fails here, before any work starts, naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator
from pydantic_core import PydanticCustomError

from dianjing.data.columns import mapping_problem
from dianjing.errors import ConfigError

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"  # model.device and --device

DEFAULT_MODEL = "gemma-3-270m"
DEFAULT_DATA = "builtin:default"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataFile(_Strict):
    """One source of data: a file (path), a hub dataset (hub) or an entry of a catalogue; exactly one."""
    path: str | None = Field(None, description="a JSON, JSONL, CSV or Parquet file, or a folder written by "
                                               "datasets' save_to_disk")
    hub: str | None = Field(None, description="a Hugging Face hub dataset, org/name (needs the network or the "
                                              "datasets cache), read with the datasets library")
    catalogue: str | None = Field(None, description="LLaMA-Factory's dataset_info.json (or its folder); with name")
    name: str | None = Field(None, description="the dataset's entry in the catalogue")
    format: Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion"] = Field(
        "auto", description="auto: detected from the first record's keys (docs/data-formats.md)")
    columns: dict[str, str] | None = Field(
        None, description="the format's keys → this file's own field names, e.g. {instruction: question, output: "
                          "answer}; inside turns also role, content, from, value (docs/data-formats.md)")
    roles: dict[str, str] | None = Field(
        None, description="role names → this file's own, e.g. {user: customer, assistant: agent}: user, assistant, "
                          "system, observation, function, tool")
    split: str | None = Field(None, description="hub datasets and saved folders: the split (default train)")
    subset: str | None = Field(None, description="hub datasets: the configuration (subset) name")
    revision: str | None = Field(None, description="hub datasets: a branch, tag or commit")
    streaming: bool = Field(False, description="hub datasets: read rows as they download (with data.max_examples "
                                               "only what is needed)")

    @model_validator(mode="after")
    def _one_source(self) -> DataFile:
        problem = self._problem()
        if problem:  # load_config reports it as a ConfigError naming the entry (data.files.N)
            raise PydanticCustomError("data_file", "{why}", {"why": problem})
        return self

    def _problem(self) -> str | None:
        given = [k for k in ("path", "hub", "catalogue") if getattr(self, k) is not None]
        if len(given) != 1:
            return ("give exactly one of path (a file), hub (a Hugging Face dataset) or catalogue (LLaMA-Factory's "
                    "dataset_info.json, with name)" + (f"; got {' and '.join(given)}" if given else ""))
        if (self.name is None) != (self.catalogue is None):
            return "catalogue and name go together: name is the dataset's entry in the catalogue"
        hub_only = [k for k in ("subset", "revision") if getattr(self, k) is not None] + ["streaming"] * self.streaming
        if hub_only and self.hub is None:
            return f"{' and '.join(hub_only)} only appl{'ies' if len(hub_only) == 1 else 'y'} to hub datasets"
        if self.catalogue is not None and (self.columns or self.roles or self.split):
            return "a catalogue entry takes its columns, tags and split from the catalogue"
        return mapping_problem(self.columns, self.roles)

    @model_serializer(mode="wrap")
    def _without_unset(self, handler) -> dict:  # config.yaml lists what an entry sets, not eleven nulls
        return {k: v for k, v in handler(self).items() if k == "format" or v not in (None, False)}


class ModelConfig(_Strict):
    name: str = Field(DEFAULT_MODEL, description="HF folder, hub id, .gguf file, or 'gemma-3-270m'")
    trust_remote_code: bool = Field(False, description="let transformers run the model folder's own Python code "
                                                       "(only for models you trust)")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 frozen weights where the CPU/GPU supports bf16, else fp32")
    device: str = Field(
        "auto", pattern=DEVICE_PATTERN,
        description="auto (CUDA when present, one GPU per process under torchrun; else MPS; else the CPU) | cpu "
                    "| cuda | cuda:N | mps; a run pins what auto resolved to")
    attn_implementation: Literal["auto", "sdpa", "eager", "written_out", "flex_attention", "flash_attention_2"] = Field(
        "auto", description="attention kernel. auto: sdpa, except where the blocks are compiled on a CPU: there "
                            "written_out (dianjing's written-out attention, which inductor fuses into the block: "
                            "no copy of K and V per query head, a softmax that keeps only its output; faster than "
                            "SDPA's CPU flash kernel and than the model's eager code at SmolLM2's shapes, docs/benchmarks.md), or the "
                            "model's eager code where its attention takes other inputs; a run pins what auto "
                            "chose. Else PyTorch's scaled_dot_product_attention, the model's eager code, "
                            "flex attention (block masks: packed batches skip the blocks between examples) or "
                            "FlashAttention 2 (needs the flash-attn package and a GPU)")
    random_init: bool = Field(
        False, description="same architecture with fresh random weights — the from-scratch baseline that shows "
                           "what pre-training buys (specialists; chat SFT with adapter.method: full)")
    gradient_checkpointing: bool = Field(
        True, description="recompute activations in backward: 12.5 → 4.9 GiB peak for 5% time (Gemma, batch 8×512)")
    unchecked_blocks: int = Field(
        0, ge=0, description="selective checkpointing: with gradient_checkpointing on, the last N transformer "
                             "blocks keep their activations for the backward instead of recomputing them "
                             "(each saves a forward of one block per step, for its activations' memory; "
                             "docs/benchmarks.md); more than the model has: all of them")
    activation_budget: float | None = Field(
        None, ge=0.0, le=1.0,
        description="selective checkpointing chosen by the compiler: where the blocks are compiled (train.compile), "
                    "instead of recomputing whole blocks, keep this share (0-1) of the activations the blocks "
                    "would keep without checkpointing — those that cost the most FLOPs to recompute per byte — "
                    "and recompute the rest (torch's activation memory budget). 0.3 on SmolLM2, Alpaca: 4-11% "
                    "faster than whole-block checkpointing for +0.3 GiB, 12-15% faster than "
                    "model.unchecked_blocks at the same memory; on long prompts no gain on SmolLM2, +7% on Gemma 3 "
                    "270M with 0.2 (docs/benchmarks.md); "
                    "null: whole-block checkpointing")

    @model_validator(mode="after")
    def _one_selective_checkpointing(self) -> ModelConfig:
        if self.activation_budget is not None and self.unchecked_blocks:
            raise PydanticCustomError(
                "checkpointing", "model.unchecked_blocks and model.activation_budget both choose what the backward "
                "recomputes: set one of them (activation_budget: the compiler picks within a share of the memory; "
                "unchecked_blocks: whole blocks)", {})
        return self


class DataConfig(_Strict):
    files: list[DataFile] = Field(default_factory=lambda: [DataFile(path=DEFAULT_DATA)],
                                  description="training data: paths, or entries {path | hub | catalogue + name, "
                                              "format, columns, …}; default: the bundled 313 instruction pairs")
    eval_files: list[DataFile] = Field(
        default_factory=list, description="held-out data; when empty, eval_fraction of files is held out")
    template: str = Field("auto", description="auto | model | plain | chatml | vicuna | alpaca")
    template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="options passed to the chat template in training, validate, chat and "
                                          "serve, e.g. {enable_thinking: false} (Qwen3); kept in the run folder")
    reasoning: Literal["last", "all", "none"] = Field(
        "last", description="whose reasoning (`<think>…</think>` or `reasoning_content`) is trained: the last answer's "
                            "(as reasoning models are prompted: earlier turns without it), every answer's, or none; "
                            "what is left out is counted (docs/templates.md)")
    system_prompt: str | None = Field(None, description="a system message added to conversations that have none")
    max_length: int = Field(512, ge=8, description="tokens per example; longer ones are truncated (counted)")
    loss_on: Literal["assistant", "last", "all"] = Field(
        "assistant", description="which tokens are supervised: every answer, the last answer, or everything")
    on_error: Literal["stop", "skip"] = Field(
        "stop", description="a bad record stops with its file:line, or is skipped and counted by reason")
    eval_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="share of files held out when no eval_files")
    max_examples: int | None = Field(None, ge=1, description="read at most this many records (a quick trial)")
    preference: Literal["chosen"] | None = Field(
        None, description="preference files (records with chosen and rejected answers, as in DPO data): chosen "
                          "trains on the chosen answers (SFT); unset, such a file stops with a message")

    @field_validator("files", mode="before")
    @classmethod
    def _files(cls, v: Any) -> Any:
        return cls._paths_as_files(v)

    @field_validator("eval_files", mode="before")
    @classmethod
    def _eval_paths_as_files(cls, v: Any) -> Any:
        return cls._paths_as_files(v)

    @classmethod
    def _paths_as_files(cls, v: Any) -> Any:
        if isinstance(v, (str, dict)):
            v = [v]
        if isinstance(v, list):
            return [{"path": x} if isinstance(x, str) else x for x in v]
        return v


class AdapterConfig(_Strict):
    method: Literal["lora", "dora", "ia3", "prompt_tuning", "full", "auto"] = Field(
        "lora", description="the PEFT method, or full fine-tuning (fp32 master weights); auto (the default of "
                            "classify, pair and tag): full fine-tuning at train.lr 1e-4 for a backbone under 150M "
                            "parameters, LoRA above (and for sft); the run's config.yaml records the choice")
    r: int = Field(16, ge=1, description="LoRA/DoRA rank")
    alpha: float = Field(32.0, description="LoRA/DoRA scale: the update is multiplied by alpha / r")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="0 by default: dropout masks cost ~7% of a step here")
    target_modules: str | list[str] = Field("all-linear", description="'all-linear' or module names")
    num_virtual_tokens: int = Field(20, ge=1, description="prompt tuning: learned tokens put before the input")
    compute: Literal["fp32", "bf16"] = Field(
        "bf16", description="with bf16 frozen weights: bf16 runs the adapter's products in bf16 under autocast "
        "(its weights and optimizer state stay fp32); fp32 casts each adapted layer's input to fp32 (PEFT's "
        "way: 35% slower on SmolLM2, bench/sft_vs_trl.py). No effect when the weights are fp32")
    fold: bool = Field(
        True, description="with adapter.compute bf16: each plain LoRA layer runs as one product [x, s·xA] @ "
        "[W, B]^T instead of PEFT's three products and an add (models/fused_lora.py; the same gradients). "
        "false: PEFT's forward")


class TrainConfig(_Strict):
    output_dir: str | None = Field(None, description="default: runs/<date>-<time>")
    epochs: float = Field(2.0, gt=0, description="passes over the training data (fractions allowed)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    batch_size: int = Field(8, ge=1, description="examples per micro-batch, over all processes (under torchrun "
                                                  "each takes its share: the same config gives the same run)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(2e-4, gt=0, description="peak learning rate (AdamW)")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="decay after warmup")
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="share of the steps with a linear warmup")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the gradient norm to this; null: no clipping")
    seed: int = Field(42, description="seeds the data order, the eval split and the adapter's initialisation")
    batching: Literal["length_grouped", "packed", "random", "sequential"] = Field(
        "length_grouped", description="length_grouped: batches of similar length (little padding), shuffled; "
                                      "packed: the same batches without padding, examples kept apart by a "
                                      "block-diagonal mask; random: shuffled; sequential: file order")
    split_padding: float | None = Field(
        0.25, gt=0, lt=1, description="one process: a batch whose padding a split into length-sorted parts "
        "(each padded to its own longest row) cuts by at least this share of its tokens runs as those parts: "
        "the same loss and gradients, fewer padded tokens through the model (batches in file or random "
        "order; the held-out loss too); null: never")
    logits: Literal["sparse", "dense"] = Field(
        "sparse", description="sparse: output layer only at supervised positions")
    log_every: int = Field(1, ge=1, description="steps between lines in metrics.jsonl")
    eval_every: int | None = Field(None, ge=1, description="default: once per epoch and at the end")
    save_every: int | None = Field(None, ge=1, description="default: once per epoch and at the end")
    keep_last_n: int = Field(2, ge=1, description="checkpoints kept (older ones are deleted)")
    threads: int | None = Field(None, ge=1, description="torch threads; default: torch's choice")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile the transformer blocks (fuses their elementwise work: ~25% faster "
        "and ~30% less memory on SmolLM2; a cold compile cache adds about 40 s to the first step); auto: on for models of "
        "50M+ parameters when a C++ compiler is found")
    malloc_mmap_threshold_mb: float | None = Field(
        16, gt=0, le=32, description="Linux/glibc: allocations at least this large are mapped and unmapped "
        "on their own, so freed activations go back to the OS instead of fragmenting the heap (~30% lower "
        "peak memory for ~9% time on SmolLM2, bench/sft_vs_trl.py); 4 holds less again (fp32 Gemma 3 270M "
        "2.7 -> 2.3 GiB at no measured cost, but SmolLM2 ~20% slower); null keeps glibc's adaptive default")
    huge_pages: bool = Field(
        True, description="Linux: PyTorch's CPU blocks of 2 MB and more use transparent huge pages "
        "(THP_MEM_ALLOC_ENABLE=1, set before the model loads), so a fresh activation costs a page fault per "
        "2 MB instead of per 4 KB (bench/sft_vs_trl.py, docs/benchmarks.md); false leaves PyTorch's default")
    max_bad_steps: int = Field(5, ge=1, description="stop after this many NaN/inf steps in a row")
    parallel: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="under torchrun: ddp (adapters; full fine-tuning that fits one device) or fsdp "
                            "(FSDP2 shards full fine-tuning); auto picks, and the run pins it")
    collective_timeout_s: float = Field(
        600.0, gt=0, description="under torchrun: a collective waiting longer than this ends the run (a lost "
                                 "process), instead of hanging it")

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: Any) -> Any:  # YAML reads a bare on/off as a boolean
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


TASKS = ("sft", "classify", "pair", "tag", "extract-qa", "lifelong")


class TaskConfig(_Strict):
    """What is learned: instruction following (sft, the generative route) or a specialist head."""
    type: Literal["sft", "classify", "pair", "tag", "extract-qa", "lifelong"] = Field(
        "sft", description="sft: chat/instruction data; classify | pair | tag | extract-qa: an encoder-style head; "
                           "lifelong: one stage of `dianjing train --continual SEQUENCE.yaml` (set by it)")
    text_field: str | None = Field(None, description="classify/pair: text column (default: auto-detect)")
    text_b_field: str | None = Field(None, description="pair: second text column (default: auto-detect)")
    label_field: str | None = Field(None, description="classify/pair: label column (default: auto-detect)")
    head: Literal["auto", "transformers", "own"] = Field(
        "auto", description="auto: the transformers AutoModelFor… head where the architecture has one, else "
                            "dianjing's own linear head over the backbone's hidden states")
    pooling: Literal["auto", "first", "last", "mean"] = Field(
        "auto", description="own head, classify/pair: auto = first token for encoders with [CLS], last for decoders")
    doc_stride: int = Field(128, ge=1, description="extract-qa: tokens shared by consecutive context windows")
    max_answer_length: int = Field(30, ge=1, description="extract-qa: longest answer, in tokens")
    classifier_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout before the task head")
    head_lr: float | None = Field(None, gt=0, description="learning rate of the new head; null: train.lr. classify, "
                                                          "pair and tag runs default to 1e-3 "
                                                          "(measured: experiments/defaults)")


# Settings whose best value depends on the task type, measured on real data against the plain defaults
# by experiments/defaults/run.py (its README has the table). load_config fills them in where the config
# file and --set leave the key unset, and says so; a run's config.yaml then holds them, so a resumed run
# keeps the values it started with even after this table changes.
# A head trained from scratch needs a larger step than the pre-trained body it sits on: task.head_lr
# 1e-3 (with the body at train.lr 2e-4, LoRA) raised WNUT-16 entity F1 from 19.0 to 37.7 on MiniLM and
# BBC topic accuracy from 55.6 to 68.1 (experiments/defaults). On a small backbone full fine-tuning
# (lr 1e-4, head 1e-3) measured better still for the three heads, at 0.8–1.9x the time: tagging F1 44.1,
# BBC accuracy 96.4, MRPC/PAWS pairs 59.3 (LoRA: 58.0, the majority class). So classify, pair and tag
# take adapter.method auto: full below 150M parameters (dianjing.models.adapters.resolve_auto), LoRA
# above, where full fine-tuning costs 4x the optimizer memory and was not measured better.
# extract-qa does neither: on DRCD with Gemma (LoRA) a separate head rate measured no better
# (EM 7.0 / F1 17.8 against 7.5 / 18.2), and the specialists experiment's hand-tuned settings worse
# at 200 questions (3.0 / 14.3), so it keeps the plain defaults.
_SPECIALIST = {"task.head_lr": 1e-3, "adapter.method": "auto"}
TASK_DEFAULTS: dict[str, dict[str, Any]] = {"classify": _SPECIALIST, "pair": _SPECIALIST, "tag": _SPECIALIST}


def task_defaults(tree: dict) -> dict[str, Any]:
    """Fill TASK_DEFAULTS for the tree's task type into the keys it leaves unset; returns what was filled."""
    task = tree.get("task") if isinstance(tree.get("task"), dict) else {}
    filled = {}
    for key, value in TASK_DEFAULTS.get(task.get("type", "sft"), {}).items():
        section, name = key.split(".")
        part = tree.setdefault(section, {})
        if isinstance(part, dict) and name not in part:
            part[name] = value
            filled[key] = value
    return filled


class RunConfig(_Strict):
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


def _format_validation_error(err: ValidationError, source: str, what: str = "config", cls=None) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'{_did_you_mean(cls, e['loc'])}")
        elif not key:  # a check over the whole file (model_validator)
            lines.append(e["msg"])
        else:
            lines.append(f"'{key}': {e['msg']} (got {e.get('input')!r})")
    return f"{source}: invalid {what}:\n  " + "\n  ".join(lines)


def _did_you_mean(cls, loc: tuple) -> str:
    """' (did you mean 'train.lr'?)' for a misspelt key, or the section's keys when nothing is close."""
    import difflib

    node = cls
    for part in loc[:-1]:  # walk down to the section the key is in
        field = getattr(node, "model_fields", {}).get(part) if node is not None else None
        node = field.annotation if field is not None and isinstance(field.annotation, type) else None
    if node is None or not hasattr(node, "model_fields"):
        return ""
    prefix = ".".join(str(p) for p in loc[:-1])
    known = list(node.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)"
    return f" ({prefix or 'the top level'} has: {', '.join(known)})"


def _parse_value(text: str) -> Any:
    """Parse a --set value as YAML so numbers, booleans and lists work."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(tree: dict, assignment: str) -> None:
    """Apply one 'a.b.c=value' override to a nested dict."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. --set train.lr=1e-4")
    key, _, raw = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {assignment!r}: empty key")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {assignment!r}: '{p}' is not a section")
        node = nxt
    node[parts[-1]] = _parse_value(raw)


def read_yaml_tree(path: str | Path | None, overrides: list[str] | None, sections: str) -> dict:
    """A YAML mapping (or {} without a file) with --set overrides applied; every config file goes through here."""
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping{' with sections ' + sections if sections else ''}")
        tree = loaded
    for o in overrides or []:
        apply_override(tree, o)
    return tree


def validate(cls, tree: dict, source: str, what: str = "config"):
    """cls.model_validate(tree), with pydantic's errors turned into one ConfigError naming the keys."""
    try:
        return cls.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source, what, cls),
                          fix="docs/configuration.md lists every key with its type and default") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, log=None) -> RunConfig:
    """Read a YAML config (optional), apply --set overrides and the task type's defaults, validate."""
    tree = read_yaml_tree(path, overrides, "model/data/adapter/train")
    filled = task_defaults(tree)
    if filled and log is not None:
        log(f"{tree['task']['type']} defaults: " + ", ".join(f"{k}={v}" for k, v in filled.items())
            + " (measured best for this task type: experiments/defaults/README.md; --set overrides them)")
    return validate(RunConfig, tree, str(path) if path is not None else "config")


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
