"""`dianjing doctor` reports the GPUs torch sees (name, memory, compute capability, bf16), Apple's MPS,
and the device model.device: auto picks; without a GPU it says so plainly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dianjing import doctor, peak, precision

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
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


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


def _peak(gflops, dtype, family, load=0.1, device="Test CPU", others=None):
    return peak.Peak(gflops=gflops, shape=(2048, 640, 2048), dtype=dtype, family=family, capability="AVX512",
                          threads=2, torch=torch.__version__, device=device, shapes={"2048x640x2048": gflops},
                          skipped=[], seconds=3.2, load=load, measured_at="2026-12-01T10:00:00+00:00", others=others)


@pytest.fixture
def peaks(peak_cache, monkeypatch):
    """A temporary peak.json, no peaks in this process; `measure_peak` returns made-up figures and counts."""
    made = []

    def fake(on=None, dtype=torch.bfloat16, **kw):
        made.append((on.type, dtype))
        bf16 = dtype == torch.bfloat16
        return _peak(900.0 if bf16 else 250.0, "bf16" if bf16 else "fp32", "AMX" if bf16 else "AVX-512",
                     device=precision.device_name(on))

    monkeypatch.setattr(peak, "measure_peak", fake)
    return made


def test_the_command_prints_the_gpus(two_gpus, peaks, capsys):
    from dianjing.cli import main

    main(["doctor"])
    out = capsys.readouterr().out
    assert "[ok  ] gpu 0: NVIDIA H100 80GB HBM3, 80.0 GiB" in out and "[ok  ] gpu 1: Tesla V100" in out
    assert "[ok  ] device: model.device: auto picks cuda:0" in out
    assert "[ok  ] peak bf16: 900 GFLOP/s at 2048x640x2048" in out  # the peak of the device auto picks
    assert peaks == [("cuda", torch.bfloat16), ("cuda", torch.float32)]


@pytest.fixture
def on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "_mps_available", lambda: False)


def test_the_honest_peak_is_measured_once_then_read_from_the_cache(on_cpu, peaks, monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda on=None: True)
    got = _by_name(doctor.peak_checks())
    assert got["bf16"][:2] == ("ok", "precision auto uses bf16 on cpu (bf16 matmuls are faster there)")
    status, detail, fix = got["peak bf16"]
    assert status == "ok" and fix is None and detail.startswith("900 GFLOP/s at 2048x640x2048 (tokens x in x out), "
                                                                "AMX kernels (torch dispatch: AVX512), 2 threads")
    assert "measured now in 3.2 s" in detail and got["peak fp32"][1].startswith("250 GFLOP/s")
    assert "AMX tiles are in use" in got["bf16 kernels"][1] and "3.6×" in got["bf16 kernels"][1]
    monkeypatch.setattr(peak, "_PEAKS", {})  # the next `dianjing doctor`: from peak.json, nothing measured
    again = _by_name(doctor.peak_checks())
    assert "from the cache (2026-12-01)" in again["peak bf16"][1] and "from the cache" in again["peak fp32"][1]
    assert len(peaks) == 2


def test_without_fast_bf16_only_the_fp32_peak_is_measured(on_cpu, peaks, monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda on=None: False)
    got = _by_name(doctor.peak_checks())
    assert got["bf16"][1].startswith("precision auto uses fp32") and "peak bf16" not in got
    assert "bf16 kernels" not in got and peaks == [("cpu", torch.float32)]


def test_a_peak_measured_on_a_busy_machine_is_a_warning(on_cpu, peaks, monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda on=None: False)
    monkeypatch.setattr(peak, "measure_peak", lambda on=None, dtype=None, **k: _peak(90.0, "fp32", "AVX-512",
                                                                                           load=1000.0))
    status, detail, fix = _by_name(doctor.peak_checks())["peak fp32"]
    assert status == "warn" and "load 1000 while measured" in detail and "DIANJING_REMEASURE_PEAK=1" in fix


def test_other_work_during_the_probe_makes_its_peak_a_warning(on_cpu, peaks, monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda on=None: False)
    monkeypatch.setattr(peak.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(peak, "measure_peak", lambda on=None, dtype=None, **k: _peak(90.0, "fp32", "AVX2",
                                                                                           others=1.4))
    status, detail, _ = _by_name(doctor.peak_checks())["peak fp32"]
    assert status == "warn" and "other work took 1.4 of 2 cores while measured" in detail
