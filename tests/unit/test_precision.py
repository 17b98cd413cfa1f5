"""dianjing.precision: one decision of device, frozen/trained dtype and autocast per run."""

import pytest
import torch

from dianjing import precision


@pytest.mark.parametrize("setting,full,compute,head,frozen,autocast", [
    ("fp32", False, "bf16", False, torch.float32, None),
    ("fp32", True, "bf16", True, torch.float32, None),
    ("bf16", False, "fp32", False, torch.bfloat16, None),  # PEFT's own fp32 adapter products
    ("bf16", False, "bf16", False, torch.bfloat16, torch.bfloat16),
    ("bf16", True, "fp32", False, torch.bfloat16, torch.bfloat16),  # full: fp32 masters under autocast
    ("bf16", False, "fp32", True, torch.bfloat16, torch.bfloat16),  # an fp32 specialist head
])
def test_training_rules(setting, full, compute, head, frozen, autocast):
    p = precision.for_training(setting, full=full, adapter_compute=compute, fp32_head=head)
    assert p.frozen == frozen and p.trained == torch.float32 and p.autocast_dtype == autocast
    assert p.name == setting and p.dtype == frozen
    assert p.load_dtype(trains_base=full) == (torch.float32 if full else frozen)


def test_inference_has_no_autocast_and_one_dtype():
    p = precision.for_inference("bf16")
    assert p.frozen == p.trained == torch.bfloat16 and p.autocast_dtype is None
    with p.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_autocast_follows_the_device_not_the_presence_of_cuda(monkeypatch):
    """The bug: autocast picked 'cuda' whenever CUDA existed while the tensors stayed on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: pytest.fail("asked CUDA"))
    p = precision.for_training("bf16", full=True, device_setting="cpu")
    assert p.device.type == "cpu"
    w = torch.randn(8, 8)
    with p.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert (w @ w).dtype == torch.bfloat16
    monkeypatch.setattr(precision, "_BF16_FAST", None)
    precision.bf16_supported()  # measured on the CPU, CUDA not consulted


def test_auto_resolves_by_measurement(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda on=None: False)
    assert precision.resolve("auto") == torch.float32
    monkeypatch.setattr(precision, "bf16_supported", lambda on=None: True)
    assert precision.resolve("auto") == torch.bfloat16
    assert precision.resolve("fp32") == torch.float32
    assert precision.from_name("bfloat16") == precision.from_name("bf16") == torch.bfloat16


# -- the device decision (no GPU needed: CUDA's answers are faked) ---------------------------
class _FakeCuda:
    def __init__(self, monkeypatch, count=2, bf16=True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
        monkeypatch.setattr(torch.version, "cuda", "12.8")


def test_auto_picks_cuda_when_present_and_the_local_rank_picks_the_gpu(monkeypatch):
    _FakeCuda(monkeypatch)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert precision.device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's second process on this machine
    assert precision.device("auto") == torch.device("cuda", 1)
    assert precision.device("cuda") == torch.device("cuda", 1)
    assert precision.device("cuda:0") == torch.device("cuda", 0)  # an explicit index wins
    assert precision.device("cpu") == torch.device("cpu")
    # what config.yaml pins: the kind, so that a resumed run under torchrun again spreads over the GPUs
    assert precision.pinned("auto", torch.device("cuda", 1)) == "cuda"
    assert precision.pinned("cuda:0", torch.device("cuda", 0)) == "cuda:0"
    assert precision.pinned("auto", torch.device("cpu")) == "cpu"


def test_auto_is_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "_mps_available", lambda: False)
    assert precision.device("auto") == torch.device("cpu")
    monkeypatch.setattr(precision, "_mps_available", lambda: True)
    assert precision.device("auto") == torch.device("mps")


@pytest.mark.parametrize("setting,count,local,words", [
    ("cuda", 0, None, "cuda asked for"),
    ("cuda:2", 2, None, "GPU 2 asked for, but 2 GPU(s)"),
    ("auto", 2, "3", "LOCAL_RANK=3"),  # more processes than GPUs
    ("gpu", 1, None, "is not a device"),
    ("mps", 0, None, "no Apple GPU"),
])
def test_a_device_that_is_not_there_is_an_error_naming_the_key(monkeypatch, setting, count, local, words):
    _FakeCuda(monkeypatch, count=count)
    monkeypatch.setattr(precision, "_mps_available", lambda: False)
    if local:
        monkeypatch.setenv("LOCAL_RANK", local)
    else:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(precision.DianjingError) as e:
        precision.device(setting)
    assert "model.device" in str(e.value) and words in str(e.value) and e.value.fix


@pytest.mark.parametrize("bf16", [True, False])
def test_on_cuda_bf16_is_asked_of_the_gpu_and_autocast_is_cuda(monkeypatch, bf16):
    _FakeCuda(monkeypatch, bf16=bf16)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(precision, "matmul_gflops", lambda *a, **k: pytest.fail("measured the CPU for a GPU run"))
    p = precision.for_training("auto", full=True, device_setting="auto")
    assert p.device == torch.device("cuda", 0)
    assert p.dtype == (torch.bfloat16 if bf16 else torch.float32) and p.trained == torch.float32
    if bf16:
        assert p.autocast().device == "cuda" and p.autocast().fast_dtype == torch.bfloat16
    inf = precision.for_inference("auto", "cuda:1")
    assert inf.device == torch.device("cuda", 1) and inf.frozen == p.dtype and inf.autocast_dtype is None


def test_config_validates_model_device():
    from dianjing.config import RunConfig
    from pydantic import ValidationError

    assert RunConfig.model_validate({"model": {"device": "cuda:3"}}).model.device == "cuda:3"
    with pytest.raises(ValidationError):
        RunConfig.model_validate({"model": {"device": "gpu0"}})


def test_batches_move_to_the_device_and_stay_put_on_the_cpu():
    b = {"input_ids": torch.ones(2, 3, dtype=torch.long), "n": 3}
    assert precision.to_device(b, torch.device("cpu")) is b
    moved = precision.to_device(b, torch.device("meta"))
    assert moved["input_ids"].device.type == "meta" and moved["n"] == 3


# -- the matmul peak (MFU's denominator): the probe, the kernel family, the per-machine cache -----
def _peak(gflops=900.0, dtype="bf16", family="AMX", **kw) -> precision.Peak:
    return precision.Peak(gflops=gflops, shape=(2048, 640, 2048), dtype=dtype, family=family, capability="AVX512",
                          threads=2, torch=torch.__version__, device="Test CPU", shapes={"2048x640x2048": gflops},
                          skipped=[], seconds=3.0, measured_at="2026-12-01T00:00:00+00:00", **{"load": 0.5, **kw})


@pytest.fixture
def peak_cache(tmp_path, monkeypatch):
    """peak.json in a temporary cache, no peaks in this process, no forced re-measuring."""
    monkeypatch.setenv("DIANJING_CACHE", str(tmp_path))
    monkeypatch.delenv("DIANJING_PEAK_CACHE", raising=False)
    monkeypatch.delenv(precision.REMEASURE_ENV, raising=False)
    monkeypatch.setattr(precision, "_PEAKS", {})
    return tmp_path / "peak.json"


def _measures(monkeypatch, gflops=900.0) -> list:
    calls = []

    def fake(on=None, dtype=torch.bfloat16, **kw):
        calls.append(dtype)
        return _peak(gflops, dtype=precision._dtype_name(dtype))

    monkeypatch.setattr(precision, "measure_peak", fake)
    return calls


def _no_measuring(monkeypatch):
    monkeypatch.setattr(precision, "measure_peak", lambda *a, **k: pytest.fail("measured although the peak is cached"))


def test_a_peak_measured_on_a_busy_machine_is_not_kept(peak_cache, monkeypatch):
    calls = []
    monkeypatch.setattr(precision, "measure_peak", lambda *a, **k: calls.append(1) or _peak(400.0, load=50.0))
    assert precision.matmul_peak(torch.device("cpu"), torch.bfloat16).gflops == 400.0
    assert not peak_cache.exists()  # the next process measures again, when the machine may be quiet
    precision.matmul_peak(torch.device("cpu"), torch.bfloat16)
    assert calls == [1]  # but this process does not measure twice


def test_the_peak_cache_file_can_be_named(tmp_path, monkeypatch):
    monkeypatch.setenv("DIANJING_PEAK_CACHE", str(tmp_path / "suite-peak.json"))
    assert precision.peak_cache_path() == tmp_path / "suite-peak.json"


def test_the_peak_is_measured_once_per_machine_and_read_back(peak_cache, monkeypatch):
    calls = _measures(monkeypatch)
    p = precision.matmul_peak(torch.device("cpu"), torch.bfloat16)
    assert calls == [torch.bfloat16] and not p.cached and peak_cache.exists()
    assert precision.peak_gflops(torch.device("cpu"), torch.bfloat16) == 900.0  # this process's own copy
    monkeypatch.setattr(precision, "_PEAKS", {})  # a new process
    _no_measuring(monkeypatch)
    again = precision.matmul_peak(torch.device("cpu"), torch.bfloat16)
    assert again.cached and again.gflops == 900.0 and again.shape == (2048, 640, 2048) and again.family == "AMX"
    assert not list(peak_cache.parent.glob(".peak.*"))  # the atomic write left no temporary file


def test_a_corrupt_or_foreign_cache_is_measured_again_not_a_crash(peak_cache, monkeypatch):
    calls = _measures(monkeypatch)
    peak_cache.write_text("{not json")
    assert precision.peak_gflops(torch.device("cpu"), torch.float32) == 900.0 and len(calls) == 1
    key = precision.peak_key(torch.device("cpu"), torch.float32)
    for broken in ({"version": 1, "peaks": {key: {"gflops": 5.0}}},  # an entry missing its fields
                   {"version": 1, "peaks": {key: {**_peak().__dict__, "gflops": "fast", "shape": [1, 2, 3]}}},
                   [1, 2, 3]):
        peak_cache.write_text(__import__("json").dumps(broken, default=list))
        monkeypatch.setattr(precision, "_PEAKS", {})
        assert precision.peak_gflops(torch.device("cpu"), torch.float32) == 900.0
    assert len(calls) == 4 and precision._peak_from(precision._read_peaks(peak_cache)[key]) is not None


def test_remeasuring_is_forced_by_the_environment_or_the_argument(peak_cache, monkeypatch):
    calls = _measures(monkeypatch)
    precision.matmul_peak(torch.device("cpu"), torch.bfloat16)
    monkeypatch.setattr(precision, "_PEAKS", {})
    monkeypatch.setenv(precision.REMEASURE_ENV, "1")
    assert not precision.matmul_peak(torch.device("cpu"), torch.bfloat16).cached and len(calls) == 2
    precision.matmul_peak(torch.device("cpu"), torch.bfloat16)  # measured once per process, not per call
    precision.matmul_peak(torch.device("cpu"), torch.bfloat16, remeasure=True)
    assert len(calls) == 3


def test_the_cache_key_names_device_dtype_threads_and_torch():
    cpu = torch.device("cpu")
    torch.set_num_threads(1)  # conftest restores the thread count
    one = precision.peak_key(cpu, torch.bfloat16)
    assert one != precision.peak_key(cpu, torch.float32)
    torch.set_num_threads(2)
    assert one != precision.peak_key(cpu, torch.bfloat16)
    assert torch.__version__ in one and precision.device_name(cpu) in one


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512bw {extra}
"""


@pytest.mark.parametrize("extra,bf16,fp32", [
    ("avx512_bf16 amx_bf16 amx_tile amx_int8", "AMX", "AVX-512"),  # Sapphire Rapids: fp32 has no tiles
    ("avx512_bf16 amx_tile", "AVX-512 BF16", "AVX-512"),  # tiles without their bf16 instructions
    ("avx512_bf16", "AVX-512 BF16", "AVX-512"),  # Cooper Lake, Zen 4
    ("", "AVX-512", "AVX-512"),  # Skylake-SP: bf16 converted to fp32
])
def test_the_kernel_family_comes_from_the_cpu_flags(extra, bf16, fp32):
    flags = precision.cpu_flags(CPUINFO.format(extra=extra))
    assert precision.kernel_family(torch.bfloat16, flags) == bf16
    assert precision.kernel_family(torch.float32, flags) == fp32


def test_cpu_flags_read_a_file_and_know_avx2_arm_and_nothing(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor : 0\nflags : sse2 avx avx2 fma\n")
    assert precision.kernel_family(torch.bfloat16, precision.cpu_flags(path=f)) == "AVX2"
    assert precision.cpu_flags("processor : 0\nFeatures : fp asimd bf16 sve\n") == {"fp", "asimd", "bf16", "sve"}
    assert precision.cpu_flags(path=tmp_path / "missing") == set()
    assert precision.kernel_family(torch.bfloat16, set()) == "generic"


def test_the_bf16_fp32_ratio_says_whether_the_tiles_ran():
    assert "AMX tiles are in use" in precision.bf16_evidence(_peak(900.0), _peak(250.0, "fp32", "AVX-512"))
    slow = precision.bf16_evidence(_peak(400.0), _peak(250.0, "fp32", "AVX-512"))
    assert "1.6×" in slow and "does not show it in use" in slow
    assert "not faster" in precision.bf16_evidence(_peak(20.0, family="AVX2"), _peak(100.0, "fp32", "AVX2"))


def _fake_rates(monkeypatch, rates: dict) -> list:
    timed = []

    def fake(dtype, shape, seconds, on):
        timed.append(shape)
        assert 0 < seconds < 1 and on.type == "cpu"
        return rates.get(shape, 100.0)

    monkeypatch.setattr(precision, "_shape_gflops", fake)
    return timed


def test_the_probe_keeps_the_best_shape_and_skips_squares_that_got_slower(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("a CPU probe asked CUDA"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: pytest.fail("a CPU probe asked CUDA"))
    rates = {(1024, 1024, 1024): 400.0, (2048, 2048, 2048): 880.0, (3072, 3072, 3072): 600.0,
             (2048, 640, 2048): 820.0, (2048, 1152, 6912): 910.0, (4096, 576, 1536): 700.0}
    timed = _fake_rates(monkeypatch, rates)
    p = precision.measure_peak(torch.device("cpu"), torch.bfloat16)
    assert p.gflops == 910.0 and p.shape == (2048, 1152, 6912) and p.label == "2048x1152x6912"
    assert (4096, 4096, 4096) not in timed and p.skipped == ["4096x4096x4096 (a smaller square was clearly faster)"]
    assert len(p.shapes) == len(precision.CPU_SHAPES) - 1 and p.shapes["1024x1024x1024"] == 400.0
    assert timed[0] == (1024, 1024, 1024)  # cheapest first
    assert p.dtype == "bf16" and p.threads == torch.get_num_threads() and p.torch == torch.__version__
    assert p.family == precision.kernel_family(torch.bfloat16)
    assert p.device == precision.device_name(torch.device("cpu"))


def test_the_probe_skips_shapes_that_would_not_fit_its_budget(monkeypatch):
    _fake_rates(monkeypatch, {(1024, 1024, 1024): 1.0})  # 2 GFLOP/s-class: an emulated bf16
    p = precision.measure_peak(torch.device("cpu"), torch.bfloat16, budget_s=2.0)
    assert p.shapes == {"1024x1024x1024": 1.0} and p.gflops == 1.0
    assert len(p.skipped) == len(precision.CPU_SHAPES) - 1 and all("budget" in s for s in p.skipped)
