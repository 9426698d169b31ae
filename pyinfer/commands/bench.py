"""`pyinfer bench <what>`: benchmarks from the command line. Each kind of benchmark registers its
own subcommand from its module, listed in BENCHES."""
from __future__ import annotations

import importlib

BENCHES = ("bench_kernels", "bench_serve")   # modules under pyinfer.commands, each with register_bench(bench_subparsers)


def register(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks: kernels, serving, sweeps")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for name in BENCHES:
        importlib.import_module(f"pyinfer.commands.{name}").register_bench(bench_sub)
