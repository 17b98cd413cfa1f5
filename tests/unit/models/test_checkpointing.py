"""Activation checkpointing, selective (model.unchecked_blocks): the last N blocks keep their activations and
run their forward once a step; the others recompute it in the backward. Gradients are the same either way."""

import pytest
import torch

from dianjing.models.load import enable_checkpointing, random_model, uncheck_blocks
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


# model.activation_budget: the compiler's selective checkpointing in place of whole blocks


def test_uncheck_blocks_turns_every_block_off(folder):
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    model = random_model(str(folder), torch.float32)
    enable_checkpointing(model)
    assert uncheck_blocks(model) == 2
    counts, _ = _forwards_per_block(model, ids)
    assert counts == [1, 1]


def test_activation_budget_is_a_share_and_excludes_unchecked_blocks():
    from pydantic import ValidationError

    from dianjing.config import load_config

    assert load_config(None, ["model.activation_budget=0.3"]).model.activation_budget == 0.3
    assert load_config(None, []).model.activation_budget is None
    for bad in ("-0.1", "1.5"):
        with pytest.raises((ValidationError, Exception), match="activation_budget"):
            load_config(None, [f"model.activation_budget={bad}"])
    with pytest.raises((ValidationError, Exception), match="set one of them"):
        load_config(None, ["model.activation_budget=0.3", "model.unchecked_blocks=2"])


def test_compile_blocks_sets_the_budget_for_its_own_run(folder):
    import torch._functorch.config as functorch_config

    from dianjing.train.compile import compile_blocks

    before = functorch_config.activation_memory_budget
    try:
        compile_blocks(random_model(str(folder), torch.float32), 0.25)  # lazy: compiles at the first call
        assert functorch_config.activation_memory_budget == 0.25
        compile_blocks(random_model(str(folder), torch.float32))  # a later run without one: torch's default
        assert functorch_config.activation_memory_budget == 1.0
    finally:
        functorch_config.activation_memory_budget = before


@pytest.mark.parametrize("compile_mode", ["on", "off"])
def test_the_budget_replaces_whole_block_checkpointing_where_blocks_compile(tiny_llama, alpaca_file, tmp_path,
                                                                             monkeypatch, compile_mode):
    from transformers.modeling_layers import GradientCheckpointingLayer

    from dianjing.train import loop, sft
    from tests.helpers import sft_config

    budgets = []
    monkeypatch.setattr(sft, "compile_blocks", lambda model, budget=None: budgets.append(budget))  # no compile
    lines = []
    cfg = sft_config(tiny_llama, alpaca_file, tmp_path / "run", "train.max_steps=1", "model.activation_budget=0.3",
                     f"train.compile={compile_mode}")
    trainer = loop.Trainer(cfg, tmp_path / "run", log=lambda *a: lines.append(" ".join(map(str, a))))
    blocks = [m for m in trainer.model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert blocks
    text = "\n".join(lines)
    if compile_mode == "on":
        assert budgets == [0.3]
        assert not any(b.gradient_checkpointing for b in blocks)
        assert "selective, by the compiler" in text and "0.3" in text
    else:  # nothing compiles: the budget cannot act, whole blocks stay checkpointed, and the log says so
        assert budgets == []
        assert all(b.gradient_checkpointing for b in blocks)
        assert "model.activation_budget: no effect" in text


def _saved_bytes_and_grads(model, ids) -> tuple[int, dict]:
    """Bytes the forward saved for the backward (all autograd saves, the compiled graph's included), and the
    gradients of one forward + backward."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return sum(seen.values()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow
def test_a_smaller_budget_keeps_less_and_computes_the_same_gradients(folder):
    """Compiled blocks (inductor, tens of seconds): with budget 0 the backward recomputes more of the forward and
    the forward keeps fewer bytes than with budget 1; the gradients are the eager model's either way."""
    import torch._dynamo
    import torch._functorch.config as functorch_config

    from dianjing.train.compile import compile_blocks

    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    _, want = _saved_bytes_and_grads(random_model(str(folder), torch.float32), ids)
    saved = {}
    try:
        for budget in (1.0, 0.0):
            torch._dynamo.reset()
            torch.manual_seed(0)
            model = random_model(str(folder), torch.float32)
            compile_blocks(model, budget)
            saved[budget], got = _saved_bytes_and_grads(model, ids)
            assert got.keys() == want.keys()
            for n, g in want.items():
                torch.testing.assert_close(got[n], g, rtol=1e-4, atol=1e-6)
    finally:
        functorch_config.activation_memory_budget = 1.0
        torch._dynamo.reset()
    assert saved[0.0] < saved[1.0], saved
