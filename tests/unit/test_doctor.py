"""`dianjing doctor` reports the GPUs torch sees (name, memory, compute capability, bf16), Apple's MPS,
and the device model.device: auto picks; without a GPU it says so plainly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dianjing import doctor, precision

GIB = 2**30
FAKE = [SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=80 * GIB, major=9, minor=0),
        SimpleNamespace(name="Tesla V100-SXM2-16GB", total_memory=16 * GIB, major=7, minor=0)]


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(FAKE))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: FAKE[i])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: FAKE[d.index if hasattr(d, "index") else d].name)
    monkeypatch.setattr(precision, "_mps_available", lambda: False)


def _by_name(checks) -> dict:
    return {name: (status, detail, fix) for status, name, detail, fix in checks}


def test_two_gpus_are_listed_with_name_memory_capability_and_bf16(two_gpus):
    got = _by_name(doctor.gpu_checks())
    assert got["gpu 0"] == ("ok", "NVIDIA H100 80GB HBM3, 80.0 GiB, compute capability 9.0, bf16 yes", None)
    status, detail, _ = got["gpu 1"]
    assert status == "ok" and detail.startswith("Tesla V100-SXM2-16GB, 16.0 GiB, compute capability 7.0, bf16 no")
    assert got["device"] == ("ok", "model.device: auto picks cuda:0 (NVIDIA H100 80GB HBM3)", None)
    assert "gpu" not in got and "mps" not in got


def test_auto_follows_local_rank(two_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert _by_name(doctor.gpu_checks())["device"][1] == "model.device: auto picks cuda:1 (Tesla V100-SXM2-16GB)"
    monkeypatch.setenv("LOCAL_RANK", "2")  # more processes than GPUs
    status, detail, fix = _by_name(doctor.gpu_checks())["device"]
    assert status == "fail" and "GPU 2 asked for, but 2 GPU(s) are visible" in detail and "CUDA_VISIBLE_DEVICES" in fix


def test_no_gpu_is_said_plainly(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "_mps_available", lambda: False)
    got = _by_name(doctor.gpu_checks())
    assert got["gpu"] == ("ok", "none (no CUDA GPU, no Apple MPS): dianjing computes on the CPU", None)
    assert got["device"][0] == "ok" and got["device"][1].startswith("model.device: auto picks cpu (")
    assert not any(k.startswith("gpu ") for k in got)


def test_mps_is_reported_and_picked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "_mps_available", lambda: True)
    got = _by_name(doctor.gpu_checks())
    assert got["mps"][0] == "ok" and "gpu" not in got
    assert got["device"][1] == "model.device: auto picks mps (Apple GPU (MPS))"


def test_the_command_prints_the_gpus(two_gpus, capsys):
    from dianjing.cli import main

    main(["doctor"])
    out = capsys.readouterr().out
    assert "[ok  ] gpu 0: NVIDIA H100 80GB HBM3, 80.0 GiB" in out and "[ok  ] gpu 1: Tesla V100" in out
    assert "[ok  ] device: model.device: auto picks cuda:0" in out
