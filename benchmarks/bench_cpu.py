"""CPU kernel benchmark, in one process: first the ceilings (STREAM-style read and triad bandwidth in
C, numpy's float32 matmul GFLOP/s), then every kernel case (numpy reference vs c vs numba when it
loads, torch's SDPA for attention) at the issue's sizes with the napkin math (ms, GB/s, GFLOP/s, % of
ceiling), on 1 thread and on 2 threads, the implementations of a case interleaved over rounds, each
round between two triad measurements (run_cases); then end-to-end decode/prefill tokens/s of
stories110M (random weights) in float32 and quantized, with whatever the caches hold and with the
caches flushed before every decode step, and stories260K's per-token time split into kernels and the
rest. Medians throughout.

    python benchmarks/bench_cpu.py [--quick] [--threads 1,2] [--only REGEX]
        -> benchmarks/results/cpu-<machine>.json and benchmarks/results/cpu.md
           (--quick / --only: cpu-*-quick / cpu-*-partial, which git ignores)

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE slow numpy here: when set, the script re-runs itself without
them (recorded in the JSON). numpy's BLAS threads are set with threadpoolctl when installed, else
through OpenBLAS's own set_num_threads."""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from common import RESULTS, machine, write_json  # noqa: E402
from cpu_env import (CacheFlush, Threads, TriadProbe, blas_info, ceilings, cpu_flags, median_time,  # noqa: E402
                     numpy_matmul_gflops, scrubbed_env)
from cpu_report import markdown  # noqa: E402


def load_backends() -> dict:
    from pyinfer.ops import BackendUnavailable, load_backend
    out = {}
    for name in ("c", "numba"):
        try:
            out[name] = load_backend(name)
        except BackendUnavailable as e:
            print(f"  ({name} unavailable: {e})")
    return out


BASELINES = ("numpy", "numpy f32", "torch sdpa")     # impls others are compared with, round by round


def run_cases(cases, triad: TriadProbe, gflops_numpy: float, repeats: int, min_time_s: float, progress,
              rounds: int = 5, settle_s: float = 0.0) -> list[dict]:
    """Each case's implementations, interleaved over `rounds` rounds (every impl once per round, so a
    swing of the machine between rounds hits all of them alike). A memory-bound case's % is, per round,
    of the triad measured right before and after that round (the higher), and the row gives the median
    over rounds of times, ratios and triads; a compute-bound one's % is of numpy's float32 matmul GFLOP/s.
    settle_s: a pause after each impl, so the thread pool it used (OpenBLAS's workers spin ~0.1 s after a
    call, Numba's and OpenMP's for less) is parked before the next one wants the same cores."""
    rows = []
    per_round, per_min = max(1, repeats // 3), min_time_s / rounds
    for case in cases:
        times = {impl: [] for impl in case.impls}
        ratios = {impl: [] for impl in case.impls}
        triads = []
        for rnd in range(rounds):
            before = triad.gbs() if case.bound == "memory" else 0.0
            for impl, fn in case.impls.items():
                progress(f"{case.name} {case.shape} [{impl}] round {rnd + 1}/{rounds}")
                times[impl].append(median_time(fn, per_round, per_min))
                time.sleep(settle_s)
            if case.bound == "memory":
                local = max(before, triad.gbs())
                triads.append(local)
                for impl in case.impls:
                    ratios[impl].append(case.bytes_moved / times[impl][-1] / 1e9 / local)
        first = len(rows)
        for impl in case.impls:
            t = float(np.median(times[impl]))
            gbs, gfl = case.bytes_moved / t / 1e9, case.flops / t / 1e9
            row = {"kernel": case.name, "shape": case.shape, "impl": impl, "ms": 1e3 * t, "gbs": gbs,
                   "gflops": gfl, "bound": case.bound, "rounds": rounds,
                   "ceiling": "triad" if case.bound == "memory" else "numpy f32 matmul"}
            if case.bound == "memory":
                row["triad_gbs"] = float(np.median(triads))
                row["pct_of_ceiling"] = 100 * float(np.median(ratios[impl]))
                row["pct_of_ceiling_rounds"] = [round(100 * r, 1) for r in ratios[impl]]
            else:
                row["pct_of_ceiling"] = 100 * gfl / gflops_numpy
            rows.append(row)
        for r in rows[first:]:
            for other in BASELINES:
                if other in times and r["impl"] != other:     # per round, then the median
                    ratio = np.array(times[other]) / np.array(times[r["impl"]])
                    r[f"speedup_vs_{other.replace(' ', '_')}"] = float(np.median(ratio))
    return rows


def main(argv=None, progress=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: fewer shapes and repeats, stories15M end to end")
    p.add_argument("--threads", default="1,2", help="thread counts to measure (default 1,2)")
    p.add_argument("--no-e2e", action="store_true", help="kernels only")
    p.add_argument("--only", default="", help="regex: kernel cases whose name matches (implies --no-e2e; "
                                              "written as cpu-partial.*, the full results stay)")
    args = p.parse_args(argv)
    args.no_e2e = args.no_e2e or bool(args.only)
    env = scrubbed_env()
    if env is not None and progress is None:
        os.execve(sys.executable, [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])], env)
    say = progress or (lambda msg: print(f"  {msg}", flush=True))
    from pyinfer.kernels import c_cpu
    import cpu_kernels as ck
    from cpu_e2e import end_to_end, model_weights, small_model_split

    repeats, min_time = (3, 0.05) if args.quick else (9, 0.3)
    rng = np.random.default_rng(0)
    backends = load_backends()
    threads = Threads()
    triad = TriadProbe(64 << 20 if args.quick else 256 << 20)
    started = time.time()
    report = {"machine": machine(), "cpu_flags": cpu_flags(), "c_isa": c_cpu.isa(),
              "unset_env": os.environ.get("PYINFER_BENCH_UNSET", ""), "quick": args.quick, "runs": []}
    cases = []
    for make in (ck.gemv_cases, ck.gemm_cases, ck.attention_cases, ck.small_cases):
        cases += make(backends, rng, args.quick)
    cases = [c for c in cases if re.search(args.only, c.name)]
    preset = "stories15M" if args.quick else "stories110M"
    formats = ["float32", "int4-g32-a8"] if args.quick else ["float32", "int8", "int8-g32", "int4-g32-a8",
                                                             "int4-g128-a8", "int4-g32"]
    weights = {} if args.no_e2e else model_weights(preset, formats, say)
    for n in (int(t) for t in args.threads.split(",")):
        threads.set(n)
        say(f"{n} thread(s): ceilings")
        before = ceilings(repeats=repeats)
        gflops = numpy_matmul_gflops(repeats=max(3, repeats // 2))
        run = {"threads": n, "blas": blas_info(), "ceilings_before": before, "numpy_matmul_gflops": gflops,
               "kernels": run_cases(cases, triad, gflops, repeats, min_time, say, 2 if args.quick else 5,
                                            0.25 if n > 1 else 0.0)}
        run["ceilings_after"] = ceilings(repeats=repeats)
        if not args.no_e2e:
            run["end_to_end"] = end_to_end(preset, weights, 8 if args.quick else 32, 128, 2 if args.quick else 3, say,
                                           triad, CacheFlush())
            run["small_model"] = small_model_split(32 if args.quick else 200, say)
            run["ceilings_after_e2e"] = ceilings(repeats=repeats)
        report["runs"].append(run)
    report["wall_s"] = time.time() - started
    slug = re.sub(r"[^a-z0-9]+", "-", report["machine"]["cpu"].lower()).strip("-")
    tag = "-partial" if args.only else "-quick" if args.quick else ""
    path = write_json(f"cpu-{slug}{tag}.json", report)
    md = markdown(report)
    (RESULTS / f"cpu{tag}.md").write_text(md)
    print(md)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
