"""The one training loop: LoRA, other PEFT methods and full fine-tuning all run through `train`.

Follow it top to bottom: config → data → model + adapter → loss → steps → run folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import random
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import torch

from dianjing import precision
from dianjing.config import RunConfig, dump_config, load_config
from dianjing.data.batching import epoch_order
from dianjing.errors import DianjingError
from dianjing.models.load import load_tokenizer, resolve_model
from dianjing.routes import builder_for
from dianjing.run_folder import RunFolder
from dianjing.train import checkpoint as ckpt
from dianjing.train.compile import eager as compile_eager
from dianjing.train.setup import Context
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
    """A run: its config and folder, the route's `Setup`, the optimizer and schedule; `run()` is the loop.

    Building it: the environment (threads, allocator, seeds), the model path and tokenizer, the
    run's precision (pinned into config.yaml), then the route's builder (`dianjing.routes`)
    returns the Setup: the loop reads the model, data, loss and saving from there only.
    """

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

        model_path = resolve_model(cfg.model.name, log=log)
        tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code, log=log)
        self.precision = precision.for_training(cfg.model.precision, full=cfg.adapter.method == "full",
                                                adapter_compute=cfg.adapter.compute,
                                                fp32_head=cfg.task.type != "sft")
        # "auto" is a speed measurement and can come out differently under load: pin what this run
        # uses, so that a resumed run computes in the same precision as the steps before it
        self._pin(cfg.model, "precision", self.precision.name)
        ctx = Context(cfg, self.folder, model_path, tokenizer, self.precision, log, self._pin)
        self.setup = builder_for(cfg.task.type)(ctx).check(cfg.task.type)
        self.model, self.train_set, self.eval_set = self.setup.model, self.setup.train_set, self.setup.eval_set
        self.compiled = self.setup.compiled

        # optimiser and schedule
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.setup.param_groups, lr=t.lr, weight_decay=t.weight_decay)
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
        return self.setup.collate([self.train_set[j] for j in idx])

    def _forward(self, batch):
        with self.precision.autocast():
            return self.setup.loss(batch)

    @torch.no_grad()
    def evaluate(self) -> float | None:
        if not self.eval_set:
            return None
        self.model.eval()
        tot, n = 0.0, 0
        bs = self.cfg.train.batch_size
        with compile_eager() if self.compiled else contextlib.nullcontext():  # no second compile for no-grad
            for s in range(0, len(self.eval_set), bs):
                loss, k = self._forward(self.setup.collate(self.eval_set[s:s + bs]))
                tot, n = tot + float(loss), n + k
        self.model.train()
        return tot / max(1, n)

    # -- the loop ------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        """Steps until total_steps: gradients over the step's micro-batches, a bad step skipped,
        the optimizer step, then metrics, evaluation and checkpoints on their schedules."""
        t = self.cfg.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = self._start(resume)
        step = state["step"]
        t_start = time.perf_counter() - state["elapsed_s"]
        bar = Progress(self.total_steps, start=step)
        window_t, window_tok = time.perf_counter(), 0
        with open(self.folder.metrics, "a", encoding="utf-8") as metrics:
            while step < self.total_steps:
                batches = [self.micro_batch(step * t.grad_accum + a) for a in range(t.grad_accum)]
                n_targets = sum(self.setup.count_targets(b) for b in batches)
                step_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
                loss, gnorm = self._gradients(batches, n_targets)
                if not (math.isfinite(loss) and math.isfinite(gnorm)):
                    step = self._skip_bad_step(step, state, loss, gnorm)
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
                    _write(metrics, {"step": step, "epoch": round(step * t.grad_accum / self.batches_per_epoch, 4),
                                     "loss": round(loss, 6), "lr": self.scheduler.get_last_lr()[0],
                                     "grad_norm": round(gnorm, 6), "tokens": state["tokens"],
                                     "supervised_tokens": state["supervised_tokens"], "tokens_per_s": round(tps, 2),
                                     "elapsed_s": round(state["elapsed_s"], 3)})
                    bar.update(step, loss=loss, tokens_per_s=tps)
                if step % self.eval_every == 0 or step == self.total_steps:
                    self._evaluate_into(step, state, metrics, bar)
                if step % self.save_every == 0 or step == self.total_steps:
                    ckpt.save_checkpoint(self.folder.checkpoints, step, self.model, self.optimizer, self.scheduler,
                                         state, t.keep_last_n)
        bar.close()
        return state

    def _start(self, resume: bool) -> dict:
        """The loop's state: fresh, or from the last complete checkpoint (metrics past it are dropped)."""
        state = {"step": 0, "tokens": 0, "supervised_tokens": 0, "elapsed_s": 0.0, "bad_steps": 0,
                 "skipped_steps": 0}
        if resume:
            last = ckpt.latest_checkpoint(self.folder.checkpoints, log=self.log)
            if last is None:
                self.log("no complete checkpoint to resume from; starting from step 0")
            else:
                state.update(ckpt.load_checkpoint(last, self.model, self.optimizer, self.scheduler))
                self.log(f"resumed from {last.name} (step {state['step']})")
        _truncate_metrics(self.folder.metrics, state["step"])
        return state

    def _gradients(self, batches: list[dict], n_targets: int) -> tuple[float, float]:
        """Backward over the micro-batches, each loss divided by the step's targets; (loss, grad norm)."""
        total_loss = 0.0
        for b in batches:
            loss_sum, _ = self._forward(b)
            (loss_sum / max(1, n_targets)).backward()
            total_loss += float(loss_sum.detach())
        if self.cfg.train.max_grad_norm:
            gnorm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.train.max_grad_norm))
        else:
            gnorm = float(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in self.params if p.grad is not None)))
        return total_loss / max(1, n_targets), gnorm

    def _skip_bad_step(self, step: int, state: dict, loss: float, gnorm: float) -> int:
        """A bad step changes nothing: gradients are dropped, the data moves on; too many in a row stop
        the run with the weights before them saved. Returns the next step."""
        t, ckpt_root = self.cfg.train, self.folder.checkpoints
        self.optimizer.zero_grad(set_to_none=True)
        state["bad_steps"] += 1
        state["skipped_steps"] += 1
        self.log(f"step {step + 1}: loss {loss} / grad norm {gnorm} is not finite; step skipped "
                 f"({state['bad_steps']} in a row)")
        if state["bad_steps"] >= t.max_bad_steps:
            state["step"] = step + 1  # the bad batches are not retried on resume
            self.scheduler.step()
            ckpt.save_checkpoint(ckpt_root, step + 1, self.model, self.optimizer, self.scheduler, state,
                                 t.keep_last_n)
            raise DianjingError(f"{state['bad_steps']} steps in a row had a NaN/inf loss or gradient; stopping",
                                fix="lower train.lr, use model.precision=fp32, or check the data; the weights "
                                    f"before these steps are saved in {ckpt_root} (resume with --resume)")
        state["step"] = step + 1
        self.scheduler.step()
        return step + 1

    def _evaluate_into(self, step: int, state: dict, metrics, bar) -> None:
        """Held-out loss (and the task's own scores) into metrics.jsonl, the state and the progress line."""
        ev = self.evaluate()
        if ev is None:
            return
        rec = {"step": step, "eval_loss": round(ev, 6), "elapsed_s": round(state["elapsed_s"], 3)}
        scores = self.setup.eval_scores()
        rec.update({f"eval_{k}": round(v, 6) for k, v in scores.items()})
        _write(metrics, rec)
        state["eval_loss"] = ev
        if scores:
            state["eval_scores"] = scores
        bar.note(f"step {step}: eval loss {ev:.4f}" + "".join(f", {k} {v:.4f}" for k, v in scores.items()))

    # -- the run folder -------------------------------------------------------------
    def save_outputs(self, state: dict) -> dict:
        """The route writes its weights; then summary.json, and run.json last (a run.json means finished)."""
        self.setup.save(self.folder)
        summary = self.setup.summarize(state)
        self.folder.write_summary(summary)
        self.folder.write_info(self.setup.info)
        return summary


def _write(metrics, rec: dict) -> None:
    """One metrics.jsonl line, flushed (a kill loses at most the line being written)."""
    metrics.write(json.dumps(rec) + "\n")
    metrics.flush()


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
