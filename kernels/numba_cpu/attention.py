"""Attention: FlashAttention-style causal prefill over a paged (or contiguous) cache, and paged
decode split over KV blocks combined by log-sum-exp. GQA throughout: the query heads sharing a
KV head are processed together, so each K/V tile is read once for the whole group.

Prefill, in two passes. First every sequence's K and V are gathered through its block table into
tiles of BK keys per KV head, K transposed (hd, BK) and V as rows (BK, hd), zero past the context.
Then work item = (sequence, KV head, tile of BQ queries): its rows are (query, head) pairs,
R = BQ * group; per key tile, S = Q K^T and acc += P V run on the broadcast GEMM micro-kernel
(gemm_micro.gemm_bcast) and the running max / sum (online softmax) rescale the accumulator. Only
keys a tile's queries can see are visited (causal, bottom-right aligned: query i of T sees keys
0 .. S - T + i); nothing of size T x S is ever allocated. Items are dealt round-robin to threads
(causal tiles differ in cost), and each item is computed the same way whatever the thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _checks as chk
from ._par import n_threads, use_threads
from .gemm_micro import SUM, gemm_bcast
from .simd import exp_sum_inplace, row_max

BK = 64                  # keys per tile
ROWS = 64                # query rows (query x head) per prefill tile
SPLIT_KEYS = 256         # keys per decode split (rounded up to whole blocks)
PARALLEL_MIN_FLOP = 1 << 18   # multiply-adds below which one thread runs the whole op


@njit(cache=True)
def _tile_offsets(context_lens):
    # (B + 1,) int64: sequence b's key tiles are tiles[off[b]:off[b+1]]
    off = np.zeros(context_lens.shape[0] + 1, np.int64)
    for b in range(context_lens.shape[0]):
        off[b + 1] = off[b] + (context_lens[b] + BK - 1) // BK
    return off


@njit(cache=True)
def _gather_tile(KT, V, k_cache, v_cache, block_table, S, tile, t_glob):
    # KT: (n_tiles, KVH, hd, BK), V: (n_tiles, KVH, BK, hd); keys tile*BK .. of one sequence (S keys)
    bs, KVH, hd = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    p0 = tile * BK
    entry = p0 // bs
    off = p0 - entry * bs
    for j in range(BK):
        if p0 + j < S:
            blk = block_table[entry]
            for h in range(KVH):
                for d in range(hd):
                    KT[t_glob, h, d, j] = k_cache[blk, off, h, d]
                    V[t_glob, h, j, d] = v_cache[blk, off, h, d]
            off += 1
            if off == bs:
                off = 0
                entry += 1
        else:
            for h in range(KVH):
                for d in range(hd):
                    KT[t_glob, h, d, j] = np.float32(0.0)
                    V[t_glob, h, j, d] = np.float32(0.0)


@njit(cache=True, fastmath=SUM)
def _prefill_item(out, q, KT, V, t0, row0, T, S, kvh, i0, i1, group, scale, window, Qs, St, acc, m, l):
    # out, q: (T_all, H, hd); KT: (n_tiles, KVH, hd, BK), V: (n_tiles, KVH, BK, hd), this sequence's from t0;
    # its queries are rows row0 .. row0+T-1, its keys 0 .. S-1; item: queries i0:i1 of KV head kvh.
    # scratch: Qs (R, hd) scaled queries; St (R, BK) scores then probabilities; acc (R, hd), m, l (R,)
    hd = q.shape[2]
    R = (i1 - i0) * group
    Qr, Sr, Ar = Qs[:R], St[:R], acc[:R]
    for r in range(R):
        qr = q[row0 + i0 + r // group, kvh * group + r % group]
        for d in range(hd):
            Qs[r, d] = qr[d] * scale
            acc[r, d] = np.float32(0.0)
        m[r] = -np.inf
        l[r] = np.float32(0.0)
    n_keys = S - T + i1                                        # keys the last query sees
    # window > 0: query at position p sees keys p - window + 1 .. p; tiles before the first query's skipped
    first_key = max(0, S - T + i0 + 1 - window) if window > 0 else 0
    tile = t0 + first_key // BK
    for kt0 in range(first_key - first_key % BK, n_keys, BK):
        nk = min(BK, n_keys - kt0)
        gemm_bcast(Sr, Qr, KT[tile, kvh], np.int64(0), hd, hd < 0)   # (R, BK) scores; columns >= nk unused
        for r in range(R):
            jn = min(nk, S - T + i0 + r // group + 1 - kt0)    # keys of this tile row r sees
            j0 = max(0, S - T + i0 + r // group + 1 - window - kt0) if window > 0 else 0   # ... from j0
            sr = St[r]
            if jn <= j0:
                for j in range(BK):
                    sr[j] = np.float32(0.0)
                continue
            for j in range(j0):
                sr[j] = -np.inf
            m_new = max(m[r], row_max(sr, jn))
            alpha = np.exp(m[r] - m_new)
            total = exp_sum_inplace(sr, jn, m_new)
            for j in range(jn, BK):
                sr[j] = np.float32(0.0)
            l[r] = l[r] * alpha + total
            m[r] = m_new
            for d in range(hd):
                acc[r, d] *= alpha
        gemm_bcast(Ar, Sr, V[tile, kvh], np.int64(0), nk, nk > 0)    # acc += P V of this tile
        tile += 1
    for r in range(R):
        inv = np.float32(1.0) / l[r]
        o = out[row0 + i0 + r // group, kvh * group + r % group]
        for d in range(hd):
            o[d] = acc[r, d] * inv


@njit(cache=True)
def _prefill_items(cu_seqlens_q, KVH, bq):
    # (n_items, 3) int64 rows (sequence, kv head, first query), costliest (last) query tiles first
    B = cu_seqlens_q.shape[0] - 1
    n_items = 0
    max_tiles = 0
    for b in range(B):
        tiles = (cu_seqlens_q[b + 1] - cu_seqlens_q[b] + bq - 1) // bq
        n_items += KVH * tiles
        max_tiles = max(max_tiles, tiles)
    items = np.empty((n_items, 3), np.int64)
    n = 0
    for tile in range(max_tiles - 1, -1, -1):
        for b in range(B):
            if tile * bq < cu_seqlens_q[b + 1] - cu_seqlens_q[b]:
                for kvh in range(KVH):
                    items[n, 0] = b
                    items[n, 1] = kvh
                    items[n, 2] = tile * bq
                    n += 1
    return items


@njit(cache=True)
def _gather_all(w, n_workers, KT, V, toff, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens):
    # tiles w, w + n_workers, ... of every sequence with queries
    for b in range(context_lens.shape[0]):
        if cu_seqlens_q[b + 1] > cu_seqlens_q[b]:
            for tile in range(toff[b + 1] - toff[b]):
                if (toff[b] + tile) % n_workers == w:
                    _gather_tile(KT, V, k_cache, v_cache, block_tables[b], context_lens[b], tile, toff[b] + tile)


@njit(cache=True)
def _prefill_worker(w, n_workers, items, out, q, KT, V, toff, cu_seqlens_q, context_lens, scale, group, bq, window):
    # items w, w + n_workers, ... with one set of scratch buffers
    R = bq * group
    hd = q.shape[2]
    Qs = np.empty((R, hd), np.float32)
    St = np.empty((R, BK), np.float32)
    acc = np.empty((R, hd), np.float32)
    m = np.empty(R, np.float32)
    l = np.empty(R, np.float32)
    for it in range(w, items.shape[0], n_workers):
        b = items[it, 0]
        T = cu_seqlens_q[b + 1] - cu_seqlens_q[b]
        i0 = items[it, 2]
        _prefill_item(out, q, KT, V, toff[b], cu_seqlens_q[b], T, context_lens[b], items[it, 1], i0,
                      min(T, i0 + bq), group, np.float32(scale), window, Qs, St, acc, m, l)


@njit(cache=True)
def _tiles_for(q, k_cache, context_lens):
    toff = _tile_offsets(context_lens)
    KVH, hd = k_cache.shape[2], k_cache.shape[3]
    n = toff[-1]
    return toff, np.empty((n, KVH, hd, BK), np.float32), np.empty((n, KVH, BK, hd), np.float32)


@njit(cache=True, parallel=True)
def prefill_parallel(out, q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale, group, bq,
                     window, n_threads):
    # gather the K/V tiles, then items (sequence, kv head, query tile) dealt round-robin over the threads
    toff, KT, V = _tiles_for(q, k_cache, context_lens)
    for w_ in prange(n_threads):
        w = np.int64(w_)          # (uint64 in a prange: one specialization)
        _gather_all(w, n_threads, KT, V, toff, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens)
    items = _prefill_items(cu_seqlens_q, k_cache.shape[2], bq)
    n_workers = min(n_threads, max(items.shape[0], 1))
    for w_ in prange(n_workers):
        w = np.int64(w_)          # (uint64 in a prange: one specialization)
        _prefill_worker(w, n_workers, items, out, q, KT, V, toff, cu_seqlens_q, context_lens, scale, group, bq,
                        window)


@njit(cache=True)
def prefill_serial(out, q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale, group, bq, window):
    # all on the calling thread (small prompts: a parallel launch would cost more)
    toff, KT, V = _tiles_for(q, k_cache, context_lens)
    one = np.int64(1)
    _gather_all(one - 1, one, KT, V, toff, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens)
    items = _prefill_items(cu_seqlens_q, k_cache.shape[2], bq)
    _prefill_worker(one - 1, one, items, out, q, KT, V, toff, cu_seqlens_q, context_lens, scale, group, bq, window)


def query_tile(group: int) -> int:
    return max(1, ROWS // group)


def paged_prefill_attention(out, q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale, window=0):
    """out, q: (T_total, n_heads, head_dim) float32; k_cache, v_cache: (num_blocks, block_size, n_kv_heads,
    head_dim); block_tables: (B, max_blocks) int; cu_seqlens_q: (B + 1,) int; context_lens: (B,) int;
    window: 0 (full causal), else each query sees only its last ``window`` positions."""
    window = chk.window(window)
    num_blocks, bs, kvh, hd = chk.paged_cache(k_cache, v_cache)
    chk.f32("q", q, 3)
    chk.f32("out", out, 3, writable=True)
    chk.shape("out", out, q.shape)
    group = chk.heads("q", q, kvh, hd)
    block_tables = chk.index("block_tables", block_tables, 2)
    cu = chk.index("cu_seqlens_q", cu_seqlens_q, 1)
    context_lens = chk.index("context_lens", context_lens, 1)
    B = context_lens.shape[0]
    chk.shape("cu_seqlens_q", cu, (B + 1,), " (B + 1 for B context_lens)")
    chk.shape("block_tables", block_tables, (B, block_tables.shape[1]), f" (B={B} rows)")
    q_lens = np.diff(cu)
    if B and (q_lens.min() < 0 or cu[0] < 0 or cu[-1] > q.shape[0]):
        raise ValueError(f"cu_seqlens_q must be non-decreasing within [0, {q.shape[0]}], got {cu.tolist()}")
    active = q_lens > 0
    ctx = np.where(active, context_lens, 0)
    if np.any(ctx < q_lens):
        b = int(np.flatnonzero(ctx < q_lens)[0])
        raise ValueError(f"sequence {b}: {q_lens[b]} queries but context_lens={context_lens[b]} "
                         "(queries are the last positions of the context)")
    chk.block_tables_used(block_tables, -(-ctx // bs), num_blocks)
    scale = chk.finite_float("scale", scale)
    if B and q_lens.sum() and out.size:
        args = (out, q, k_cache, v_cache, block_tables, cu, ctx, scale, group, query_tile(group), window)
        pairs = int(np.dot(q_lens, ctx))                       # (query, key) pairs, causal mask ignored
        if use_threads(pairs * q.shape[1] * hd, PARALLEL_MIN_FLOP):
            prefill_parallel(*args, n_threads())
        else:
            prefill_serial(*args)
    return out


def attention_prefill(out, q, k, v, scale, window=0):
    """Causal GQA attention over contiguous K/V. out, q: (T, n_heads, head_dim) float32;
    k, v: (S, n_kv_heads, head_dim), S >= T; query i sees keys 0 .. S - T + i (the last ``window``
    of them when window > 0)."""
    chk.f32("k", k, 3)
    chk.f32("v", v, 3)
    chk.shape("v", v, k.shape, " (the shape of k)")
    chk.f32("q", q, 3)
    chk.f32("out", out, 3, writable=True)
    chk.shape("out", out, q.shape)
    chk.heads("q", q, k.shape[1], k.shape[2])
    T, S = q.shape[0], k.shape[0]
    if T > S:
        raise ValueError(f"attention_prefill: {T} queries but only {S} keys (queries are the last T positions)")
    if T == 0:
        return out
    one = np.zeros((1, 1), np.int64)                           # the whole context is block 0
    return paged_prefill_attention(out, q, k[None], v[None], one, np.array([0, T], np.int64),
                                   np.array([S], np.int64), scale, window)
