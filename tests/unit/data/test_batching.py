"""epoch_order: the batches of an epoch are a pure function of (lengths, batch size, epoch, seed, mode),
which is what lets a resumed run see the batches an uninterrupted one would; and collate's padding."""

import random

import pytest
import torch

from dianjing.data.batching import collate, epoch_order
from dianjing.data.render import Rendered

MODES = ["length_grouped", "random", "sequential"]
# mixed lengths, more than one length_grouped window (32 batches) and not a multiple of the batch size
_rng = random.Random(0)
LENGTHS = [_rng.randint(1, 500) for _ in range(1003)]
BS = 8


def _padding(batches, lengths):
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize("mode", MODES)
def test_same_arguments_give_the_same_batches(mode):
    a = epoch_order(LENGTHS, BS, 3, 42, mode)
    random.seed(1)  # the global random state plays no part
    b = epoch_order(list(LENGTHS), BS, 3, 42, mode)
    random.seed(2)
    assert a == b == epoch_order(LENGTHS, BS, 3, 42, mode)


@pytest.mark.parametrize("mode", ["length_grouped", "random"])
def test_another_epoch_or_seed_gives_another_order(mode):
    first = epoch_order(LENGTHS, BS, 0, 42, mode)
    assert epoch_order(LENGTHS, BS, 1, 42, mode) != first
    assert epoch_order(LENGTHS, BS, 0, 43, mode) != first
    # and not the same batches merely reordered: the batches themselves differ
    assert {tuple(sorted(b)) for b in epoch_order(LENGTHS, BS, 1, 42, mode)} != {tuple(sorted(b)) for b in first}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("epoch", [0, 1, 7])
def test_every_example_exactly_once_per_epoch(mode, epoch):
    lengths = list(LENGTHS)
    batches = epoch_order(lengths, BS, epoch, 42, mode)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert lengths == LENGTHS  # the input is not reordered in place


@pytest.mark.parametrize("mode", MODES)
def test_batch_sizes(mode):
    sizes = [len(b) for b in epoch_order(LENGTHS, BS, 0, 42, mode)]
    assert len(sizes) == -(-len(LENGTHS) // BS)
    # one batch holds the remainder: the last one in file or shuffled order; with length grouping it is
    # the last window's longest examples, and batches are shuffled after grouping, so it can be anywhere
    assert sorted(sizes) == [len(LENGTHS) % BS] + [BS] * (len(sizes) - 1)
    if mode != "length_grouped":
        assert sizes[-1] == len(LENGTHS) % BS
    exact = epoch_order(LENGTHS[:1000], BS, 0, 42, mode)
    assert all(len(b) == BS for b in exact)
    assert [sorted(b) for b in epoch_order(LENGTHS[:5], BS, 0, 42, mode)] == [[0, 1, 2, 3, 4]]  # fewer than a batch


def test_sequential_keeps_file_order_in_every_epoch():
    want = [list(range(i, min(i + BS, len(LENGTHS)))) for i in range(0, len(LENGTHS), BS)]
    for epoch, seed in ((0, 42), (1, 42), (5, 7)):
        assert epoch_order(LENGTHS, BS, epoch, seed, "sequential") == want


def test_length_grouping_pads_less():
    grouped = _padding(epoch_order(LENGTHS, BS, 0, 42, "length_grouped"), LENGTHS)
    sequential = _padding(epoch_order(LENGTHS, BS, 0, 42, "sequential"), LENGTHS)
    shuffled = _padding(epoch_order(LENGTHS, BS, 0, 42, "random"), LENGTHS)
    assert grouped < 0.1 * sequential and grouped < 0.1 * shuffled
    # inside a batch the lengths are neighbours in sorted order: the spread is small
    for b in epoch_order(LENGTHS, BS, 0, 42, "length_grouped"):
        assert max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) < 60


def test_length_grouping_still_shuffles_across_the_epoch():
    batches = epoch_order(LENGTHS, BS, 0, 42, "length_grouped")
    longest = [max(LENGTHS[i] for i in b) for b in batches]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_collate_right_pads_to_the_longest():
    examples = [Rendered(input_ids=[5, 6, 7], mask=[False, True, True]),
                Rendered(input_ids=[8], mask=[True])]
    batch = collate(examples, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["mask"].tolist() == [[False, True, True], [True, False, False]]
    assert batch["input_ids"].dtype == torch.long and batch["mask"].dtype == torch.bool


def _padded(lengths, width=None):
    width = width or max(lengths)
    n = len(lengths)
    ids = torch.zeros((n, width), dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.bool)
    for r, L in enumerate(lengths):
        ids[r, :L] = torch.arange(1, L + 1) + 1000 * r
        attn[r, :L] = 1
        mask[r, L // 2:L] = True
    return {"input_ids": ids, "attention_mask": attn, "mask": mask}


def test_split_padded_cuts_padding_and_keeps_every_row_and_target():
    from dianjing.data.batching import split_padded

    batch = _padded([40, 500, 38, 45, 60, 42, 480, 50])
    parts = split_padded(batch, 0.25)
    assert 2 <= len(parts) <= 4
    padded = sum(p["input_ids"].numel() for p in parts)
    assert padded <= 0.75 * batch["input_ids"].numel()
    for p in parts:  # each part is padded to its own longest row, no further
        assert int(p["attention_mask"].sum(1).max()) == p["input_ids"].shape[1]
        assert set(p) == set(batch)
    rows = sorted(tuple(r[r > 0].tolist()) for p in parts for r in p["input_ids"])
    assert rows == sorted(tuple(r[r > 0].tolist()) for r in batch["input_ids"])
    assert sum(int(p["mask"].sum()) for p in parts) == int(batch["mask"].sum())
    assert sum(int(p["attention_mask"].sum()) for p in parts) == int(batch["attention_mask"].sum())


def test_split_padded_leaves_even_or_foreign_batches_whole():
    from dianjing.data.batching import split_padded

    even = _padded([100, 110, 120, 118])
    assert split_padded(even, 0.25) == [even]  # splitting would save under a quarter
    labelled = dict(_padded([10, 500]), labels=torch.tensor([0, 1]))
    assert split_padded(labelled, 0.25) == [labelled]  # a task head's batch: not ours to split
    assert len(split_padded(_padded([10, 500]), 0.25)) == 2
    assert len(split_padded(_padded([10, 500]), 0.99)) == 1  # 49% saved is under 99%
    one = _padded([300])
    assert split_padded(one, 0.1) == [one]
