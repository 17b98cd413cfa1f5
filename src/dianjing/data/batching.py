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


SPLIT_KEYS = {"input_ids", "attention_mask", "mask"}


def split_padded(batch: dict[str, torch.Tensor], min_saving: float, max_parts: int = 4) -> list[dict[str, torch.Tensor]]:
    """A right-padded batch as up to `max_parts` length-sorted parts, each padded only to its own
    longest row, where that cuts the padded tokens by at least `min_saving` (a share); else [batch].

    The parts hold the same rows, so summing their losses (each over its own targets) and dividing
    by the batch's targets gives the batch's loss and gradients, up to the order of floating-point
    sums. It pays on batches in file or random order: one long example pads the other seven, and the
    body's products then run over padding (SmolLM2, Alpaca in file order: ~40% of the tokens). Only
    the plain chat batch (ids, attention mask, target mask) is split; others come back whole."""
    if set(batch) != SPLIT_KEYS or batch["input_ids"].dim() != 2 or batch["input_ids"].shape[0] < 2:
        return [batch]
    lengths = batch["attention_mask"].sum(1)
    n, width = batch["input_ids"].shape
    order = sorted(range(n), key=lambda i: int(lengths[i]))
    sl = [int(lengths[i]) for i in order]
    # best[k][j]: the fewest padded tokens for the shortest j rows in k parts (dynamic programming over sorted rows)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(max_parts + 1)]
    back = [[0] * (n + 1) for _ in range(max_parts + 1)]
    best[0][0] = 0
    for k in range(1, max_parts + 1):
        for j in range(1, n + 1):
            for i in range(k - 1, j):
                c = best[k - 1][i] + (j - i) * sl[j - 1]
                if c < best[k][j]:
                    best[k][j], back[k][j] = c, i
    whole = n * width
    k = min(range(1, max_parts + 1), key=lambda k: (best[k][n], k))
    # fewer parts where more would save little: each added part must cut min_saving/2 more of the whole
    while k > 1 and best[k - 1][n] - best[k][n] < 0.5 * min_saving * whole:
        k -= 1
    if whole - best[k][n] < min_saving * whole:
        return [batch]
    bounds, j = [], n
    for kk in range(k, 0, -1):
        i = back[kk][j]
        bounds.append((i, j))
        j = i
    parts = []
    for i, j in reversed(bounds):
        rows = torch.tensor(order[i:j])
        w = sl[j - 1]
        parts.append({key: v[rows, :w] for key, v in batch.items()})
    return parts


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
