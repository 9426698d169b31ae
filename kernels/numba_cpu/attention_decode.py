"""Paged decode attention: one query token per sequence against its whole cached context, read
through the block table, split over KV blocks and combined by log-sum-exp.

Work item = (sequence, split of SPLIT_KEYS keys); it handles every head, so each block's K and V
(block_size x n_kv_heads x head_dim, contiguous) stream front to back and each row is read once for
its whole GQA group. Per block of keys it computes the scores, rescales its running max / sum /
accumulator once, and accumulates p * V. Each item leaves a
partial (max m, sum l, accumulator); the combine step weights them by exp(m - max m). The split
size is fixed (not tied to the thread count), so the result does not depend on threads.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _checks as chk
from ._par import use_threads
from .attention import PARALLEL_MIN_FLOP, SPLIT_KEYS
from .gemm_micro import SUM
from .simd import exp_sum_inplace, f32x16_fma, f32x16_load, f32x16_splat, f32x16_store, f32x16_sum, f32x16_zero


@njit(cache=True, fastmath=SUM)
def _decode_split(q, k_cache, v_cache, block_table, b, k_lo, k_hi, k_first, scale, qs, s, pm, pl, pacc):
    # q: (B, H, hd); caches: (num_blocks, bs, KVH, hd); keys k_lo:k_hi of sequence b (k_lo a multiple of bs),
    # those before k_first (a sliding window's start, < k_lo + bs) masked out
    # qs: (H, hd), s: (H, bs) scratch; out: pm, pl (H,), pacc (H, hd) unnormalized.
    # Every head at once, so each block's K and V (bs x KVH x hd, contiguous) are read front to back;
    # rows are read with flat offsets into the caches (no views in the loops: no reference counting).
    bs, KVH, hd = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    H = q.shape[1]
    group = H // KVH
    hd16 = hd - hd % 16
    for h in range(H):
        for d in range(hd):
            qs[h, d] = q[b, h, d] * scale
            pacc[h, d] = np.float32(0.0)
        pm[h] = -np.inf
        pl[h] = np.float32(0.0)
    entry = k_lo // bs
    for p0 in range(k_lo, k_hi, bs):
        blk = block_table[entry]
        entry += 1
        nj = min(bs, k_hi - p0)
        for j in range(nj):
            for kvh in range(KVH):
                off = ((blk * bs + j) * KVH + kvh) * hd               # flat offset of this key's row
                for h in range(kvh * group, (kvh + 1) * group):
                    acc = f32x16_zero()
                    for d in range(0, hd16, 16):
                        acc = f32x16_fma(f32x16_load(qs, h * hd + d), f32x16_load(k_cache, off + d), acc)
                    sc = f32x16_sum(acc)
                    for d in range(hd16, hd):
                        sc += qs[h, d] * k_cache[blk, j, kvh, d]
                    s[h, j] = sc
        for j in range(min(nj, k_first - p0)):                 # before the window: not attended
            for h in range(H):
                s[h, j] = -np.inf
        for h in range(H):
            mt = s[h, 0]
            for j in range(1, nj):
                if s[h, j] > mt:
                    mt = s[h, j]
            m_new = max(pm[h], mt)
            alpha = np.exp(pm[h] - m_new)
            total = exp_sum_inplace(s[h], nj, m_new)
            pl[h] = pl[h] * alpha + total
            pm[h] = m_new
            for d in range(hd):
                pacc[h, d] *= alpha
        hd64 = hd - hd % 64
        for kvh in range(KVH):                                 # acc += P V, 64 columns x 4 heads in registers
            for h0 in range(kvh * group, (kvh + 1) * group, 4):
                nh = min(4, (kvh + 1) * group - h0)
                for dc in range(0, hd64, 64):
                    _pv_4x64(pacc, s, v_cache, ((blk * bs) * KVH + kvh) * hd + dc, KVH * hd, nj, h0, nh, dc)
                for h in range(h0, h0 + nh):
                    for d in range(hd64, hd):
                        a = np.float32(0.0)
                        for j in range(nj):
                            a += s[h, j] * v_cache[blk, j, kvh, d]
                        pacc[h, d] += a


@njit(cache=True, fastmath=SUM)
def _pv_4x64(pacc, s, v_cache, v0, stride, nj, h0, nh, dc):
    # pacc[h0:h0+nh, dc:dc+64] += s[h0:h0+nh, :nj] @ V rows (flat offsets v0 + j * stride); nh <= 4
    # (heads past nh repeat the last one and are not stored); V is read once for up to 4 heads
    hd = pacc.shape[1]
    r1, r2, r3 = h0 + min(1, nh - 1), h0 + min(2, nh - 1), h0 + min(3, nh - 1)
    a00, a01, a02, a03 = (f32x16_load(pacc, h0 * hd + dc), f32x16_load(pacc, h0 * hd + dc + 16),
                          f32x16_load(pacc, h0 * hd + dc + 32), f32x16_load(pacc, h0 * hd + dc + 48))
    a10, a11, a12, a13 = (f32x16_load(pacc, r1 * hd + dc), f32x16_load(pacc, r1 * hd + dc + 16),
                          f32x16_load(pacc, r1 * hd + dc + 32), f32x16_load(pacc, r1 * hd + dc + 48))
    a20, a21, a22, a23 = (f32x16_load(pacc, r2 * hd + dc), f32x16_load(pacc, r2 * hd + dc + 16),
                          f32x16_load(pacc, r2 * hd + dc + 32), f32x16_load(pacc, r2 * hd + dc + 48))
    a30, a31, a32, a33 = (f32x16_load(pacc, r3 * hd + dc), f32x16_load(pacc, r3 * hd + dc + 16),
                          f32x16_load(pacc, r3 * hd + dc + 32), f32x16_load(pacc, r3 * hd + dc + 48))
    for j in range(nj):
        off = v0 + j * stride
        b0 = f32x16_load(v_cache, off)
        b1 = f32x16_load(v_cache, off + 16)
        b2 = f32x16_load(v_cache, off + 32)
        b3 = f32x16_load(v_cache, off + 48)
        p = f32x16_splat(s[h0, j])
        a00, a01, a02, a03 = f32x16_fma(p, b0, a00), f32x16_fma(p, b1, a01), f32x16_fma(p, b2, a02), f32x16_fma(p, b3, a03)
        if nh > 1:
            p = f32x16_splat(s[r1, j])
            a10, a11, a12, a13 = f32x16_fma(p, b0, a10), f32x16_fma(p, b1, a11), f32x16_fma(p, b2, a12), f32x16_fma(p, b3, a13)
        if nh > 2:
            p = f32x16_splat(s[r2, j])
            a20, a21, a22, a23 = f32x16_fma(p, b0, a20), f32x16_fma(p, b1, a21), f32x16_fma(p, b2, a22), f32x16_fma(p, b3, a23)
        if nh > 3:
            p = f32x16_splat(s[r3, j])
            a30, a31, a32, a33 = f32x16_fma(p, b0, a30), f32x16_fma(p, b1, a31), f32x16_fma(p, b2, a32), f32x16_fma(p, b3, a33)
    _store4(pacc, h0 * hd + dc, a00, a01, a02, a03)
    if nh > 1:
        _store4(pacc, r1 * hd + dc, a10, a11, a12, a13)
    if nh > 2:
        _store4(pacc, r2 * hd + dc, a20, a21, a22, a23)
    if nh > 3:
        _store4(pacc, r3 * hd + dc, a30, a31, a32, a33)


@njit(cache=True, inline="always")
def _store4(arr, i, v0, v1, v2, v3):
    f32x16_store(arr, i, v0)
    f32x16_store(arr, i + 16, v1)
    f32x16_store(arr, i + 32, v2)
    f32x16_store(arr, i + 48, v3)


@njit(cache=True)
def _decode_item(it, q, k_cache, v_cache, block_tables, context_lens, scale, split_keys, window, pm, pl, pacc):
    # item it = (sequence b, split sp); pm, pl: (B, n_splits, H); pacc: (B, n_splits, H, hd);
    # window > 0: only the last `window` keys are attended, splits start at the window's first block
    n_splits = pm.shape[1]
    b = it // n_splits
    sp = it - b * n_splits
    k_first = max(0, context_lens[b] - window) if window > 0 else 0
    k_lo = k_first - k_first % k_cache.shape[1] + sp * split_keys
    k_hi = min(context_lens[b], k_lo + split_keys)
    H, hd = q.shape[1], q.shape[2]
    if k_lo >= k_hi:
        for h in range(H):
            pm[b, sp, h] = -np.inf
            pl[b, sp, h] = np.float32(0.0)
    else:
        qs = np.empty((H, hd), np.float32)
        s = np.empty((H, k_cache.shape[1]), np.float32)
        _decode_split(q, k_cache, v_cache, block_tables[b], b, k_lo, k_hi, k_first, np.float32(scale), qs, s,
                      pm[b, sp], pl[b, sp], pacc[b, sp])


@njit(cache=True, fastmath=SUM)
def _combine(bh, out, pm, pl, pacc):
    # out[b, h] from the splits' partials, weighted by exp(m_split - max m); empty splits have l = 0
    H = out.shape[1]
    b = bh // H
    h = bh - b * H
    m = -np.inf
    for sp in range(pm.shape[1]):
        m = max(m, pm[b, sp, h])
    total = np.float32(0.0)
    hd = out.shape[2]
    for d in range(hd):
        out[b, h, d] = np.float32(0.0)
    for sp in range(pm.shape[1]):
        if pl[b, sp, h] > 0:
            w = np.exp(pm[b, sp, h] - m)
            total += w * pl[b, sp, h]
            for d in range(hd):
                out[b, h, d] += w * pacc[b, sp, h, d]
    inv = np.float32(1.0) / total
    for d in range(hd):
        out[b, h, d] *= inv


@njit(cache=True)
def _partials(B, n_splits, H, hd):
    return (np.empty((B, n_splits, H), np.float32), np.empty((B, n_splits, H), np.float32),
            np.empty((B, n_splits, H, hd), np.float32))


@njit(cache=True, parallel=True)
def decode_parallel(out, q, k_cache, v_cache, block_tables, context_lens, scale, split_keys, window):
    # out, q: (B, H, hd); items (sequence, split) over threads, then the combine
    B, H, hd = q.shape
    n_splits = (context_lens.max() + split_keys - 1) // split_keys
    pm, pl, pacc = _partials(B, n_splits, H, hd)
    for it_ in prange(B * n_splits):
        it = np.int64(it_)          # (uint64 in a prange: one specialization)
        _decode_item(it, q, k_cache, v_cache, block_tables, context_lens, scale, split_keys, window, pm, pl, pacc)
    for bh_ in prange(B * H):
        bh = np.int64(bh_)          # (uint64 in a prange: one specialization)
        _combine(bh, out, pm, pl, pacc)


@njit(cache=True)
def decode_serial(out, q, k_cache, v_cache, block_tables, context_lens, scale, split_keys, window):
    B, H, hd = q.shape
    n_splits = (context_lens.max() + split_keys - 1) // split_keys
    pm, pl, pacc = _partials(B, n_splits, H, hd)
    for it in range(B * n_splits):
        _decode_item(it, q, k_cache, v_cache, block_tables, context_lens, scale, split_keys, window, pm, pl, pacc)
    for bh in range(B * H):
        _combine(bh, out, pm, pl, pacc)


def split_keys_for(block_size: int) -> int:
    """Keys per split: SPLIT_KEYS rounded up to whole blocks."""
    return -(-SPLIT_KEYS // block_size) * block_size


def paged_decode_attention(out, q, k_cache, v_cache, block_tables, context_lens, scale, window=0):
    """out, q: (B, n_heads, head_dim) float32; k_cache, v_cache: (num_blocks, block_size, n_kv_heads,
    head_dim); block_tables: (B, max_blocks) int; context_lens: (B,) int, each >= 1; window: 0 (all),
    else only the last ``window`` keys of each context."""
    window = chk.window(window)
    num_blocks, bs, kvh, hd = chk.paged_cache(k_cache, v_cache)
    chk.f32("q", q, 3)
    chk.f32("out", out, 3, writable=True)
    chk.shape("out", out, q.shape)
    group = chk.heads("q", q, kvh, hd)
    B = q.shape[0]
    block_tables = chk.index("block_tables", block_tables, 2)
    context_lens = chk.index("context_lens", context_lens, 1)
    chk.shape("context_lens", context_lens, (B,), " (one per query row of q)")
    chk.shape("block_tables", block_tables, (B, block_tables.shape[1]), f" (B={B} rows)")
    if B and context_lens.min() < 1:
        raise ValueError(f"context_lens must be >= 1 (the query's own K/V is cached), got {context_lens.min()}")
    chk.block_tables_used(block_tables, -(-context_lens // bs), num_blocks)
    scale = chk.finite_float("scale", scale)
    if out.size:
        args = (out, q, k_cache, v_cache, block_tables, context_lens, scale, split_keys_for(bs), window)
        work = int(context_lens.sum()) * q.shape[1] * hd
        (decode_parallel if use_threads(work, PARALLEL_MIN_FLOP) else decode_serial)(*args)
    return out
