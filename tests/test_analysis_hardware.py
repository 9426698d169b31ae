"""The hardware catalog, user device files (TOML and JSON) and this-cpu's measurement and cache."""
from __future__ import annotations

import json

import pytest

from pyinfer.analysis import hardware, microbench
from pyinfer.analysis.catalog import ALIASES, CATALOG
from pyinfer.analysis.hardware import get_device, get_devices, load_device_file, this_cpu

REQUIRED = ("h100", "h200", "b200", "mi300x", "tpu-v5e", "tpu-v6e", "inferentia2", "groq-lpu", "m4-max",
            "snapdragon-x-elite")

GOOD_TOML = """
[devices.my-gpu]
full_name = "My GPU"
peak_tflops = { fp32 = 20, fp16 = 80, int8 = 160 }
memory_bw_gbs = 1000
memory_gb = 24
power_w = 300
price_per_hour = 0.5
price_basis = "amortised purchase (3 years)"
source = "vendor sheet"
date = "2025-01"
"""


def test_catalog_has_every_device_with_source_date_and_price_basis():
    for name in REQUIRED:
        d = CATALOG[name]
        assert d.source and d.date and d.price_basis
        assert d.memory_bw > 0 and d.memory_bytes > 0
        assert "fp16" in d.peak_flops or "bf16" in d.peak_flops
        assert d.price_per_hour is None or d.price_basis.startswith(("cloud on-demand", "amortised purchase"))
    for alias, target in ALIASES.items():
        assert target in CATALOG or target == "this-cpu", alias


def test_get_device_by_name_alias_and_case():
    assert get_device("H100").name == get_device("h100-sxm").name == "h100"
    assert [d.name for d in get_devices("mi300x, tpu-v6e")] == ["mi300x", "tpu-v6e"]


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown device 'h1000'.*did you mean.*h100.*known devices"):
        get_device("h1000")
    with pytest.raises(ValueError, match="no device named"):
        get_devices(" , ")


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_user_device_file(tmp_path, suffix):
    path = tmp_path / f"devices{suffix}"
    if suffix == ".toml":
        path.write_text(GOOD_TOML)
    else:
        path.write_text(json.dumps({"devices": {"my-gpu": {
            "peak_tflops": {"fp32": 20, "fp16": 80, "int8": 160}, "memory_bw_gbs": 1000, "memory_gb": 24,
            "source": "vendor sheet", "date": "2025-01"}}}))
    d = get_device("my-gpu", files=[path])
    assert d.peak("fp16") == 80e12 and d.memory_bw == 1e12 and d.memory_bytes == 24e9
    assert d.ridge("fp16") == pytest.approx(80.0)
    assert d.peak("bf16") == d.peak("fp16")                 # same rate when only one is listed


def test_user_devices_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "d.toml"
    path.write_text(GOOD_TOML)
    monkeypatch.setenv("PYINFER_HARDWARE", str(path))
    assert get_device("my-gpu").full_name == "My GPU"


@pytest.mark.parametrize("text, suffix, message", [
    (GOOD_TOML.replace("memory_gb = 24\n", ""), ".toml", r"missing field\(s\) \['memory_gb'\]"),
    (GOOD_TOML.replace("memory_bw_gbs = 1000", "memory_bw_gbs = -5"), ".toml", "memory_bw_gbs must be positive"),
    (GOOD_TOML.replace("memory_bw_gbs = 1000", 'memory_bw_gbs = "fast"'), ".toml", "must be a number"),
    (GOOD_TOML.replace("int8 = 160", "int9 = 160"), ".toml", "peak dtype 'int9'"),
    (GOOD_TOML.replace("power_w = 300", "watts = 300"), ".toml", r"unknown field\(s\) \['watts'\]"),
    (GOOD_TOML.replace("peak_tflops = { fp32 = 20, fp16 = 80, int8 = 160 }", "peak_tflops = {}"), ".toml",
     "peak_tflops must be a table"),
    ("[devices.x\nfoo = 1", ".toml", "not valid TOML"),
    ('{"devices": {', ".json", "not valid JSON"),
    ('{"gpus": {}}', ".json", r"expected a table \[devices.NAME\]"),
    ("x = 1", ".yaml", "expected a .toml or .json file"),
])
def test_malformed_device_files_are_clear_errors(tmp_path, text, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_device_file(path)
    assert str(path) in str(info.value)


def test_missing_device_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read it"):
        load_device_file(tmp_path / "nope.toml")


def test_this_cpu_is_measured_once_and_cached(tmp_path, monkeypatch):
    calls = []
    fake = {"read_bw": 2e10, "triad_bw": 1.5e10, "cache_read_bw": 4e10, "fp32": 1e11, "int8": 3e11,
            "llc_bytes": 1 << 25, "memory_bytes": 1 << 34, "cpu_model": microbench.cpu_model(),
            "threads": microbench.compute_threads(), "seconds": 0.1, "method": "fake"}
    monkeypatch.setattr(microbench, "measure", lambda quick=False: calls.append(quick) or dict(fake))
    monkeypatch.setenv("PYINFER_CACHE", str(tmp_path))
    d = get_device("this-cpu")
    assert calls == [False] and d.memory_bw == 2e10 and d.peak("int8") == 3e11
    assert list((tmp_path / "hardware").glob("this-cpu-*t.json"))
    again = this_cpu()
    assert calls == [False] and again == d                  # read from the cache, not remeasured
    this_cpu(refresh=True, quick=True)
    assert calls == [False, True]


def test_this_cpu_microbenchmarks_measure_something():
    """Each microbenchmark at a small size (the real run uses arrays past the last-level cache)."""
    m = {"read_bw": microbench.read_bandwidth(8 << 20, 2), "triad_bw": microbench.triad_bandwidth(8 << 20, 2)[0],
         "cache_read_bw": microbench.read_bandwidth(1 << 20, 2), "fp32": microbench.fp32_peak(128, 2),
         "int8": microbench.int8_peak(128, 2)[0]}
    for key, value in m.items():
        assert value > 1e8, key                               # any real machine beats 0.1 G/s
    d = hardware.cpu_device({**m, "llc_bytes": microbench.last_level_cache_bytes(), "cpu_model": "x",
                             "memory_bytes": microbench.memory_bytes(), "threads": 1, "method": "test",
                             "date": "2025-01-01"})
    assert d.kind == "cpu" and d.ridge("fp32") > 0 and d.peak("fp16") == d.peak("fp32")


def _cpu_with_curve(curve):
    return hardware.cpu_device({"read_bw": curve[-1][1], "triad_bw": 1e10, "cache_read_bw": curve[0][1],
                                "fp32": 1e11, "int8": 4e11, "llc_bytes": 1 << 25, "cpu_model": "x",
                                "memory_bytes": 1 << 34, "threads": 1, "method": "test", "date": "2025-01-01",
                                "read_bw_curve": curve})


def test_bandwidth_curve_interpolates_between_cache_and_memory():
    curve = [[1 << 20, 8e10], [4 << 20, 4e10], [64 << 20, 3e10], [256 << 20, 1e10]]
    d = _cpu_with_curve(curve)
    assert d.bandwidth(None) == d.memory_bw == 1e10
    assert d.bandwidth(1 << 10) == 8e10 and d.bandwidth(1 << 30) == 1e10     # clamped at both ends
    for (n, bw) in curve:
        assert d.bandwidth(n) == pytest.approx(bw)
    mid = d.bandwidth(2 << 20)                                   # halfway in log size between 1 and 4 MiB
    assert mid == pytest.approx(6e10)
    sizes = [1 << k for k in range(18, 31)]
    bws = [d.bandwidth(s) for s in sizes]
    assert all(a >= b for a, b in zip(bws, bws[1:]))            # a bigger working set never streams faster


def test_bad_bandwidth_curve_is_refused():
    with pytest.raises(ValueError, match="strictly ascending"):
        _cpu_with_curve([[4 << 20, 4e10], [1 << 20, 8e10]])
    with pytest.raises(ValueError, match="bw_curve bandwidth"):
        _cpu_with_curve([[1 << 20, 0.0], [4 << 20, 4e10]])


def test_measured_curve_is_non_increasing():
    curve = microbench.read_bandwidth_curve(4 << 20, 1, min_time_s=0.0)
    sizes = [n for n, _ in curve]
    assert sizes == sorted(sizes) and sizes[-1] == 4 << 20 and sizes[0] == 256 << 10
    assert all(a[1] >= b[1] > 1e8 for a, b in zip(curve, curve[1:]))


def test_roofline_uses_the_bandwidth_its_working_set_gets():
    from pyinfer.analysis.estimate import step_cost
    from pyinfer.analysis.roofline import predict
    from pyinfer.config import get_preset
    d = _cpu_with_curve([[1 << 20, 8e10], [1 << 30, 1e10]])
    step = step_cost(get_preset("toy"), [1], [16])
    ws = sum(o.cost.bytes_total for o in step.ops)
    r = predict(step, d)
    assert r.bandwidth == pytest.approx(d.bandwidth(ws)) and d.memory_bw < r.bandwidth < 8e10
    assert r.memory_s == pytest.approx(ws / d.bandwidth(ws))
    cold = predict(step, d, working_set=float(1 << 31))        # as if nothing stayed in cache
    assert cold.memory_s == pytest.approx(ws / d.memory_bw) and cold.time_s > r.time_s
