"""Attention over the paged KV cache: Flash-Decoding for one query token per sequence, and the
varlen causal prefill (attention.py's kernel reading K/V through block tables).

Decode (``paged_decode_attention``): grid (sequence, KV head, split). A program takes the GROUP
query heads that share one KV head (GQA packed into the rows of a tensor-core product, padded to
16), walks its split of the context in BLOCK_T-token tiles gathered through the block table (any
block size 1..256: each token's slot is block_table[t // PAGE] * PAGE + t % PAGE, so a tile may
span many small pages or part of a large one), and keeps an online softmax. With one split it
writes the output; otherwise each split writes its normalized partial output and log-sum-exp
(base 2), and a combine kernel weighs the splits by exp2(lse - max lse). The split count comes
from an upper bound of the context known on the host (block table width x block size): no
device-to-host sync; splits past a sequence's end exit at once and the combine ignores them.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (check_float, check_index, check_shape, device_of, dot_upcast, interpreting,
                      launch_opts, mma, pow2)
from .attention import LOG2E, check_qkv, check_window, paged_prefill_launch


@triton.jit
def _decode_kernel(Q, K, V, O, OP, LSE, block_tables, context_lens, qk_scale,
                   stride_qb, stride_qh, stride_kb, stride_kt, stride_kh, stride_ob, stride_oh,
                   stride_bt, split_len, num_splits, window,
                   GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                   BLOCK_D: tl.constexpr, PAGE: tl.constexpr, BLOCK_T: tl.constexpr,
                   DIRECT: tl.constexpr, UPCAST: tl.constexpr):
    """grid (B, KVH, num_splits). Q, O: (B, H, D); K, V: (num_blocks, PAGE, KVH, D);
    OP: (B, H, num_splits, D) float32, LSE: (B, H, num_splits) float32 (unused when DIRECT)."""
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    sp = tl.program_id(2)
    ctx = tl.load(context_lens + b).to(tl.int32)
    start = sp * split_len
    first = tl.where(window > 0, tl.maximum(ctx - window, 0), 0)             # the window's first key
    end = tl.minimum(ctx, start + split_len)
    if (start >= ctx) | (end <= first):
        return
    start = tl.maximum(start, (first // BLOCK_T) * BLOCK_T)                  # tiles before it skipped
    g = tl.arange(0, GROUP_PAD)
    heads = kvh * GROUP + g                                                   # (GP,)
    d = tl.arange(0, BLOCK_D)
    hd_ok = (g < GROUP)[:, None] & (d < HEAD_DIM)[None, :]                   # (GP, BD)
    q = tl.load(Q + b.to(tl.int64) * stride_qb + heads[:, None] * stride_qh + d[None, :],
                mask=hd_ok, other=0.0)                                        # (GP, BD)
    bt_row = block_tables + b.to(tl.int64) * stride_bt
    kv_head = kvh.to(tl.int64) * stride_kh
    m_i = tl.full((GROUP_PAD,), float("-inf"), tl.float32)
    l_i = tl.zeros((GROUP_PAD,), tl.float32)
    acc = tl.zeros((GROUP_PAD, BLOCK_D), tl.float32)
    for t0 in range(start, end, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        t_ok = (t < end) & (t >= first)
        page = tl.load(bt_row + t // PAGE, mask=t_ok, other=0).to(tl.int64)
        off = page * stride_kb + (t % PAGE).to(tl.int64) * stride_kt + kv_head   # (BT,)
        kv_ok = t_ok[:, None] & (d < HEAD_DIM)[None, :]
        k = tl.load(K + off[:, None] + d[None, :], mask=kv_ok, other=0.0)       # (BT, BD)
        s = mma(q, tl.trans(k), tl.zeros((GROUP_PAD, BLOCK_T), tl.float32), UPCAST) * qk_scale
        s = tl.where(t_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(V + off[:, None] + d[None, :], mask=kv_ok, other=0.0)       # (BT, BD)
        acc = mma(p.to(v.dtype), v, acc * alpha[:, None], UPCAST)
        m_i = m_new
    acc = acc / l_i[:, None]
    if DIRECT:
        tl.store(O + b.to(tl.int64) * stride_ob + heads[:, None] * stride_oh + d[None, :],
                 acc.to(O.dtype.element_ty), mask=hd_ok)
    else:
        H = tl.num_programs(1) * GROUP
        row = (b * H + heads).to(tl.int64) * num_splits + sp                     # (GP,)
        tl.store(OP + row[:, None] * HEAD_DIM + d[None, :], acc, mask=hd_ok)
        tl.store(LSE + row, m_i + tl.log2(l_i), mask=g < GROUP)


@triton.jit
def _combine_kernel(OP, LSE, O, context_lens, split_len, num_splits, window, stride_ob, stride_oh,
                    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, SPLITS_PAD: tl.constexpr):
    """grid (B, H): out = sum_s exp2(lse_s - max) o_s / sum_s exp2(lse_s - max) over live splits."""
    b = tl.program_id(0)
    h = tl.program_id(1)
    H = tl.num_programs(1)
    ctx = tl.load(context_lens + b).to(tl.int32)
    s = tl.arange(0, SPLITS_PAD)
    first = tl.where(window > 0, tl.maximum(ctx - window, 0), 0)
    s_ok = (s < tl.cdiv(ctx, split_len)) & ((s + 1) * split_len > first)     # splits that ran
    row = (b * H + h).to(tl.int64) * num_splits + s                          # (SP,)
    lse = tl.load(LSE + row, mask=s_ok, other=float("-inf"))
    w = tl.exp2(lse - tl.max(lse, axis=0))                                    # (SP,), 0 where dead
    d = tl.arange(0, BLOCK_D)
    o = tl.load(OP + row[:, None] * HEAD_DIM + d[None, :], mask=s_ok[:, None] & (d < HEAD_DIM)[None, :],
                other=0.0)                                                    # (SP, BD)
    out = tl.sum(o * w[:, None], axis=0) / tl.sum(w, axis=0)
    tl.store(O + b.to(tl.int64) * stride_ob + h * stride_oh + d, out.to(O.dtype.element_ty),
             mask=d < HEAD_DIM)


def default_config(B: int, n_kv_heads: int, max_context: int, head_dim: int, *, sm_count: int = 1,
                   interpret: bool = False) -> dict:
    """Tile and split length: enough splits that B x KVH x splits programs fill the GPU about four
    deep; under the interpreter, one split and big tiles (its cost is per program and per op)."""
    if interpret:
        block_t = min(128, pow2(max_context, 16))
        return {"BLOCK_T": block_t, "split_len": triton.cdiv(max_context, block_t) * block_t}
    block_t = 64 if head_dim <= 128 else 32
    splits = max(1, min(triton.cdiv(4 * sm_count, B * n_kv_heads), triton.cdiv(max_context, block_t)))
    split_len = triton.cdiv(triton.cdiv(max_context, splits), block_t) * block_t
    return {"BLOCK_T": block_t, "split_len": split_len, "num_warps": 4, "num_stages": 3}


def paged_decode_attention(out, q, k_cache, v_cache, block_tables, context_lens, scale, window=0, *,
                           ctx=None, config=None):
    """out, q: (B, H, hd); k_cache, v_cache: (num_blocks, block_size, KVH, hd); block_tables:
    (B, max_blocks) int; context_lens: (B,) int >= 1 (the query's own K/V included); window: 0 (all),
    else only the last ``window`` keys of each context.
    config: {"BLOCK_T", "split_len" (a multiple of BLOCK_T), "num_warps", "num_stages"}."""
    dev = device_of(ctx, q)
    window = check_window(window)
    check_qkv(q, k_cache, v_cache, dev, 3, 4)
    check_float("out", out, dev, ndim=3)
    check_shape("out", out, q.shape)
    check_index("block_tables", block_tables, dev, ndim=2)
    check_index("context_lens", context_lens, dev, ndim=1)
    B, H, hd = q.shape
    _, page, KVH, _ = k_cache.shape
    check_shape("context_lens", context_lens, (B,))
    if block_tables.shape[0] != B:
        raise ValueError(f"block_tables has {block_tables.shape[0]} rows, q has {B} sequences")
    if B == 0:
        return out
    interp = ctx.interpret if ctx is not None else interpreting()
    max_context = max(1, block_tables.shape[1] * page)               # an upper bound, known on the host
    cfg = dict(config) if config is not None else default_config(
        B, KVH, max_context, hd, sm_count=ctx.sm_count if ctx is not None else 1, interpret=interp)
    meta, opts = launch_opts(cfg)
    block_t, split_len = meta["BLOCK_T"], meta["split_len"]
    if split_len % block_t:
        raise ValueError(f"split_len={split_len} must be a multiple of BLOCK_T={block_t}")
    num_splits = triton.cdiv(max_context, split_len)
    direct = num_splits == 1
    part = lse = out
    if not direct:
        part = torch.empty((B, H, num_splits, hd), dtype=torch.float32, device=q.device)
        lse = torch.empty((B, H, num_splits), dtype=torch.float32, device=q.device)
    group = H // KVH
    _decode_kernel[(B, KVH, num_splits)](
        q, k_cache, v_cache, out, part, lse, block_tables, context_lens, float(scale) * LOG2E,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        out.stride(0), out.stride(1), block_tables.stride(0), split_len, num_splits, window,
        GROUP=group, GROUP_PAD=pow2(group, 16), HEAD_DIM=hd, BLOCK_D=pow2(hd, 16), PAGE=page,
        BLOCK_T=block_t, DIRECT=direct, UPCAST=dot_upcast(q.dtype, interp), **opts)
    if not direct:
        _combine_kernel[(B, H)](part, lse, out, context_lens, split_len, num_splits, window, out.stride(0),
                                out.stride(1), HEAD_DIM=hd, BLOCK_D=pow2(hd, 16),
                                SPLITS_PAD=pow2(num_splits))
    return out


def paged_prefill_attention(out, q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale,
                            window=0, *, ctx=None, config=None):
    """Varlen causal attention over the paged cache (prefill, chunked prefill, or any mix).
    out, q: (T_total, H, hd); k_cache, v_cache: (num_blocks, block_size, KVH, hd); block_tables:
    (B, max_blocks) int; cu_seqlens_q: (B + 1,) int, sequence b owns rows cu[b]:cu[b+1];
    context_lens: (B,) int, tokens in the cache for b including this step's."""
    return paged_prefill_launch(out, q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens,
                                scale, ctx=ctx, config=config, window=window)
