"""One thread count for every pool (pyinfer.threads): parsing, auto's load check, applying it to the C
backend's OpenMP and numpy's BLAS, load/LLM threads=, the default backend, passive OpenMP waiting."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pyinfer import threads
from pyinfer.cli import main
from pyinfer.ops import DEFAULT_ORDER, BackendUnavailable, default_backend, load_backend


@pytest.fixture
def restore_threads():
    before = os.environ.get(threads.ENV)
    yield
    if before is None:
        os.environ.pop(threads.ENV, None)
    else:
        os.environ[threads.ENV] = before
    threads._apply_count(threads.current())


@pytest.mark.parametrize("text,want", [("auto", "auto"), ("AUTO", "auto"), ("1", 1), ("2", 2), (1, 1)])
def test_parse_threads_accepts_auto_and_counts(text, want):
    assert threads.parse_threads(text) == want


@pytest.mark.parametrize("text", ["0", "-1", "x", "1.5", "", None, str(threads.MAX_PER_CORE * threads.usable_cores() + 1)])
def test_parse_threads_refuses_the_rest_by_name(text):
    with pytest.raises(ValueError, match="threads must be 'auto' or"):
        threads.parse_threads(text)


def test_cli_refuses_a_bad_thread_count(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--threads", "0"])
    assert e.value.code == 2 and "threads must be 'auto' or" in capsys.readouterr().err


@pytest.mark.parametrize("others,steal,cores,want", [(0.0, 0.0, 2, 2), (0.1, 0.0, 2, 2), (1.0, 0.0, 2, 1),
                                                      (2.0, 0.0, 2, 1), (0.0, 0.5, 2, 1), (1.0, 0.0, 4, 3)])
def test_auto_gives_up_the_cores_others_keep_busy(monkeypatch, others, steal, cores, want):
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads, "core_use", lambda s: threads.CoreUse(others, steal, s, cores))
    got = threads.resolve("auto")
    assert got.count == want and got.requested == "auto"
    assert ("kept busy" in got.reason) == (want < cores and others > 0)


@pytest.mark.parametrize("runnable,want", [(0.0, 2), (1.0, 1), (3.0, 1), (4.0, 1), (9.0, 1)])
def test_auto_gives_up_busy_cores_also_when_oversubscribed(monkeypatch, runnable, want):
    """Spinning barriers against busy cores collapse (threads.SPIN_COUNT's comment): however many
    other tasks are runnable, auto counts only the free cores."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    busy = min(runnable, 2.0)
    monkeypatch.setattr(threads, "core_use", lambda s: threads.CoreUse(busy, 0.0, s, 2, runnable))
    got = threads.resolve("auto")
    assert got.count == want


def test_core_use_samples_runnable_tasks():
    use = threads.core_use(0.05)
    if use is None:
        pytest.skip("/proc/stat is not readable here")
    assert use.runnable_others is not None and use.runnable_others >= 0


def test_auto_never_exceeds_the_usable_cores():
    assert 1 <= threads.resolve("auto").count <= threads.usable_cores()


def test_set_threads_reaches_openmp_and_blas(restore_threads):
    from pyinfer.kernels import c_cpu
    for n in (1, 2):
        setting = threads.set_threads(n)
        assert setting.count == n and threads.current() == n and c_cpu.num_threads() == n
        blas = threads.openblas()
        if blas is not None:
            lib, prefix, suffix = blas
            assert getattr(lib, f"{prefix}get_num_threads{suffix}")() == n


def test_pools_is_scoped(restore_threads):
    from pyinfer.kernels import c_cpu
    threads.set_threads(1)
    with threads.pools(2):
        assert c_cpu.num_threads() == 2 and threads.current() == 2
    assert c_cpu.num_threads() == 1 and threads.current() == 1


def test_load_and_llm_take_threads(restore_threads):
    from pyinfer.api import load
    from pyinfer.engine import LLM
    from pyinfer.kernels import c_cpu
    gen = load(preset="toy", threads=1)
    assert gen.threads.count == 1 and c_cpu.num_threads() == 1
    llm = LLM(preset="toy", threads=2, backend="numpy")
    assert llm.threads.count == 2 and c_cpu.num_threads() == 2
    assert load(preset="toy").threads.count == 2                      # None keeps the process's setting


def test_default_backend_is_the_first_that_loads():
    def loads(name):
        try:
            load_backend(name)
            return True
        except BackendUnavailable:
            return False
    assert default_backend() == next(n for n in DEFAULT_ORDER if loads(n))
    from pyinfer.api import load
    assert load(preset="toy").model.ops.backend == default_backend()


def test_openmp_spins_briefly_unless_the_user_chose():
    code = "import os, pyinfer; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", threads.SPIN_COUNT]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "PASSIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "None"]


def test_core_monitor_sees_a_busy_process():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.monotonic() + 5\n"
                             "while time.monotonic() < end:\n    pass\n"])
    try:
        time.sleep(0.2)
        use = threads.core_use(0.6)
    finally:
        busy.kill()
        busy.wait()
    if use is None:
        pytest.skip("/proc/stat is not readable here")          # not Linux: the monitor reports nothing
    assert use.others_busy_cores > 0.5 and use.busy_warning() is not None


def test_busy_warning_only_when_others_used_the_cores():
    assert threads.CoreUse(0.05, 0.0, 1.0, 2).busy_warning() is None
    assert "1.00 of 2 cores" in threads.CoreUse(1.0, 0.0, 1.0, 2).busy_warning()
    assert "steal" in threads.CoreUse(0.0, 0.2, 1.0, 2).busy_warning()


def test_the_count_holds_in_every_python_thread(restore_threads):
    """OpenMP's omp_set_num_threads belongs to the calling thread: the C kernels called from another
    thread (the server's engine thread, a user's worker) ran with every core whatever --threads said.
    3 is more than this machine's cores, so OpenMP's default cannot pass for it."""
    import threading

    from pyinfer.kernels import c_cpu
    threads.set_threads(3)
    seen = []
    worker = threading.Thread(target=lambda: seen.append(c_cpu.num_threads()))
    worker.start()
    worker.join()
    assert seen == [3]


def test_every_openmp_region_names_the_count():
    """The source half of the rule above: a parallel region without num_threads(...) would take the
    calling thread's OpenMP default."""
    import re
    from pathlib import Path
    csrc = Path(__file__).resolve().parents[1] / "csrc"
    regions = [(p.name, line.strip()) for p in sorted(csrc.glob("*.[ch]")) for line in p.read_text().splitlines()
               if re.match(r"\s*#pragma omp parallel\b", line)]
    assert regions and [r for r in regions if "num_threads(" not in r[1]] == []


def test_numba_kernels_take_the_count_in_every_python_thread(restore_threads):
    """numba.set_num_threads belongs to the calling thread too: a Numba kernel run from a worker thread
    took Numba's default (every core). Meaningful where Numba has more than one thread (CI: 2 cores)."""
    import threading

    import numba
    import numpy as np

    from pyinfer.ops import Ops
    ops = Ops("numba")
    threads.set_threads(1)
    x = np.ones((2, 8), np.float32)
    seen = []

    def worker():
        ops.rmsnorm(np.empty_like(x), x, np.ones(8, np.float32), 1e-5)
        seen.append(numba.get_num_threads())
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [1]
