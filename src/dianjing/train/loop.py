"""The one training loop: LoRA, other PEFT methods and full fine-tuning all run through `train`.

Follow it top to bottom: config → data → model + adapter → loss → steps → run folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import random
import resource
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import torch

from dianjing import precision
from dianjing.config import RunConfig, dump_config, load_config
from dianjing.data.batching import collate, epoch_order
from dianjing.data.load import load_conversations, split_eval
from dianjing.data.render import RenderStats, render_all
from dianjing.data.templates import choose_template
from dianjing.errors import DianjingError
from dianjing.models.adapters import attach, count_params
from dianjing.models.load import load_model, load_tokenizer, resolve_model
from dianjing.run_folder import RunFolder
from dianjing.train import checkpoint as ckpt
from dianjing.train.compile import compile_blocks
from dianjing.train.compile import decide as compile_decide
from dianjing.train.compile import eager as compile_eager
from dianjing.train.loss import SFTLoss
from dianjing.train.progress import Progress


def lr_lambda(total: int, warmup: int, schedule: str):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        frac = (step - warmup) / max(1, total - warmup)
        frac = min(max(frac, 0.0), 1.0)
        return 0.5 * (1 + math.cos(math.pi * frac)) if schedule == "cosine" else 1.0 - frac
    return f


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def set_mmap_threshold(mb: float) -> bool:
    """glibc's mallopt(M_MMAP_THRESHOLD): blocks of at least `mb` MB get their own mapping.

    glibc's default threshold adapts upwards to 32 MB, so the activations of a training step
    (mostly 1-30 MB each on these models) come from the heap, and the heap fragments: a
    step's free blocks rarely coalesce into a block the next step can reuse and are not
    returned to the OS, and resident memory grows step after step. A fixed threshold maps
    those blocks on their own and unmaps them on free. The cost is the page faults of
    mapping them again each step. Returns False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc.mallopt(-3, int(mb * 2**20)) == 1  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        return False


def _new_run_dir(cfg: RunConfig) -> Path:
    if cfg.train.output_dir:
        return Path(cfg.train.output_dir)
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise DianjingError(f"cannot write to the output folder {run_dir}: {e.strerror or e}",
                            fix="choose a writable folder with --output-dir") from None


class Trainer:
    """Holds what the steps share; `run()` is the loop."""

    def __init__(self, cfg: RunConfig, run_dir: Path, log=print):
        self.cfg, self.run_dir, self.log = cfg, run_dir, log
        self.folder = RunFolder(run_dir)
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.malloc_mmap_threshold_mb and not set_mmap_threshold(t.malloc_mmap_threshold_mb):
            log("train.malloc_mmap_threshold_mb: not a glibc system, the setting has no effect here")
        random.seed(t.seed)
        torch.manual_seed(t.seed)

        self.model_path = resolve_model(cfg.model.name, log=log)
        self.tokenizer = load_tokenizer(self.model_path, cfg.model.trust_remote_code, log=log)
        full = cfg.adapter.method == "full"
        self.precision = precision.for_training(cfg.model.precision, full=full, adapter_compute=cfg.adapter.compute,
                                                fp32_head=cfg.task.type != "sft")
        self.dtype = self.precision.dtype
        # "auto" is a speed measurement and can come out differently under load: pin what this run
        # uses, so that a resumed run computes in the same precision as the steps before it
        self._pin(cfg.model, "precision", self.precision.name)
        self.compiled = False
        self.head = None  # the specialist's head, when the task is not sft
        if cfg.task.type == "sft":
            if cfg.model.random_init:
                raise DianjingError("model.random_init is for specialist baselines; instruction tuning starts "
                                    "from pre-trained weights", fix="remove model.random_init or set task.type")
            self._setup_sft(log)
        else:
            self._setup_specialist(log)

        # optimiser and schedule
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": self.params}]
        if self.head is not None and cfg.task.head_lr:  # a new head may want a larger step than the body
            from dianjing.specialist.model import head_parameter_ids

            ids = head_parameter_ids(self.model)
            groups = [{"params": [p for p in self.params if id(p) not in ids]},
                      {"params": [p for p in self.params if id(p) in ids], "lr": cfg.task.head_lr}]
            groups = [g for g in groups if g["params"]]
        self.optimizer = torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
        self.lengths = [len(e.input_ids) for e in self.train_set]
        self.batches_per_epoch = math.ceil(len(self.train_set) / t.batch_size)
        self.steps_per_epoch = max(1, self.batches_per_epoch // t.grad_accum)
        self.total_steps = t.max_steps or max(1, math.ceil(t.epochs * self.steps_per_epoch))
        warmup = int(t.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.total_steps, warmup, t.schedule))
        self.eval_every = t.eval_every or self.steps_per_epoch
        self.save_every = t.save_every or self.steps_per_epoch
        self._orders: dict[int, list[list[int]]] = {}

    def _setup_sft(self, log) -> None:
        """Instruction data → conversations → ids + answer mask; a causal LM with an adapter."""
        cfg, t = self.cfg, self.cfg.train
        # data → conversations → ids + mask
        self.template, why = choose_template(cfg.data.template, self.tokenizer)
        log(why)
        convs, self.load_report = load_conversations(cfg.data, log=log)
        if cfg.data.eval_files:
            eval_convs, _ = load_conversations(cfg.data.model_copy(update={"files": cfg.data.eval_files,
                                                                           "max_examples": None}), log=log)
            train_convs = convs
        else:
            train_convs, eval_convs = split_eval(convs, cfg.data.eval_fraction, t.seed)
        self.render_stats = RenderStats()
        self.train_set = render_all(train_convs, self.tokenizer, self.template, cfg.data.max_length,
                                    cfg.data.loss_on, self.render_stats)
        self.eval_set = render_all(eval_convs, self.tokenizer, self.template, cfg.data.max_length,
                                   cfg.data.loss_on)
        if not self.train_set:
            raise DianjingError("no training example has a supervised token left",
                                fix="raise data.max_length; `dianjing validate` shows the examples")
        rs = self.render_stats
        log(f"data: {rs.kept} training examples ({rs.tokens} tokens, {rs.supervised_tokens} supervised), "
            f"{len(self.eval_set)} held out; truncated {rs.truncated}; dropped {sum(rs.dropped.values())}"
            + "".join(f"\n  dropped {n}: {why}" for why, n in rs.dropped.items())
            + "".join(f"\n  skipped {n} records: {why}" for why, n in self.load_report.skipped.items()))

        # model + adapter: frozen weights in the run's dtype, trained ones in fp32 (dianjing.precision)
        full = cfg.adapter.method == "full"
        base = load_model(self.model_path, self.precision.load_dtype(trains_base=full), cfg.model.trust_remote_code,
                          cfg.model.attn_implementation)
        base.config.use_cache = False
        if cfg.model.gradient_checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(base, "enable_input_require_grads"):
                base.enable_input_require_grads()
        if not full:
            for p in base.parameters():
                p.requires_grad_(False)
        self.model = attach(base, cfg.adapter)
        for p in self.model.parameters():  # adapters train in fp32 whatever the base dtype
            if p.requires_grad and p.dtype != torch.float32 and not full:
                p.data = p.data.float()
        self.model.train()
        trainable, total = count_params(self.model)
        log(f"model: {self.model_path} ({total / 1e6:.1f}M parameters, {str(self.dtype).split('.')[-1]}), "
            f"{cfg.adapter.method}: {trainable / 1e6:.2f}M trainable ({100 * trainable / total:.2f}%)")
        self.loss_fn = SFTLoss(self.model, t.logits, log=log)
        log(f"logits: {self.loss_fn.mode}")
        if self.precision.autocast_dtype is not None and not full:
            # PEFT casts every adapted layer's input to the adapter's dtype (fp32): a copy of each
            # activation and fp32 products; instead keep the bf16 input and let autocast run the
            # rank-r products in bf16 over the fp32 weights (forward, checkpoint recompute, backward)
            for m in self.model.modules():
                if hasattr(m, "cast_input_dtype_enabled"):
                    m.cast_input_dtype_enabled = False
        # after the loss check above, so that its no-grad forward is not what gets compiled
        self.compiled, why = compile_decide(cfg.train.compile, self.model)
        log(why)
        if self.compiled:
            compile_blocks(self.model)
        self._pin(cfg.train, "compile", "on" if self.compiled else "off")
        self.collate_fn = lambda exs: collate(exs, self.tokenizer.pad_token_id)
        self.count_targets = lambda b: int(b["mask"][:, 1:].sum())
        head_w = self.loss_fn.head.weight.numel() if self.loss_fn.head is not None else 0
        self.flops_per_token = 6 * (total - head_w)
        self.flops_per_target = 6 * head_w

    def _setup_specialist(self, log) -> None:
        """Labelled examples → features; a backbone with a task head (specialist.task)."""
        from dianjing.specialist.task import setup

        cfg = self.cfg
        data, self.head, self.train_set, self.eval_set, _ = setup(cfg, self.model_path, self.tokenizer, self.precision,
                                                                   log=log, random_init=cfg.model.random_init)
        self.specialist_data = data
        self.model = self.head.model
        if cfg.model.gradient_checkpointing:
            body = self.model.backbone if hasattr(self.model, "backbone") else self.model
            if hasattr(body, "gradient_checkpointing_enable"):
                body.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model.train()
        trainable, total = count_params(self.model)
        log(f"model: {self.model_path} ({total / 1e6:.1f}M parameters, {str(self.dtype).split('.')[-1]}), "
            f"{cfg.adapter.method}: {trainable / 1e6:.2f}M trainable ({100 * trainable / total:.2f}%)")
        self.loss_fn = self.head.loss
        self.collate_fn = self.head.collate
        self.count_targets = self.head.count_targets
        self.flops_per_token, self.flops_per_target = 6 * total, 0

    def _pin(self, section, key: str, value: str) -> None:
        """Write what an 'auto' setting resolved to into the run's config.yaml, so --resume does the same."""
        if getattr(section, key) != "auto":
            return
        setattr(section, key, value)
        if self.folder.config.exists():
            self.folder.config.write_text(dump_config(self.cfg), encoding="utf-8")

    # -- data position -------------------------------------------------------------
    def micro_batch(self, k: int) -> dict:
        """The k-th micro-batch of the run, counted across epochs."""
        epoch, i = divmod(k, self.batches_per_epoch)
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(self.lengths, self.cfg.train.batch_size, epoch,
                                               self.cfg.train.seed, self.cfg.train.batching)}
        idx = self._orders[epoch][i]
        return self.collate_fn([self.train_set[j] for j in idx])

    def _forward(self, batch):
        with self.precision.autocast():
            return self.loss_fn(batch)

    @torch.no_grad()
    def evaluate(self) -> float | None:
        if not self.eval_set:
            return None
        self.model.eval()
        tot, n = 0.0, 0
        bs = self.cfg.train.batch_size
        with compile_eager() if self.compiled else contextlib.nullcontext():  # no second compile for no-grad
            for s in range(0, len(self.eval_set), bs):
                loss, k = self._forward(self.collate_fn(self.eval_set[s:s + bs]))
                tot, n = tot + float(loss), n + k
        self.model.train()
        return tot / max(1, n)

    def eval_scores(self) -> dict:
        """The task's own metrics on the held-out examples (specialists; sft has its loss)."""
        if self.head is None or not self.specialist_data.eval_examples:
            return {}
        exs = self.specialist_data.eval_examples
        r = self.head.score(exs, self.head.predict(exs, self.cfg.train.batch_size))
        return {k: float(v) for k, v in r.items() if isinstance(v, (int, float)) and k not in ("count", "support",
                                                                                               "missing", "extra")}

    # -- the loop ------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        t = self.cfg.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ckpt_root = self.folder.checkpoints
        metrics_path = self.folder.metrics
        state = {"step": 0, "tokens": 0, "supervised_tokens": 0, "elapsed_s": 0.0, "bad_steps": 0,
                 "skipped_steps": 0}
        if resume:
            last = ckpt.latest_checkpoint(ckpt_root, log=self.log)
            if last is None:
                self.log("no complete checkpoint to resume from; starting from step 0")
            else:
                state.update(ckpt.load_checkpoint(last, self.model, self.optimizer, self.scheduler))
                self.log(f"resumed from {last.name} (step {state['step']})")
        _truncate_metrics(metrics_path, state["step"])
        step = state["step"]
        t_start = time.perf_counter() - state["elapsed_s"]
        bar = Progress(self.total_steps, start=step)
        window_t, window_tok = time.perf_counter(), 0
        with open(metrics_path, "a", encoding="utf-8") as metrics:
            while step < self.total_steps:
                batches = [self.micro_batch(step * t.grad_accum + a) for a in range(t.grad_accum)]
                n_targets = sum(self.count_targets(b) for b in batches)
                step_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
                total_loss = 0.0
                for b in batches:
                    loss_sum, _ = self._forward(b)
                    (loss_sum / max(1, n_targets)).backward()
                    total_loss += float(loss_sum.detach())
                loss = total_loss / max(1, n_targets)
                params = self.params
                if t.max_grad_norm:
                    gnorm = float(torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm))
                else:
                    gnorm = float(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None)))
                if not (math.isfinite(loss) and math.isfinite(gnorm)):
                    # a bad step changes nothing: gradients are dropped, the data moves on
                    self.optimizer.zero_grad(set_to_none=True)
                    state["bad_steps"] += 1
                    state["skipped_steps"] += 1
                    self.log(f"step {step + 1}: loss {loss} / grad norm {gnorm} is not finite; step skipped "
                             f"({state['bad_steps']} in a row)")
                    if state["bad_steps"] >= t.max_bad_steps:
                        state["step"] = step + 1  # the bad batches are not retried on resume
                        self.scheduler.step()
                        ckpt.save_checkpoint(ckpt_root, step + 1, self.model, self.optimizer, self.scheduler,
                                             state, t.keep_last_n)
                        raise DianjingError(
                            f"{state['bad_steps']} steps in a row had a NaN/inf loss or gradient; stopping",
                            fix="lower train.lr, use model.precision=fp32, or check the data; the weights "
                                f"before these steps are saved in {ckpt_root} (resume with --resume)")
                    step += 1
                    state["step"] = step
                    self.scheduler.step()
                    continue
                state["bad_steps"] = 0
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                state["step"] = step
                state["tokens"] += step_tokens
                state["supervised_tokens"] += n_targets
                window_tok += step_tokens
                now = time.perf_counter()
                state["elapsed_s"] = now - t_start
                if step % t.log_every == 0 or step == self.total_steps:
                    tps = window_tok / max(1e-9, now - window_t)
                    window_t, window_tok = now, 0
                    rec = {"step": step, "epoch": round(step * t.grad_accum / self.batches_per_epoch, 4),
                           "loss": round(loss, 6), "lr": self.scheduler.get_last_lr()[0],
                           "grad_norm": round(gnorm, 6), "tokens": state["tokens"],
                           "supervised_tokens": state["supervised_tokens"], "tokens_per_s": round(tps, 2),
                           "elapsed_s": round(state["elapsed_s"], 3)}
                    metrics.write(json.dumps(rec) + "\n")
                    metrics.flush()
                    bar.update(step, loss=loss, tokens_per_s=tps)
                if step % self.eval_every == 0 or step == self.total_steps:
                    ev = self.evaluate()
                    if ev is not None:
                        rec = {"step": step, "eval_loss": round(ev, 6), "elapsed_s": round(state["elapsed_s"], 3)}
                        scores = self.eval_scores()
                        rec.update({f"eval_{k}": round(v, 6) for k, v in scores.items()})
                        metrics.write(json.dumps(rec) + "\n")
                        metrics.flush()
                        state["eval_loss"] = ev
                        if scores:
                            state["eval_scores"] = scores
                        bar.note(f"step {step}: eval loss {ev:.4f}"
                                 + "".join(f", {k} {v:.4f}" for k, v in scores.items()))
                if step % self.save_every == 0 or step == self.total_steps:
                    ckpt.save_checkpoint(ckpt_root, step, self.model, self.optimizer, self.scheduler,
                                         state, t.keep_last_n)
        bar.close()
        return state

    # -- the run folder -------------------------------------------------------------
    def save_outputs(self, state: dict) -> dict:
        if self.head is not None:
            return self._save_specialist(state)
        run = self.folder
        if self.cfg.adapter.method == "full":
            self.model.save_pretrained(str(run.model), safe_serialization=True)
        else:
            self.model.save_pretrained(str(run.adapter))
        self.tokenizer.save_pretrained(str(run.tokenizer))
        run.write_template(self.template)
        flops = self.flops_per_token * state["tokens"] + self.flops_per_target * state["supervised_tokens"]
        summary = {
            "steps": state["step"],
            "tokens": state["tokens"], "supervised_tokens": state["supervised_tokens"],
            "wall_time_s": round(state["elapsed_s"], 2),
            "tokens_per_s": round(state["tokens"] / max(1e-9, state["elapsed_s"]), 2),
            "estimated_flops": flops, "peak_rss_mb": round(peak_rss_mb(), 1),
            "skipped_steps": state["skipped_steps"], "final_eval_loss": state.get("eval_loss"),
            "data": self.render_stats.summary(), "skipped_records": dict(self.load_report.skipped),
            "files": self.load_report.files, "logits": self.loss_fn.mode,
        }
        run.write_summary(summary)
        run.write_info(base_model=self.model_path, model_name=self.cfg.model.name, method=self.cfg.adapter.method,
                       dtype=str(self.dtype).split(".")[-1])  # last: a run.json means a finished run
        return summary


    def _save_specialist(self, state: dict) -> dict:
        from dianjing.specialist.model import save

        run = self.folder
        dtype = str(self.dtype).split(".")[-1]
        save(self.model, run.specialist, self.head.info(self.cfg, self.model_path, dtype))
        self.tokenizer.save_pretrained(str(run.tokenizer))
        d = self.specialist_data
        summary = {
            "task": self.cfg.task.type, "steps": state["step"], "examples": len(d.train_examples),
            "tokens": state["tokens"], "supervised_tokens": state["supervised_tokens"],
            "wall_time_s": round(state["elapsed_s"], 2),
            "tokens_per_s": round(state["tokens"] / max(1e-9, state["elapsed_s"]), 2),
            "estimated_flops": self.flops_per_token * state["tokens"], "peak_rss_mb": round(peak_rss_mb(), 1),
            "skipped_steps": state["skipped_steps"], "final_eval_loss": state.get("eval_loss"),
            "final_eval": state.get("eval_scores"), "labels": d.labels,
            "data": d.report.summary(), "eval_data": d.eval_report.summary() if d.eval_report else None,
        }
        run.write_summary(summary)
        run.write_info(base_model=self.model_path, model_name=self.cfg.model.name, method=self.cfg.adapter.method,
                       dtype=dtype, task=self.cfg.task.type)  # last: a run.json means a finished run
        return summary


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past the checkpoint we resume from, so the file is one clean history.

    Only the last line may be unreadable (a write cut short by a kill); one anywhere else means
    the file was damaged or edited, and is an error rather than history silently dropped."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    keep = []
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except ValueError:
            if n == len(lines):
                continue  # a line cut by a kill
            raise DianjingError(f"{path}:{n}: not a JSON line, and not the last line (which a kill can cut short)",
                                fix="remove or repair that line, then resume again") from None
        if rec.get("step", 0) <= step:
            keep.append(line)
    path.write_text("".join(l + "\n" for l in keep), encoding="utf-8")


@contextmanager
def _disk_errors(run_dir: Path):
    """A full disk or a folder that became unwritable: say which path, and how to continue."""
    try:
        yield
    except OSError as e:
        where = e.filename or run_dir
        raise DianjingError(f"cannot write {where}: {e.strerror or e}",
                            fix=f"free disk space, then `dianjing train --resume {run_dir}` continues from the "
                                "last complete checkpoint") from None


def train(cfg: RunConfig, log=print) -> tuple[Path, dict]:
    """Fine-tune according to cfg; returns the run folder and the summary."""
    run_dir = _new_run_dir(cfg)
    _check_writable(run_dir)
    run = RunFolder(run_dir)
    if run.checkpoints.exists() and any(run.checkpoints.iterdir()):
        raise DianjingError(f"{run_dir} already holds a run",
                            fix=f"resume it with `dianjing train --resume {run_dir}` or choose another --output-dir")
    cfg.train.output_dir = str(run_dir)
    run.config.write_text(dump_config(cfg), encoding="utf-8")
    trainer = Trainer(cfg, run_dir, log=log)
    with _disk_errors(run_dir):
        state = trainer.run(resume=False)
        return run_dir, trainer.save_outputs(state)


def resume(run_dir: Path, log=print) -> tuple[Path, dict]:
    run = RunFolder(run_dir)
    if not run.config.exists():
        raise DianjingError(f"{run_dir} is not a dianjing run folder (no config.yaml)",
                            fix="pass the folder that `dianjing train` printed")
    cfg = load_config(run.config)
    trainer = Trainer(cfg, run_dir, log=log)
    with _disk_errors(run_dir):
        state = trainer.run(resume=True)
        return run_dir, trainer.save_outputs(state)
