"""Activation checkpointing, selective (model.unchecked_blocks): the last N blocks keep their activations and
run their forward once a step; the others recompute it in the backward. Gradients are the same either way."""

import pytest
import torch

from dianjing.models.load import enable_checkpointing, random_model
from tests.tiny import build_model


def _forwards_per_block(model, ids) -> tuple[list[int], dict]:
    """How many times each block's MLP started in one forward + backward, and the gradients (a pre-hook: the
    recompute stops as soon as it has what the backward needs, before the MLP's forward returns)."""
    counts = [0] * len(model.model.layers)
    hooks = [layer.mlp.register_forward_pre_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
             for i, layer in enumerate(model.model.layers)]
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    for h in hooks:
        h.remove()
    return counts, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture
def folder(tmp_path):
    return build_model(tmp_path / "m", kind="llama")


@pytest.mark.parametrize("unchecked,want", [(0, [2, 2]), (1, [2, 1]), (2, [1, 1]), (5, [1, 1])])
def test_the_last_blocks_run_their_forward_once(folder, unchecked, want):
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain = random_model(str(folder), torch.float32)
    _, grads = _forwards_per_block(plain, ids)
    torch.manual_seed(0)
    model = random_model(str(folder), torch.float32)
    assert enable_checkpointing(model, unchecked) == min(unchecked, 2)
    counts, got = _forwards_per_block(model, ids)
    assert counts == want  # 2: the forward, then its recompute in the backward
    assert got.keys() == grads.keys()
    for n, g in grads.items():
        torch.testing.assert_close(got[n], g, rtol=1e-5, atol=1e-7)


def test_the_setting_cannot_be_negative():
    from pydantic import ValidationError

    from dianjing.config import load_config

    assert load_config(None, ["model.unchecked_blocks=3"]).model.unchecked_blocks == 3
    with pytest.raises((ValidationError, Exception), match="unchecked_blocks"):
        load_config(None, ["model.unchecked_blocks=-1"])
