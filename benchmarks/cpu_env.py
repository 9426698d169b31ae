"""The benchmark's control of its environment: BLAS threads for numpy (threadpoolctl when installed,
else OpenBLAS's own set_num_threads through ctypes), the C backend's OpenMP, Numba's and torch's threads,
and the STREAM-style ceilings measured in C (read and triad bandwidth)."""
from __future__ import annotations

import ctypes
import os
import time

import numpy as np

from pyinfer.threads import openblas

# OpenBLAS tuning variables that slow numpy here; the benchmark runs without them (recorded).
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_info() -> dict:
    """Which BLAS numpy runs and with how many threads (threadpoolctl's view when installed)."""
    try:
        from threadpoolctl import threadpool_info
        return {"source": "threadpoolctl", "pools": threadpool_info()}
    except ImportError:
        pass
    found = openblas()
    if not found:
        return {"source": "none", "note": "no OpenBLAS found in this process"}
    lib, p, s = found
    corename = getattr(lib, f"{p}get_corename{s}", None)
    if corename is not None:
        corename.restype = ctypes.c_char_p
    return {"source": "ctypes", "library": lib._name,
            "corename": corename().decode() if corename else "?",
            "threads": getattr(lib, f"{p}get_num_threads{s}")()}


class Threads:
    """Sets numpy's BLAS, the C backend's OpenMP, Numba's and torch's thread counts together."""

    def __init__(self):
        self._tpc = None
        try:
            from threadpoolctl import ThreadpoolController
            self._tpc = ThreadpoolController()
        except ImportError:
            self._blas = openblas()

    def set(self, n: int) -> None:
        if self._tpc is not None:
            self._tpc.limit(limits=n, user_api="blas")
        elif self._blas:
            lib, p, s = self._blas
            getattr(lib, f"{p}set_num_threads{s}")(n)
        from pyinfer.kernels import c_cpu
        c_cpu.set_num_threads(n)
        try:                                    # Numba's pool would otherwise stay at every CPU
            import numba
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        except ImportError:
            pass
        try:
            import torch
            torch.set_num_threads(n)
        except ImportError:
            pass


def median_time(fn, repeats: int, min_time_s: float = 0.0) -> float:
    """Median seconds of fn() over `repeats` runs (after one warm-up), at least min_time_s in total."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time_s:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) > 50 * repeats:
            break
    return float(np.median(times))


def ceilings(n_bytes: int = 256 << 20, repeats: int = 7) -> dict:
    """STREAM-style bandwidth in C: read (sum of one array) and triad (a = b + s c, 3 arrays counted)."""
    from pyinfer import _C
    ffi, lib = _C.ffi, _C.lib
    n = n_bytes // 4
    a, b, c = (np.full(n, 1.0, np.float32) for _ in range(3))
    pa, pb, pc = (ffi.from_buffer("float[]", x) for x in (a, b, c))
    t_read = median_time(lambda: lib.stream_read_f32(pa, n), repeats)
    t_triad = median_time(lambda: lib.stream_triad_f32(pa, pb, pc, 3.0, n), repeats)
    return {"read_gbs": 4 * n / t_read / 1e9, "triad_gbs": 12 * n / t_triad / 1e9, "array_mb": n_bytes / 1e6}


class TriadProbe:
    """A STREAM triad kept ready (arrays allocated and touched once) to measure the bandwidth ceiling
    right beside each memory-bound case: this machine's bandwidth moves by 2x within a run, so a case's
    % of triad is taken against the triad measured just before and just after it (the higher)."""

    def __init__(self, n_bytes: int = 256 << 20):
        from pyinfer import _C
        self._lib, self.n = _C.lib, n_bytes // 4
        self._arrays = [np.full(self.n, 1.0, np.float32) for _ in range(3)]     # (n,) each: a, b, c
        self._ptrs = [_C.ffi.from_buffer("float[]", x) for x in self._arrays]

    def gbs(self, repeats: int = 3) -> float:
        pa, pb, pc = self._ptrs
        return 12 * self.n / median_time(lambda: self._lib.stream_triad_f32(pa, pb, pc, 3.0, self.n), repeats) / 1e9


class CacheFlush:
    """Reads a buffer twice the last-level cache (at least 600 MiB) so that what ran before is out of
    it: a decode step timed after one reads its weights from DRAM, as a model larger than the cache does."""

    def __init__(self):
        from pyinfer import _C
        from pyinfer.analysis.microbench import last_level_cache_bytes
        self._lib = _C.lib
        self._buf = np.full(max(2 * last_level_cache_bytes(), 600 << 20) // 4, 1.0, np.float32)   # (n,)
        self._ptr = _C.ffi.from_buffer("float[]", self._buf)

    def __call__(self) -> None:
        self._lib.stream_read_f32(self._ptr, self._buf.size)


def numpy_matmul_gflops(M: int = 512, K: int = 4096, N: int = 4096, repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((N, K), dtype=np.float32)
    out = np.empty((M, N), np.float32)
    t = median_time(lambda: np.matmul(x, w.T, out=out), repeats)
    return 2 * M * N * K / t / 1e9


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return sorted(fl for fl in line.split(":", 1)[1].split()
                                  if fl.startswith(("avx", "amx", "fma")))
    except OSError:
        pass
    return []


def scrubbed_env() -> dict | None:
    """The environment without BLAS_ENV when any of them is set (the caller re-executes), else None."""
    if not any(k in os.environ for k in BLAS_ENV):
        return None
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
    env["PYINFER_BENCH_UNSET"] = ",".join(f"{k}={os.environ[k]}" for k in BLAS_ENV if k in os.environ)
    return env
