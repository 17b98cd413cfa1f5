"""Checkpoints that a kill cannot corrupt.

A checkpoint is written into a temporary folder, every file flushed to disk, a
COMPLETE marker with the files' SHA-256 sums written last, and only then renamed to
checkpoints/step-N. Loading takes the newest checkpoint whose marker and sums check
out, and says which ones it skipped and why.

Under torchrun rank 0 writes the checkpoint (the trainable weights and the optimizer state
are the same on every process under DDP), except under FSDP2, where every process writes
its shards into `sharded/` through torch.distributed.checkpoint (DCP), which can load them
back into a different number of processes. Rank 0 writes the marker once all have written,
so a process that dies mid-save leaves a folder without a marker, which loading skips. With
several machines the run folder must be on a file system they share.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dianjing.errors import DianjingError
from dianjing.train.distributed import SINGLE, World

MARKER = "COMPLETE"
SHARDED = "sharded"  # the DCP folder of an FSDP2 checkpoint


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file())


def save_checkpoint(ckpt_root: Path, step: int, model, optimizer, scheduler, meta: dict, keep_last_n: int,
                    world: World = SINGLE, sharded: bool = False) -> Path:
    final = ckpt_root / f"step-{step:08d}"
    tmp = ckpt_root / f".tmp-step-{step:08d}"
    try:
        if world.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        world.barrier()
        if sharded:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            msd, osd = get_state_dict(model, optimizer)
            dcp.save({"model": msd, "optimizer": osd}, checkpoint_id=str(tmp / SHARDED))
        elif world.main:
            save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        world.barrier()
        if world.main:
            _fault_point("checkpoint-half-written", step)
            loop = {"scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()}
            torch.save(loop if sharded else {"optimizer": optimizer.state_dict(), **loop}, tmp / "optimizer.pt")
            _finish(tmp, final, ckpt_root, dict(meta, step=step, python_rng=_py_rng_to_json(random.getstate())))
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DianjingError(f"cannot write checkpoint {final}: {e.strerror or e}",
                            fix="free disk space or choose another train.output_dir, then resume") from None
    world.barrier()
    if world.main:
        for old in list_checkpoints(ckpt_root)[:-keep_last_n]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _finish(tmp: Path, final: Path, ckpt_root: Path, meta: dict) -> None:
    """state.json, every file flushed, the marker with their sums, then the rename that makes it count."""
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    sums = {}
    for f in _files(tmp):
        _fsync_file(f)
        sums[f.relative_to(tmp).as_posix()] = _sha256(f)
    (tmp / MARKER).write_text(json.dumps(sums, indent=1))
    _fsync_file(tmp / MARKER)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    dfd = os.open(ckpt_root, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _fault_point(name: str, step: int) -> None:
    """Fault injection for the crash tests: DIANJING_FAULT=checkpoint-half-written:STEP
    kills this process with SIGKILL at that point of that step's save."""
    want = os.environ.get("DIANJING_FAULT")
    if want and want == f"{name}:{step}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    if not ckpt_root.exists():
        return []
    return sorted(p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def verify(ckpt: Path) -> str | None:
    """None if the checkpoint is complete and intact, else the reason it is not."""
    marker = ckpt / MARKER
    if not marker.exists():
        return "no completion marker (the save was interrupted)"
    try:
        sums = json.loads(marker.read_text())
    except ValueError:
        return "unreadable completion marker"
    for name, digest in sums.items():
        f = ckpt / name
        if not f.exists():
            return f"{name} is missing"
        if _sha256(f) != digest:
            return f"{name} does not match its checksum"
    return None


def latest_checkpoint(ckpt_root: Path, log=print) -> Path | None:
    for ckpt in reversed(list_checkpoints(ckpt_root)):
        why = verify(ckpt)
        if why is None:
            return ckpt
        log(f"skipping checkpoint {ckpt.name}: {why}")
    return None


def load_checkpoint(ckpt: Path, model, optimizer, scheduler, sharded: bool = False) -> dict:
    """Into this run's model and optimizer. A sharded (FSDP2) checkpoint loads into any number of
    processes, one included (DCP reshards it); an unsharded one into unsharded runs."""
    written_sharded = (ckpt / SHARDED).is_dir()
    if sharded and not written_sharded:
        raise DianjingError(f"{ckpt} was written without FSDP2 sharding, and this run shards the model",
                            fix="resume with train.parallel: ddp (set it in the run's config.yaml)")
    sharded = written_sharded
    if sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        msd, osd = get_state_dict(model, optimizer)
        both = {"model": msd, "optimizer": osd}
        dcp.load(both, checkpoint_id=str(ckpt / SHARDED))  # reshards to this number of processes
        set_state_dict(model, optimizer, model_state_dict=both["model"], optim_state_dict=both["optimizer"])
    else:
        _load_trainable(ckpt, model)
    opt = _load_plain(ckpt / "optimizer.pt", ckpt)
    if not sharded:
        optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    torch.set_rng_state(opt["torch_rng"])
    meta = json.loads((ckpt / "state.json").read_text())
    random.setstate(_py_rng_from_json(meta.pop("python_rng")))
    return meta


def _load_trainable(ckpt: Path, model) -> None:
    state = load_file(str(ckpt / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise DianjingError(f"checkpoint {ckpt} does not fit this model: unknown parameters {missing[:3]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


def _load_plain(path: Path, ckpt: Path) -> dict:
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as e:
        raise DianjingError(f"{path} holds objects other than tensors and plain data; "
                            f"refused to load it ({str(e).splitlines()[0][:120]})",
                            fix=f"delete {ckpt} to resume from the checkpoint before it") from None


def _py_rng_to_json(state) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_rng_from_json(data) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)
