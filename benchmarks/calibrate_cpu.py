#!/usr/bin/env python
"""Predicted against measured on this CPU: measure this-cpu's roofline (read/triad bandwidth, fp32 and
int8 peaks), time CPU kernels and end-to-end batch-1 decode of the toy, stories15M and stories110M
presets (random weights) in float32 and each quantized format every loadable CPU backend has, compare
with the roofline, fit efficiency factors per (device, backend, weights), and report the residuals
before and after calibration (in sample, and leave-one-preset-out). Writes JSON naming the machine to
benchmarks/results/calibrate_cpu-<cpu>-<threads>t[-quick].json; GPU suite results found beside it
(gpu_suite*.json) are placed on their card's roofline too.

    python benchmarks/calibrate_cpu.py --quick          # smoke run, ~20 s on 2 idle cores
    python benchmarks/calibrate_cpu.py                  # the figures (~3-6 min); run on a quiet machine
    python benchmarks/calibrate_cpu.py --threads 1      # pin BLAS/OpenMP/Numba threads (set before import)

Rerunning later picks up backends that load by then (pyinfer.ops.available_backends()).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_BACKENDS = ("numpy", "c", "numba")                  # triton on a CPU is its interpreter: not timed
FORMATS_OF_KERNEL = {"matmul_w8a16": ("int8",), "matmul_w8a8": ("int8-g32", "int8-g64"),
                     "matmul_w4a16": ("int4-g32", "int4-g128", "int4-g32-zp"),
                     "matmul_w4a8": ("int4-g32-a8", "int4-g128-a8")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="toy and stories15M, three formats, few steps")
    p.add_argument("--threads", type=int, default=0, help="BLAS/OpenMP/Numba threads (default: all)")
    p.add_argument("--backends", default="", help="comma-separated subset of numpy,c,numba (default: all that load)")
    p.add_argument("--presets", default="", help="comma-separated presets (default toy,stories15M,stories110M)")
    p.add_argument("--steps", type=int, default=0, help="timed decode steps per run (default 4 quick, 8 full)")
    p.add_argument("--passes", type=int, default=0, help="passes over every run, best kept (default 1 quick, 2 full)")
    p.add_argument("--out", default="", help="JSON path (default benchmarks/results/calibrate_cpu-...json)")
    p.add_argument("--refit", default="", help="fit an earlier run's JSON again (no measuring) and rewrite it")
    return p.parse_args(argv)


def machine(threads: int) -> dict:
    from pyinfer.analysis.microbench import cpu_model
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    return {"cpu_model": cpu_model(), "threads": threads, "logical_cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in load], "python": sys.version.split()[0]}


def backends_and_formats(only: list[str], quick: bool) -> dict[str, list[str]]:
    from pyinfer.ops import Ops, load_backend
    out = {}
    for name in CPU_BACKENDS:                           # as available_backends(), CPU ones only, one by one
        if only and name not in only:
            continue
        try:
            load_backend(name)
        except Exception as e:                          # a backend being written may fail any way
            print(f"backend {name}: unavailable here ({e}); skipped")
            continue
        native = set(REGISTRY_NAMES()) if name == "numpy" else set(Ops(name).native)
        formats = ["float32"] + [f for k, fs in FORMATS_OF_KERNEL.items() if k in native for f in fs]
        if quick:
            formats = [f for f in formats if f in ("float32", "int8", "int4-g32")]
        out[name] = formats
    return out


def REGISTRY_NAMES():
    from pyinfer.ops import REGISTRY
    return list(REGISTRY)


def kernel_rows(backend: str, device, quick: bool) -> list[dict]:
    """Single-op timings (batch 1, stories110M's shapes) against the op's nominal roofline time."""
    import numpy as np
    from pyinfer import op_costs
    from pyinfer.analysis.roofline import op_point
    from pyinfer.ops import Ops
    ops, rng, rows = Ops(backend), np.random.default_rng(0), []
    shapes = [(768, 768), (2048, 768)] if quick else [(768, 768), (2048, 768), (768, 2048), (32000, 768)]
    for n, k in shapes:
        x, w, out = (rng.standard_normal(s, dtype=np.float32) for s in ((1, k), (n, k), (1, n)))
        rows.append(_time_op(f"matmul 1x{k} @ {n}x{k}", lambda: ops.matmul(out, x, w),
                             op_costs.matmul(out, x, w), device, op_point))
    kvh, hd, bs, ctx = 12, 64, 16, 256
    kc = rng.standard_normal((ctx // bs, bs, kvh, hd), dtype=np.float32)
    q = rng.standard_normal((1, kvh, hd), dtype=np.float32)
    o = np.empty_like(q)
    table, lens = np.arange(ctx // bs, dtype=np.int32)[None], np.array([ctx], np.int32)
    rows.append(_time_op(f"paged_decode_attention ctx {ctx}", lambda: ops.paged_decode_attention(
        o, q, kc, kc, table, lens, 0.125), op_costs.paged_decode_attention(o, q, kc, kc, table, lens, 0.125),
        device, op_point))
    for r in rows:
        r["backend"] = backend
    return rows


def _time_op(name, fn, cost, device, op_point) -> dict:
    fn()
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    measured = sorted(times)[len(times) // 2]
    p = op_point("kernel", name, name, cost, "fp32", device, bandwidth=device.bandwidth(cost.bytes_total))
    return {"op": name, "measured_s": measured, "predicted_s": p.time_s, "bound": p.bound,
            "achieved_fraction": p.time_s / measured, "gb_per_s": cost.bytes_total / measured / 1e9}


def fit_and_print(runs: list) -> tuple:
    """The device's cache band, the efficiency fit per key and the residual tables: (runs with their
    banded cached shares, efficiencies, summary per key, band)."""
    from pyinfer.analysis import calibrate as cal
    band = cal.choose_band(runs)
    runs = cal.apply_band(runs, band)
    effs = cal.fit_all(runs, band=band)
    lopo = cal.leave_one_preset_out(runs)
    if band:
        print(f"\ncache band: working sets under {band[0] / 1e6:.1f} MB stream from the cache, over "
              f"{band[1] / 1e6:.1f} MB from DRAM, the cached share falling linearly between (fitted)")
    print(f"\n{'preset':<12}{'backend':<8}{'weights':<12}{'ctx':>5}{'measured':>11}{'roofline':>11}"
          f"{'calibrated':>11}{'resid before':>13}{'after':>8}{'held out':>9}")
    for i, r in enumerate(runs):
        pred = r.predicted_s(effs[r.key])
        held = f"{100 * lopo[i]:+.0f}%" if i in lopo else "-"
        print(f"{r.preset:<12}{r.backend:<8}{r.weights:<12}{r.context:>5}{r.measured_s * 1e3:>9.2f}ms"
              f"{r.nominal_s * 1e3:>9.2f}ms{pred * 1e3:>9.2f}ms{100 * cal.residual(r):>12.0f}%"
              f"{100 * cal.residual(r, effs[r.key]):>7.0f}%{held:>9}")
    print(f"\n{'device/backend/weights':<34}{'mem eff DRAM':>13}{'in cache':>9}{'compute eff':>12}"
          f"{'overhead/call':>14}{'max |resid| before':>19}{'after':>7}{'held out':>9}")
    summary = {}
    for key, e in effs.items():
        rs = [r for r in runs if r.key == key]
        before = max(abs(cal.residual(r)) for r in rs)
        after = max(abs(cal.residual(r, e)) for r in rs)
        held = [abs(lopo[i]) for i, r in enumerate(runs) if r.key == key and i in lopo]
        summary[key] = {"max_abs_residual_before": before, "max_abs_residual_after": after,
                        "max_abs_residual_held_out": max(held) if held else None}
        levels = {lv for r in rs for lv in (("cache",) if r.cached > 0 else ()) + (("dram",) if r.cached < 1 else ())}
        dram = f"{e.memory:.3f}" if "dram" in levels else "-"      # one level only: `memory` is its factor
        cache = f"{e.memory_at(True):.3f}" if "cache" in levels else "-"
        summary[key]["levels"] = sorted(levels)
        held_s = f"{100 * max(held):.0f}%" if held else "-"
        print(f"{key:<34}{dram:>13}{cache:>9}{e.compute:>12.3f}{e.overhead_s * 1e6:>12.1f}us"
              f"{100 * before:>18.0f}%{100 * after:>6.0f}%{held_s:>9}")
    return runs, effs, summary, band


def refit(path: Path) -> int:
    """Fit a calibration JSON's measured runs again with this code's model and rewrite its fit (the
    measurements stay as they were)."""
    from dataclasses import fields

    from pyinfer.analysis import calibrate as cal
    from pyinfer.analysis.estimate import step_cost
    from pyinfer.config import get_preset
    data = json.loads(path.read_text())
    names = {f.name for f in fields(cal.Run)}
    runs = []
    for d in data["runs"]:
        r = cal.Run(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})
        if not r.working_set:                           # files written before runs carried it
            step = step_cost(get_preset(r.preset), [1], [r.context + 1 + r.steps // 2],
                             weights=r.weights)
            r = cal.replace(r, working_set=float(sum(o.cost.bytes_total for o in step.ops)))
        runs.append(r)
    runs, effs, summary, band = fit_and_print(runs)
    data.update(cal.calibration_json(runs, effs), residuals=summary, cache_band=band)
    path.write_text(json.dumps(data, indent=1))
    print(f"\nrefitted {path}")
    return 0


def main(args) -> int:
    from pyinfer.analysis import calibrate as cal
    from pyinfer.analysis.hardware import this_cpu
    from pyinfer.analysis.microbench import compute_threads
    from pyinfer.config import get_preset
    from pyinfer.quant import quantize_weights
    from pyinfer.weights import random_weights

    t_start = time.perf_counter()
    threads = compute_threads()
    info = machine(threads)
    print(f"machine: {info['cpu_model']}, {threads} threads, load average {info['load_average_at_start']}")
    if info["load_average_at_start"][0] > 0.5 * (os.cpu_count() or 1):
        print("warning: the machine is busy; timings will be noisy (rerun when `uptime` shows a low load)")
    device = this_cpu(refresh=True, quick=args.quick)
    print(f"this-cpu: read {device.memory_bw / 1e9:.1f} GB/s, triad {device.extra['triad_bw'] / 1e9:.1f} GB/s, "
          f"fp32 {device.peak('fp32') / 1e9:.1f} GFLOP/s, int8 {device.peak('int8') / 1e9:.1f} GOP/s "
          f"(ridge fp32 {device.ridge('fp32'):.2f} FLOP/B)")
    plan = backends_and_formats([b for b in args.backends.split(",") if b], args.quick)
    presets = [p for p in args.presets.split(",") if p] or (
        ["toy", "stories15M"] if args.quick else ["toy", "stories15M", "stories110M"])
    contexts = (16, 64) if args.quick else (16, 128)
    steps = args.steps or (4 if args.quick else 8)
    passes = args.passes or (1 if args.quick else 2)

    kernels = []
    for backend in plan:
        kernels += kernel_rows(backend, device, args.quick)
    print(f"\n{'kernel':<36}{'backend':<9}{'measured':>11}{'roofline':>11}{'GB/s':>8}{'of roofline':>12}")
    for r in kernels:
        print(f"{r['op']:<36}{r['backend']:<9}{r['measured_s'] * 1e6:>9.1f}us{r['predicted_s'] * 1e6:>9.1f}us"
              f"{r['gb_per_s']:>8.1f}{100 * r['achieved_fraction']:>11.0f}%")

    runs, weights = [], {}
    for pass_ in range(passes):                          # passes apart in time: a busy moment hits one
        for preset in presets:
            if (preset, "float32") not in weights:
                weights[(preset, "float32")] = random_weights(get_preset(preset), seed=0)
            base = weights[(preset, "float32")]
            for backend, formats in plan.items():
                for fmt in formats:
                    if (preset, fmt) not in weights:
                        weights[(preset, fmt)] = quantize_weights(base, fmt)
                    t0 = time.perf_counter()
                    runs += cal.measure_decode(preset, backend, fmt, device, contexts=contexts, steps=steps,
                                               base_weights=weights[(preset, fmt)])
                    print(f"  pass {pass_ + 1}/{passes}: {preset:<12}{backend:<7}{fmt:<12}"
                          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    runs, effs, summary, band = fit_and_print(cal.best_of(runs))
    gpu = cal.compare_gpu_results(ROOT / "benchmarks" / "results")
    gpu_effs = {}
    if gpu:
        g_runs = cal.gpu_runs(gpu)
        gpu_effs = cal.fit_all(g_runs)
        print(f"\nGPU results on their roofline ({len(gpu)} records), residual before / after calibration:")
        for g, r in zip(gpu, g_runs):
            print(f"  {g['file']}: {g['device']} {g['name']}: measured {g['measured_s'] * 1e6:.1f} us, roofline "
                  f"{g['predicted_s'] * 1e6:.1f} us ({100 * g['achieved_fraction']:.0f}%, {g['bound']}-bound); "
                  f"{100 * cal.residual(r):+.0f}% / {100 * cal.residual(r, gpu_effs[r.key]):+.0f}%")
        for key, e in gpu_effs.items():
            print(f"  {key}: memory eff {e.memory:.3f}, compute eff {e.compute:.3f}, "
                  f"overhead {e.overhead_s * 1e6:.1f} us/call")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / (
        f"calibrate_cpu-{re.sub(r'[^A-Za-z0-9]+', '-', info['cpu_model']).strip('-')}-{threads}t"
        f"{'-quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": info, "this_cpu": {"peak_flops": dict(device.peak_flops), "read_bw": device.memory_bw,
                                            **dict(device.extra), "bw_curve": [list(p) for p in device.bw_curve],
                                            "source": device.source},
              "quick": args.quick, "presets": presets, "contexts": list(contexts), "steps": steps, "passes": passes,
              "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
              "kernels": kernels, **cal.calibration_json(runs, effs), "residuals": summary, "cache_band": band,
              "gpu": gpu,
              "gpu_efficiency": {k: cal.efficiency_json(e) for k, e in gpu_effs.items()},
              "seconds": time.perf_counter() - t_start}
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.threads:                                     # before numpy loads its BLAS
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = str(ARGS.threads)
    sys.exit(refit(Path(ARGS.refit)) if ARGS.refit else main(ARGS))
