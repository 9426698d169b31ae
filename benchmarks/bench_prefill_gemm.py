"""Prefill GEMM throughput of the C backend: each matmul kernel at prefill shapes, and the 128-token
stories110M prefill per weight format, against numpy's float32 matmul measured in the same process.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_prefill_gemm.py [--quick]
        [--baseline-so path/to/old/_C.abi3.so]

--baseline-so: a build of another commit (copy its pyinfer/_C.abi3.so aside before rebuilding); its
kernels run interleaved with this build's in the same process (ABI-mode cffi), so before/after
ratios share the machine's state. Medians (and bests) of repeats; JSON to benchmarks/results/prefill_gemm.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from pyinfer.analysis.microbench import cpu_model  # noqa: E402
from pyinfer.kernels import c_cpu  # noqa: E402
from pyinfer.quant import quantize  # noqa: E402

FORMATS = ("float32", "int8-g32", "int4-g32-a8", "int4-g32", "int8")
SHAPES = [(768, 768), (2048, 768), (768, 2048), (4096, 4096), (32000, 768)]      # (N, K)


def load_baseline(path: str) -> dict:
    """The kernels of another build of pyinfer._C, wrapped by this tree's c_cpu (same checks)."""
    import cffi  # noqa: PLC0415
    ffi = cffi.FFI()
    header = (ROOT / "csrc" / "pyinfer_api.h").read_text()
    ffi.cdef(re.sub(r"#include.*", "", header))
    lib = ffi.dlopen(path)
    real = c_cpu._lib
    c_cpu._lib = lambda: (ffi, lib)
    try:
        return c_cpu.load()
    finally:
        c_cpu._lib = real


def median_time(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def bench_kernels(impls: dict, Ms, shapes, formats, reps: int, rng) -> list[dict]:
    rows = []
    for N, K in shapes:
        w = rng.standard_normal((N, K)).astype(np.float32)
        for fmt in formats:
            qt = None if fmt == "float32" else quantize(w, fmt)
            wf = w if qt is None else qt.dequantize().astype(np.float32)
            name = "matmul" if qt is None else qt.fmt.kernel
            args = (w,) if qt is None else qt.kernel_args()
            for M in Ms:
                x = rng.standard_normal((M, K)).astype(np.float32)
                out = np.empty((M, N), np.float32)
                fns = {label: (lambda f=ops[name]: f(out, x, *args)) for label, ops in impls.items()}
                fns["numpy_f32"] = lambda: x @ wf.T
                for f in fns.values():
                    f()                                            # warm: caches, first-touch pages
                times = {label: [] for label in fns}
                for _ in range(reps):                              # interleaved
                    for label, f in fns.items():
                        times[label].append(median_time(f, 1))
                gop = 2.0 * M * N * K / 1e9
                row = {"format": fmt, "kernel": name, "M": M, "N": N, "K": K}
                for label, ts in times.items():                    # median; best: robust to load bursts
                    row[f"{label}_gops"] = round(gop / float(np.median(ts)), 1)
                for label, ts in times.items():
                    row[f"{label}_gops_best"] = round(gop / float(np.min(ts)), 1)
                rows.append(row)
                print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def bench_prefill(impls: dict, formats, reps: int, T: int) -> list[dict]:
    from pyinfer.config import get_preset  # noqa: PLC0415
    from pyinfer.model import Model  # noqa: PLC0415
    from pyinfer.ops import Ops  # noqa: PLC0415
    from pyinfer.quant import quantize_weights  # noqa: PLC0415
    from pyinfer.weights import random_weights  # noqa: PLC0415
    base = random_weights(get_preset("stories110M"), seed=0)
    prompt = np.random.default_rng(0).integers(0, 32000, T)
    rows = []
    for fmt in formats:
        w = base if fmt == "float32" else quantize_weights(base, fmt)
        models = {}
        for label, kernels in impls.items():
            ops = Ops("c")
            for name, fn in kernels.items():
                if hasattr(ops, name):
                    setattr(ops, name, fn)
            models[label] = Model(w, ops)
        caches = {label: m.new_cache(block_size=16) for label, m in models.items()}
        times = {label: [] for label in models}
        for _ in range(reps + 1):                                  # the first round warms up
            for label, m in models.items():
                batch = caches[label].prepare([0], [prompt])
                t = time.perf_counter()
                m.forward(batch, caches[label])
                times[label].append(time.perf_counter() - t)
                caches[label] = m.new_cache(block_size=16)
        row = {"format": fmt, "T": T}
        for label, ts in times.items():
            row[f"{label}_tok_s"] = round(T / float(np.median(ts[1:])), 1)
        for label, ts in times.items():
            row[f"{label}_tok_s_best"] = round(T / float(np.min(ts[1:])), 1)
        rows.append(row)
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few shapes and repeats (smoke run)")
    ap.add_argument("--baseline-so", help="another build's pyinfer/_C.abi3.so, run interleaved")
    ap.add_argument("--skip-prefill", action="store_true")
    ap.add_argument("--skip-kernels", action="store_true")
    ap.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset of " + ",".join(FORMATS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prefill_gemm.json"))
    a = ap.parse_args()
    impls = {"new": c_cpu.load()}
    if a.baseline_so:
        impls["baseline"] = load_baseline(a.baseline_so)
    formats = a.formats.split(",")
    if set(formats) - set(FORMATS):
        raise SystemExit(f"unknown formats {sorted(set(formats) - set(FORMATS))}; known: {FORMATS}")
    rng = np.random.default_rng(0)
    Ms = (16, 128) if a.quick else (16, 128, 512)
    shapes = SHAPES[:2] if a.quick else SHAPES
    reps = 3 if a.quick else 7
    print(f"# {cpu_model()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, isa={c_cpu.isa()}")
    result = {"machine": {"cpu": cpu_model(), "threads": c_cpu.num_threads(), "isa": c_cpu.isa(),
                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
              "kernels": [] if a.skip_kernels else bench_kernels(impls, Ms, shapes, formats, reps, rng)}
    if not a.skip_prefill:
        result["prefill"] = bench_prefill(impls, formats[:2] if a.quick else formats, 2 if a.quick else 5, 128)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
