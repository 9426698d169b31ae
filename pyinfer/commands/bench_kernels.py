"""`pyinfer bench kernels`: the CPU kernel benchmark (benchmarks/bench_cpu.py) from the command line,
with a progress display and the markdown table at the end."""
from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cpu.py"


def register_bench(bench_sub) -> None:
    p = bench_sub.add_parser("kernels", help="CPU kernels vs numpy/numba/torch, ceilings, end to end (writes JSON + table)")
    p.add_argument("--quick", action="store_true", help="smoke run: fewer shapes and repeats (about a minute)")
    p.add_argument("--threads", default="1,2", help="thread counts to measure, comma separated (default 1,2)")
    p.add_argument("--no-e2e", action="store_true", help="kernels and ceilings only")
    p.add_argument("--only", default="", help="regex: only the kernel cases whose name matches (no end to end)")
    p.set_defaults(handler=_bench_kernels)


class _Progress:
    """One line per step, numbered, with the time since the start."""

    def __init__(self, stream=sys.stderr):
        self.start, self.step, self.stream = time.perf_counter(), 0, stream

    def __call__(self, message: str) -> None:
        self.step += 1
        self.stream.write(f"[{self.step:3d} {time.perf_counter() - self.start:7.1f}s] {message}\n")
        self.stream.flush()


def _bench_kernels(args) -> int:
    try:
        re.compile(args.only)
    except re.error as e:
        raise ValueError(f"--only {args.only!r} is not a regular expression: {e}") from None
    if not SCRIPT.exists():
        raise OSError(f"the benchmark script is not here ({SCRIPT}): run from a source checkout of pyinfer")
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_cpu", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--threads", args.threads] + (["--quick"] if args.quick else []) + (["--no-e2e"] if args.no_e2e else []) \
        + (["--only", args.only] if args.only else [])
    bench.main(argv, progress=_Progress())
    return 0
