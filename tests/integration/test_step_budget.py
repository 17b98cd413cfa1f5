"""bench/step_budget.py: a step's time in buckets, on a tiny random model (and its bucketing rules on
hand-made profiler events)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.helpers import load_script


@pytest.fixture(scope="module")
def sb():
    return load_script("bench/step_budget.py")


def test_budget_of_a_tiny_run(sb, tiny_llama, alpaca_file, tmp_path):
    args = sb.parse_args(["--model", str(tiny_llama), "--data", str(alpaca_file), "--batch-size", "4",
                          "--max-length", "64", "--compile", "off", "--precision", "fp32", "--steps", "2",
                          "--set", "train.threads=1"])
    trainer = sb.build_trainer(args, tmp_path / "run", log=lambda *_: None)
    rec = sb.measure(trainer, steps=2, peak_gflops=100.0)  # a given peak: no 4 s measurement in the suite

    rows = rec["buckets"]
    assert set(rows) == set(sb.BUCKETS)
    assert all(r["s"] >= 0 for r in rows.values()), rows  # "other" is the rest: negative means double counting
    assert sum(r["s"] for r in rows.values()) == pytest.approx(rec["step_s_profiled"], rel=1e-3)
    assert rec["untraced_s"] >= 0 and rec["other_ops_s"] <= rows["other"]["s"] + 1e-4
    assert rows["body matmuls"]["s"] > 0 and rows["body matmuls"]["gflop"] > 0
    assert rows["attention"]["s"] > 0 and rows["attention"]["gflop"] > 0
    assert rows["optimizer"]["s"] > 0
    assert rec["step_s_unprofiled"] > 0 and len(rec["step_s_each_profiled"]) == 2
    # the sparse output layer's products, exactly: logits and the hidden states' gradient (the head is frozen
    # under LoRA: no weight gradient), 2·V·H per product and supervised target
    head = trainer.setup.loss.head.weight
    assert not head.requires_grad
    want = 2 * 2 * head.shape[0] * head.shape[1] * rec["targets_per_step"] / 1e9
    assert rows["output layer"]["gflop"] == pytest.approx(want, rel=1e-3)
    assert rec["output_layer_products"]["gflop"] == pytest.approx(want, rel=1e-3)
    assert rows["body matmuls"]["s_at_peak"] == pytest.approx(rows["body matmuls"]["gflop"] / 100.0, rel=1e-2)
    assert "body matmuls" in sb.table(rec)


@dataclass(eq=False)
class Ev:
    """A stand-in for torch.profiler's FunctionEvent: what classify reads."""

    name: str
    self_us: float
    parent: "Ev | None" = None
    input_shapes: list = field(default_factory=list)
    flops: int = 0
    cpu_children: list = field(default_factory=list)

    def __post_init__(self):
        if self.parent is not None:
            self.parent.cpu_children.append(self)

    @property
    def cpu_parent(self):
        return self.parent

    @property
    def self_cpu_time_total(self):
        return self.self_us


def test_recompute_under_a_matmul_node_is_not_a_matmul(sb):
    # gradient checkpointing recomputes a block's forward inside the first backward node that unpacks a
    # saved tensor: under MmBackward0 there are the node's own mm and t, and the recomputed norm, linear
    # and attention
    wrap = Ev("autograd::engine::evaluate_function: MmBackward0", 1)
    node = Ev("MmBackward0", 50, wrap)  # its self time is the recompute's Python: other
    t = Ev("aten::t", 2, node)
    mm = Ev("aten::mm", 100, node, [[8, 4], [4, 16]])
    norm = Ev("aten::pow", 10, node)
    lin = Ev("aten::linear", 3, node)
    lin_mm = Ev("aten::mm", 40, lin, [[8, 4], [4, 4]], flops=2 * 8 * 4 * 4)
    sdpa = Ev("aten::scaled_dot_product_attention", 1, node)
    qkv = [[1, 2, 8, 4]] * 3  # [batch, heads, length, head dim]
    flash = Ev("aten::_scaled_dot_product_flash_attention_for_cpu", 20, sdpa, qkv)
    opt = Ev("dianjing::optimizer", 5)
    adam = Ev("aten::mm", 7, opt, [[2, 2], [2, 2]])  # anything under the optimizer's label is the optimizer's
    out = sb.classify([wrap, node, t, mm, norm, lin, lin_mm, sdpa, flash, opt, adam])
    b = out["buckets"]
    assert b["body matmuls"]["s"] * 1e6 == pytest.approx(2 + 100 + 3 + 40)
    assert b["body matmuls"]["flops"] == 2 * 8 * 4 * 16 + 2 * 8 * 4 * 4
    assert b["other"]["s"] * 1e6 == pytest.approx(1 + 50 + 10)
    assert b["attention"]["s"] * 1e6 == pytest.approx(21) and b["attention"]["flops"] == 4 * 1 * 2 * 8 * 8 * 4
    assert b["optimizer"]["s"] * 1e6 == pytest.approx(12) and b["optimizer"]["flops"] == 2 * 2 * 2 * 2
    assert out["self_s"] * 1e6 == pytest.approx(sum(e.self_us for e in (wrap, node, t, mm, norm, lin, lin_mm,
                                                                        sdpa, flash, opt, adam)))


def test_the_written_out_attention_s_batched_products_are_attention(sb):
    # the projections run as mm (inputs flattened to 2-D); QKᵀ and ·V of the written-out attention as bmm
    qk = Ev("aten::bmm", 30, None, [[8, 16, 4], [8, 4, 16]])
    node = Ev("BmmBackward0", 2)
    back = Ev("aten::bmm", 50, node, [[8, 16, 16], [8, 16, 4]])
    proj = Ev("aten::mm", 9, None, [[10, 4], [4, 4]])
    b = sb.classify([qk, node, back, proj])["buckets"]
    assert b["attention"]["s"] * 1e6 == pytest.approx(82)
    assert b["attention"]["flops"] == 2 * 8 * 16 * 4 * 16 + 2 * 8 * 16 * 16 * 4
    assert b["body matmuls"]["s"] * 1e6 == pytest.approx(9) and b["other"]["s"] == 0


def test_dense_head_products_go_to_the_output_layer(sb):
    lin = Ev("aten::linear", 1, None, [[2, 5, 4], [300, 4]])
    mm = Ev("aten::mm", 30, lin, [[10, 4], [4, 300]])
    body = Ev("aten::mm", 9, None, [[10, 4], [4, 4]])
    dense = sb.classify([lin, mm, body], vocab=300, dense=True)["buckets"]
    assert dense["output layer"]["s"] * 1e6 == pytest.approx(31)
    assert dense["body matmuls"]["s"] * 1e6 == pytest.approx(9)
    sparse = sb.classify([lin, mm, body], vocab=300, dense=False)["buckets"]
    assert sparse["body matmuls"]["s"] * 1e6 == pytest.approx(40)
