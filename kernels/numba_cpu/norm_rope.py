"""RMSNorm and RoPE (adjacent pairs), computed in the reference's float32 order.

Each op has a row kernel (``_*_rows``) run serially for small inputs and split over threads
(prange over row chunks) for large ones, so a one-token decode pays no parallel launch.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from . import _checks as chk
from ._par import use_threads

SUM = {"reassoc", "contract"}      # lets LLVM vectorize float32 sums; keeps NaN/inf semantics
PARALLEL_MIN = 1 << 15             # elements below which one thread does the whole op


def row_chunks(n_rows: int, row_len: int) -> int:
    """How many chunks to split n_rows rows of row_len elements into (1: run serially)."""
    if not use_threads(n_rows * row_len, PARALLEL_MIN):
        return 1
    return min(n_rows, 64)


@njit(cache=True, fastmath=SUM)
def _rmsnorm_rows(out, x, weight, eps, t0, t1):
    # out, x: (T, D) float32; weight: (D,); rows t0:t1
    D = x.shape[1]
    for t in range(t0, t1):
        ss = np.float32(0.0)
        for d in range(D):
            ss += x[t, d] * x[t, d]
        ms = ss / np.float32(D)
        inv = np.float32(1.0) / np.sqrt(ms + eps)
        for d in range(D):
            out[t, d] = (x[t, d] * inv) * weight[d]


@njit(cache=True)
def rmsnorm_serial(out, x, weight, eps):
    _rmsnorm_rows(out, x, weight, np.float32(eps), np.int64(0), x.shape[0])


@njit(cache=True, parallel=True)
def rmsnorm_parallel(out, x, weight, eps, n_chunks):
    T = x.shape[0]
    for c_ in prange(n_chunks):
        c = np.int64(c_)          # (uint64 in a prange: one specialization)
        _rmsnorm_rows(out, x, weight, np.float32(eps), c * T // n_chunks, (c + 1) * T // n_chunks)


def rmsnorm(out, x, weight, eps):
    """out, x: (T, D) float32 (out may be x); weight: (D,) float32."""
    chk.f32("x", x, 2)
    chk.f32("weight", weight, 1)
    chk.f32("out", out, 2, writable=True)
    chk.shape("weight", weight, (x.shape[1],), f" (x has D={x.shape[1]})")
    chk.shape("out", out, x.shape)
    eps = chk.finite_float("eps", eps)
    n = row_chunks(*x.shape)
    if n == 1:
        rmsnorm_serial(out, x, weight, eps)
    else:
        rmsnorm_parallel(out, x, weight, eps, n)
    return out


@njit(cache=True)
def _rope_rows(out, x, positions, freq, t0, t1):
    # out, x: (T, H * hd) float32 (out may be x); positions: (T,) int64; freq: (hd/2,)
    half = freq.shape[0]
    n_pairs = x.shape[1] // 2
    cos = np.empty(half, np.float32)
    sin = np.empty(half, np.float32)
    for t in range(t0, t1):
        pos = np.float32(positions[t])
        for i in range(half):
            angle = np.float64(pos * freq[i])
            cos[i] = np.float32(np.cos(angle))
            sin[i] = np.float32(np.sin(angle))
        for p in range(n_pairs):
            i = p % half
            x0 = x[t, 2 * p]
            x1 = x[t, 2 * p + 1]
            out[t, 2 * p] = x0 * cos[i] - x1 * sin[i]
            out[t, 2 * p + 1] = x0 * sin[i] + x1 * cos[i]


@njit(cache=True)
def rope_serial(out, x, positions, freq):
    _rope_rows(out, x, positions, freq, np.int64(0), x.shape[0])


@njit(cache=True, parallel=True)
def rope_parallel(out, x, positions, freq, n_chunks):
    T = x.shape[0]
    for c_ in prange(n_chunks):
        c = np.int64(c_)          # (uint64 in a prange: one specialization)
        _rope_rows(out, x, positions, freq, c * T // n_chunks, (c + 1) * T // n_chunks)


def rope(out, x, positions, inv_freq):
    """out, x: (T, n_heads * head_dim) float32 (out may be x); positions: (T,) int;
    inv_freq: (head_dim / 2,) float32 (the numpy reference's table, pyinfer/rope.py)."""
    chk.f32("x", x, 2)
    chk.f32("out", out, 2, writable=True)
    chk.f32("inv_freq", inv_freq, 1)
    chk.shape("out", out, x.shape)
    positions = chk.index("positions", positions, 1)
    chk.shape("positions", positions, (x.shape[0],))
    head_dim = 2 * inv_freq.shape[0]
    if head_dim < 2 or x.shape[1] % head_dim:
        raise ValueError(f"inv_freq has {inv_freq.shape[0]} entries: head_dim={head_dim} must divide "
                         f"x's width {x.shape[1]}")
    n = row_chunks(*x.shape)
    freq = inv_freq
    if n == 1:
        rope_serial(out, x, positions, freq)
    else:
        rope_parallel(out, x, positions, freq, n)
    return out
