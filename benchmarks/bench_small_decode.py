"""Small-model decode overhead, this tree against a base commit, in ONE process, interleaved, medians:
- raw paged decode attention (the C call alone, no Python): stories260K's shape (H 8, KVH 4, hd 8) at
  a few contexts and the large-head shape (H 32, KVH 8, hd 128, ctx 4096, L3-resident);
- the Python wrapper of paged_decode_attention (checks + call) at the small shape;
- stories260K (../shared/models, the real checkpoint) greedy decode with the fused C step: us/token,
  split into the time inside decode_step (checks + C) and everything else (model.forward, cache).
The base is `git archive BASE csrc kernels` built by its own csrc/build_ffi.py into a temp dir as a
second cffi module (_pyinfer_base_C), with BASE's Python wrappers.
Run: OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_small_decode.py
[--base REF] [--quick] [--json NAME]   (~90 s with the base build; --quick ~40 s). Writes
benchmarks/results/small_decode.json (or NAME there)."""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from common import write_json  # noqa: E402  (benchmarks/ is sys.path[0]; the repo root is not, so the
#                                 top-level kernels/ folder cannot shadow HF's `kernels` package)
from pyinfer import _C  # noqa: E402

STORIES = ROOT.parent / "shared" / "models" / "stories260K.bin"


def build_base(ref: str, tmp: Path):
    """(lib, c_cpu module, c_fused module) of commit ref"""
    subprocess.run(f"git -C {ROOT} archive {ref} csrc kernels | tar -x -C {tmp}", shell=True, check=True)
    # its own cffi module (ffi.dlopen of a second copy of the API would not keep the two apart)
    build = tmp / "csrc" / "build_ffi.py"
    build.write_text(build.read_text().replace('"pyinfer._C"', '"_pyinfer_base_C"'))
    subprocess.run([sys.executable, str(build)], check=True, cwd=tmp, env={**os.environ, "PYINFER_BUILD_DIR": str(tmp)},
                   stdout=subprocess.DEVNULL)
    sys.path.insert(0, str(tmp))
    import _pyinfer_base_C  # noqa: PLC0415
    ffi, lib = _pyinfer_base_C.ffi, _pyinfer_base_C.lib
    mods = {}
    for name in ("c_checks", "c_cpu", "c_fused"):        # as pyinfer.kernels._base_*, importing each other
        src = (tmp / "kernels" / f"{name}.py").read_text()
        for dep in ("c_checks", "c_cpu"):
            src = src.replace(f"from . import {dep}", f"from . import _base_{dep}").replace(
                f"from .{dep} import", f"from ._base_{dep} import")
        path = tmp / "kernels" / f"_base_{name}.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(f"pyinfer.kernels._base_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        mods[name] = mod
    mods["c_cpu"]._lib = lambda: (ffi, lib)
    return ffi, lib, mods["c_cpu"], mods["c_fused"]


def interleaved(fns: dict, calls: int, repeats: int) -> dict:
    """name -> median seconds per call; the variants alternate, repeat after repeat (thread CPU time)"""
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.thread_time()
            for i in range(calls):
                fn(i)
            ts[k].append((time.thread_time() - t0) / calls)
    return {k: float(np.median(v)) for k, v in ts.items()}


def attention_setup(rng, H, KVH, hd, ctx, bs=16):
    nblk = -(-ctx // bs)
    kc, vc = (rng.standard_normal((nblk + 3, bs, KVH, hd), dtype=np.float32) for _ in range(2))
    tables = rng.permutation(nblk + 3)[:nblk].reshape(1, nblk).astype(np.int64)
    q = rng.standard_normal((1, H, hd), dtype=np.float32)
    return q, kc, vc, tables, np.array([ctx], np.int64)


def raw_attention(libs, rng, quick):
    """libs: name -> (ffi, lib)"""
    rows = []
    shapes = [(8, 4, 8, ctx) for ctx in (16, 128, 256, 512)] + [(32, 8, 128, 4096)]
    for H, KVH, hd, ctx in shapes:
        q, kc, vc, tables, lens = attention_setup(rng, H, KVH, hd, ctx)
        out = np.empty_like(q)
        fns = {}
        for k, (ffi, lib) in libs.items():
            args = [ffi.from_buffer("float[]", a) for a in (out, q, kc, vc)] + \
                   [ffi.from_buffer("int64_t[]", a) for a in (tables, lens)]
            fns[k] = (lambda i, lib=lib, args=args: lib.paged_decode_attention_f32(
                *args, 1, tables.shape[1], kc.shape[0], 16, H, KVH, hd, 0.3, 0))
        calls = max(3, min(2000, int(3e5 // ctx)))
        med = interleaved(fns, calls // (4 if quick else 1), 5 if quick else 11)
        rows.append({"H": H, "KVH": KVH, "head_dim": hd, "ctx": ctx, "block_size": 16,
                     **{f"{k}_us": v * 1e6 for k, v in med.items()}, "speedup": med["base"] / med["new"]})
        print(rows[-1], flush=True)
    return rows


def wrapper_overhead(wrappers, rng, quick):
    q, kc, vc, tables, lens = attention_setup(rng, 8, 4, 8, 16)
    out = np.empty_like(q)
    fns = {k: (lambda i, f=f: f(out, q, kc, vc, tables, lens, 0.3)) for k, f in wrappers.items()}
    med = interleaved(fns, 500 if quick else 2000, 5 if quick else 11)
    row = {"op": "paged_decode_attention (wrapper + C), ctx 16", **{f"{k}_us": v * 1e6 for k, v in med.items()}}
    print(row, flush=True)
    return row


def stories(steps, n_decode, repeats):
    """per variant: us/token, us inside decode_step, us elsewhere, tok/s (medians over repeats) and the text"""
    from pyinfer.loaders import load_checkpoint
    from pyinfer.model import Model
    from pyinfer.ops import Ops
    weights = load_checkpoint(STORIES)
    runs = {k: [] for k in steps}
    tokens = {}
    for _ in range(repeats):
        for k, step in steps.items():
            ops = Ops("c")
            inside = [0.0]

            def timed(*a, _s=step):
                t = time.thread_time()
                r = _s(*a)
                inside[0] += time.thread_time() - t
                return r
            ops.decode_step = timed
            ops.native = (*[n for n in ops.native if n != "decode_step"], "decode_step")
            model = Model(weights, ops)
            cache = model.new_cache(block_size=16)
            model.forward(cache.prepare([0], [np.array([1])]), cache)
            tok, seq, total = 1, [], 0.0
            inside[0] = 0.0
            for _ in range(n_decode):
                t = time.thread_time()
                logits = model.forward(cache.prepare([0], [np.array([tok])]), cache)
                total += time.thread_time() - t
                tok = int(np.argmax(logits[0]))
                seq.append(tok)
            runs[k].append((total / n_decode, inside[0] / n_decode))
            tokens[k] = seq
    rows = {}
    for k, r in runs.items():
        tot, ins = float(np.median([a for a, _ in r])), float(np.median([b for _, b in r]))
        rows[k] = {"us_per_token": tot * 1e6, "decode_step_us": ins * 1e6, "other_us": (tot - ins) * 1e6,
                   "tok_s": 1 / tot}
        print(k, rows[k], flush=True)
    agree = int(np.sum(np.array(tokens["base"]) == np.array(tokens["new"])))
    return {"model": "stories260K", "n_decode": n_decode, "repeats": repeats, "block_size": 16,
            "greedy_tokens_equal": f"{agree}/{n_decode}", **{k: v for k, v in rows.items()}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="a01add8", help="commit to compare against")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from pyinfer.kernels import c_cpu, c_fused
    c_cpu.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        base_ffi, base_lib, base_cpu, base_fused = build_base(args.base, Path(tmp))
        base_lib.pyinfer_set_num_threads(1)
        rng = np.random.default_rng(0)
        libs = {"base": (base_ffi, base_lib), "new": (_C.ffi, _C.lib)}
        result = {"base": args.base, "threads": 1, "clock": "thread CPU time",
                  "raw_attention": raw_attention(libs, rng, args.quick)}
        new_ops = c_cpu.load()
        result["wrapper"] = wrapper_overhead({"base": base_cpu.load()["paged_decode_attention"],
                                              "new": new_ops["paged_decode_attention"]}, rng, args.quick)
        steps = {"base": base_fused.make_decode_step(base_ffi, base_lib),
                 "new": c_fused.make_decode_step(_C.ffi, _C.lib)}
        if STORIES.exists():
            result["stories260K"] = stories(steps, 64 if args.quick else 256, 3 if args.quick else 7)
    print("wrote", write_json(args.json or ("small_decode-quick.json" if args.quick else "small_decode.json"),
                              result))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
