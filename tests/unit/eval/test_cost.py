"""dianjing cost: a run's device-hours and money from summary.json, the projection to GPUs with its
assumption, and the priced tokens of a teacher or a judge in the total."""

import json

import pytest

from dianjing.cli import main
from dianjing.errors import ConfigError
from dianjing.eval.cost import ACCELERATORS, cost_report, projections

SUMMARY = {"steps": 76, "tokens": 36000, "supervised_tokens": 15000, "wall_time_s": 7200.0,
           "estimated_flops": 989.4e12 * 0.4 * 3600,  # an hour of an H100 at 40% MFU
           "device": "cpu", "device_name": "Xeon", "processes": 2, "mfu": 0.44, "matmul_peak_gflops": 94.6}


@pytest.fixture
def run(tmp_path):
    r = tmp_path / "run"
    r.mkdir()
    (r / "summary.json").write_text(json.dumps(SUMMARY))
    return r


def test_this_run_and_its_projection(run):
    rep = cost_report(str(run), price_per_hour=0.5, prices={"H100-SXM": 3.0, "A100": 1.5})
    here = rep["this_run"]
    assert here["device_hours"] == 4.0  # 2 hours × 2 processes
    assert here["cost"] == {"amount": 2.0, "currency": "USD", "price_per_device_hour": 0.5}
    rows = {r["accelerator"]: r for r in rep["projections"]}
    assert set(rows) == set(ACCELERATORS)
    assert rows["H100-SXM"]["seconds"] == pytest.approx(3600) and rows["H100-SXM"]["cost"]["amount"] == pytest.approx(3.0)
    assert rows["A100"]["seconds"] == pytest.approx(3600 * 989.4 / 312) and rows["L4"]["cost"] is None
    assert "40% of its dense bf16 peak" in rep["assumption"] and "training steps only" in rep["assumption"]
    assert rep["total"]["amount"] == 2.0


def test_the_assumed_mfu_and_bad_settings():
    assert projections(1e15, mfu=0.2)[0]["seconds"] == pytest.approx(1e15 / (989.4e12 * 0.2), abs=1e-3)
    with pytest.raises(ConfigError, match="--mfu 1.5"):
        projections(1e15, mfu=1.5)
    with pytest.raises(ConfigError, match="no such accelerator"):
        projections(1e15, prices={"H1000": 1.0})


def test_teacher_and_judge_tokens_join_the_total(run, tmp_path, capsys):
    synth = tmp_path / "synth.report.json"
    synth.write_text(json.dumps({"kept": 10, "tokens": {"prompt": 1000, "completion": 500},
                                 "cost_estimate": {"amount": 0.25, "currency": "USD"}}))
    judged = tmp_path / "result.json"
    judged.write_text(json.dumps({"mode": "pairwise", "requests": {"tokens": {"prompt": 9, "completion": 1}}}))
    assert main(["cost", str(run), "--price-per-hour", "0.5", "--gpu-price", "H100-SXM=3", "--add", str(synth),
                 str(judged)]) == 0
    rep = json.loads((run / "eval" / "cost.json").read_text())
    assert [b["what"] for b in rep["bought"]] == ["teacher", "judge"] and rep["bought"][1]["cost"] is None
    assert rep["total"]["amount"] == 2.25
    out = capsys.readouterr().out
    assert "H100-SXM" in out and "60.0 min" in out and "total: 2.25 USD" in out and "not priced" in out
    assert main(["cost", str(tmp_path)]) == 2 and "no summary.json" in capsys.readouterr().err
    assert main(["cost", str(run), "--gpu-price", "H100"]) == 2
