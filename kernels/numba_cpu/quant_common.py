"""Pieces shared by the quantized matmuls: argument checks, dynamic int8 quantization of the
activations (bit-exact with reference.quantize_act), the per-call activation layouts the SIMD
kernels read, and the thread split.

Per token the integer kernels also take the group sums of xq (the offset and zero-point terms), and
the int4 kernels read activations in the weights' nibble order (per group, byte j pairs element j
with element j + G/2), so unpacked nibbles meet their activations without a shuffle.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import _checks as chk
from .matmul import check_matmul_io, n_chunks_for


@njit(cache=True)
def _quantize_rows(xq, xs, x, G, t0, t1):
    # xq: (T, K) int8 out; xs: (T, K/G) float32 out; x: (T, K) float32; rows t0:t1
    for t in range(t0, t1):
        xr = x[t]
        for g in range(xs.shape[1]):
            xg = xr[g * G:(g + 1) * G]
            amax = np.float32(0.0)
            for j in range(G):
                a = abs(xg[j])
                if a > amax or a != a:                  # a NaN sticks
                    amax = a
            qg = xq[t, g * G:(g + 1) * G]
            if not amax <= np.float32(3.4028235e38):    # inf or NaN: the reference's row is NaN (s = NaN, q = 0)
                qg[:] = 0
                xs[t, g] = np.float32(np.nan)
                continue
            s = amax / np.float32(127.0)
            safe = s if s != 0 else np.float32(1.0)
            for j in range(G):
                qg[j] = np.int8(np.rint(xg[j] / safe))
            xs[t, g] = s


@njit(cache=True)
def quantize_act(x, G):
    """(xq (T, K) int8, xs (T, K/G) float32) of x (T, K) float32: x ~= xq * xs per group of G."""
    T, K = x.shape
    xq = np.empty((T, K), np.int8)
    xs = np.empty((T, K // G), np.float32)
    _quantize_rows(xq, xs, x, G, np.int64(0), T)
    return xq, xs


def quantized_act(x: np.ndarray, G: int):
    """quantize_act from Python (the tests compare it with reference.quantize_act bit for bit)."""
    return quantize_act(x, G)


@njit(cache=True)
def group_sums(xq, G):
    """(T, K/G) int32: sum of xq (T, K) int8 over each group."""
    T, K = xq.shape
    s = np.empty((T, K // G), np.int32)
    for t in range(T):
        for g in range(K // G):
            a = np.int32(0)
            for j in range(g * G, (g + 1) * G):
                a += np.int32(xq[t, j])
            s[t, g] = a
    return s


@njit(cache=True)
def group_float_sums(x, G):
    """(T, K/G) float32: sum of x (T, K) over each group (float64 inside)."""
    T, K = x.shape
    s = np.empty((T, K // G), np.float32)
    for t in range(T):
        for g in range(K // G):
            a = 0.0
            for j in range(g * G, (g + 1) * G):
                a += x[t, j]
            s[t, g] = np.float32(a)
    return s


@njit(cache=True)
def nibble_order(x, G):
    """x (T, K) -> (lo, hi), each (T, K/2): per group, lo[j] = x[j] and hi[j] = x[j + G/2] (any dtype)."""
    T, K = x.shape
    half = G // 2
    lo = np.empty((T, K // 2), x.dtype)
    hi = np.empty((T, K // 2), x.dtype)
    for t in range(T):
        for g in range(K // G):
            for j in range(half):
                lo[t, g * half + j] = x[t, g * G + j]
                hi[t, g * half + j] = x[t, g * G + half + j]
    return lo, hi


def simd_groups(row_bytes: int, group_bytes: int) -> bool:
    """The SIMD path's shapes: groups of 16, 32 or 64 bytes (a row's last < 64 bytes, whole groups, take
    a scalar loop), or groups of 64 * m bytes."""
    return group_bytes in (16, 32, 64) or group_bytes % 64 == 0


def group_size(group_size, K: int, even: bool = False) -> int:
    G = chk.positive_int("group_size", group_size)
    if even and G % 2:
        raise ValueError(f"group_size={G} must be even for int4 (two weights per byte)")
    if K % G:
        raise ValueError(f"K={K} is not a multiple of group_size={G} (quant.QTensor pads K)")
    return G


def check_int8(out, x, qweight, scales, G, grouped: bool):
    """(N, K, G) after checking an int8 weight, its scales ((N,) per channel, (N, K/G) grouped), out, x."""
    chk.typed("qweight", qweight, 2, np.int8)
    N, K = qweight.shape
    G = group_size(G, K) if grouped else 0
    chk.f32("scales", scales, 2 if G else 1)
    chk.shape("scales", scales, (N, K // G) if G else (N,))
    check_matmul_io(out, x, N, K)
    return N, K, G


def check_int4(out, x, qweight, scales, zeros, G):
    """(N, K, G, zeros as an array, has_zeros) after checking an int4 weight and its metadata."""
    chk.typed("qweight", qweight, 2, np.uint8)
    N, K = qweight.shape[0], 2 * qweight.shape[1]
    G = group_size(G, K, even=True)
    chk.f32("scales", scales, 2)
    chk.shape("scales", scales, (N, K // G))
    if zeros is None:
        zeros_arr, has_zeros = np.zeros((1, 1), np.uint8), False
    else:
        zeros_arr, has_zeros = chk.typed("zeros", zeros, 2, np.uint8), True
        chk.shape("zeros", zeros, (N, K // G))
    check_matmul_io(out, x, N, K)
    return N, K, G, zeros_arr, has_zeros


def threads_split(N: int, K: int) -> int:
    """Row chunks (4-aligned) for a quantized GEMV; 1 means run it serially."""
    return n_chunks_for(N, K)


@njit(cache=True)
def chunk_bounds(c, n_chunks, N):
    """Rows [lo, hi) of chunk c of n_chunks, lo a multiple of 4; the last chunk ends at N."""
    lo = (c * N // n_chunks) // 4 * 4
    hi = N if c == n_chunks - 1 else ((c + 1) * N // n_chunks) // 4 * 4
    return lo, hi
