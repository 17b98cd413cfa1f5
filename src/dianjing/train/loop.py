"""The one training loop: LoRA, other PEFT methods and full fine-tuning all run through `train`.

Follow it top to bottom: config → data → model + adapter → loss → steps → run folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import torch

from dianjing import precision
from dianjing.config import RunConfig, dump_config, load_config
from dianjing.data.batching import epoch_order, split_padded
from dianjing.errors import DianjingError
from dianjing.models.adapters import resolve_auto
from dianjing.models.load import load_tokenizer, resolve_model
from dianjing.peak import peak_gflops, recheck
from dianjing.routes import GENERATIVE, builder_for
from dianjing.run_folder import RunFolder
from dianjing.train import checkpoint as ckpt
from dianjing.train.compile import eager as compile_eager
from dianjing.train.compile import find_blocks
from dianjing.train.distributed import Engine, World, choose, remap_groups, share
from dianjing.train.memory import return_freed_memory, set_mmap_threshold, torch_huge_pages
from dianjing.train.setup import Context
from dianjing.train.progress import Progress, Silent


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

    def __init__(self, cfg: RunConfig, run_dir: Path, log=print, world: World | None = None):
        self.world = world or World()
        self.cfg, self.run_dir = cfg, run_dir
        self.log = log if self.world.main else (lambda *_: None)  # one voice: rank 0's
        log = self.log
        self.folder = RunFolder(run_dir)
        t = cfg.train
        if self.world.size > t.batch_size:
            raise DianjingError(f"train.batch_size {t.batch_size} is smaller than the {self.world.size} processes: "
                                "each process needs at least one example of every micro-batch",
                                fix=f"set train.batch_size to {self.world.size} or more (it counts examples over "
                                    "all processes), or start fewer processes")
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.malloc_mmap_threshold_mb and not set_mmap_threshold(t.malloc_mmap_threshold_mb):
            log("train.malloc_mmap_threshold_mb: not a glibc system, the setting has no effect here")
        if t.huge_pages:
            on, why = torch_huge_pages()
            log(f"memory: {why}" if on else f"train.huge_pages: no effect here ({why})")
        random.seed(t.seed)
        torch.manual_seed(t.seed)

        model_path = resolve_model(cfg.model.name, log=log)
        tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code, log=log)
        if cfg.adapter.method == "auto":  # the choice (and full fine-tuning's lr) goes into config.yaml
            method, why = resolve_auto(cfg, model_path)
            log(why)
            self._pin(cfg.adapter, "method", method)
        self.precision = precision.for_training(cfg.model.precision, full=cfg.adapter.method == "full",
                                                adapter_compute=cfg.adapter.compute,
                                                fp32_head=cfg.task.type not in GENERATIVE,
                                                device_setting=cfg.model.device)
        # "auto" is a speed measurement and can come out differently under load: pin what this run
        # uses, so that a resumed run computes in the same precision (and on the same kind of device)
        self._pin(cfg.model, "precision", self.precision.name)
        self._pin(cfg.model, "device", precision.pinned(cfg.model.device, self.precision.device))
        self.device = self.precision.device
        log(f"device: {self.device} ({precision.device_name(self.device)})"
            + (f", process {self.world.rank + 1} of {self.world.size}" if self.world.many else ""))
        ctx = Context(cfg, self.folder, model_path, tokenizer, self.precision, log, self._pin)
        del tokenizer  # the route owns it now (the chat route lets it go once the data is rendered)
        self.setup = builder_for(cfg.task.type)(ctx).check(cfg.task.type)
        self.model, self.train_set, self.eval_set = self.setup.model, self.setup.train_set, self.setup.eval_set
        self.compiled = self.setup.compiled
        self.engine = self._engine()

        # optimiser and schedule
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.param_groups, lr=t.lr, weight_decay=t.weight_decay)
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
        if self.folder.config.exists() and self.world.main:
            self.folder.config.write_text(dump_config(self.cfg), encoding="utf-8")

    def _engine(self) -> Engine:
        """The forward the loop calls: the route's loss, under DDP or FSDP2 when there are many processes."""
        full = self.cfg.adapter.method == "full"
        n_params = sum(p.numel() for p in self.model.parameters())
        mode, why = choose(self.cfg.train.parallel, full, n_params, self.device, self.world,
                           shardable=self.cfg.task.type == "sft")
        self.log(why)
        if mode != "none":
            self._pin(self.cfg.train, "parallel", mode)
        names = {id(p): n for n, p in self.model.named_parameters()}
        engine = Engine(self.model, self.setup.loss, mode, self.world, self.device,
                        blocks=find_blocks(self.model) if mode == "fsdp" else None,
                        bf16=self.precision.dtype == torch.bfloat16)
        # FSDP2 puts sharded parameters in place of the originals: the optimizer takes those
        self.param_groups = remap_groups(self.setup.param_groups, names, self.model) if mode == "fsdp" \
            else self.setup.param_groups
        self.sharded = mode == "fsdp"
        return engine

    # -- data position -------------------------------------------------------------
    def micro_batch(self, k: int) -> tuple[dict, float]:
        """This process's part of the k-th micro-batch of the run (counted across epochs), and its weight
        (0 for a stand-in: a process left without examples by a short last batch)."""
        epoch, i = divmod(k, self.batches_per_epoch)
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(self.lengths, self.cfg.train.batch_size, epoch,
                                               self.cfg.train.seed, self.cfg.train.batching)}
        idx, weight = share(self._orders[epoch][i], self.world)
        return self.setup.collate([self.train_set[j] for j in idx]), weight

    def _forward(self, batch):
        with self.precision.autocast():
            return self.engine(precision.to_device(batch, self.device))

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Held-out loss per target; each process scores its share of every eval batch."""
        if not self.eval_set:
            return None
        self.model.eval()
        tot, n = 0.0, 0
        bs = self.cfg.train.batch_size
        with compile_eager() if self.compiled else contextlib.nullcontext():  # no second compile for no-grad
            for s in range(0, len(self.eval_set), bs):
                idx, weight = share(list(range(s, min(s + bs, len(self.eval_set)))), self.world)
                batch = self.setup.collate([self.eval_set[j] for j in idx])
                split = self.cfg.train.split_padding if not self.world.many else None  # as in step()
                for part in split_padded(batch, split) if split else [batch]:
                    loss, k = self._forward(part)  # the loss summed over the part's targets
                    tot, n = tot + weight * float(loss), n + weight * k
        tot, n = self.world.sum(tot, n)
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
        bar = Progress(self.total_steps, start=step, quiet=not self.world.main)
        window_t, window_tok = time.perf_counter(), 0
        with (open(self.folder.metrics, "a", encoding="utf-8") if self.world.main
              else contextlib.nullcontext(Silent())) as metrics:
            while step < self.total_steps:
                loss, gnorm, n_targets, step_tokens = self.step(step)
                if not (math.isfinite(loss) and math.isfinite(gnorm)):
                    step = self._skip_bad_step(step, state, loss, gnorm)
                    continue
                state["bad_steps"] = 0
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
                    self._save_checkpoint(step, state)
        bar.close()
        return state

    def step(self, step: int) -> tuple[float, float, int, int]:
        """One optimizer step's work on the data of step `step`: gradients over its micro-batches, then
        (when loss and gradient norm are finite) the update; (loss, grad norm, targets, tokens).

        A bad step's gradients are left for `run` to drop. bench/step_budget.py profiles this same call;
        the `dianjing::optimizer` label (and `dianjing::clip`, `dianjing::output_layer` in the loss) are
        the ranges it times."""
        t = self.cfg.train
        batches = [self.micro_batch(step * t.grad_accum + a) for a in range(t.grad_accum)]
        if t.split_padding and not self.world.many:  # ranks must run the same forwards (FSDP gathers in each)
            batches = [(part, w) for b, w in batches for part in split_padded(b, t.split_padding)]
        # counted on the host before the batches move, over all processes: the step's loss is
        # divided by its global number of targets
        n_targets, step_tokens = (int(x) for x in self.world.sum(
            sum(w * self.setup.count_targets(b) for b, w in batches),
            sum(w * int(b["attention_mask"].sum()) for b, w in batches)))
        _fault_point("rank-dies", self.world.rank, step)
        loss, gnorm = self._gradients(batches, n_targets)
        if math.isfinite(loss) and math.isfinite(gnorm):
            with torch.profiler.record_function("dianjing::optimizer"):
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        return loss, gnorm, n_targets, step_tokens

    def _start(self, resume: bool) -> dict:
        """The loop's state: fresh, or from the last complete checkpoint (metrics past it are dropped)."""
        state = {"step": 0, "tokens": 0, "supervised_tokens": 0, "elapsed_s": 0.0, "bad_steps": 0,
                 "skipped_steps": 0}
        if resume:
            last = ckpt.latest_checkpoint(self.folder.checkpoints, log=self.log)
            if last is None:
                self.log("no complete checkpoint to resume from; starting from step 0")
            else:
                state.update(ckpt.load_checkpoint(last, self.model, self.optimizer, self.scheduler,
                                                  sharded=self.sharded))
                self.log(f"resumed from {last.name} (step {state['step']})")
        if self.world.main:
            _truncate_metrics(self.folder.metrics, state["step"])
        self.world.barrier()
        return state

    def _save_checkpoint(self, step: int, state: dict) -> None:
        ckpt.save_checkpoint(self.folder.checkpoints, step, self.model, self.optimizer, self.scheduler, state,
                             self.cfg.train.keep_last_n, world=self.world, sharded=self.sharded)

    def _gradients(self, batches: list[tuple[dict, float]], n_targets: int) -> tuple[float, float]:
        """Backward over the micro-batches, each loss divided by the step's global targets (the ranks'
        gradients are summed on the last one); (loss, grad norm), the same on every process."""
        total_loss = torch.zeros((), dtype=torch.float32 if self.device.type == "mps" else torch.float64,
                                 device=self.device)
        for a, (b, weight) in enumerate(batches):
            with self.engine.sync(last=a == len(batches) - 1):
                loss_sum, _ = self._forward(b)
                if self.device.type == "cpu":  # the forward's freed blocks go back before the backward's peak
                    return_freed_memory()
                ((loss_sum / max(1, n_targets)) * weight).backward()
            total_loss += weight * loss_sum.detach().double()  # one host sync per step, not per micro-batch
        (total,) = self.world.sum(float(total_loss))
        with torch.profiler.record_function("dianjing::clip"):
            gnorm = self.engine.clip(self.params, self.cfg.train.max_grad_norm)
        return total / max(1, n_targets), gnorm

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
            self._save_checkpoint(step + 1, state)
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
        with self.engine.gathered():  # every process computes the same scores (FSDP2: their gathers pair up)
            scores = self.setup.eval_scores()
        rec.update({f"eval_{k}": round(v, 6) for k, v in scores.items()})
        _write(metrics, rec)
        state["eval_loss"] = ev
        if scores:
            state["eval_scores"] = scores
        bar.note(f"step {step}: eval loss {ev:.4f}" + "".join(f", {k} {v:.4f}" for k, v in scores.items()))

    # -- the run folder -------------------------------------------------------------
    def save_outputs(self, state: dict) -> dict:
        """The route writes its weights; then summary.json, and run.json last (a run.json means finished).
        Rank 0 writes; under FSDP2 every process first helps gather the whole model."""
        full_state = self.engine.full_state()
        summary = self.setup.summarize(state)
        summary.update(self._device_summary(state))
        if self.world.main:
            if full_state is not None:
                self.setup.save(self.folder, state_dict=full_state)
            else:
                self.setup.save(self.folder)
            self.folder.write_summary(summary)
            self.folder.write_info(self.setup.info)
        self.world.barrier()
        return summary

    def _device_summary(self, state: dict) -> dict:
        """Where the run computed, its peak device memory, and MFU against the device's measured matmul peak."""
        dev, dtype = self.device, self.precision.dtype
        flops = self.setup.flops_per_token * state["tokens"] + self.setup.flops_per_target * state["supervised_tokens"]
        rate = flops / max(1e-9, state["elapsed_s"])
        if self.world.many:  # the ranks would probe at once, sharing the device or the host
            peak = peak_gflops(dev, dtype) * 1e9 * self.world.size
        else:  # a count above the cached peak says the peak is stale: measured again (seconds) before MFU
            found, why = recheck(dev, dtype, rate / 1e9)
            if why:
                self.log(why)
            peak = found.gflops * 1e9
        return {"device": str(dev) if not self.world.many else dev.type, "device_name": precision.device_name(dev),
                "processes": self.world.size, "parallel": self.engine.mode,
                "peak_device_memory_mb": precision.peak_device_memory_mb(dev),
                "matmul_peak_gflops": round(peak / 1e9, 1),
                "mfu": round(rate / peak, 4)}


def _fault_point(name: str, rank: int, step: int) -> None:
    """Fault injection for the many-process tests: DIANJING_FAULT=rank-dies:RANK:STEP kills that rank
    with SIGKILL as it starts that step (the others are then waiting for it in a collective)."""
    want = os.environ.get("DIANJING_FAULT")
    if want and want == f"{name}:{rank}:{step}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


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


def _world(cfg: RunConfig) -> World:
    """This process's place under torchrun (joined to the process group), or a world of one."""
    return World.from_env().start(precision.device(cfg.model.device), cfg.train.collective_timeout_s)


def _new_run(cfg: RunConfig) -> Path:
    """Rank 0's new run folder, with the run's config.yaml in it."""
    run_dir = _new_run_dir(cfg)
    _check_writable(run_dir)
    run = RunFolder(run_dir)
    if run.checkpoints.exists() and any(run.checkpoints.iterdir()):
        raise DianjingError(f"{run_dir} already holds a run",
                            fix=f"resume it with `dianjing train --resume {run_dir}` or choose another --output-dir")
    cfg.train.output_dir = str(run_dir)
    run.config.write_text(dump_config(cfg), encoding="utf-8")
    return run_dir


def train(cfg: RunConfig, log=print) -> tuple[Path, dict]:
    """Fine-tune according to cfg; returns the run folder and the summary. Under torchrun every
    process calls this: rank 0 chooses and writes the folder, the others take its path."""
    world = _world(cfg)
    made: Path | DianjingError | None = None
    if world.main:
        try:
            made = _new_run(cfg)
        except DianjingError as e:
            made = e
    made = world.broadcast(made)  # a refusal on rank 0 ends every process with its message
    if isinstance(made, DianjingError):
        raise made
    run_dir = made
    cfg.train.output_dir = str(run_dir)
    trainer = Trainer(cfg, run_dir, log=log, world=world)
    with _disk_errors(run_dir):
        state = trainer.run(resume=False)
        summary = trainer.save_outputs(state)
    world.stop()
    return run_dir, summary


def resume(run_dir: Path, log=print) -> tuple[Path, dict]:
    run = RunFolder(run_dir)
    if not run.config.exists():
        raise DianjingError(f"{run_dir} is not a dianjing run folder (no config.yaml)",
                            fix="pass the folder that `dianjing train` printed")
    cfg = load_config(run.config)
    trainer = Trainer(cfg, run_dir, log=log, world=_world(cfg))
    with _disk_errors(run_dir):
        state = trainer.run(resume=True)
        summary = trainer.save_outputs(state)
    trainer.world.stop()
    return run_dir, summary
