"""Paged decode attention, C vs Numba, one process, interleaved, medians: L3-resident (one sequence,
ctx 4096) and DRAM-resident (cycling over a > 600 MiB pool of distinct sequences), batch 8 mixed.
Triad bandwidth (pyinfer._C.lib.stream_triad_f32) measured in the same run, with the same clock.
Run: OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_decode_attention.py [--quick]
(~30 s; --quick ~20 s). Writes benchmarks/results/attn_decode-<threads>t.json (or --json PATH)."""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from common import write_json  # noqa: E402  (benchmarks/ is sys.path[0]; never the repo root)
from cpu_env import ceilings  # noqa: E402
from pyinfer.kernels import c_cpu  # noqa: E402
from pyinfer.ops import load_backend  # noqa: E402

H, KVH, HD, BS = 32, 8, 128, 16


def pool(rng, n_seq, ctx):
    """One cache holding n_seq sequences of ctx tokens each, blocks scattered; tables (n_seq, nblk)."""
    nblk = -(-ctx // BS)
    nb = n_seq * nblk
    kc = np.empty((nb, BS, KVH, HD), np.float32)
    vc = np.empty_like(kc)
    for a in (kc, vc):              # 4 Mi random values, each repeated: quick to make, and the bytes are real
        a.reshape(-1)[:] = rng.standard_normal(1 << 22, dtype=np.float32).repeat(-(-a.size // (1 << 22)))[:a.size]
    tables = rng.permutation(nb).reshape(n_seq, nblk).astype(np.int64)
    return kc, vc, tables


def clock():
    """CPU time of the calling thread at 1 thread (the machine is shared: time descheduled is not the
    kernel's), wall time otherwise"""
    return time.thread_time() if c_cpu.num_threads() == 1 else time.perf_counter()


def timeit(fn, calls, repeats):
    ts = []
    for _ in range(repeats):
        t0 = clock()
        for i in range(calls):
            fn(i)
        ts.append((clock() - t0) / calls)
    return ts


def triad_gbs(repeats, n=(256 << 20) // 4):
    """STREAM triad a = b + s c (3 arrays of 256 MiB counted), timed like the kernels"""
    from pyinfer import _C
    a, b, c = (np.full(n, 1.0, np.float32) for _ in range(3))
    pa, pb, pc = (_C.ffi.from_buffer("float[]", x) for x in (a, b, c))
    ts = timeit(lambda i: _C.lib.stream_triad_f32(pa, pb, pc, 3.0, n), 1, repeats)
    return 12 * n / float(np.median(ts)) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    reps = 3 if args.quick else 7
    c, nb_ops = load_backend("c"), load_backend("numba")
    rng = np.random.default_rng(0)
    scale = 1 / np.sqrt(HD)
    triad = triad_gbs(3 if args.quick else 7)
    ceil = ceilings(repeats=3 if args.quick else 5)       # wall-clock STREAM figures, for the record
    n_seq = 32                      # 1 GiB of K and V: every DRAM case re-reads a row only after > 300 MiB (L3)
    kc, vc, tables = pool(rng, n_seq, 4096)
    pool_mib = 2 * kc.nbytes / 2**20
    cases = {}
    # (name, B, lens, table rows per call i)
    lens8 = np.array([4096, 3001, 1, 17, 2048, 513, 1000, 4095], np.int64)
    specs = [("l3_ctx4096_b1", np.array([4096]), lambda i: tables[:1]),
             ("dram_ctx4096_b1", np.array([4096]), lambda i: tables[i % n_seq:i % n_seq + 1]),
             ("dram_b8_mixed", lens8, lambda i: tables[(np.arange(8) + 8 * i) % n_seq])]
    for name, lens, tab in specs:
        B = len(lens)
        q = rng.standard_normal((B, H, HD)).astype(np.float32)
        out = {k: np.empty((B, H, HD), np.float32) for k in ("c", "numba")}
        kv_bytes = int(lens.sum()) * KVH * HD * 4 * 2          # K and V rows read, once each
        fns = {"c": lambda i: c["paged_decode_attention"](out["c"], q, kc, vc, tab(i), lens, scale),
               "numba": lambda i: nb_ops["paged_decode_attention"](out["numba"], q, kc, vc, tab(i), lens, scale)}
        for f in fns.values():
            f(0)
        np.testing.assert_allclose(out["c"], out["numba"], rtol=1e-4, atol=1e-4)
        calls = n_seq if name.startswith("dram") else 10
        ts = {k: [] for k in fns}
        for _ in range(reps):                     # interleaved
            for k, f in fns.items():
                ts[k] += timeit(f, calls, 1)
        r = {}
        for k in fns:
            ms = float(np.median(ts[k])) * 1e3
            gbs = kv_bytes / (ms * 1e-3) / 1e9
            r[k] = {"ms": round(ms, 3), "gbs": round(gbs, 2), "pct_triad": round(100 * gbs / triad, 1)}
        r["c_over_numba_time"] = round(r["c"]["ms"] / r["numba"]["ms"], 3)
        r["kv_mb"] = round(kv_bytes / 1e6, 1)
        cases[name] = r
        print(name, json.dumps(r), flush=True)
    res = {"triad_gbs": round(triad, 2), "wall_triad_gbs": round(ceil["triad_gbs"], 2),
           "read_gbs": round(ceil["read_gbs"], 2),
           "clock": "thread_time" if c_cpu.num_threads() == 1 else "perf_counter", "pool_mib": round(pool_mib),
           "threads": c_cpu.num_threads(), "isa": c_cpu.isa(), "shape": dict(H=H, KVH=KVH, hd=HD, block_size=BS),
           "cases": cases}
    print(json.dumps({k: v for k, v in res.items() if k != "cases"}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    else:
        print(write_json(f"attn_decode-{c_cpu.num_threads()}t.json", res))


if __name__ == "__main__":
    main()
