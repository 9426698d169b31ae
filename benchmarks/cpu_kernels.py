"""The kernel cases of the CPU benchmark: each a shape from the issue, its napkin math (bytes that
must move, FLOPs) and a callable per implementation (numpy reference, c, numba, torch where one exists)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pyinfer.kernels import reference as ref
from pyinfer.quant import quantize


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


def gemv_cases(backends: dict, rng, quick: bool) -> list[Case]:
    N = K = 4096
    w = rng.standard_normal((N, K), dtype=np.float32) / np.float32(64)
    x = rng.standard_normal((1, K), dtype=np.float32)
    buf = np.empty((1, N), np.float32)
    cases = [Case("matmul f32 GEMV", f"1x{K} @ {N}x{K}", w.nbytes, 2 * N * K, "memory",
                  _impls(backends, "matmul", buf, x, w))]
    formats = ["int8", "int8-g32", "int4-g32-a8", "int4-g128-a8", "int4-g32", "int4-g128"]
    for fmt in formats[:3] if quick else formats:
        qt = quantize(w, fmt)
        impls = _impls(backends, qt.fmt.kernel, buf, x, *qt.kernel_args())
        if quick:
            impls.pop("numpy")                  # the reference's integer einsum takes seconds here
        cases.append(Case(f"{qt.fmt.kernel} GEMV ({fmt})", f"1x{K} @ {N}x{K}", qt.nbytes, 2 * N * K, "memory", impls))
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
    cases.append(Case("paged decode attention", f"ctx={ctx} bs={bs} H={H} KVH={KVH} hd={hd}",
                      kc.nbytes + vc.nbytes, 4 * hd * H * ctx, "memory",
                      _impls(backends, "paged_decode_attention", out, q, kc, vc, tables, lens,
                             1 / np.sqrt(hd))))
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
                 _impls(backends, "rope", o1, x, pos, 128, 10000.0))]
