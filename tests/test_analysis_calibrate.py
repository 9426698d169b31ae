"""Predicted against measured: the efficiency fit, residuals, a real (tiny) decode measurement, and
GPU suite results placed on their card's roofline."""
from __future__ import annotations

import json

import pytest

from pyinfer.analysis import Efficiency, get_device, predict, step_cost
from pyinfer.analysis import calibrate as cal
from pyinfer.config import PRESETS


def _synthetic_runs(rng, eff: Efficiency, noise: float = 0.0, n: int = 8, levels: bool = False,
                    comp_max: float = 3.0) -> list[cal.Run]:
    """Runs whose measured times follow ``eff``; with ``levels``, presets p0 and p1 stream from a cache;
    nominal compute time up to ``comp_max`` x memory time per op."""
    runs = []
    for i in range(n):
        roles = int(rng.integers(3, 8))
        mem = tuple(float(x) for x in rng.uniform(1e-5, 1e-2, roles))
        comp = tuple(float(m * x) for m, x in zip(mem, rng.uniform(0.01, comp_max, roles)))  # some compute-bound
        calls = int(rng.integers(20, 400))
        cached = levels and i % 4 < 2
        r = cal.Run("dev", "numpy", "float32", f"p{i % 4}", 16, 4, 1.0, mem, comp, calls, cached)
        t = r.predicted_s(eff) * (1 + noise * float(rng.standard_normal()))
        runs.append(cal.Run("dev", "numpy", "float32", f"p{i % 4}", 16, 4, t, mem, comp, calls, cached))
    return runs


def test_fit_recovers_cache_and_dram_efficiencies(rng):
    # memory-bound decode steps (nominal compute at most half the memory time, e_c >= 0.6): both memory
    # factors are identifiable; compute-bound runs of one level could hide that level's factor
    truth = Efficiency(memory=float(rng.uniform(0.3, 0.8)), compute=float(rng.uniform(0.6, 1)),
                       overhead_s=float(rng.uniform(0, 2e-5)), memory_cache=float(rng.uniform(0.8, 1.3)))
    runs = _synthetic_runs(rng, truth, n=12, levels=True, comp_max=0.5)
    got = cal.fit(runs)
    for r in runs:
        assert abs(cal.residual(r, got)) < 1e-6
    assert got.memory == pytest.approx(truth.memory, rel=1e-4)
    assert got.memory_cache == pytest.approx(truth.memory_cache, rel=1e-4)
    one_level = cal.fit([r for r in runs if not r.cached])          # DRAM runs only: no cache factor
    assert one_level.memory_cache is None and one_level.memory == pytest.approx(truth.memory, rel=1e-4)


def test_fit_recovers_known_efficiencies(rng):
    truth = Efficiency(memory=float(rng.uniform(0.2, 1)), compute=float(rng.uniform(0.05, 1)),
                       overhead_s=float(rng.uniform(0, 2e-5)))
    runs = _synthetic_runs(rng, truth, n=10)
    got = cal.fit(runs)
    for r in runs:
        assert abs(cal.residual(r, got)) < 1e-6
    assert got.memory == pytest.approx(truth.memory, rel=1e-4)
    assert got.overhead_s == pytest.approx(truth.overhead_s, rel=1e-3, abs=1e-12)


def test_calibration_shrinks_residuals_on_noisy_runs(rng):
    runs = _synthetic_runs(rng, Efficiency(memory=0.3, compute=0.5, overhead_s=1e-5), noise=0.03, n=12)
    effs = cal.fit_all(runs)
    before = max(abs(cal.residual(r)) for r in runs)
    after = max(abs(cal.residual(r, effs[r.key])) for r in runs)
    assert after < 0.15 < before
    held = cal.leave_one_preset_out(runs)
    assert len(held) == len(runs) and max(abs(v) for v in held.values()) < 0.3
    data = cal.calibration_json(runs, effs)
    assert set(data["efficiency"]) == {"dev/numpy/float32"} and len(data["runs"]) == len(runs)


def test_calibration_file_round_trip_and_errors(tmp_path, rng):
    runs = _synthetic_runs(rng, Efficiency(memory=0.5, memory_cache=0.9), n=8, levels=True)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal.calibration_json(runs, cal.fit_all(runs))))
    effs = cal.load_calibration(path)
    got = cal.efficiency_for(effs, "dev", "numpy", "float32")
    assert got.memory == pytest.approx(0.5, rel=1e-3) and got.memory_cache == pytest.approx(0.9, rel=1e-3)
    bad = tmp_path / "bad.json"
    bad.write_text('{"runs": []}')
    with pytest.raises(ValueError, match="malformed"):
        cal.load_calibration(bad)


def test_measure_decode_on_this_machine():
    """A real (tiny) measurement: the toy preset, 2 steps; its roofline terms are the estimate's."""
    cpu = get_device("h100")            # any device: the terms are checked, not the timing
    (run,) = cal.measure_decode("toy", "numpy", "float32", cpu, contexts=(8,), steps=2)
    assert run.measured_s > 0 and run.calls == len(step_cost(PRESETS["toy"], [1], [10]).ops)
    roles = predict(step_cost(PRESETS["toy"], [1], [10]), cpu).by_role()
    assert run.memory_s == tuple(p.memory_s for p in roles)
    assert run.nominal_s == pytest.approx(sum(p.time_s for p in roles))


def test_gpu_suite_results_are_placed_on_their_roofline(tmp_path):
    h100 = get_device("h100")
    (tmp_path / "gpu_suite_h100.json").write_text(json.dumps({
        "device": "NVIDIA H100 80GB HBM3",
        "results": [{"name": "w4a16 8192x8192 M=1", "dtype": "fp16", "bytes": 34_000_000, "flops": 134_217_728,
                     "median_us": 16.0},
                    {"name": "no cost stated", "median_us": 3.0}]}))
    (tmp_path / "other.json").write_text("{}")
    rows = cal.compare_gpu_results(tmp_path)
    assert len(rows) == 1 and rows[0]["device"] == "h100" and rows[0]["bound"] == "memory"
    assert rows[0]["predicted_s"] == pytest.approx(34e6 / h100.memory_bw)
    assert rows[0]["achieved_fraction"] == pytest.approx(34e6 / h100.memory_bw / 16e-6)
    (run,) = cal.gpu_runs(rows)
    assert run.key == "h100/gpu/fp16" and run.nominal_s == pytest.approx(rows[0]["predicted_s"])
    eff = cal.fit([run], overhead=False)                # one memory-bound record: the fraction it reached
    assert eff.memory == pytest.approx(rows[0]["achieved_fraction"], rel=1e-6)


def test_cache_band_is_fitted_across_keys(rng):
    """Runs whose cached share falls linearly over a band of working sets: the fitted band explains
    every key, and the efficiencies carry it so predictions place working sets the same way."""
    truth_band = (30e6, 90e6)
    band_eff = Efficiency(cache_band=truth_band)
    runs = []
    for key in ("numpy", "c"):
        eff = Efficiency(memory=float(rng.uniform(0.4, 0.8)), memory_cache=float(rng.uniform(0.9, 1.3)),
                         overhead_s=float(rng.uniform(0, 1e-5)))
        for i, ws in enumerate((5e6, 20e6, 45e6, 60e6, 75e6, 120e6, 300e6)):
            mem = tuple(float(ws / 2e10 * x) for x in rng.uniform(0.2, 1.0, 4))
            comp = tuple(m * 0.01 for m in mem)
            r = cal.Run("dev", key, "float32", f"p{i}", 16, 4, 1.0, mem, comp, 50, band_eff.cached_fraction(ws), ws)
            runs.append(cal.replace(r, measured_s=r.predicted_s(eff), cached=0.0))
    band = cal.choose_band(runs)
    banded = cal.apply_band(runs, band)
    effs = cal.fit_all(banded, band=band)
    assert band[0] < 45e6 and band[1] > 60e6
    banded_worst = max(abs(cal.residual(r, effs[r.key])) for r in banded)
    plain = cal.fit_all(runs)                                   # one memory factor: the band matters
    assert banded_worst < 0.08 < max(abs(cal.residual(r, plain[r.key])) for r in runs)
    assert all(e.cache_band == band for e in effs.values())
    assert cal.choose_band([cal.replace(r, working_set=0.0) for r in runs]) is None
