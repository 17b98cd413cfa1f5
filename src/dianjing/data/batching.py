"""Batches of rendered examples: order per epoch, and padding to the longest in the batch.

Length-grouped order (the default) sorts examples by length inside shuffled windows of
many batches, so a batch holds examples of similar length and little padding is computed.
Packed batches (`train.batching: packed`) are the same batches laid end to end in one row,
with no padding at all: position ids restart at each example, which transformers turns into
a block-diagonal causal mask (sdpa and eager: a dense mask; flex attention: a block mask
that skips the blocks between examples; FlashAttention 2: variable-length kernels), so an
example never attends to another.
"""

from __future__ import annotations

import random

import torch

from dianjing.data.render import Rendered


def epoch_order(lengths: list[int], batch_size: int, epoch: int, seed: int, mode: str) -> list[list[int]]:
    """The batches (lists of example indices) of one epoch; a pure function of its arguments,
    so a resumed run sees exactly the batches an uninterrupted one would."""
    idx = list(range(len(lengths)))
    rng = random.Random(seed * 1_000_003 + epoch)
    mode = "length_grouped" if mode == "packed" else mode  # packed: the same batches, without padding
    if mode == "sequential":
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    rng.shuffle(idx)
    if mode == "random":
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    window = batch_size * 32
    batches = []
    for w in range(0, len(idx), window):
        chunk = sorted(idx[w:w + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: list[Rendered], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; `mask` marks the tokens that are targets."""
    width = max(len(e.input_ids) for e in examples)
    n = len(examples)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.bool)
    for row, e in enumerate(examples):
        L = len(e.input_ids)
        ids[row, :L] = torch.tensor(e.input_ids, dtype=torch.long)
        attn[row, :L] = 1
        mask[row, :L] = torch.tensor(e.mask, dtype=torch.bool)
    return {"input_ids": ids, "attention_mask": attn, "mask": mask}


def collate_packed(examples: list[Rendered], pad_id: int) -> dict[str, torch.Tensor]:
    """One row: the examples end to end, `position_ids` restarting at each (the model keeps them
    apart), no padding. No example's first token is a target: it follows the previous example."""
    ids, pos, mask = [], [], []
    for e in examples:
        ids += e.input_ids
        pos += range(len(e.input_ids))
        mask += [False] + [bool(m) for m in e.mask[1:]]
    row = torch.tensor([ids], dtype=torch.long)
    return {"input_ids": row, "position_ids": torch.tensor([pos], dtype=torch.long),
            "attention_mask": torch.ones_like(row), "mask": torch.tensor([mask], dtype=torch.bool)}
