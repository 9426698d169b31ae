"""The kernel cases of the CPU benchmark: each a shape from the issue, its napkin math (bytes that
must move, FLOPs) and a callable per implementation (numpy reference, c, numba, torch where one exists)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pyinfer.analysis.microbench import last_level_cache_bytes
from pyinfer.kernels import reference as ref
from pyinfer.quant import quantize

DRAM_POOL_MIN = 600 << 20        # bytes of operand copies cycled through when the LLC size is unknown


@dataclass
class Case:
    name: str
    shape: str
    bytes_moved: int                 # the fewest bytes the op must move (weights / KV dominate)
    flops: int
    bound: str                       # "memory" or "compute": which ceiling its % is taken against
    impls: dict[str, Callable] = field(default_factory=dict)


def _impls(backends: dict, name: str, out: np.ndarray, *args) -> dict:
    """numpy reference + every loaded backend with a native `name`, each writing into `out`."""
    impls = {"numpy": lambda: getattr(ref, name)(out, *args)}
    for bname, kernels in backends.items():
        if name in kernels:
            impls[bname] = (lambda k=kernels[name]: k(out, *args))
    return impls


def dram_copies(nbytes: int) -> int:
    """Distinct copies of an operand of ``nbytes`` that together are twice the last-level cache (at
    least DRAM_POOL_MIN): cycling through them, every call streams its operand from DRAM, as a decode
    step does with a model larger than the cache (a 4096x4096 float32 weight fits this CPU's L3)."""
    pool = max(2 * last_level_cache_bytes(), DRAM_POOL_MIN)
    return max(2, -(-pool // max(nbytes, 1)))


def _cycling(impls: dict[str, Callable], make: Callable[[int], dict[str, Callable]], copies: int) -> dict:
    """impl -> a callable that runs the impl on the next of ``copies`` distinct operand sets."""
    per_copy = [make(i) for i in range(copies)]
    return {name: (lambda it=itertools.cycle([c[name] for c in per_copy]): next(it)())
            for name in impls}


def gemv_cases(backends: dict, rng, quick: bool) -> list[Case]:
    """GEMV 4096x4096 per format twice: cache-resident (one weight, as the issue's shape) and
    DRAM-resident (cycling over copies twice the LLC), the figure a decode step's weights see."""
    N = K = 4096
    w = rng.standard_normal((N, K), dtype=np.float32) / np.float32(64)
    x = rng.standard_normal((1, K), dtype=np.float32)
    buf = np.empty((1, N), np.float32)
    shape = f"1x{K} @ {N}x{K}"
    cases = [Case("matmul f32 GEMV", shape, w.nbytes, 2 * N * K, "memory", _impls(backends, "matmul", buf, x, w))]
    if not quick:
        n = dram_copies(w.nbytes)
        copies = [w.copy() for _ in range(n)]
        cases.append(Case("matmul f32 GEMV (DRAM)", f"{shape} x{n} copies", w.nbytes, 2 * N * K, "memory",
                          _cycling(cases[0].impls, lambda i: _impls(backends, "matmul", buf, x, copies[i]), n)))
    formats = ["int8", "int8-g32", "int4-g32-a8", "int4-g128-a8", "int4-g32", "int4-g128"]
    for fmt in formats[:3] if quick else formats:
        qt = quantize(w, fmt)
        args = qt.kernel_args()
        impls = _impls(backends, qt.fmt.kernel, buf, x, *args)
        if quick:
            impls.pop("numpy")                  # the reference's integer einsum takes seconds here
        name = f"{qt.fmt.kernel} GEMV ({fmt})"
        cases.append(Case(name, shape, qt.nbytes, 2 * N * K, "memory", impls))
        if not quick:
            n = dram_copies(qt.nbytes)
            copies = [[a.copy() if isinstance(a, np.ndarray) else a for a in args] for _ in range(n)]
            fast = {k: v for k, v in impls.items() if k != "numpy"}     # the reference is 50-150x slower
            cases.append(Case(f"{name} (DRAM)", f"{shape} x{n} copies", qt.nbytes, 2 * N * K, "memory",
                              _cycling(fast, lambda i: _impls(backends, qt.fmt.kernel, buf, x, *copies[i]), n)))
    return cases


def gemm_cases(backends: dict, rng, quick: bool) -> list[Case]:
    M, N, K = (128, 4096, 4096) if quick else (512, 4096, 4096)
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32) / np.float32(64)
    out = np.empty((M, N), np.float32)
    cases = [Case("matmul f32 GEMM", f"{M}x{K} @ {N}x{K}", w.nbytes + x.nbytes, 2 * M * N * K, "compute",
                  _impls(backends, "matmul", out, x, w))]
    for fmt in ("int8-g32", "int4-g32-a8"):
        qt = quantize(w, fmt)
        impls = _impls(backends, qt.fmt.kernel, out, x, *qt.kernel_args())
        impls.pop("numpy")                      # the reference einsum of (M, N, K/G) int32 is out of reach
        impls["numpy f32"] = lambda: np.matmul(x, w.T, out=out)     # the bar: numpy's float32 matmul, same run
        cases.append(Case(f"{qt.fmt.kernel} GEMM ({fmt})", f"{M}x{K} @ {N}x{K}", qt.nbytes + x.nbytes,
                          2 * M * N * K, "compute", impls))
    return cases


def _causal_flops(T: int, H: int, hd: int) -> int:
    return 4 * hd * H * (T * (T + 1) // 2)


def attention_cases(backends: dict, rng, quick: bool) -> list[Case]:
    cases = []
    H, KVH = 8, 2
    shapes = [(1024, 64)] if quick else [(1024, 64), (1024, 128), (2048, 64), (2048, 128)]
    for T, hd in shapes:
        q = rng.standard_normal((T, H, hd), dtype=np.float32)
        k, v = (rng.standard_normal((T, KVH, hd), dtype=np.float32) for _ in range(2))
        out = np.empty_like(q)
        impls = _impls(backends, "attention_prefill", out, q, k, v, 1 / np.sqrt(hd))
        if T > 1024:
            impls.pop("numpy")                  # the reference materialises H x T x T scores
        try:
            import torch
            import torch.nn.functional as F
            tq = torch.from_numpy(q).permute(1, 0, 2).unsqueeze(0)                  # (1, H, T, hd)
            tk, tv = (torch.from_numpy(a).permute(1, 0, 2).unsqueeze(0) for a in (k, v))

            def sdpa():
                with torch.no_grad():
                    return F.scaled_dot_product_attention(tq, tk, tv, is_causal=True, enable_gqa=True)
            impls["torch sdpa"] = sdpa
        except (ImportError, TypeError):
            pass
        cases.append(Case("attention prefill (causal, GQA 8/2)", f"T={T} hd={hd}",
                          q.nbytes * 2 + k.nbytes + v.nbytes, _causal_flops(T, H, hd), "compute", impls))
    ctx, bs, H, KVH, hd = 4096, 16, 32, 8, 128
    nb = ctx // bs
    kc, vc = (rng.standard_normal((nb, bs, KVH, hd), dtype=np.float32) for _ in range(2))
    tables = rng.permutation(nb).astype(np.int32)[None, :]
    q = rng.standard_normal((1, H, hd), dtype=np.float32)
    out = np.empty_like(q)
    lens = np.array([ctx], np.int32)
    shape = f"ctx={ctx} bs={bs} H={H} KVH={KVH} hd={hd}"
    scale = 1 / np.sqrt(hd)
    impls = _impls(backends, "paged_decode_attention", out, q, kc, vc, tables, lens, scale)
    cases.append(Case("paged decode attention", shape, kc.nbytes + vc.nbytes, 4 * hd * H * ctx, "memory", impls))
    if not quick:                               # KV of many sequences: each call streams its own from DRAM
        n = dram_copies(kc.nbytes + vc.nbytes)
        pool = [(kc.copy(), vc.copy()) for _ in range(n)]
        fast = {k: v for k, v in impls.items() if k != "numpy"}
        cases.append(Case("paged decode attention (DRAM)", f"{shape} x{n} caches", kc.nbytes + vc.nbytes,
                          4 * hd * H * ctx, "memory",
                          _cycling(fast, lambda i: _impls(backends, "paged_decode_attention", out, q, *pool[i],
                                                          tables, lens, scale), n)))
    return cases


def small_cases(backends: dict, rng, quick: bool) -> list[Case]:
    T, D, Hd = 128, 4096, 11008
    x = rng.standard_normal((T, D), dtype=np.float32)
    wn = rng.standard_normal(D, dtype=np.float32)
    g, u = (rng.standard_normal((T, Hd), dtype=np.float32) for _ in range(2))
    pos = np.arange(T)
    o1, o2 = np.empty_like(x), np.empty_like(g)
    return [Case("rmsnorm", f"{T}x{D}", 2 * x.nbytes, 4 * x.size, "memory",
                 _impls(backends, "rmsnorm", o1, x, wn, 1e-5)),
            Case("silu_mul", f"{T}x{Hd}", 3 * g.nbytes, 5 * g.size, "memory",
                 _impls(backends, "silu_mul", o2, g, u)),
            Case("rope", f"{T}x{D} hd=128", 2 * x.nbytes, 3 * x.size, "memory",
                 _impls(backends, "rope", o1, x, pos, ref.plain_inv_freq(128, 10000.0)))]
