"""Specialist eval / predict on the device --device names: resolved before the run is loaded (a GPU
this machine lacks fails first, naming --device), and the same setting decides where load_head puts
the model."""

from __future__ import annotations

import pytest
import torch

from dianjing.errors import DianjingError
from dianjing.specialist import evaluate as ev
from tests.helpers import specialist_config
from tests.tiny import build_bert


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    from dianjing.train.loop import train

    tmp = tmp_path_factory.mktemp("spec")
    data = tmp / "train.csv"
    data.write_text("text,label\n" + "".join(f"{w} film {i},{lab}\n" for i in range(8)
                                            for w, lab in (("good", "pos"), ("bad", "neg"))), encoding="utf-8")
    cfg = specialist_config(build_bert(tmp / "bert"), data, tmp / "run", "classify", "adapter.method=full",
                            "train.max_steps=2", "data.eval_fraction=0.25", "model.precision=fp32")
    run_dir, _ = train(cfg, log=lambda *_: None)
    return run_dir, data


def test_a_missing_gpu_fails_before_the_run_is_loaded(classify_run, monkeypatch):
    run_dir, data = classify_run
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ev, "load_head", lambda *a, **k: pytest.fail("the run was loaded before the device check"))
    for call in (ev.predict, ev.evaluate):
        with pytest.raises(DianjingError) as e:
            call(run_dir, [str(data)], device="cuda", log=lambda *_: None)
        assert "--device: cuda asked for" in str(e.value) and e.value.fix


def test_predict_on_the_cpu_when_asked(classify_run):
    run_dir, data = classify_run
    got = ev.predict(run_dir, [str(data)], device="cpu", log=lambda *_: None)
    assert len(got) == 16 and {p["label"] for p in got} <= {"pos", "neg"}


def test_the_head_is_loaded_onto_the_device_asked(classify_run, monkeypatch):
    from dianjing import precision

    run_dir, data = classify_run
    asked = []

    def elsewhere(setting="auto", key="model.device"):  # 'meta' stands in for a GPU: shapes without data
        asked.append((setting, key))
        return torch.device("meta")

    monkeypatch.setattr(precision, "device", elsewhere)
    monkeypatch.setattr(ev, "resolve_device", elsewhere)
    head, examples, _ = ev.read_for_head(run_dir, [str(data)], "stop", require_labels=False, log=lambda *_: None,
                                         device="cuda:1")
    assert asked[0] == ("cuda:1", "--device")  # checked first, under the name the user typed
    assert {s for s, _ in asked} == {"cuda:1"}  # and the same setting reached load_head
    assert {p.device.type for p in head.model.parameters()} == {"meta"}
    assert head.precision.device.type == "meta"  # autocast and the batches follow it
    assert len(examples) == 16


def test_specialists_refuse_the_chat_routes_entry_options(tmp_path):
    """columns / roles / hub / catalogue / preference are read by the chat route only: refused, not ignored."""
    from dianjing.config import load_config
    from dianjing.errors import ConfigError
    from dianjing.specialist.task import SpecialistData

    f = tmp_path / "x.csv"
    f.write_text("q,label\nhi,a\nho,b\n")
    cfg = load_config(None, ["task.type=classify", "train.threads=1"])
    cfg.data.files = [cfg.data.files[0].model_copy(update={"path": str(f), "columns": {"input": "q"}})]
    with pytest.raises(ConfigError, match=r"data.files\[0\]: columns is not read by specialists"):
        SpecialistData(cfg, log=lambda *_: None)
    cfg.data.files = [cfg.data.files[0].model_copy(update={"columns": None})]
    cfg.data.preference = "chosen"
    with pytest.raises(ConfigError, match="data.preference"):
        SpecialistData(cfg, log=lambda *_: None)
