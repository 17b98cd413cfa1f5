"""Run by test_distributed.py, alone or under torchrun: the real Trainer's steps, recording
every step's synchronised gradients (rank 0) and the examples each rank trained on.

    python tests/integration/dist_worker.py CONFIG OUT            # one process
    torchrun --nproc-per-node 2 tests/integration/dist_worker.py CONFIG OUT
"""

import json
import sys
from pathlib import Path

import torch

import dianjing.train.loop as loop
from dianjing.config import load_config


def main(config: str, out: str) -> None:
    cfg = load_config(Path(config))
    world = loop._world(cfg)
    seen: list[list[int]] = []
    share = loop.share

    def spy(batch, w):  # the run has no eval set: every call is a training micro-batch
        mine, weight = share(batch, w)
        seen.append(mine if weight else [])
        return mine, weight

    loop.share = spy
    trainer = loop.Trainer(cfg, Path(cfg.train.output_dir), log=lambda *_: None, world=world)
    grads: list[dict[str, torch.Tensor]] = []
    clip = trainer.engine.clip

    def record(params, max_norm):  # the gradients after synchronisation, before clipping
        full = {}
        for n, p in trainer.model.named_parameters():
            if p.grad is not None:
                g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad  # a collective under FSDP2
                full[n] = g.detach().clone()
        grads.append(full)
        return clip(params, max_norm)

    trainer.engine.clip = record
    trainer.run()
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"seen-{world.rank}.json").write_text(json.dumps(seen))
    if world.main:
        torch.save(grads, Path(out) / "grads.pt")
    world.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
