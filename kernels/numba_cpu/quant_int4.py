"""int4 weights, two per byte (per group of G, byte j holds element j in its low nibble and element
j + G/2 in its high nibble), per-group float32 scales and uint8 zero points (or z = 8):
W4A16 (float activations) and W4A8 (activations to int8 per group, integer dot products).

Both read the activations in nibble order (lo[j] = x[j], hi[j] = x[j + G/2] per group, built once per
call), so a byte's two nibbles meet their activations lane for lane. With sum_k a_k (u_k - z) =
sum_k a_k u_k - z sum_k a_k, the zero point costs one term per group (group sums of x, or of xq,
precomputed per token).
W4A16: 16 bytes -> 32 nibbles widened to float32, FMAs into a group accumulator, * s per group.
W4A8: 64 bytes -> 128 nibbles as uint8 into ``dpbusd`` against int8 xq (u8 x s8, exact), 4 rows at a
time, lanes folded into exact per-group sums by ``reduce4``; float only for * xs * ws.
Shapes off the SIMD paths (G % 32 for W4A16; see quant_common.simd_groups for W4A8) run plain loops.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._par import use_threads
from .matmul import PANEL_ROWS, PARALLEL_MIN, SUM, panel_product
from .quant_common import (check_int4, chunk_bounds, group_float_sums, group_sums, nibble_order, quantize_act,
                           simd_groups, threads_split)
from .quant_int8 import int_chunks
from .simd import f32x16_fma, f32x16_from_nibbles, f32x16_load, f32x16_mul, f32x16_splat, f32x16_sum, f32x16_zero
from .simd_int import (dpbusd, f32x16_lane, gather4, gather4_u8, i8x64_load, i8x64_load_masked, i8x64_nib,
                       i8x64_nibbles, i32x16_lane, i32x16_mul, i32x16_splat, i32x16_sub, i32x16_to_f32, i32x16_zero,
                       reduce4, rep4, rep4_i32)


@njit(cache=True, inline="always")
def zero_point(zeros, has_zeros, n, g):
    return zeros[n, g] if has_zeros else np.uint8(8)


@njit(cache=True, fastmath=SUM)
def _w4a16_rows_simd(out, xlo, xhi, xsum, qweight, scales, zeros, has_zeros, G, n_lo, n_hi):
    # out: (N,) float32; xlo, xhi: (K/2,) nibble-ordered x; xsum: (K/G,) float32; G % 32 == 0
    # qweight: (N, K/2) uint8; scales, zeros: (N, K/G); rows n_lo:n_hi one at a time
    half = G // 2
    for n in range(n_lo, n_hi):
        q = qweight[n]
        acc = f32x16_zero()
        corr = np.float32(0.0)
        for g in range(scales.shape[1]):
            ga = f32x16_zero()
            for c in range(g * half, (g + 1) * half, 16):
                ga = f32x16_fma(f32x16_load(xlo, c), f32x16_from_nibbles(q, c, False), ga)
                ga = f32x16_fma(f32x16_load(xhi, c), f32x16_from_nibbles(q, c, True), ga)
            s = scales[n, g]
            acc = f32x16_fma(ga, f32x16_splat(s), acc)
            corr += s * np.float32(zero_point(zeros, has_zeros, n, g)) * xsum[g]
        out[n] = f32x16_sum(acc) - corr


@njit(cache=True, fastmath=SUM)
def _w4a16_rows_plain(out, x, qweight, scales, zeros, has_zeros, G, n_lo, n_hi):
    # out: (N,) float32; x: (K,) in natural order; any even G
    half = G // 2
    for n in range(n_lo, n_hi):
        acc = np.float32(0.0)
        for g in range(scales.shape[1]):
            xlo = x[g * G:g * G + half]
            xhi = x[g * G + half:(g + 1) * G]
            b = qweight[n, g * half:(g + 1) * half]
            z = np.float32(zero_point(zeros, has_zeros, n, g))
            a = np.float32(0.0)
            for j in range(half):
                a += xlo[j] * (np.float32(b[j] & 15) - z) + xhi[j] * (np.float32(b[j] >> 4) - z)
            acc += a * scales[n, g]
        out[n] = acc


@njit(cache=True)
def _w4a16_chunk(out, x, xlo, xhi, xsum, qweight, scales, zeros, has_zeros, G, simd, lo, hi):
    for t in range(x.shape[0]):
        if simd:
            _w4a16_rows_simd(out[t], xlo[t], xhi[t], xsum[t], qweight, scales, zeros, has_zeros, G, lo, hi)
        else:
            _w4a16_rows_plain(out[t], x[t], qweight, scales, zeros, has_zeros, G, lo, hi)


@njit(cache=True, parallel=True)
def w4a16_gemv(out, x, qweight, scales, zeros, has_zeros, G, simd, n_chunks):
    # out: (T, N) float32 with T small; chunks of rows over threads
    xlo, xhi = nibble_order(x, G)
    xsum = group_float_sums(x, G)
    for c_ in prange(n_chunks):
        c = np.int64(c_)          # (uint64 in a prange: one specialization)
        lo, hi = chunk_bounds(c, n_chunks, qweight.shape[0])
        _w4a16_chunk(out, x, xlo, xhi, xsum, qweight, scales, zeros, has_zeros, G, simd, lo, hi)


@njit(cache=True)
def w4a16_gemv_serial(out, x, qweight, scales, zeros, has_zeros, G, simd):
    xlo, xhi = nibble_order(x, G)
    xsum = group_float_sums(x, G)
    _w4a16_chunk(out, x, xlo, xhi, xsum, qweight, scales, zeros, has_zeros, G, simd, np.int64(0), qweight.shape[0])


@njit(cache=True, parallel=True)
def w4a16_gemm(out, x, qweight, scales, zeros, has_zeros, G, NB):
    # out: (T, N) float32; each task dequantizes NB rows, w = (u - z) * s as the reference, then a GEMM
    K = x.shape[1]
    N = qweight.shape[0]
    half = G // 2
    n_panels = (N + NB - 1) // NB
    for p_ in prange(n_panels):
        p = np.int64(p_)          # (uint64 in a prange: one specialization)
        lo = p * NB
        hi = min(N, lo + NB)
        B = np.empty((K, hi - lo), np.float32)               # (K, NB) dequantized weights, transposed
        for i in range(hi - lo):
            for g in range(scales.shape[1]):
                z = np.float32(zero_point(zeros, has_zeros, lo + i, g))
                s = scales[lo + i, g]
                for j in range(half):
                    b = qweight[lo + i, g * half + j]
                    B[g * G + j, i] = (np.float32(b & 15) - z) * s
                    B[g * G + half + j, i] = (np.float32(b >> 4) - z) * s
        panel_product(out, x, B, lo, np.empty(0, np.float32))


def matmul_w4a16(out, x, qweight, scales, zeros, group_size):
    """out: (T, N) f32; x: (T, K) f32; qweight: uint8 (N, K/2) nibbles; scales: f32 (N, K/G);
    zeros: uint8 (N, K/G) or None (symmetric, z = 8). out = x @ ((u - z) * s).T"""
    N, K, G, zeros, has_zeros = check_int4(out, x, qweight, scales, zeros, group_size)
    T = x.shape[0]
    if T == 0 or N == 0:
        return out
    simd = G % 32 == 0
    n_chunks = threads_split(N, K // 2)
    if T < 4 and n_chunks == 1:
        w4a16_gemv_serial(out, x, qweight, scales, zeros, has_zeros, G, simd)
    elif T < 4:
        w4a16_gemv(out, x, qweight, scales, zeros, has_zeros, G, simd, n_chunks)
    else:
        w4a16_gemm(out, x, qweight, scales, zeros, has_zeros, G, PANEL_ROWS)
    return out


@njit(cache=True, fastmath=SUM)
def _w4a8_rows_simd(out, xql, xqh, xsum, xs, qweight, scales, zeros, has_zeros, G, n_lo, n_hi):
    # out: (N,) float32; xql, xqh: (K/2,) int8 nibble-ordered xq; xsum: (K/G,) int32; xs: (K/G,)
    # qweight: (N, K/2) uint8; scales, zeros: (N, K/G); rows n_lo:n_hi, 4 at a time
    Kb = qweight.shape[1]
    Bg = G // 2                                          # bytes per group
    Kb64 = Kb - Kb % 64                                  # the rest: whole groups (Bg <= 64), scalar loop
    span = max(Bg, 64)
    n_parts = max(1, 64 // Bg)
    n = n_lo
    while n < n_hi:
        r = min(4, n_hi - n)
        i1 = n + 1 if r > 1 else n
        i2 = n + 2 if r > 2 else n
        i3 = n + 3 if r > 3 else n
        q0, q1, q2, q3 = qweight[n], qweight[i1], qweight[i2], qweight[i3]
        s0, s1, s2, s3 = scales[n], scales[i1], scales[i2], scales[i3]
        z0, z1, z2, z3 = zeros[n if has_zeros else 0], zeros[i1 if has_zeros else 0], \
            zeros[i2 if has_zeros else 0], zeros[i3 if has_zeros else 0]
        acc = f32x16_zero()
        g = 0                                            # first group of this span (no division in the loop)
        for c0 in range(0, Kb64, span):
            d0 = d1 = d2 = d3 = i32x16_zero()
            for c in range(c0, c0 + span, 64):
                xl = i8x64_load(xql, c)
                xh = i8x64_load(xqh, c)
                d0 = dpbusd(dpbusd(d0, i8x64_nibbles(q0, c, False), xl), i8x64_nibbles(q0, c, True), xh)
                d1 = dpbusd(dpbusd(d1, i8x64_nibbles(q1, c, False), xl), i8x64_nibbles(q1, c, True), xh)
                d2 = dpbusd(dpbusd(d2, i8x64_nibbles(q2, c, False), xl), i8x64_nibbles(q2, c, True), xh)
                d3 = dpbusd(dpbusd(d3, i8x64_nibbles(q3, c, False), xl), i8x64_nibbles(q3, c, True), xh)
            if n_parts == 1:
                v = reduce4(d0, d1, d2, d3, 1)
                z = gather4_u8(z0, g, z1, g, z2, g, z3, g, 1) if has_zeros else i32x16_splat(8)
                v = i32x16_sub(v, i32x16_mul(z, rep4_i32(xsum, g, 1)))
                sc = f32x16_mul(gather4(s0, g, s1, g, s2, g, s3, g, 1), rep4(xs, g, 1))
            elif n_parts == 2:
                v = reduce4(d0, d1, d2, d3, 2)
                z = gather4_u8(z0, g, z1, g, z2, g, z3, g, 2) if has_zeros else i32x16_splat(8)
                v = i32x16_sub(v, i32x16_mul(z, rep4_i32(xsum, g, 2)))
                sc = f32x16_mul(gather4(s0, g, s1, g, s2, g, s3, g, 2), rep4(xs, g, 2))
            else:
                v = reduce4(d0, d1, d2, d3, 4)
                z = gather4_u8(z0, g, z1, g, z2, g, z3, g, 4) if has_zeros else i32x16_splat(8)
                v = i32x16_sub(v, i32x16_mul(z, rep4_i32(xsum, g, 4)))
                sc = f32x16_mul(gather4(s0, g, s1, g, s2, g, s3, g, 4), rep4(xs, g, 4))
            acc = f32x16_fma(i32x16_to_f32(v), sc, acc)             # v: exact sum_k xq * (u - z) per group
            g += n_parts
        v = i32x16_zero()
        nb = Kb - Kb64                                   # last < 64 bytes (Bg < 64): whole groups, masked loads
        if nb:
            xl = i8x64_load_masked(xql, Kb64, nb)
            xh = i8x64_load_masked(xqh, Kb64, nb)
            b0 = i8x64_load_masked(q0, Kb64, nb)
            b1 = i8x64_load_masked(q1, Kb64, nb)
            b2 = i8x64_load_masked(q2, Kb64, nb)
            b3 = i8x64_load_masked(q3, Kb64, nb)
            d0 = dpbusd(dpbusd(i32x16_zero(), i8x64_nib(b0, False), xl), i8x64_nib(b0, True), xh)
            d1 = dpbusd(dpbusd(i32x16_zero(), i8x64_nib(b1, False), xl), i8x64_nib(b1, True), xh)
            d2 = dpbusd(dpbusd(i32x16_zero(), i8x64_nib(b2, False), xl), i8x64_nib(b2, True), xh)
            d3 = dpbusd(dpbusd(i32x16_zero(), i8x64_nib(b3, False), xl), i8x64_nib(b3, True), xh)
            v = reduce4(d0, d1, d2, d3, 4) if n_parts == 4 else reduce4(d0, d1, d2, d3, 2)
        for i in range(r):
            total = np.float32(0.0)
            for p in range(n_parts):
                total += f32x16_lane(acc, i * n_parts + p)
            if nb:
                total += _tail_groups_z(v, i, n_parts, nb // Bg, xsum, xs, scales, zeros, has_zeros, n + i, g)
            out[n + i] = total
        n += 4


@njit(cache=True, fastmath=SUM)
def _tail_groups_z(v, i, lanes, n_groups, xsum, xs, scales, zeros, has_zeros, row, g):
    # lane row i's groups g .. g + n_groups from reduce4: sum_p (dot - z * xsum) * xs * ws[row], dot exact
    a = np.float32(0.0)
    for p in range(n_groups):
        z = np.int32(zero_point(zeros, has_zeros, row, g + p))
        dot = i32x16_lane(v, i * lanes + p) - z * xsum[g + p]
        a += np.float32(dot) * (xs[g + p] * scales[row, g + p])
    return a


@njit(cache=True, fastmath=SUM)
def _w4a8_rows_plain(out, xq, xs, xsum, qweight, scales, zeros, has_zeros, G, n_lo, n_hi):
    # out: (N,) float32; xq: (K,) int8 natural order; any even G
    half = G // 2
    for n in range(n_lo, n_hi):
        acc = np.float32(0.0)
        for g in range(xs.shape[0]):
            xlo = xq[g * G:g * G + half]
            xhi = xq[g * G + half:(g + 1) * G]
            b = qweight[n, g * half:(g + 1) * half]
            d = np.int32(0)
            for j in range(half):
                d = np.int32(d + np.int32(xlo[j]) * np.int32(b[j] & 15) + np.int32(xhi[j]) * np.int32(b[j] >> 4))
            d = np.int32(d - np.int32(zero_point(zeros, has_zeros, n, g)) * xsum[g])
            acc += np.float32(d) * (xs[g] * scales[n, g])
        out[n] = acc


@njit(cache=True)
def _w4a8_chunk(out, xq, xql, xqh, xsum, xs, qweight, scales, zeros, has_zeros, G, simd, lo, hi):
    for t in range(xq.shape[0]):
        if simd:
            _w4a8_rows_simd(out[t], xql[t], xqh[t], xsum[t], xs[t], qweight, scales, zeros, has_zeros, G, lo, hi)
        else:
            _w4a8_rows_plain(out[t], xq[t], xs[t], xsum[t], qweight, scales, zeros, has_zeros, G, lo, hi)


@njit(cache=True, parallel=True)
def w4a8_parallel(out, x, qweight, scales, zeros, has_zeros, G, simd, n_chunks):
    # out: (T, N) float32; x: (T, K) quantized here; chunks of rows over threads
    xq, xs = quantize_act(x, G)                          # (T, K) int8, (T, K/G) float32
    xql, xqh = nibble_order(xq, G)                       # (T, K/2) each
    xsum = group_sums(xq, G)
    for c_ in prange(n_chunks):
        c = np.int64(c_)          # (uint64 in a prange: one specialization)
        lo, hi = chunk_bounds(c, n_chunks, qweight.shape[0])
        _w4a8_chunk(out, xq, xql, xqh, xsum, xs, qweight, scales, zeros, has_zeros, G, simd, lo, hi)


@njit(cache=True)
def w4a8_serial(out, x, qweight, scales, zeros, has_zeros, G, simd, n_chunks):
    xq, xs = quantize_act(x, G)
    xql, xqh = nibble_order(xq, G)
    xsum = group_sums(xq, G)
    for c in range(n_chunks):
        lo, hi = chunk_bounds(c, n_chunks, qweight.shape[0])
        _w4a8_chunk(out, xq, xql, xqh, xsum, xs, qweight, scales, zeros, has_zeros, G, simd, lo, hi)


def matmul_w4a8(out, x, qweight, scales, zeros, group_size):
    """As matmul_w4a16 with x quantized to int8 per group: integer dots of xq and (u - z)."""
    N, K, G, zeros, has_zeros = check_int4(out, x, qweight, scales, zeros, group_size)
    T = x.shape[0]
    if T == 0 or N == 0:
        return out
    args = (out, x, qweight, scales, zeros, has_zeros, G, simd_groups(K // 2, G // 2),
            int_chunks(T, N, K, 0.5))
    (w4a8_parallel if use_threads(T * N * K, PARALLEL_MIN) else w4a8_serial)(*args)
    return out
