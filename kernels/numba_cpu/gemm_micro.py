"""float32 micro-kernels shared by matmul, the quantized GEMMs and attention.

Two shapes of inner product, both on 16-lane vectors (zmm):
- ``gemv_rows``/``dot``: out[n] = x . w[n] with x and w rows contiguous in K (a GEMV streams
  8 weight rows at once, then a horizontal sum per row);
- ``gemm_bcast``: C (M, N) = A (M, K) @ B (K, N) with B's rows contiguous in N: per k, one
  broadcast of A[i, k] times a 64-wide row segment of B into 4 x 4 vector accumulators (4 rows of
  C x 64 columns), no horizontal sums. The matmul packs weight panels as B = w.T; attention feeds
  S = Q K^T and O = P V this way.
Remainders: rows past a multiple of 4 reuse the last valid row and are not stored; columns past a
multiple of 16 take a scalar loop.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .simd import f32x16_add, f32x16_fma, f32x16_load, f32x16_splat, f32x16_store, f32x16_sum, f32x16_zero

SUM = {"reassoc", "contract"}      # vectorized float32 sums; NaN/inf keep their meaning


@njit(cache=True, fastmath=SUM)
def dot(a, b):
    # a, b: (K,) float32 -> float32
    K = a.shape[0]
    K16 = K - K % 16
    v = f32x16_zero()
    for k in range(0, K16, 16):
        v = f32x16_fma(f32x16_load(a, k), f32x16_load(b, k), v)
    acc = f32x16_sum(v)
    for k in range(K16, K):
        acc += a[k] * b[k]
    return acc


@njit(cache=True, fastmath=SUM)
def gemv_rows(out, x, w, n_lo, n_hi):
    # out: (N,) float32; x: (K,); w: (N, K); rows n_lo:n_hi, 8 weight rows streamed together
    K = x.shape[0]
    K16 = K - K % 16
    n = n_lo
    while n + 8 <= n_hi:
        w0 = w[n]
        w1 = w[n + 1]
        w2 = w[n + 2]
        w3 = w[n + 3]
        w4 = w[n + 4]
        w5 = w[n + 5]
        w6 = w[n + 6]
        w7 = w[n + 7]
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = f32x16_zero()
        for k in range(0, K16, 16):
            xv = f32x16_load(x, k)
            a0 = f32x16_fma(xv, f32x16_load(w0, k), a0)
            a1 = f32x16_fma(xv, f32x16_load(w1, k), a1)
            a2 = f32x16_fma(xv, f32x16_load(w2, k), a2)
            a3 = f32x16_fma(xv, f32x16_load(w3, k), a3)
            a4 = f32x16_fma(xv, f32x16_load(w4, k), a4)
            a5 = f32x16_fma(xv, f32x16_load(w5, k), a5)
            a6 = f32x16_fma(xv, f32x16_load(w6, k), a6)
            a7 = f32x16_fma(xv, f32x16_load(w7, k), a7)
        out[n] = f32x16_sum(a0) + tail_dot(x, w0, K16)
        out[n + 1] = f32x16_sum(a1) + tail_dot(x, w1, K16)
        out[n + 2] = f32x16_sum(a2) + tail_dot(x, w2, K16)
        out[n + 3] = f32x16_sum(a3) + tail_dot(x, w3, K16)
        out[n + 4] = f32x16_sum(a4) + tail_dot(x, w4, K16)
        out[n + 5] = f32x16_sum(a5) + tail_dot(x, w5, K16)
        out[n + 6] = f32x16_sum(a6) + tail_dot(x, w6, K16)
        out[n + 7] = f32x16_sum(a7) + tail_dot(x, w7, K16)
        n += 8
    while n < n_hi:
        out[n] = dot(x, w[n])
        n += 1


@njit(cache=True, fastmath=SUM, inline="always")
def tail_dot(a, b, k0):
    # sum of a[k] * b[k] for k in k0 .. len(a) (the < 16 elements past the vector loop)
    s = np.float32(0.0)
    for k in range(k0, a.shape[0]):
        s += a[k] * b[k]
    return s


@njit(cache=True, fastmath=SUM)
def _bcast_4x64(C, A, B, i0, n_rows, j0, k0, k1, accumulate):
    # C[i0:i0+n_rows, j0:j0+64] (+)= A[i0:i0+n_rows, k0:k1] @ B[k0:k1, j0:j0+64]; n_rows <= 4
    # (slices, so k runs from 0 and indexing needs no negative-index fix-up)
    a0 = A[i0, k0:k1]
    a1 = A[i0 + min(1, n_rows - 1), k0:k1]
    a2 = A[i0 + min(2, n_rows - 1), k0:k1]
    a3 = A[i0 + min(3, n_rows - 1), k0:k1]
    Bk = B[k0:k1]
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = f32x16_zero()
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = f32x16_zero()
    for k in range(k1 - k0):
        b = Bk[k]
        b0 = f32x16_load(b, j0)
        b1 = f32x16_load(b, j0 + 16)
        b2 = f32x16_load(b, j0 + 32)
        b3 = f32x16_load(b, j0 + 48)
        s = f32x16_splat(a0[k])
        c00 = f32x16_fma(s, b0, c00)
        c01 = f32x16_fma(s, b1, c01)
        c02 = f32x16_fma(s, b2, c02)
        c03 = f32x16_fma(s, b3, c03)
        s = f32x16_splat(a1[k])
        c10 = f32x16_fma(s, b0, c10)
        c11 = f32x16_fma(s, b1, c11)
        c12 = f32x16_fma(s, b2, c12)
        c13 = f32x16_fma(s, b3, c13)
        s = f32x16_splat(a2[k])
        c20 = f32x16_fma(s, b0, c20)
        c21 = f32x16_fma(s, b1, c21)
        c22 = f32x16_fma(s, b2, c22)
        c23 = f32x16_fma(s, b3, c23)
        s = f32x16_splat(a3[k])
        c30 = f32x16_fma(s, b0, c30)
        c31 = f32x16_fma(s, b1, c31)
        c32 = f32x16_fma(s, b2, c32)
        c33 = f32x16_fma(s, b3, c33)
    _store4(C[i0], j0, c00, c01, c02, c03, accumulate)
    if n_rows > 1:
        _store4(C[i0 + 1], j0, c10, c11, c12, c13, accumulate)
    if n_rows > 2:
        _store4(C[i0 + 2], j0, c20, c21, c22, c23, accumulate)
    if n_rows > 3:
        _store4(C[i0 + 3], j0, c30, c31, c32, c33, accumulate)


@njit(cache=True, inline="always")
def _store4(c, j0, v0, v1, v2, v3, accumulate):
    if accumulate:
        v0 = f32x16_add_load(c, j0, v0)
        v1 = f32x16_add_load(c, j0 + 16, v1)
        v2 = f32x16_add_load(c, j0 + 32, v2)
        v3 = f32x16_add_load(c, j0 + 48, v3)
    f32x16_store(c, j0, v0)
    f32x16_store(c, j0 + 16, v1)
    f32x16_store(c, j0 + 32, v2)
    f32x16_store(c, j0 + 48, v3)


@njit(cache=True, inline="always")
def f32x16_add_load(c, j, v):
    return f32x16_add(f32x16_load(c, j), v)


@njit(cache=True, fastmath=SUM)
def _bcast_4x16(C, A, B, i0, n_rows, j0, k0, k1, accumulate):
    # as _bcast_4x64 for 16 columns
    a0 = A[i0, k0:k1]
    a1 = A[i0 + min(1, n_rows - 1), k0:k1]
    a2 = A[i0 + min(2, n_rows - 1), k0:k1]
    a3 = A[i0 + min(3, n_rows - 1), k0:k1]
    Bk = B[k0:k1]
    c0 = c1 = c2 = c3 = f32x16_zero()
    for k in range(k1 - k0):
        b0 = f32x16_load(Bk[k], j0)
        c0 = f32x16_fma(f32x16_splat(a0[k]), b0, c0)
        c1 = f32x16_fma(f32x16_splat(a1[k]), b0, c1)
        c2 = f32x16_fma(f32x16_splat(a2[k]), b0, c2)
        c3 = f32x16_fma(f32x16_splat(a3[k]), b0, c3)
    rows = (c0, c1, c2, c3)
    for r in range(n_rows):
        v = rows[r]
        if accumulate:
            v = f32x16_add_load(C[i0 + r], j0, v)
        f32x16_store(C[i0 + r], j0, v)


@njit(cache=True, fastmath=SUM)
def gemm_bcast(C, A, B, k0, k1, accumulate):
    """C (M, N) (+)= A[:, k0:k1] @ B[k0:k1]; A: (M, K), B: (K, N), all float32 C-contiguous."""
    M, N = C.shape
    N64 = N - N % 64
    N16 = N - N % 16
    for i0 in range(0, M, 4):
        n_rows = min(4, M - i0)
        for j0 in range(0, N64, 64):
            _bcast_4x64(C, A, B, i0, n_rows, j0, k0, k1, accumulate)
        for j0 in range(N64, N16, 16):
            _bcast_4x16(C, A, B, i0, n_rows, j0, k0, k1, accumulate)
        for i in range(i0, i0 + n_rows):
            for j in range(N16, N):
                s = np.float32(0.0)
                for k in range(k0, k1):
                    s += A[i, k] * B[k, j]
                C[i, j] = C[i, j] + s if accumulate else s


@njit(cache=True)
def pack_transposed(B, w, lo, hi):
    """B = w[lo:hi].T: a panel of weight rows (N, K) as (K, NB), in 16 x NB tiles (one cache line
    of each row read, a 16-row slab of B written, both in L1)."""
    K = w.shape[1]
    rows = w[lo:hi]
    for k0 in range(0, K, 16):
        k1 = min(K, k0 + 16)
        for i in range(hi - lo):
            wr = rows[i]
            for k in range(k0, k1):
                B[k, i] = wr[k]
