"""Threads under contention: the default thread setting (``auto``) against ``--threads 1`` with one busy
background process, and 2 threads against 1 on a quiet machine (issue 13, point 2).

    python benchmarks/bench_contention.py            # ~3-4 minutes on a 2-core machine
    python benchmarks/bench_contention.py --quick    # fewer tokens and repeats, ~1.5 minutes

The busy process is a pure-Python loop in one subprocess, started and stopped by this script and
bounded in time by itself (it exits after --busy-limit seconds even if this script dies). Cases, each
the median of --repeats runs after a warm-up, in one process (the model loaded once per format):

- decode: stories110M shape (seeded random weights), C backend, float32 and int8-g32: tokens/s
- prefill: 128 tokens, the same model in float32, int8-g32 and int4-g32-a8: tokens/s
- serve: the engine on the toy preset (bench serve's trace, 50 requests): output tokens/s

Settings: ``auto`` (re-resolved before each case, as a new process would: it samples /proc/stat),
``1`` and ``2``. Conditions: ``quiet`` (no busy loop; other processes on the machine are recorded as
``others_busy_cores``) and ``busy`` (the loop running). The checks: busy auto >= 0.8x busy 1 thread
for every case; quiet 2 threads >= 1.5x 1 thread on prefill. JSON goes to benchmarks/results/ with
the machine named.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_dated  # noqa: E402

from pyinfer.config import SamplingParams  # noqa: E402
from pyinfer.threads import CoreMonitor, set_threads  # noqa: E402

BUSY = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"


class BusyLoop:
    """One pure-Python busy process for the duration of a ``with`` block (and never past ``limit_s``)."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", BUSY.format(limit=self.limit_s)])
        time.sleep(0.3)                                   # let it get going
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def decode_case(gen, n_tokens: int):
    from pyinfer.generate import generate
    ids = gen.tokenizer.encode("Once upon a time", bos=True)
    params = SamplingParams(temperature=0.0, seed=1, ignore_eos=True)

    def run() -> float:
        return generate(gen.model, ids, len(ids) + n_tokens, params).decode_tokens_per_s
    return run


def prefill_case(gen, n_tokens: int = 128):
    tokens = np.random.default_rng(0).integers(3, gen.model.config.vocab_size, n_tokens)    # (T,)

    def run() -> float:
        cache = gen.model.new_cache()
        t0 = time.perf_counter()
        gen.model.forward(cache.prepare([0], [tokens]), cache)
        return n_tokens / (time.perf_counter() - t0)
    return run


def serve_case(gen, num_requests: int):
    from pyinfer.engine import Engine, EngineConfig
    from pyinfer.engine.metrics import summarize
    from pyinfer.engine.trace import LengthDist, replay, synthetic_trace
    c = gen.model.config
    trace = synthetic_trace(num_requests, float("inf"), LengthDist.parse("uniform:16:64"),
                            LengthDist.parse("uniform:16:64"), c.vocab_size, c.max_seq_len, 0)

    def run() -> float:
        engine = Engine(gen.model, gen.tokenizer, EngineConfig(max_num_seqs=32, max_num_batched_tokens=512))
        outs = replay(engine, trace, SamplingParams(temperature=0.0, seed=0))
        return summarize([o.metrics for o in outs])["output_token_throughput_per_s"]
    return run


def measure(cases: dict, settings: tuple, repeats: int, condition: str, rows: list) -> None:
    """Each case at each setting, the settings interleaved run by run so that a change in the machine's
    load moves them alike, in a different order each round (the orderings of the settings in turn, so
    over 6 rounds each setting follows each other one equally often: a run right after a 2-thread run
    beside a busy process was slower, measured, and rotating alone still put ``auto`` after ``2`` in 4
    of 5 rounds); the median of ``repeats`` after a warm-up."""
    orders = list(itertools.permutations(settings))
    for name, (unit, fn) in cases.items():
        values = {s: [] for s in settings}
        chosen, others = {}, {}
        for rep in range(repeats + 1):                    # rep 0: warm-up at every setting, not kept
            for setting in orders[rep % len(orders)]:
                chosen[setting] = set_threads(setting)    # auto: re-resolved now, as a new process would
                monitor = CoreMonitor()
                value = fn()
                use = monitor.stop()
                if rep:
                    values[setting].append(value)
                    others.setdefault(setting, []).append(use.others_busy_cores if use else None)
        for setting in settings:
            value = statistics.median(values[setting])
            busy = [o for o in others[setting] if o is not None]
            rows.append({"case": name, "unit": unit, "condition": condition, "setting": str(setting),
                         "threads_used": chosen[setting].count, "threads_reason": chosen[setting].reason,
                         "value": value, "runs": values[setting],
                         "others_busy_cores": statistics.median(busy) if busy else None})
            print(f"{condition:>6} {name:<24} threads {str(setting):>4} -> {chosen[setting].count}: "
                  f"{value:10.1f} {unit}", flush=True)


PLAN = ((None, ("decode", "prefill")), ("int8-g32", ("decode", "prefill")), ("int4-g32-a8", ("prefill",)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer tokens and repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--busy-limit", type=float, default=600.0, help="the busy loop exits after this many seconds")
    ap.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/contention-<machine>-<date>.json)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 6)
    n_decode = 16 if args.quick else 32
    from pyinfer.api import load
    from pyinfer.kernels import c_cpu

    rows: list[dict] = []
    t_start = time.perf_counter()
    for quant, kinds in PLAN:
        gen = load(preset="stories110M", backend="c", quant=quant, threads=1)
        label = quant or "float32"
        cases = {}
        if "decode" in kinds:
            cases[f"decode {label}"] = ("tokens/s", decode_case(gen, n_decode))
        if "prefill" in kinds:
            cases[f"prefill-128 {label}"] = ("tokens/s", prefill_case(gen))
        measure(cases, ("auto", 1, 2), repeats, "quiet", rows)
        with BusyLoop(args.busy_limit):
            measure(cases, ("auto", 1, 2), repeats, "busy", rows)
        del gen
    gen = load(preset="toy", backend="c", threads=1)
    cases = {"serve toy": ("output tok/s", serve_case(gen, 30 if args.quick else 50))}
    measure(cases, ("auto", 1, 2), repeats, "quiet", rows)
    with BusyLoop(args.busy_limit):
        measure(cases, ("auto", 1, 2), repeats, "busy", rows)

    checks = _checks(rows)
    print()
    print(markdown(rows, checks))
    from pyinfer.engine.machine import machine_info
    write_dated("contention", {"machine": machine_info(), "load_average_at_end": os.getloadavg(), "isa": c_cpu.isa(), "omp_wait_policy": _env("OMP_WAIT_POLICY"),
                               "repeats": repeats, "decode_tokens": n_decode, "seconds": time.perf_counter() - t_start,
                               "rows": rows, "checks": checks}, args.out)
    return 0


def _env(name: str):
    return os.environ.get(name)


def _value(rows, case, condition, setting):
    return next(r["value"] for r in rows if (r["case"], r["condition"], r["setting"]) == (case, condition, setting))


def _checks(rows: list[dict]) -> list[dict]:
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        ratio = _value(rows, case, "busy", "auto") / _value(rows, case, "busy", "1")
        out.append({"case": case, "check": "busy: auto / 1 thread >= 0.8", "ratio": ratio, "pass": ratio >= 0.8})
        if case.startswith("prefill"):
            ratio = _value(rows, case, "quiet", "2") / _value(rows, case, "quiet", "1")
            out.append({"case": case, "check": "quiet: 2 threads / 1 thread >= 1.5", "ratio": ratio,
                        "pass": ratio >= 1.5})
    return out


def markdown(rows: list[dict], checks: list[dict]) -> str:
    lines = ["| case | condition | auto (threads used) | 1 thread | 2 threads | auto / 1 | 2 / 1 | others busy (cores) |",
             "|---|---|---|---|---|---|---|---|"]
    for case in dict.fromkeys(r["case"] for r in rows):
        for cond in ("quiet", "busy"):
            sel = {r["setting"]: r for r in rows if r["case"] == case and r["condition"] == cond}
            a, one, two = sel["auto"], sel["1"], sel["2"]
            others = max((r["others_busy_cores"] or 0.0) for r in sel.values())
            lines.append(f"| {case} ({a['unit']}) | {cond} | {a['value']:.1f} ({a['threads_used']}) | "
                         f"{one['value']:.1f} | {two['value']:.1f} | {a['value'] / one['value']:.2f}x | "
                         f"{two['value'] / one['value']:.2f}x | {others:.2f} |")
    lines.append("")
    for c in checks:
        lines.append(f"- {c['case']}: {c['check']}: {c['ratio']:.2f}x {'PASS' if c['pass'] else 'FAIL'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
