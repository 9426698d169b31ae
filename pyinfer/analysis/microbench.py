"""Microbenchmarks that measure this CPU's roofline: read and triad bandwidth from DRAM (arrays a few
times the last-level cache), read bandwidth from the last-level cache, fp32 and int8 matmul peaks.
Each figure is the best of a few repetitions (the machine may be shared), with the method recorded.

Read bandwidth is measured as a decode step uses memory: a matrix-vector product over a float32
matrix (BLAS sgemv), bytes = the matrix. Triad is STREAM's a = b + s * c (numba when installed,
else numpy in two passes, bytes counted as moved). fp32 peak: BLAS sgemm. int8 peak: torch's integer
matmul when torch is installed, else numba's int8 dot loop, else numpy's (not a real peak, flagged).
"""
from __future__ import annotations

import os
import platform
import time

import numpy as np


def _best(fn, reps: int, min_time_s: float = 0.0, max_reps: int = 200) -> float:
    """Best time of at least ``reps`` calls, repeating until ``min_time_s`` has passed (on a shared
    machine more tries catch a moment with the cores free)."""
    fn()                                           # warm up (page faults, JIT, thread pool)
    best, n, start = float("inf"), 0, time.perf_counter()
    while n < reps or (time.perf_counter() - start < min_time_s and n < max_reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


def compute_threads() -> int:
    """Threads the BLAS / OpenMP / Numba kernels use here: the env setting, else every CPU."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def last_level_cache_bytes() -> int:
    """Size of the largest cache level sysfs lists for cpu0 (0 when unknown)."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            try:
                with open(os.path.join(base, entry, "size")) as f:
                    text = f.read().strip()
            except OSError:
                continue
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            best = max(best, int(text.rstrip("KMG")) * mult)
    except (OSError, ValueError):
        return best
    return best


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def read_bandwidth(n_bytes: int, reps: int, min_time_s: float = 0.3) -> float:
    """bytes/s of sgemv over an (n_bytes / 4096 / 4, 4096) float32 matrix (1024 columns below 4 MiB)."""
    cols = 4096 if n_bytes >= 4 << 20 else 1024
    rows = max(1, n_bytes // (4 * cols))
    a = np.ones((rows, cols), np.float32)                    # (rows, cols)
    x = np.ones(cols, np.float32)                            # (cols,)
    y = np.empty(rows, np.float32)                           # (rows,)
    return a.nbytes / _best(lambda: np.matmul(a, x, out=y), reps, min_time_s=min_time_s)


def read_bandwidth_curve(max_bytes: int, reps: int, dram_bw: float = 0.0, min_time_s: float = 0.2
                         ) -> list[tuple[int, float]]:
    """[(working-set bytes, read bytes/s)] from 256 KiB up to ``max_bytes``, two sizes per doubling:
    the cache levels and where the data falls out of them, as this process sees them (a shared
    last-level cache holds less for us than sysfs says). Each point is the best of a few sgemv passes;
    the curve is made non-increasing in size (each point at least any larger size's figure: noise on a
    shared machine only ever slows a run down). ``dram_bw``: a figure already measured at max_bytes."""
    sizes, size = [], 256 << 10
    while size < max_bytes:
        sizes += [size, size * 3 // 2]
        size *= 2
    sizes = [s for s in sizes if s < max_bytes] + [max_bytes]
    bws = [read_bandwidth(s, reps, min_time_s) for s in sizes]
    bws[-1] = max(bws[-1], dram_bw)
    for i in range(len(bws) - 2, -1, -1):
        bws[i] = max(bws[i], bws[i + 1])
    return list(zip(sizes, bws))


def triad_bandwidth(n_bytes: int, reps: int) -> tuple[float, str]:
    n = max(1, n_bytes // (3 * 4))
    a, b, c = np.empty(n, np.float32), np.ones(n, np.float32), np.ones(n, np.float32)
    try:
        import numba

        @numba.njit(parallel=True, fastmath=True, cache=False)
        def triad(a, b, c, s):                                # a = b + s * c, one pass
            for i in numba.prange(a.shape[0]):
                a[i] = b[i] + s * c[i]

        t = _best(lambda: triad(a, b, c, np.float32(3.0)), reps)
        return 3 * a.nbytes / t, "numba parallel triad"
    except ImportError:
        def triad_np():
            np.multiply(c, np.float32(3.0), out=a)
            np.add(a, b, out=a)
        return 5 * a.nbytes / _best(triad_np, reps), "numpy triad in two passes (5 arrays moved)"


def fp32_peak(n: int, reps: int) -> float:
    a = np.ones((n, n), np.float32)
    c = np.empty((n, n), np.float32)
    return 2 * n ** 3 / _best(lambda: np.matmul(a, a, out=c), reps, min_time_s=0.5)


def int8_peak(n: int, reps: int) -> tuple[float, str]:
    try:
        import torch
        a = torch.ones((n, n), dtype=torch.int8)
        torch._int_mm(a, a)
        t = _best(lambda: torch._int_mm(a, a), reps, min_time_s=0.5)
        return 2 * n ** 3 / t, f"torch {torch.__version__} _int_mm"
    except (ImportError, RuntimeError, AttributeError):
        pass
    a = np.ones((n, n), np.int8)
    try:
        import numba

        @numba.njit(parallel=True, fastmath=True, cache=False)
        def mm(a, bt, out):                                   # out[i, j] = sum_k a[i, k] * bt[j, k]
            for i in numba.prange(a.shape[0]):
                for j in range(bt.shape[0]):
                    acc = np.int32(0)
                    for k in range(a.shape[1]):
                        acc += np.int32(a[i, k]) * np.int32(bt[j, k])
                    out[i, j] = acc
        out = np.empty((n, n), np.int32)
        return 2 * n ** 3 / _best(lambda: mm(a, a, out), reps, min_time_s=0.5), "numba int8 dot loop"
    except ImportError:
        small = a[:128, :128].astype(np.int32)
        return 2 * 128 ** 3 / _best(lambda: small @ small, reps), "numpy int32 matmul (no int8 kernel: not a peak)"


def measure(quick: bool = False) -> dict:
    """This CPU's figures, as a dict for Device(**...) plus how they were measured."""
    llc = last_level_cache_bytes()
    reps = 2 if quick else 5
    dram = max(64 << 20, 2 * llc) if quick else max(256 << 20, 3 * llc)
    dram = min(dram, max(64 << 20, memory_bytes() // 8) if memory_bytes() else dram)
    cache = min(max(llc // 4, 1 << 20), 64 << 20) if llc else 4 << 20
    t0 = time.perf_counter()
    read = read_bandwidth(dram, reps)
    cache_read = read_bandwidth(cache, reps * 4)
    triad, triad_how = triad_bandwidth(dram, reps)
    curve = read_bandwidth_curve(dram, reps, dram_bw=read, min_time_s=0.05 if quick else 0.2)
    read = curve[-1][1]                         # the same measurement as read's, best of both
    fp32 = fp32_peak(512 if quick else 1024, reps)
    int8, int8_how = int8_peak(512 if quick else 1024, reps)
    return {
        "read_bw": read, "triad_bw": triad, "cache_read_bw": cache_read, "fp32": fp32, "int8": int8,
        "read_bw_curve": [[int(n), float(bw)] for n, bw in curve],
        "llc_bytes": llc, "memory_bytes": memory_bytes(), "cpu_model": cpu_model(),
        "threads": compute_threads(), "seconds": time.perf_counter() - t0,
        "method": (f"read: sgemv over {dram >> 20} MiB (DRAM) and {cache >> 20} MiB (cache), and by working set "
                   f"from 256 KiB to {dram >> 20} MiB; triad: {triad_how}, "
                   f"{dram >> 20} MiB; fp32: numpy sgemm; int8: {int8_how}; best of {reps}"),
    }
