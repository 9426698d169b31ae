"""Embedding, SwiGLU's silu-mul, the residual add, the paged KV-cache write, argmax and softmax.

Memory-bound one-pass kernels. silu_mul and add split big inputs over threads; the rest are
small per step (a few rows) and run serially, so they pay no parallel launch.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _checks as chk
from .norm_rope import row_chunks
from .simd import (f32x16_add, f32x16_div, f32x16_exp, f32x16_load_masked, f32x16_mul, f32x16_splat,
                   f32x16_store_masked, f32x16_sub, f32x16_zero)


@njit(cache=True)
def embedding_kernel(out, tokens, table):
    # out: (T, D) float32; tokens: (T,) int64 in [0, V); table: (V, D)
    for t in range(tokens.shape[0]):
        row = table[tokens[t]]
        for d in range(table.shape[1]):
            out[t, d] = row[d]


def embedding(out, tokens, table):
    """out: (T, D) float32; tokens: (T,) int; table: (V, D) float32."""
    chk.f32("table", table, 2)
    chk.f32("out", out, 2, writable=True)
    tokens = chk.index("tokens", tokens, 1)
    chk.shape("out", out, (tokens.shape[0], table.shape[1]))
    chk.in_range("tokens", tokens, 0, table.shape[0])
    embedding_kernel(out, tokens, table)
    return out


@njit(cache=True)
def _silu_mul_span(out, gate, up, lo, hi):
    # out, gate, up: (n,) float32 flat; elements lo:hi, 16 lanes at a time (vector exp), a masked tail
    one = f32x16_splat(np.float32(1.0))
    zero = np.float32(0.0)
    for i in range(lo, hi, 16):
        n = min(16, hi - i)
        g = f32x16_load_masked(gate, i, n, zero)
        sig = f32x16_div(one, f32x16_add(one, f32x16_exp(f32x16_sub(f32x16_zero(), g))))
        f32x16_store_masked(out, i, n, f32x16_mul(f32x16_mul(g, sig), f32x16_load_masked(up, i, n, zero)))


@njit(cache=True, parallel=True)
def silu_mul_kernel(out, gate, up, n_chunks):
    n = out.shape[0]
    for c_ in prange(n_chunks):
        c = np.int64(c_)          # (uint64 in a prange: one specialization)
        _silu_mul_span(out, gate, up, c * n // n_chunks, (c + 1) * n // n_chunks)


@njit(cache=True)
def silu_mul_serial(out, gate, up):
    _silu_mul_span(out, gate, up, np.int64(0), out.shape[0])


@njit(cache=True)
def _add_span(out, x, y, lo, hi):
    for i in range(lo, hi):
        out[i] = x[i] + y[i]


@njit(cache=True, parallel=True)
def add_kernel(out, x, y, n_chunks):
    n = out.shape[0]
    for c_ in prange(n_chunks):
        c = np.int64(c_)          # (uint64 in a prange: one specialization)
        _add_span(out, x, y, c * n // n_chunks, (c + 1) * n // n_chunks)


@njit(cache=True)
def add_serial(out, x, y):
    _add_span(out, x, y, np.int64(0), out.shape[0])


def _flat_same_shape(out, a, b, names):
    """Three C-contiguous float32 arrays of one shape, as flat views."""
    for name, arr in zip(names, (out, a, b)):
        chk.f32(name, arr, getattr(arr, "ndim", -1), writable=name == "out")
    for name, arr in zip(names[1:], (a, b)):
        chk.shape(name, arr, out.shape, " (the shape of out)")
    return out.reshape(-1), a.reshape(-1), b.reshape(-1)


def silu_mul(out, gate, up):
    """out, gate, up: (T, H) float32 (out may be gate). out = silu(gate) * up."""
    o, g, u = _flat_same_shape(out, gate, up, ("out", "gate", "up"))
    n = row_chunks(1, o.shape[0])
    silu_mul_serial(o, g, u) if n == 1 else silu_mul_kernel(o, g, u, n)
    return out


def add(out, x, y):
    """out, x, y: same shape float32 (out may alias x). The residual connection."""
    o, a, b = _flat_same_shape(out, x, y, ("out", "x", "y"))
    n = row_chunks(1, o.shape[0])
    add_serial(o, a, b) if n == 1 else add_kernel(o, a, b, n)
    return out


@njit(cache=True)
def bias_add_kernel(out, x, bias):
    # out, x: (T, N) float32 (out may be x); bias: (N,)
    for t in range(x.shape[0]):
        for i in range(x.shape[1]):
            out[t, i] = x[t, i] + bias[i]


def bias_add(out, x, bias):
    """out, x: (T, N) float32 (out may be x); bias: (N,). out = x + bias per row."""
    chk.f32("x", x, 2)
    chk.f32("bias", bias, 1)
    chk.f32("out", out, 2, writable=True)
    chk.shape("out", out, x.shape)
    chk.shape("bias", bias, (x.shape[1],))
    bias_add_kernel(out, x, bias)
    return out


@njit(cache=True)
def kv_cache_write_kernel(k_cache, v_cache, k, v, slot_mapping):
    # k_cache, v_cache: (num_blocks, block_size, KVH, hd); k, v: (T, KVH, hd); slot_mapping: (T,) int64
    block_size = k_cache.shape[1]
    for t in range(slot_mapping.shape[0]):
        blk = slot_mapping[t] // block_size
        off = slot_mapping[t] % block_size
        for h in range(k.shape[1]):
            for d in range(k.shape[2]):
                k_cache[blk, off, h, d] = k[t, h, d]
                v_cache[blk, off, h, d] = v[t, h, d]


def kv_cache_write(k_cache, v_cache, k, v, slot_mapping):
    """k_cache, v_cache: (num_blocks, block_size, n_kv_heads, head_dim) float32; k, v: (T, n_kv_heads,
    head_dim); slot_mapping: (T,) int, slot = block_id * block_size + offset, in [0, num_blocks * block_size)."""
    num_blocks, block_size, kvh, hd = chk.paged_cache(k_cache, v_cache)
    for name, arr in (("k_cache", k_cache), ("v_cache", v_cache)):
        chk.f32(name, arr, 4, writable=True)
    chk.f32("k", k, 3)
    chk.f32("v", v, 3)
    slot_mapping = chk.index("slot_mapping", slot_mapping, 1)
    chk.shape("k", k, (slot_mapping.shape[0], kvh, hd), " (T, n_kv_heads, head_dim of the cache)")
    chk.shape("v", v, k.shape)
    chk.in_range("slot_mapping", slot_mapping, 0, num_blocks * block_size)
    kv_cache_write_kernel(k_cache, v_cache, k, v, slot_mapping)
    return k_cache, v_cache


@njit(cache=True)
def argmax_kernel(out, logits):
    # out: (B,) int64; logits: (B, V) float32, V >= 1. First maximum; a NaN wins, as in numpy.
    for b in range(logits.shape[0]):
        best = 0
        m = logits[b, 0]
        if m == m:
            for i in range(1, logits.shape[1]):
                x = logits[b, i]
                if x != x:
                    best = i
                    break
                if x > m:
                    m = x
                    best = i
        out[b] = best


def argmax(out, logits):
    """out: (B,) int64; logits: (B, V) float32, V >= 1."""
    chk.f32("logits", logits, 2)
    chk.typed("out", out, 1, np.int64, writable=True)
    chk.shape("out", out, (logits.shape[0],))
    if logits.shape[1] == 0:
        raise ValueError("logits has no columns (V = 0): argmax of an empty row")
    argmax_kernel(out, logits)
    return out


@njit(cache=True)
def softmax_kernel(out, logits, temperature):
    # out, logits: (B, V) float32, V >= 1; temperature: float32 > 0
    B, V = logits.shape
    for b in range(B):
        m = logits[b, 0] / temperature
        for i in range(V):
            x = logits[b, i] / temperature
            out[b, i] = x
            if x > m or x != x:         # NaN propagates into the max, as np.max does
                m = x if m == m else m
        total = 0.0                     # float64 sum: close to numpy's pairwise float32 sum
        for i in range(V):
            p = np.exp(out[b, i] - m)
            out[b, i] = p
            total += p
        total32 = np.float32(total)
        for i in range(V):
            out[b, i] = out[b, i] / total32


def softmax(out, logits, temperature):
    """out, logits: (B, V) float32; softmax(logits / temperature), temperature > 0."""
    chk.f32("logits", logits, 2)
    chk.f32("out", out, 2, writable=True)
    chk.shape("out", out, logits.shape)
    if logits.shape[1] == 0:
        raise ValueError("logits has no columns (V = 0): softmax of an empty row")
    temperature = chk.finite_float("temperature", temperature, positive=True)
    softmax_kernel(out, logits, np.float32(temperature))
    return out
