"""Microbenchmarks that measure this CPU's roofline: read and triad bandwidth from DRAM (arrays a few
times the last-level cache), read bandwidth from the last-level cache, fp32 and int8 matmul peaks.
Each figure is the best of a few repetitions (the machine may be shared), with the method recorded.

Read bandwidth is measured as a decode step uses memory: a matrix-vector product over a float32
matrix (BLAS sgemv), bytes = the matrix. Triad is STREAM's a = b + s * c (numba when installed,
else numpy in two passes, bytes counted as moved).

Peaks are ceilings only if nothing we run beats them, so each is the best of several contenders, the
project's own fastest kernels among them: fp32 is the best of BLAS sgemm and the C backend's float32
and weight-only int8/int4 matmuls (float arithmetic, AMX where the CPU has it); int8 the best of torch's
integer matmul and the C backend's W8A8 and W4A8 matmuls (VNNI / AMX-INT8 where the CPU has them),
each on a (256, 2048) x (2048, 2048) product counted as 2 T N K FLOPs, as the cost functions count it.
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
    """Threads the compute pools use now (pyinfer.threads: the process-wide setting)."""
    from ..threads import current
    return current()


def cpu_flags() -> list[str]:
    """The CPU's feature flags that decide kernel speed (SIMD width, dot-product and matrix units)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return sorted(fl for fl in line.split(":", 1)[1].split()
                                  if fl.startswith(("avx", "amx", "fma", "sse", "asimd", "sve", "neon", "f16c")))
    except OSError:
        pass
    return []


def cache_sizes() -> list[str]:
    """cpu0's cache levels as sysfs lists them, e.g. ['L1d 48K', 'L2 2048K', 'L3 307200K']."""
    base, out = "/sys/devices/system/cpu/cpu0/cache", []
    try:
        for entry in sorted(os.listdir(base)):
            try:
                with open(os.path.join(base, entry, "level")) as f:
                    level = f.read().strip()
                with open(os.path.join(base, entry, "type")) as f:
                    kind = f.read().strip()
                with open(os.path.join(base, entry, "size")) as f:
                    size = f.read().strip()
            except OSError:
                continue
            out.append(f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''} {size}")
    except OSError:
        pass
    return out


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


def c_kernel_peaks(reps: int, T: int = 256, N: int = 2048, K: int = 2048) -> dict[str, tuple[float, str]]:
    """{"fp32": (FLOP/s, how), "int8": ...}: the C backend's fastest matmuls on a (T, K) x (N, K)^T
    product, each the best of ``reps``+ calls; {} when the C extension is not built."""
    try:
        from ..kernels.c_cpu import load
        from ..quant import quantize
        ops = load()
    except (ImportError, OSError):
        return {}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, K), dtype=np.float32)               # (T, K)
    w = rng.standard_normal((N, K), dtype=np.float32)               # (N, K)
    out = np.empty((T, N), np.float32)                              # (T, N)
    q8c, q8g, q4g = quantize(w, "int8"), quantize(w, "int8-g32"), quantize(w, "int4-g32")
    runs = {
        "fp32": {"C matmul (float32)": lambda: ops["matmul"](out, x, w),
                 "C matmul_w8a16 (int8 weights, float math)": lambda: ops["matmul_w8a16"](out, x, q8c.qweight, q8c.scales),
                 "C matmul_w4a16 (int4 weights, float math)":
                     lambda: ops["matmul_w4a16"](out, x, q4g.qweight, q4g.scales, q4g.zeros, 32)},
        "int8": {"C matmul_w8a8 (int8 x int8)": lambda: ops["matmul_w8a8"](out, x, q8g.qweight, q8g.scales, 32),
                 "C matmul_w4a8 (int4 x int8)":
                     lambda: ops["matmul_w4a8"](out, x, q4g.qweight, q4g.scales, q4g.zeros, 32)},
    }
    best = {}
    for key, fns in runs.items():
        for how, fn in fns.items():
            rate = 2 * T * N * K / _best(fn, reps, min_time_s=0.3)
            if rate > best.get(key, (0.0, ""))[0]:
                best[key] = (rate, f"{how}, ({T}, {K}) x ({K}, {N})")
    return best


def int8_peak(n: int, reps: int) -> tuple[float, str]:
    try:
        import torch
        a = torch.ones((n, n), dtype=torch.int8)
        torch._int_mm(a, a)
        t = _best(lambda: torch._int_mm(a, a), reps, min_time_s=0.5)
        return 2 * n ** 3 / t, f"torch {torch.__version__} _int_mm ({n}^3)"
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
    fp32, fp32_how = fp32_peak(512 if quick else 1024, reps), f"numpy sgemm ({512 if quick else 1024}^3)"
    int8, int8_how = int8_peak(512 if quick else 1024, reps)
    own = c_kernel_peaks(reps)
    if own.get("fp32", (0.0,))[0] > fp32:
        fp32, fp32_how = own["fp32"]
    if own.get("int8", (0.0,))[0] > int8:
        int8, int8_how = own["int8"]
    return {
        "read_bw": read, "triad_bw": triad, "cache_read_bw": cache_read, "fp32": fp32, "int8": int8,
        "read_bw_curve": [[int(n), float(bw)] for n, bw in curve],
        "llc_bytes": llc, "memory_bytes": memory_bytes(), "cpu_model": cpu_model(),
        "threads": compute_threads(), "seconds": time.perf_counter() - t0,
        "peak_contenders": {k: v[1] for k, v in own.items()},
        "method": (f"read: sgemv over {dram >> 20} MiB (DRAM) and {cache >> 20} MiB (cache), and by working set "
                   f"from 256 KiB to {dram >> 20} MiB; triad: {triad_how}, "
                   f"{dram >> 20} MiB; fp32: {fp32_how}; int8: {int8_how} (each the best of its contenders); "
                   f"best of {reps}"),
    }
