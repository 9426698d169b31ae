"""One thread count for every pool the process computes with: the C backend's OpenMP, numpy's BLAS
(OpenBLAS), Numba and torch. The setting is process-wide, as the pools are.

``auto`` (the default) starts from the cores this process may run on (``os.sched_getaffinity``) and
takes away the cores other processes are using right now (sampled from /proc/stat over ~0.1 s, steal
time included): on a 2-core machine with one busy process beside us, auto is 1 thread, because two
threads synchronising at every parallel region behind a busy core run slower than one (measured in
benchmarks/bench_contention.py); an oversubscribed machine gets 1 thread too (4 busy loops on 2 vCPUs,
int8-g32 decode: 1 thread 44 tok/s, 2 threads 9.5 spinning, 38 passive). OpenMP's idle threads spin
briefly, then sleep (``GOMP_SPINCOUNT=30000``, set at ``import pyinfer`` unless the user set it or
``OMP_WAIT_POLICY``): fully passive waiting costs a futex wake per parallel region, 40% of a small
decode step on 2 threads. The one case this does not cover: work that starts on another core *during*
a 2-thread run slows it (2-4x in the measurements above) until the next setting; the run report's
busy warning says when that happened.

    from pyinfer.threads import set_threads
    setting = set_threads("auto")          # ThreadSetting(count=2, requested="auto", reason=...)

The count in force is kept in the environment (``PYINFER_NUM_THREADS``), like ``OMP_NUM_THREADS``:
a pool loaded later (Numba, torch through Triton) picks it up when its backend loads (``apply()``).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import sys
import time
from dataclasses import dataclass

ENV = "PYINFER_NUM_THREADS"
MAX_PER_CORE = 4                     # more threads than this per usable core is refused, not run
# libgomp spins this many times (~10-30 us here) before an idle thread sleeps. Measured on this 2-vCPU
# AMD EPYC, stories110M int8-g32 decode (C, tokens/s, 1 / 2 threads): fully passive waiting (a futex
# wake at each of the step's ~100 parallel regions) 107 / 92 on a quiet machine; spinning 30,000
# times 99 / 153; beside one busy process 106 / 33 (a spinning barrier against a busy core collapses),
# which is why auto gives up the busy cores and runs 1 thread there.
SPIN_COUNT = "30000"


def init_env() -> None:
    """Before any OpenMP runtime loads (called by ``import pyinfer``): idle OpenMP threads spin
    briefly (SPIN_COUNT), then sleep, unless the user chose a policy (OMP_WAIT_POLICY or
    GOMP_SPINCOUNT). libgomp reads these once, when loaded."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not every core the machine has."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parse_threads(text) -> str | int:
    """'auto' or a positive integer; ValueError (argparse's type error) naming the value otherwise."""
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    try:
        n = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"threads must be 'auto' or a positive integer, got {text!r}") from None
    if isinstance(text, float) and text != n:
        raise ValueError(f"threads must be 'auto' or a positive integer, got {text!r}")
    limit = MAX_PER_CORE * usable_cores()
    if n < 1 or n > limit:
        raise ValueError(f"threads must be 'auto' or 1..{limit} ({MAX_PER_CORE} per usable core), got {n}")
    return n


def _argparse_threads(text: str):
    try:
        return parse_threads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_threads_option(p: argparse.ArgumentParser) -> None:
    """``--threads auto|N`` on a command that computes (one line per command)."""
    p.add_argument("--threads", type=_argparse_threads, default="auto", metavar="auto|N",
                   help="threads for every compute pool (OpenMP, BLAS, Numba, torch), process-wide; auto "
                        "(default): the cores this process may use, minus those other processes keep busy")


# ---- what the cores are doing ------------------------------------------------------------------

def _cpu_times(cpus: set[int]) -> tuple[float, float, float, int] | None:
    """(busy, steal, total) jiffies summed over ``cpus`` from /proc/stat, and its procs_running (tasks
    runnable right now, machine-wide, this reader included); None where unreadable."""
    try:
        with open("/proc/stat") as f:
            lines = f.readlines()
    except OSError:
        return None
    busy = steal = total = 0.0
    running = 0
    for line in lines:
        name = line.split(maxsplit=1)[0]
        if name == "procs_running":
            running = int(line.split()[1])
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        v = [float(x) for x in line.split()[1:]]
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        idle = v[3] + (v[4] if len(v) > 4 else 0.0)
        st = v[7] if len(v) > 7 else 0.0
        total += sum(v[:8])
        busy += sum(v[:8]) - idle - st
        steal += st
    return busy, steal, total, running


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


@dataclass(frozen=True)
class CoreUse:
    """What other processes did with our cores over an interval: cores' worth busy, steal fraction."""
    others_busy_cores: float
    steal_fraction: float
    interval_s: float
    cores: int
    runnable_others: float | None = None     # other tasks runnable at once, machine-wide (mean of samples)

    def busy_warning(self) -> str | None:
        """One line when others used the cores enough to move the figures, else None."""
        parts = []
        if self.others_busy_cores >= 0.25:
            parts.append(f"other processes kept {self.others_busy_cores:.2f} of {self.cores} cores busy")
        if self.steal_fraction >= 0.05:
            parts.append(f"the hypervisor took {100 * self.steal_fraction:.0f}% of the cores' time (steal)")
        return ("; ".join(parts) + " during the run: its figures are slower than this machine can do") \
            if parts else None


class CoreMonitor:
    """Start it, run, then ``stop()``: other processes' use of our cores meanwhile (/proc/stat's
    busy time minus this process's own CPU time). Where /proc/stat is unreadable, ``stop()`` is None."""

    def __init__(self):
        self.cpus = _affinity()
        self._t0 = time.perf_counter()
        self._own0 = _own_cpu_s()
        self._stat0 = _cpu_times(self.cpus)

    def stop(self) -> CoreUse | None:
        stat1 = _cpu_times(self.cpus)
        if self._stat0 is None or stat1 is None:
            return None
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        busy = (stat1[0] - self._stat0[0]) / hz
        steal = stat1[1] - self._stat0[1]
        total = stat1[2] - self._stat0[2]
        own = _own_cpu_s() - self._own0
        others = max(0.0, busy - own) / elapsed
        return CoreUse(others_busy_cores=min(others, float(len(self.cpus))),
                       steal_fraction=steal / total if total > 0 else 0.0,
                       interval_s=elapsed, cores=len(self.cpus))


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def core_use(interval_s: float = 0.1, samples: int = 5) -> CoreUse | None:
    """Other processes' use of our cores over the next ``interval_s`` seconds (we sleep meanwhile),
    with the number of other runnable tasks sampled ``samples`` times."""
    m = CoreMonitor()
    running = []
    for _ in range(samples):
        time.sleep(interval_s / samples)
        now = _cpu_times(m.cpus)
        if now is not None:
            running.append(max(0, now[3] - 1))          # minus this reader
    use = m.stop()
    if use is None or not running:
        return use
    return CoreUse(use.others_busy_cores, use.steal_fraction, use.interval_s, use.cores,
                   sum(running) / len(running))


# ---- choosing and applying -----------------------------------------------------------------------

@dataclass(frozen=True)
class ThreadSetting:
    count: int                 # threads every pool uses now
    requested: str | int       # "auto" or the count asked for
    reason: str                # how the count was chosen

    def describe(self) -> str:
        return f"{self.count} ({self.reason})"


def resolve(requested: str | int = "auto", sample_s: float = 0.1) -> ThreadSetting:
    """The count ``requested`` means here and now (auto: usable cores minus the busy ones)."""
    requested = parse_threads(requested)
    cores = usable_cores()
    if requested != "auto":
        return ThreadSetting(requested, requested, "as asked")
    use = core_use(sample_s) if cores > 1 else None
    if use is None:
        return ThreadSetting(cores, "auto", f"auto: {cores} usable core{'s' * (cores > 1)}")
    free = cores - use.others_busy_cores - use.steal_fraction * cores
    count = max(1, min(cores, int(free + 0.5)))
    why = f"auto: {cores} usable cores"
    if count < cores and use.others_busy_cores > 0:
        why += f", {use.others_busy_cores:.1f} kept busy by other processes"
    if count < cores and use.steal_fraction > 0:
        why += f", {100 * use.steal_fraction:.0f}% of their time stolen by the hypervisor"
    return ThreadSetting(count, "auto", why)


def set_threads(requested: str | int = "auto") -> ThreadSetting:
    """Resolve ``requested`` and set every pool loaded now (and, through PYINFER_NUM_THREADS, those
    loaded later) to that count. Process-wide: the last call wins."""
    setting = resolve(requested)
    os.environ[ENV] = str(setting.count)
    apply()
    return setting


def ensure(requested: str | int | None = None) -> ThreadSetting:
    """``set_threads(requested)``; with None, the setting already in force in this process (from an
    earlier call or PYINFER_NUM_THREADS), else auto. What ``load``/``LLM`` call with ``threads=``."""
    if requested is not None:
        return set_threads(requested)
    if ENV in os.environ:
        n = current()
        apply()
        return ThreadSetting(n, n, f"set earlier in this process ({ENV}={n})")
    return set_threads("auto")


def current() -> int:
    """The count set by set_threads, else the usable cores (what the pools default to)."""
    value = os.environ.get(ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else usable_cores()


def apply() -> None:
    """Give every pool that is loaded the current count (called again when a backend loads)."""
    if ENV in os.environ:
        _apply_count(current())


def _apply_count(n: int) -> None:
    try:
        from .kernels import c_cpu
        c_cpu.set_num_threads(n)
    except (ImportError, OSError):
        pass                                  # the C extension is not built: no OpenMP pool of ours
    _set_blas_threads(n)
    if "numba" in sys.modules:
        import numba
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    if "torch" in sys.modules:
        import torch
        torch.set_num_threads(n)


@contextlib.contextmanager
def pools(n: int):
    """Every loaded pool at ``n`` threads inside the block (a measurement at a given count), then the
    process's setting again."""
    before = os.environ.get(ENV)
    os.environ[ENV] = str(n)
    try:
        apply()
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
            _apply_count(usable_cores())
        else:
            os.environ[ENV] = before
            apply()


def _set_blas_threads(n: int) -> None:
    """numpy's OpenBLAS: threadpoolctl when installed, else OpenBLAS's own setter through ctypes."""
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=n, user_api="blas")
        return
    except ImportError:
        pass
    found = openblas()
    if found:
        lib, prefix, suffix = found
        getattr(lib, f"{prefix}set_num_threads{suffix}")(n)


@functools.lru_cache(maxsize=1)
def openblas():
    """(ctypes handle, symbol prefix, suffix) of the OpenBLAS numpy loaded, or None (looked up once:
    numpy loads its BLAS at import, before any of this runs)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and line.strip().endswith(".so")}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_", "scipy_openblas64_"):
            for suffix in ("64_", ""):
                if hasattr(lib, f"{prefix}set_num_threads{suffix}"):
                    return lib, prefix, suffix
    return None
