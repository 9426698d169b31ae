"""int8 weights: W8A16 (per-channel scales, float activations) and W8A8 (per-group scales,
activations quantized to int8 per group, integer dot products per group).

W8A16 keeps the reference's order, (x @ q.T) * s[n]: 16 weights at a time widened exactly to
float32, 4 rows sharing each load of x; the scale comes after. GEMM (T >= 4): each task converts a
panel of rows to float32 once and runs the float GEMM micro-kernel over all T.

W8A8 sums int8 x int8 products exactly in int32 lanes with ``dpbusd`` (u8 x s8): the weight goes in as
q + 128 (q xor 0x80, so -128 works too), 4 rows share each 64-byte load of xq, ``reduce4`` folds the
lanes into each row's exact group sums, and 128 * sum_g(xq) (per token, precomputed) is taken off:
the integer group dot of the reference, then * xs[t, g] * ws[n, g] in float. Shapes the SIMD path
does not cover (K % 64, G not 16, 32, 64 or a multiple of 64) take a plain loop with the same math.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._par import use_threads
from .matmul import PANEL_ROWS, PARALLEL_MIN, SUM, panel_product
from .quant_common import check_int8, chunk_bounds, group_sums, quantize_act, simd_groups, threads_split
from .simd import f32x16_fma, f32x16_from_i8, f32x16_load, f32x16_mul, f32x16_sum, f32x16_zero
from .simd_int import (dpbusd, f32x16_lane, gather4, i8x64_flip_sign, i8x64_load, i8x64_load_masked, i32x16_lane,
                       i32x16_mul, i32x16_splat, i32x16_sub, i32x16_to_f32, i32x16_zero, reduce4, rep4, rep4_i32)


@njit(cache=True, fastmath=SUM)
def _w8a16_rows(out, x, qweight, scales, n_lo, n_hi):
    # out: (N,) float32; x: (K,); qweight: (N, K) int8; scales: (N,); rows n_lo:n_hi
    K = x.shape[0]
    K16 = K - K % 16
    n = n_lo
    while n < n_hi:
        r = min(4, n_hi - n)
        q0 = qweight[n]
        q1 = qweight[n + 1 if r > 1 else n]
        q2 = qweight[n + 2 if r > 2 else n]
        q3 = qweight[n + 3 if r > 3 else n]
        a0 = a1 = a2 = a3 = f32x16_zero()
        for k in range(0, K16, 16):
            xv = f32x16_load(x, k)
            a0 = f32x16_fma(xv, f32x16_from_i8(q0, k), a0)
            a1 = f32x16_fma(xv, f32x16_from_i8(q1, k), a1)
            a2 = f32x16_fma(xv, f32x16_from_i8(q2, k), a2)
            a3 = f32x16_fma(xv, f32x16_from_i8(q3, k), a3)
        rows = (q0, q1, q2, q3)
        acc = (a0, a1, a2, a3)
        for i in range(r):
            s = f32x16_sum(acc[i])
            qr = rows[i]
            for k in range(K16, K):
                s += x[k] * np.float32(qr[k])
            out[n + i] = s * scales[n + i]
        n += 4


@njit(cache=True, parallel=True)
def w8a16_gemv(out, x, qweight, scales, n_chunks):
    # out: (T, N) float32, T small; each chunk of rows streams its share of qweight once per t
    N = qweight.shape[0]
    for c_ in prange(n_chunks):
        c = np.int64(c_)          # (uint64 in a prange: one specialization)
        lo, hi = chunk_bounds(c, n_chunks, N)
        for t in range(x.shape[0]):
            _w8a16_rows(out[t], x[t], qweight, scales, lo, hi)


@njit(cache=True)
def w8a16_gemv_serial(out, x, qweight, scales):
    for t in range(x.shape[0]):
        _w8a16_rows(out[t], x[t], qweight, scales, np.int64(0), qweight.shape[0])


@njit(cache=True, parallel=True)
def w8a16_gemm(out, x, qweight, scales, NB):
    # out: (T, N) float32; x: (T, K); each task converts NB rows of q to float32 once, then a GEMM
    T, K = x.shape
    N = qweight.shape[0]
    n_panels = (N + NB - 1) // NB
    for p_ in prange(n_panels):
        p = np.int64(p_)          # (uint64 in a prange: one specialization)
        lo = p * NB
        hi = min(N, lo + NB)
        B = np.empty((K, hi - lo), np.float32)              # (K, NB) float(q).T, exact
        for i in range(hi - lo):
            for k in range(K):
                B[k, i] = np.float32(qweight[lo + i, k])
        panel_product(out, x, B, lo, scales)                # (x @ q.T) * s


def matmul_w8a16(out, x, qweight, scales):
    """out: (T, N) f32; x: (T, K) f32; qweight: int8 (N, K); scales: f32 (N,). out = (x @ q.T) * s."""
    N, K, _ = check_int8(out, x, qweight, scales, 0, grouped=False)
    T = x.shape[0]
    if T == 0 or N == 0:
        return out
    n_chunks = threads_split(N, K)
    if T < 4 and n_chunks == 1:
        w8a16_gemv_serial(out, x, qweight, scales)
    elif T < 4:
        w8a16_gemv(out, x, qweight, scales, n_chunks)
    else:
        w8a16_gemm(out, x, qweight, scales, PANEL_ROWS)
    return out


@njit(cache=True, fastmath=SUM)
def _w8a8_rows_simd(out, xq, xsum, xs, qweight, scales, G, n_lo, n_hi):
    # out: (N,) float32; xq: (K,) int8; xsum: (K/G,) int32 sums of xq per group; xs: (K/G,)
    # qweight: (N, K) int8; scales: (N, K/G); G in (16, 32, 64) or a multiple of 64; rows n_lo:n_hi
    K = xq.shape[0]
    K64 = K - K % 64                                    # the rest: whole groups (G <= 64), scalar loop
    span = max(G, 64)                                   # bytes folded before each reduce4
    n_parts = max(1, 64 // G)                           # groups per 64-byte vector
    n = n_lo
    while n < n_hi:
        r = min(4, n_hi - n)
        q0 = qweight[n]
        q1 = qweight[n + 1 if r > 1 else n]
        q2 = qweight[n + 2 if r > 2 else n]
        q3 = qweight[n + 3 if r > 3 else n]
        s0 = scales[n]
        s1 = scales[n + 1 if r > 1 else n]
        s2 = scales[n + 2 if r > 2 else n]
        s3 = scales[n + 3 if r > 3 else n]
        acc = f32x16_zero()
        g = 0                                           # first group of this span (no division in the loop)
        for c0 in range(0, K64, span):
            d0 = d1 = d2 = d3 = i32x16_zero()
            for c in range(c0, c0 + span, 64):
                xv = i8x64_load(xq, c)
                d0 = dpbusd(d0, i8x64_flip_sign(i8x64_load(q0, c)), xv)      # sum (q + 128) * xq
                d1 = dpbusd(d1, i8x64_flip_sign(i8x64_load(q1, c)), xv)
                d2 = dpbusd(d2, i8x64_flip_sign(i8x64_load(q2, c)), xv)
                d3 = dpbusd(d3, i8x64_flip_sign(i8x64_load(q3, c)), xv)
            if n_parts == 1:
                v = reduce4(d0, d1, d2, d3, 1)
                sc = f32x16_mul(gather4(s0, g, s1, g, s2, g, s3, g, 1), rep4(xs, g, 1))
                corr = rep4_i32(xsum, g, 1)
            elif n_parts == 2:
                v = reduce4(d0, d1, d2, d3, 2)
                sc = f32x16_mul(gather4(s0, g, s1, g, s2, g, s3, g, 2), rep4(xs, g, 2))
                corr = rep4_i32(xsum, g, 2)
            else:
                v = reduce4(d0, d1, d2, d3, 4)
                sc = f32x16_mul(gather4(s0, g, s1, g, s2, g, s3, g, 4), rep4(xs, g, 4))
                corr = rep4_i32(xsum, g, 4)
            dots = i32x16_sub(v, i32x16_mul(corr, i32x16_splat(128)))           # exact group dots
            acc = f32x16_fma(i32x16_to_f32(dots), sc, acc)
            g += n_parts
        v = i32x16_zero()
        nb = K - K64                                    # last < 64 bytes (G < 64): whole groups, masked loads
        if nb:
            xv = i8x64_load_masked(xq, K64, nb)
            d0 = dpbusd(i32x16_zero(), i8x64_flip_sign(i8x64_load_masked(q0, K64, nb)), xv)
            d1 = dpbusd(i32x16_zero(), i8x64_flip_sign(i8x64_load_masked(q1, K64, nb)), xv)
            d2 = dpbusd(i32x16_zero(), i8x64_flip_sign(i8x64_load_masked(q2, K64, nb)), xv)
            d3 = dpbusd(i32x16_zero(), i8x64_flip_sign(i8x64_load_masked(q3, K64, nb)), xv)
            v = reduce4(d0, d1, d2, d3, 4) if n_parts == 4 else reduce4(d0, d1, d2, d3, 2)
        for i in range(r):
            total = np.float32(0.0)
            for p in range(n_parts):
                total += f32x16_lane(acc, i * n_parts + p)
            if nb:
                total += _tail_groups(v, i, n_parts, nb // G, xsum, xs, scales, n + i, g)
            out[n + i] = total
        n += 4


@njit(cache=True, fastmath=SUM)
def _tail_groups(v, i, lanes, n_groups, xsum, xs, scales, row, g):
    # lane row i's groups g .. g + n_groups from reduce4: sum_p (dot - 128 * xsum) * xs * ws[row], dot exact
    # (whole arrays and indices, no row views: a view costs reference counting per call)
    a = np.float32(0.0)
    for p in range(n_groups):
        dot = i32x16_lane(v, i * lanes + p) - 128 * xsum[g + p]
        a += np.float32(dot) * (xs[g + p] * scales[row, g + p])
    return a


@njit(cache=True, fastmath=SUM)
def _w8a8_groups(xq, xs, q, s, G, g0):
    # one row's groups g0 .. K/G with scalar int32 sums: sum_g xs[g] * s[g] * (xq . q over g)
    a = np.float32(0.0)
    for g in range(g0, xs.shape[0]):
        d = np.int32(0)
        for j in range(g * G, (g + 1) * G):
            d = np.int32(d + np.int32(xq[j]) * np.int32(q[j]))
        a += np.float32(d) * (xs[g] * s[g])
    return a


@njit(cache=True, fastmath=SUM)
def _w8a8_rows_plain(out, xq, xs, qweight, scales, G, n_lo, n_hi):
    # any K, G: the same math with scalar int32 sums
    for n in range(n_lo, n_hi):
        out[n] = _w8a8_groups(xq, xs, qweight[n], scales[n], G, 0)


@njit(cache=True)
def _w8a8_chunk(out, xq, xsum, xs, qweight, scales, G, simd, lo, hi):
    for t in range(xq.shape[0]):
        if simd:
            _w8a8_rows_simd(out[t], xq[t], xsum[t], xs[t], qweight, scales, G, lo, hi)
        else:
            _w8a8_rows_plain(out[t], xq[t], xs[t], qweight, scales, G, lo, hi)


@njit(cache=True, parallel=True)
def w8a8_parallel(out, x, qweight, scales, G, simd, n_chunks):
    # out: (T, N) float32; x: (T, K) quantized here; chunks of weight rows (L2-sized for T > 1) over threads
    N = qweight.shape[0]
    xq, xs = quantize_act(x, G)                         # (T, K) int8, (T, K/G) float32
    xsum = group_sums(xq, G)                            # (T, K/G) int32
    for c_ in prange(n_chunks):
        c = np.int64(c_)          # (uint64 in a prange: one specialization)
        lo, hi = chunk_bounds(c, n_chunks, N)
        _w8a8_chunk(out, xq, xsum, xs, qweight, scales, G, simd, lo, hi)


@njit(cache=True)
def w8a8_serial(out, x, qweight, scales, G, simd, n_chunks):
    N = qweight.shape[0]
    xq, xs = quantize_act(x, G)
    xsum = group_sums(xq, G)
    for c in range(n_chunks):
        lo, hi = chunk_bounds(c, n_chunks, N)
        _w8a8_chunk(out, xq, xsum, xs, qweight, scales, G, simd, lo, hi)


def int_chunks(T: int, N: int, K: int, bytes_per_weight: float) -> int:
    """Row chunks for an integer-dot matmul: threads' shares for T == 1, L2-sized panels for T > 1."""
    if T == 1:
        return threads_split(N, K)
    rows = max(4, int((1 << 20) / (bytes_per_weight * max(K, 1))) // 4 * 4)
    return max(1, -(-N // rows))


def matmul_w8a8(out, x, qweight, scales, group_size):
    """out: (T, N) f32; x: (T, K) f32 quantized per group to int8 here; qweight: int8 (N, K);
    scales: f32 (N, K/G). out[t, n] = sum_g xs[t, g] * ws[n, g] * sum_{k in g} xq[t, k] * q[n, k]."""
    N, K, G = check_int8(out, x, qweight, scales, group_size, grouped=True)
    T = x.shape[0]
    if T == 0 or N == 0:
        return out
    args = (out, x, qweight, scales, G, simd_groups(K, G), int_chunks(T, N, K, 1.0))
    (w8a8_parallel if use_threads(T * N * K, PARALLEL_MIN) else w8a8_serial)(*args)
    return out
