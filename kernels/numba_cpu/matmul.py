"""float32 matmul out = x @ w.T: a GEMV that streams the weight once for decode (T < 4), and a
GEMM for prefill that packs panels of NB weight rows as (K, NB) and runs the broadcast micro-kernel
(gemm_micro.gemm_bcast) over K blocks that stay in L1. Both split the output features N over
threads; small weights run serially (a parallel launch costs more than the work).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _checks as chk
from ._par import use_threads
from .gemm_micro import SUM, gemm_bcast, gemv_rows, pack_transposed

PANEL_ROWS = 64                    # weight rows per GEMM task (the micro-kernel's 64 columns)
K_BLOCK = 128                      # a packed (K_BLOCK, 64) float32 block: 32 KiB, L1
PARALLEL_MIN = 1 << 16             # weights (N x K) below which one thread runs the whole op


@njit(cache=True)
def gemv_serial(out, x, w):
    # out: (T, N) float32; x: (T, K); w: (N, K); one thread, no parallel launch (small weights)
    for t in range(x.shape[0]):
        gemv_rows(out[t], x[t], w, np.int64(0), w.shape[0])


@njit(cache=True, parallel=True)
def gemv_kernel(out, x, w, n_chunks):
    # out: (T, N) float32; x: (T, K); w: (N, K); each thread streams its share of w's rows per t
    T = x.shape[0]
    N = w.shape[0]
    for c_ in prange(n_chunks):
        c = np.int64(c_)          # (uint64 in a prange: one specialization)
        lo = (c * N // n_chunks) // 8 * 8
        hi = N if c == n_chunks - 1 else ((c + 1) * N // n_chunks) // 8 * 8
        for t in range(T):
            gemv_rows(out[t], x[t], w, lo, hi)


@njit(cache=True)
def put_columns(out, panel, lo, scales):
    # out[:, lo:lo+NB] = panel (T, NB), times scales[lo + j] per column when scales has entries
    for t in range(panel.shape[0]):
        for j in range(panel.shape[1]):
            v = panel[t, j]
            out[t, lo + j] = v * scales[lo + j] if scales.shape[0] else v


@njit(cache=True, fastmath=SUM)
def panel_product(out, x, B, lo, scales):
    # out[:, lo:lo+NB] = (x @ B) * scales[lo:lo+NB]; x: (T, K); B: (K, NB) packed weights
    C = np.empty((x.shape[0], B.shape[1]), np.float32)
    K = x.shape[1]
    k0 = np.int64(0)
    while True:                                                # K == 0: one pass that writes zeros
        k1 = min(K, k0 + K_BLOCK)
        gemm_bcast(C, x, B, k0, k1, k0 > 0)
        k0 = k1
        if k0 >= K:
            break
    put_columns(out, C, lo, scales)


@njit(cache=True)
def _gemm_panel(out, x, w, p, NB):
    N = w.shape[0]
    lo = p * NB
    hi = min(N, lo + NB)
    B = np.empty((w.shape[1], hi - lo), np.float32)          # (K, NB) = w[lo:hi].T
    pack_transposed(B, w, lo, hi)
    panel_product(out, x, B, lo, np.empty(0, np.float32))


@njit(cache=True, parallel=True)
def gemm_kernel(out, x, w, NB):
    # out: (T, N) float32; x: (T, K); w: (N, K); one panel of NB weight rows per task
    for p_ in prange((w.shape[0] + NB - 1) // NB):
        p = np.int64(p_)          # (uint64 in a prange: one specialization)
        _gemm_panel(out, x, w, p, NB)


@njit(cache=True)
def gemm_serial(out, x, w, NB):
    for p in range((w.shape[0] + NB - 1) // NB):
        _gemm_panel(out, x, w, p, NB)


def n_chunks_for(N: int, K: int) -> int:
    """Row chunks for a GEMV over threads: 1 (run it serially) for small weights or one thread."""
    if not use_threads(N * K, PARALLEL_MIN):
        return 1
    return max(1, min(64, N // 16))


def check_matmul_io(out, x, N: int, K: int):
    chk.f32("x", x, 2)
    chk.f32("out", out, 2, writable=True)
    if x.shape[1] != K:
        raise ValueError(f"x has K={x.shape[1]}, the weight has K={K}")
    chk.shape("out", out, (x.shape[0], N), " (T, N)")
    chk.disjoint("out", out, x=x)


def matmul(out, x, w):
    """out: (T, N) float32; x: (T, K); w: (N, K) float32. out = x @ w.T"""
    chk.f32("w", w, 2)
    check_matmul_io(out, x, *w.shape)
    chk.disjoint("out", out, w=w)
    T, K = x.shape
    if T == 0 or w.shape[0] == 0:
        return out
    n_chunks = n_chunks_for(*w.shape)
    if T < 4:
        (gemv_serial if n_chunks == 1 else gemv_kernel)(out, x, w, *(() if n_chunks == 1 else (n_chunks,)))
    elif use_threads(T * w.size, PARALLEL_MIN):
        gemm_kernel(out, x, w, PANEL_ROWS)
    else:
        gemm_serial(out, x, w, PANEL_ROWS)
    return out
