"""The matmul peak (dianjing.peak): the probe, the kernel family and the per-machine cache."""

import pytest
import torch

from dianjing import peak


# -- the matmul peak (MFU's denominator): the probe, the kernel family, the per-machine cache -----
def _peak(gflops=900.0, dtype="bf16", family="AMX", **kw) -> peak.Peak:
    return peak.Peak(gflops=gflops, shape=(2048, 640, 2048), dtype=dtype, family=family, capability="AVX512",
                          threads=2, torch=torch.__version__, device="Test CPU", skipped=[], seconds=3.0,
                          measured_at="2026-12-01T00:00:00+00:00",
                          **{"load": 0.5, "shapes": {"2048x640x2048": gflops}, **kw})


def _measures(monkeypatch, gflops=900.0) -> list:
    calls = []

    def fake(on=None, dtype=torch.bfloat16, **kw):
        calls.append(dtype)
        return _peak(gflops, dtype=peak._dtype_name(dtype))

    monkeypatch.setattr(peak, "measure_peak", fake)
    return calls


def _no_measuring(monkeypatch):
    monkeypatch.setattr(peak, "measure_peak", lambda *a, **k: pytest.fail("measured although the peak is cached"))


def test_a_peak_measured_on_a_busy_machine_is_not_kept(peak_cache, monkeypatch):
    calls = []
    monkeypatch.setattr(peak, "measure_peak", lambda *a, **k: calls.append(1) or _peak(400.0, load=50.0))
    assert peak.matmul_peak(torch.device("cpu"), torch.bfloat16).gflops == 400.0
    assert not peak_cache.exists()  # the next process measures again, when the machine may be quiet
    peak.matmul_peak(torch.device("cpu"), torch.bfloat16)
    assert calls == [1]  # but this process does not measure twice


def test_the_peak_cache_file_can_be_named(tmp_path, monkeypatch):
    monkeypatch.setenv("DIANJING_PEAK_CACHE", str(tmp_path / "suite-peak.json"))
    assert peak.peak_cache_path() == tmp_path / "suite-peak.json"


def test_the_peak_is_measured_once_per_machine_and_read_back(peak_cache, monkeypatch):
    calls = _measures(monkeypatch)
    p = peak.matmul_peak(torch.device("cpu"), torch.bfloat16)
    assert calls == [torch.bfloat16] and not p.cached and peak_cache.exists()
    assert peak.peak_gflops(torch.device("cpu"), torch.bfloat16) == 900.0  # this process's own copy
    monkeypatch.setattr(peak, "_PEAKS", {})  # a new process
    _no_measuring(monkeypatch)
    again = peak.matmul_peak(torch.device("cpu"), torch.bfloat16)
    assert again.cached and again.gflops == 900.0 and again.shape == (2048, 640, 2048) and again.family == "AMX"
    assert not list(peak_cache.parent.glob(".peak.*"))  # the atomic write left no temporary file


def test_a_corrupt_or_foreign_cache_is_measured_again_not_a_crash(peak_cache, monkeypatch):
    calls = _measures(monkeypatch)
    peak_cache.write_text("{not json")
    assert peak.peak_gflops(torch.device("cpu"), torch.float32) == 900.0 and len(calls) == 1
    key = peak.peak_key(torch.device("cpu"), torch.float32)
    for broken in ({"version": 1, "peaks": {key: {"gflops": 5.0}}},  # an entry missing its fields
                   {"version": 1, "peaks": {key: {**_peak().__dict__, "gflops": "fast", "shape": [1, 2, 3]}}},
                   [1, 2, 3]):
        peak_cache.write_text(__import__("json").dumps(broken, default=list))
        monkeypatch.setattr(peak, "_PEAKS", {})
        assert peak.peak_gflops(torch.device("cpu"), torch.float32) == 900.0
    assert len(calls) == 4 and peak._peak_from(peak._read_peaks(peak_cache)[key]) is not None


def test_a_busy_remeasure_does_not_lower_this_processs_peak(peak_cache, monkeypatch):
    readings = iter([_peak(900.0), _peak(300.0, load=50.0)])  # the second probe on a busy machine
    monkeypatch.setattr(peak, "measure_peak", lambda *a, **k: next(readings))
    cpu = torch.device("cpu")
    peak.matmul_peak(cpu, torch.bfloat16)
    assert peak.matmul_peak(cpu, torch.bfloat16, remeasure=True).gflops == 900.0
    _no_measuring(monkeypatch)
    assert peak.matmul_peak(cpu, torch.bfloat16).gflops == 900.0


def test_remeasuring_is_forced_by_the_environment_or_the_argument(peak_cache, monkeypatch):
    calls = _measures(monkeypatch)
    peak.matmul_peak(torch.device("cpu"), torch.bfloat16)
    monkeypatch.setattr(peak, "_PEAKS", {})
    monkeypatch.setenv(peak.REMEASURE_ENV, "1")
    assert not peak.matmul_peak(torch.device("cpu"), torch.bfloat16).cached and len(calls) == 2
    peak.matmul_peak(torch.device("cpu"), torch.bfloat16)  # measured once per process, not per call
    peak.matmul_peak(torch.device("cpu"), torch.bfloat16, remeasure=True)
    assert len(calls) == 3


def test_measuring_again_raises_the_cached_peak_but_never_lowers_it(peak_cache, monkeypatch):
    readings = iter([_peak(900.0), _peak(700.0, shapes={"2048x640x2048": 700.0, "1024x1024x1024": 500.0}),
                     _peak(1000.0)])
    monkeypatch.setattr(peak, "measure_peak", lambda *a, **k: next(readings))
    cpu = torch.device("cpu")
    assert peak.matmul_peak(cpu, torch.bfloat16).gflops == 900.0
    slow = peak.matmul_peak(cpu, torch.bfloat16, remeasure=True)  # a slow minute of a shared machine
    assert slow.gflops == 900.0 and slow.shapes == {"2048x640x2048": 900.0, "1024x1024x1024": 500.0}
    monkeypatch.setattr(peak, "_PEAKS", {})
    assert peak.matmul_peak(cpu, torch.bfloat16).gflops == 900.0  # and that is what the cache holds
    assert peak.matmul_peak(cpu, torch.bfloat16, remeasure=True).gflops == 1000.0
    monkeypatch.setattr(peak, "_PEAKS", {})
    assert peak.matmul_peak(cpu, torch.bfloat16).gflops == 1000.0


def test_the_cache_key_names_device_dtype_threads_and_torch():
    cpu = torch.device("cpu")
    torch.set_num_threads(1)  # conftest restores the thread count
    one = peak.peak_key(cpu, torch.bfloat16)
    assert one != peak.peak_key(cpu, torch.float32)
    torch.set_num_threads(2)
    assert one != peak.peak_key(cpu, torch.bfloat16)
    assert torch.__version__ in one and peak.device_name(cpu) in one


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
    flags = peak.cpu_flags(CPUINFO.format(extra=extra))
    assert peak.kernel_family(torch.bfloat16, flags) == bf16
    assert peak.kernel_family(torch.float32, flags) == fp32


def test_the_cpu_signature_tells_cpus_with_one_name_apart(tmp_path):
    amx = CPUINFO.format(extra="avx512_bf16 amx_bf16 amx_tile")
    plain = CPUINFO.format(extra="avx512_bf16")
    assert peak.cpu_signature(amx) != peak.cpu_signature(plain)  # same model name, other flags
    stepped = "cpu family\t: 6\nmodel\t: 143\nstepping\t: 8\n" + amx
    assert peak.cpu_signature(stepped) != peak.cpu_signature(stepped.replace("stepping\t: 8", "stepping\t: 6"))
    two = stepped + "\n" + stepped.replace("processor\t: 0", "processor\t: 1")
    assert peak.cpu_signature(two) == peak.cpu_signature(stepped)  # one processor's block is read
    assert len(peak.cpu_signature(amx)) == 8
    assert peak.cpu_signature(path=tmp_path / "missing") == ""
    if peak.cpu_signature():
        assert f"[{peak.cpu_signature()}]" in peak.peak_key(torch.device("cpu"), torch.float32)


def test_cpu_flags_read_a_file_and_know_avx2_arm_and_nothing(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor : 0\nflags : sse2 avx avx2 fma\n")
    assert peak.kernel_family(torch.bfloat16, peak.cpu_flags(path=f)) == "AVX2"
    assert peak.cpu_flags("processor : 0\nFeatures : fp asimd bf16 sve\n") == {"fp", "asimd", "bf16", "sve"}
    assert peak.cpu_flags(path=tmp_path / "missing") == set()
    assert peak.kernel_family(torch.bfloat16, set()) == "generic"


def test_the_bf16_fp32_ratio_says_whether_the_tiles_ran():
    assert "AMX tiles are in use" in peak.bf16_evidence(_peak(900.0), _peak(250.0, "fp32", "AVX-512"))
    slow = peak.bf16_evidence(_peak(400.0), _peak(250.0, "fp32", "AVX-512"))
    assert "1.6×" in slow and "does not show it in use" in slow
    assert "not faster" in peak.bf16_evidence(_peak(20.0, family="AVX2"), _peak(100.0, "fp32", "AVX2"))


def _fake_rates(monkeypatch, rates: dict) -> list:
    timed = []

    def fake(dtype, shape, seconds, on):
        timed.append(shape)
        assert 0 < seconds < 1 and on.type == "cpu"
        return rates.get(shape, 100.0)

    monkeypatch.setattr(peak, "_shape_gflops", fake)
    return timed


def test_the_probe_keeps_the_best_shape_and_skips_squares_that_got_slower(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("a CPU probe asked CUDA"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: pytest.fail("a CPU probe asked CUDA"))
    rates = {(1024, 1024, 1024): 400.0, (2048, 2048, 2048): 880.0, (3072, 3072, 3072): 600.0,
             (2048, 640, 2048): 820.0, (2048, 1152, 6912): 910.0, (4096, 576, 1536): 700.0}
    timed = _fake_rates(monkeypatch, rates)
    p = peak.measure_peak(torch.device("cpu"), torch.bfloat16)
    assert p.gflops == 910.0 and p.shape == (2048, 1152, 6912) and p.label == "2048x1152x6912"
    assert (4096, 4096, 4096) not in timed and p.skipped == ["4096x4096x4096 (a smaller square was clearly faster)"]
    assert len(p.shapes) == len(peak.CPU_SHAPES) - 1 and p.shapes["1024x1024x1024"] == 400.0
    assert timed[0] == (1024, 1024, 1024)  # cheapest first
    assert p.dtype == "bf16" and p.threads == torch.get_num_threads() and p.torch == torch.__version__
    assert p.family == peak.kernel_family(torch.bfloat16)
    assert p.device == peak.device_name(torch.device("cpu"))


def test_the_probe_skips_shapes_that_would_not_fit_its_budget(monkeypatch):
    _fake_rates(monkeypatch, {(1024, 1024, 1024): 1.0})  # 2 GFLOP/s-class: an emulated bf16
    p = peak.measure_peak(torch.device("cpu"), torch.bfloat16, budget_s=2.0)
    assert p.shapes == {"1024x1024x1024": 1.0} and p.gflops == 1.0
    assert len(p.skipped) == len(peak.CPU_SHAPES) - 1 and all("budget" in s for s in p.skipped)


# -- a busy machine, measured over the probe itself -------------------------------------------------
def test_other_work_during_the_probe_is_counted_from_proc_stat(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    tick = peak.os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice: busy = all but idle and iowait
    stat.write_text(f"cpu  {3 * tick} 0 {tick} {50 * tick} {7 * tick} 0 0 {tick} 0 0\ncpu0 1 2 3 4\n")
    busy, own = peak._cpu_seconds(str(stat))
    assert busy == pytest.approx(5.0) and own > 0
    assert peak.others_during((100.0, 10.0), (103.0, 11.0), 2.0) == 1.0  # 3 s busy, 1 of them ours, in 2 s
    assert peak.others_during((100.0, 10.0), (100.5, 11.0), 1.0) == 0.0  # never below nothing
    assert peak.others_during(None, (1.0, 1.0), 1.0) is None
    stat.write_text("intr 1 2 3\n")
    assert peak._cpu_seconds(str(stat)) is None and peak._cpu_seconds(str(tmp_path / "absent")) is None


def test_a_probe_is_busy_by_what_other_work_took_while_it_ran(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(peak.os, "cpu_count", lambda: 2)
    assert "1.2 of 2 cores" in peak.busy(_peak(others=1.2, load=0.0), cpu)
    assert peak.busy(_peak(others=0.3, load=50.0), cpu) is None  # the lagging load average no longer decides
    assert "load 50" in peak.busy(_peak(load=50.0), cpu)  # an entry cached before `others` was measured
    assert peak.busy(_peak(load=0.5), cpu) is None
    assert peak.busy(_peak(others=1.9), torch.device("cuda")) is None


@pytest.mark.skipif(peak._cpu_seconds() is None, reason="needs /proc/stat")
def test_a_process_burning_a_core_during_the_probe_is_seen():
    import subprocess
    import sys

    burner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
    try:
        import time

        time.sleep(0.3)  # let it start spinning
        got = peak.measure_peak(torch.device("cpu"), torch.float32, budget_s=1.0, shapes=[(256, 256, 256)])
    finally:
        burner.kill()
        burner.wait()
    assert got.others is not None and got.others > 0.3, got.others


# -- a stale peak: a run that counts more than the cached peak measures it again ---------------------
def test_a_run_faster_than_the_cached_peak_measures_it_again_and_keeps_the_higher(peak_cache, monkeypatch):
    cpu = torch.device("cpu")
    readings = iter([_peak(89.0, dtype="fp32"), _peak(176.0, dtype="fp32")])
    monkeypatch.setattr(peak, "measure_peak", lambda *a, **k: next(readings))
    assert peak.matmul_peak(cpu, torch.float32).gflops == 89.0  # a slow host's probe, cached
    found, why = peak.recheck(cpu, torch.float32, achieved_gflops=128.0)
    assert found.gflops == 176.0 and "128 GFLOP/s" in why and "89" in why and "176" in why
    monkeypatch.setattr(peak, "_PEAKS", {})
    _no_measuring(monkeypatch)
    assert peak.matmul_peak(cpu, torch.float32).gflops == 176.0  # the cache holds the new figure


def test_a_run_below_the_peak_measures_nothing(peak_cache, monkeypatch):
    _measures(monkeypatch, 900.0)
    peak.matmul_peak(torch.device("cpu"), torch.bfloat16)
    _no_measuring(monkeypatch)
    found, why = peak.recheck(torch.device("cpu"), torch.bfloat16, achieved_gflops=899.0)
    assert found.gflops == 900.0 and why is None


def test_when_the_new_probe_is_no_higher_the_peak_stays_and_the_count_is_named(peak_cache, monkeypatch):
    cpu = torch.device("cpu")
    readings = iter([_peak(900.0), _peak(300.0, load=50.0)])  # the second one on a busy machine
    monkeypatch.setattr(peak, "measure_peak", lambda *a, **k: next(readings))
    peak.matmul_peak(cpu, torch.bfloat16)
    found, why = peak.recheck(cpu, torch.bfloat16, achieved_gflops=1000.0)
    assert found.gflops == 900.0 and "not higher" in why and "100%" in why
    _no_measuring(monkeypatch)
    assert peak.matmul_peak(cpu, torch.bfloat16).gflops == 900.0  # the busy figure did not replace it here


def test_the_run_summary_measures_a_stale_peak_again(tiny_llama, alpaca_file, tmp_path, peak_cache, monkeypatch):
    from dianjing.train.loop import train
    from tests.helpers import sft_config

    readings = iter([_peak(1e-6, dtype="fp32"), _peak(1e6, dtype="fp32")])  # stale: any run beats 1e-6
    calls = []
    monkeypatch.setattr(peak, "measure_peak", lambda *a, **k: calls.append(1) or next(readings))
    said = []
    _, summary = train(sft_config(tiny_llama, alpaca_file, tmp_path / "run", "train.max_steps=2",
                                  "model.precision=fp32"), log=said.append)
    assert calls == [1, 1] and summary["matmul_peak_gflops"] == 1e6 and summary["mfu"] < 1e-3
    assert any("measured again" in str(s) for s in said)
