"""The many-process pieces that need no processes: sharding, the choice of DDP/FSDP2, the launcher."""

import pytest
import torch

from dianjing.data.batching import epoch_order
from dianjing.errors import ConfigError
from dianjing.train import distributed as dist_mod
from dianjing.train.distributed import World, choose, share


@pytest.mark.parametrize("size", [2, 3, 8])
def test_an_epoch_is_split_into_disjoint_balanced_parts(size):
    lengths = [(i * 37) % 101 + 5 for i in range(203)]
    order = epoch_order(lengths, 16, epoch=1, seed=7, mode="length_grouped")
    parts = {r: [] for r in range(size)}
    for batch in order:
        counts = []
        for r in range(size):
            mine, weight = share(batch, World(r, size, r))
            if weight:
                parts[r] += mine
                counts.append(len(mine))
            else:
                assert mine == batch[:1]  # a stand-in, computed with weight 0
        assert max(counts) - min(counts) <= 1
        tokens = [sum(lengths[i] for i in share(batch, World(r, size, r))[0]) for r in range(size)
                  if share(batch, World(r, size, r))[1]]
        if len(batch) == 16:  # a sorted full batch: the strided parts are within one example's length
            assert max(tokens) - min(tokens) <= max(lengths[i] for i in batch)
    seen = [i for r in parts for i in parts[r]]
    assert sorted(seen) == list(range(203))  # no example skipped or seen twice


def test_the_order_is_the_seeds_and_not_the_world_size():
    lengths = list(range(50))
    a = epoch_order(lengths, 8, 0, 3, "length_grouped")
    assert a == epoch_order(lengths, 8, 0, 3, "length_grouped") != epoch_order(lengths, 8, 0, 4, "length_grouped")
    # the global batches are the same whatever the number of processes: only their split differs
    two = [sorted(share(b, World(0, 2))[0] + share(b, World(1, 2))[0]) for b in a]
    assert two == [sorted(b) for b in a]


def test_one_process_is_a_no_op():
    w = World.from_env()
    assert not w.many and w.main and w.sum(1.5, 2) == [1.5, 2] and w.broadcast("x") == "x"
    assert share([4, 5, 6], w) == ([4, 5, 6], 1.0)
    assert choose("auto", True, 10**9, torch.device("cpu"), w)[0] == "none"


def test_choose(monkeypatch):
    two = World(0, 2, 0)
    cpu = torch.device("cpu")
    monkeypatch.setattr(dist_mod, "device_memory", lambda dev: 80 * 2**30)
    assert choose("auto", False, 8 * 10**9, cpu, two)[0] == "ddp"  # adapters: small trainable state
    assert choose("auto", True, 270 * 10**6, cpu, two)[0] == "ddp"  # 4 GiB of state fits
    mode, why = choose("auto", True, 8 * 10**9, cpu, two)  # 128 GiB of state does not
    assert mode == "fsdp" and "GiB" in why
    assert choose("ddp", True, 8 * 10**9, cpu, two)[0] == "ddp"
    with pytest.raises(ConfigError, match="adapter runs"):
        choose("fsdp", False, 10**6, cpu, two)
    with pytest.raises(ConfigError, match="specialists"):
        choose("fsdp", True, 10**6, cpu, two, shardable=False)
    assert choose("auto", True, 8 * 10**9, cpu, two, shardable=False)[0] == "ddp"


def test_world_reads_torchruns_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    w = World.from_env()
    assert (w.rank, w.size, w.local_rank, w.main, w.many) == (3, 4, 1, False, True)


def test_the_launcher_hands_torchrun_the_command_without_nproc(monkeypatch):
    from dianjing.cli import train as cli_train

    calls = []
    monkeypatch.setattr("subprocess.call", lambda cmd: calls.append(cmd) or 3)
    logs = []
    monkeypatch.setattr("dianjing.cli.log", logs.append)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    from dianjing.cli import main

    code = main(["train", "--nproc", "2", "--model", "m", "--nproc=2", "-o", "runs/x", "--set", "train.lr=1"])
    assert code == 3
    cmd = calls[0]
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert cmd[5:] == ["-m", "dianjing", "train", "--model", "m", "-o", "runs/x", "--set", "train.lr=1"]
    assert any("dianjing train --nproc 2 --resume runs/x" in line for line in logs)  # a failed run: how to go on
    assert cli_train._value(["--resume", "a", "--resume=b"], "--resume") == "b"


def test_nproc_below_one_is_refused(capsys):
    from dianjing.cli import main

    assert main(["train", "--nproc", "0"]) == 2
    assert "--nproc 0" in capsys.readouterr().err
