"""The builder of one stage of a continual run (task.type lifelong): a Setup for the one loop.

The stage's folder holds `stage.json` (written by the driver before the loop starts): which tasks
this stage learns, whether the LM loss is on (λ), the stage whose weights it starts from, and
whether it replays `replay.jsonl`. The builder reads the sequence (`continual.yaml`, two folders
up), renders the stage's examples and the replayed ones (examples.py), loads the model with its
adapter as chat SFT does, puts the previous stage's weights in, and returns the Setup. A resumed
stage builds the same Setup, so the loop's checkpoint continues it exactly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from dianjing.errors import ConfigError, DianjingError
from dianjing.lifelong import pseudo
from dianjing.lifelong.examples import LamolLoss, Layout, collate, count_qa_targets, render
from dianjing.lifelong.sequence import Sequence, load_sequence
from dianjing.lifelong.tasks import read_task
from dianjing.run_folder import RunFolder
from dianjing.train.setup import Context, Setup, base_summary, trainable
from dianjing.train.sft import causal_lm, prepare, saver

STAGE_JSON = "stage.json"
SEQUENCE_FILE = "continual.yaml"  # in the continual run's folder, beside stages/


def continual_dir(stage_dir: Path) -> Path:
    return stage_dir.parent.parent


def read_stage(stage_dir: Path) -> dict:
    p = stage_dir / STAGE_JSON
    if not p.exists():
        raise DianjingError(f"{stage_dir} has no {STAGE_JSON}: task.type lifelong is one stage of a continual run",
                            fix="start one with `dianjing train --continual SEQUENCE.yaml` (docs/lifelong.md)")
    return json.loads(p.read_text(encoding="utf-8"))


def stage_layout(seq: Sequence, tokenizer) -> Layout:
    return Layout(tokenizer, seq.markers.answer, seq.gen_text)


def build(ctx: Context) -> Setup:
    cfg, log = ctx.cfg, ctx.log
    if cfg.train.batching == "packed":
        raise ConfigError("train.batching: packed is not supported for continual runs (a batch holds QA and LM "
                          "rows of different kinds)", fix="use train.batching: length_grouped")
    stage = read_stage(ctx.folder.path)
    seq = load_sequence(continual_dir(ctx.folder.path) / SEQUENCE_FILE)
    layout = stage_layout(seq, ctx.tokenizer)
    lm, dropped = stage["lm_lambda"] > 0, {}
    train_set, eval_set, n_task = [], [], {}
    for name in stage["tasks"]:
        data = read_task(seq, [t.name for t in seq.tasks].index(name), seq.train.seed)  # the driver's split
        pairs = render(layout, data.train, lm, seq.max_length, dropped)
        n_task[name] = len(pairs)
        train_set += pairs
        eval_set += render(layout, data.eval, False, seq.max_length, dropped)
    replay_report = None
    if stage["replay"]:
        replayed, replay_report = pseudo.read(ctx.folder.path)
        train_set += render(layout, replayed, lm, seq.max_length, dropped)
    if not train_set:
        raise DianjingError(f"stage {stage['index']} ({stage['name']}): no example fits in max_length "
                            f"{seq.max_length}", fix="raise max_length in the sequence file")
    n_replay = len(train_set) - sum(n_task.values())
    log(f"stage {stage['index']} ({', '.join(stage['tasks'])}): {sum(n_task.values())} training examples"
        + (f" + {n_replay} replayed" if stage["replay"] else "") + f", {len(eval_set)} held out; "
        f"{'QA + ' + str(stage['lm_lambda']) + '·LM' if lm else 'QA'} loss"
        + "".join(f"\n  dropped {n}: {why}" for why, n in dropped.items()))
    model, total = causal_lm(_weights_from(ctx, stage))
    if stage.get("init_from") and cfg.adapter.method != "full":
        _load_adapter(model, continual_dir(ctx.folder.path) / stage["init_from"])
    loss_fn = LamolLoss(model, cfg.train.logits, stage["lm_lambda"], log=log)
    log(loss_fn.sft.describe())
    compiled = prepare(ctx, model)
    head_w = loss_fn.head.weight.numel() if loss_fn.head is not None else 0
    template, pad_id = layout.template(), ctx.tokenizer.pad_token_id

    save = saver(ctx, model, template)

    def summarize(state: dict) -> dict:
        flops = 6 * (total - head_w) * state["tokens"] + 6 * head_w * state["supervised_tokens"]
        return {**base_summary(state, flops), "logits": loss_fn.mode,
                "data": {"tasks": n_task, "replayed": n_replay, "held_out": len(eval_set), "dropped": dropped,
                         "lm_lambda": stage["lm_lambda"], "replay": replay_report}}

    return Setup(model=model, param_groups=trainable(model), train_set=train_set, eval_set=eval_set,
                 collate=lambda pairs: collate(pairs, pad_id), loss=loss_fn, count_targets=count_qa_targets,
                 flops_per_token=6 * (total - head_w), flops_per_target=6 * head_w, save=save, summarize=summarize,
                 info={"base_model": ctx.model_path, "model_name": cfg.model.name, "method": cfg.adapter.method,
                       "dtype": str(ctx.precision.dtype).split(".")[-1],
                       "lifelong": {"stage": stage["index"], "tasks": stage["tasks"]}},
                 compiled=compiled)


def _weights_from(ctx: Context, stage: dict) -> Context:
    """Full fine-tuning after the first stage starts from the previous stage's model folder."""
    if not stage.get("init_from") or ctx.cfg.adapter.method != "full":
        return ctx
    prev = RunFolder(continual_dir(ctx.folder.path) / stage["init_from"])
    if not (prev.model / "config.json").exists():
        raise DianjingError(f"{prev.path} has no model folder to start stage {stage['index']} from",
                            fix="the previous stage did not finish: resume the continual run")
    ctx.log(f"starting from {prev.model}")
    return dataclasses.replace(ctx, model_path=str(prev.model))


def _load_adapter(model, prev_dir: Path) -> None:
    """The previous stage's adapter weights, into this stage's freshly attached adapter."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = RunFolder(prev_dir).adapter / "adapter_model.safetensors"
    if not path.exists():
        raise DianjingError(f"{path} is missing: the stage before has no adapter to start from",
                            fix="the previous stage did not finish: resume the continual run")
    result = set_peft_model_state_dict(model, load_file(str(path)))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise DianjingError(f"{path}: weights that this stage's adapter does not have: {unexpected[:3]}",
                            fix="the stages must share adapter settings; start the continual run again")
