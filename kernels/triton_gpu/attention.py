"""FlashAttention-2-style causal attention (prefill): contiguous K/V, or K/V read through block
tables (varlen paged prefill, used by paged_attention.py). GQA, any head_dim (64 and 128 are the
tuned ones), float32/float16/bfloat16.

One program owns BLOCK_M queries of one (sequence, head) and walks the keys in BLOCK_N tiles with
an online softmax in base 2 (scores pre-multiplied by scale * log2 e, exp2), float32 statistics and
accumulator, P cast to V's dtype for the second tensor-core product. Queries are the last q_len
positions of a context of ctx keys (query i sees keys 0 .. ctx - q_len + i), so one kernel serves
prefill, chunked prefill and mixed batches. The key loop has two stages: tiles every query of the
block sees in full (no mask), then the diagonal tiles (causal mask). Programs take query blocks
last-first, so the longest rows of a causal grid start first.

Tiles: ``triton.autotune`` on the GPU, keyed on head_dim, a power-of-two bucket of the query
length, and paged or not; one fixed config under the interpreter (or an explicit ``config``).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._common import (check_float, check_index, check_shape, device_of, dot_upcast, helper, interpreting,
                      mma, pow2)

LOG2E = 1.4426950408889634

GPU_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3),
                         (128, 32, 4, 4), (64, 32, 4, 3)]
]
INTERPRET_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 32}


@helper
def _kv_offsets(n, bt_row, ctx, stride_kb, stride_kt, PAGED: tl.constexpr, PAGE: tl.constexpr):
    """Element offsets (int64) of keys n (BLOCK_N,) in K: through the block table row when PAGED."""
    if PAGED:
        page = tl.load(bt_row + n // PAGE, mask=n < ctx, other=0).to(tl.int64)
        off = page * stride_kb + (n % PAGE).to(tl.int64) * stride_kt
    else:
        off = n.to(tl.int64) * stride_kt
    return off


@helper
def _attn_tile(acc, m_i, l_i, q, k_base, v_base, bt_row, n0, rows, past, ctx, qk_scale, window,
               stride_kb, stride_kt, d, d_ok,
               MASKED: tl.constexpr, PAGED: tl.constexpr, PAGE: tl.constexpr,
               BLOCK_N: tl.constexpr, UPCAST: tl.constexpr, EVEN_D: tl.constexpr):
    """One BLOCK_N tile of keys n0.. folded into the online softmax of the query rows."""
    n = n0 + tl.arange(0, BLOCK_N)
    off = _kv_offsets(n, bt_row, ctx, stride_kb, stride_kt, PAGED, PAGE)       # (BN,)
    kv_ok = d_ok[None, :] & (n < ctx)[:, None]                                 # (BN, BD)
    if MASKED or not EVEN_D:
        k = tl.load(k_base + off[:, None] + d[None, :], mask=kv_ok, other=0.0)    # (BN, BD)
    else:                                                                      # a full tile
        k = tl.load(k_base + off[:, None] + d[None, :])
    s = mma(q, tl.trans(k), tl.zeros((q.shape[0], BLOCK_N), tl.float32), UPCAST) * qk_scale
    if MASKED:
        visible = (n[None, :] <= past + rows[:, None]) & (n[None, :] < ctx)   # (BM, BN)
        visible &= (window == 0) | (n[None, :] > past + rows[:, None] - window)    # sliding window
        s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    if MASKED:                                   # a row that has seen no key yet: m stays -inf, p = 0
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_use = m_new
    alpha = tl.exp2(m_i - m_use)
    p = tl.exp2(s - m_use[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    if MASKED or not EVEN_D:
        v = tl.load(v_base + off[:, None] + d[None, :], mask=kv_ok, other=0.0)    # (BN, BD)
    else:
        v = tl.load(v_base + off[:, None] + d[None, :])
    acc = mma(p.to(v.dtype), v, acc * alpha[:, None], UPCAST)
    return acc, m_new, l_i


@triton.jit
def _attn_fwd_kernel(Q, K, V, O, block_tables, cu_seqlens_q, context_lens, qk_scale,
                     stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh,
                     stride_ob, stride_ot, stride_oh, stride_bt,
                     T_q, S_k, H, GROUP, T_BUCKET, window,
                     HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PAGED: tl.constexpr,
                     PAGE: tl.constexpr, UPCAST: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """grid (query blocks, B * H). Contiguous: Q/O (B, T, H, D), K/V (B, S, KVH, D) with strides.
    PAGED: Q/O (T_total, H, D) rows cu[b]:cu[b+1]; K/V (num_blocks, PAGE, KVH, D) via block_tables."""
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)          # last query block first
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    kvh = h // GROUP
    if PAGED:
        q_start = tl.load(cu_seqlens_q + b)
        q_len = (tl.load(cu_seqlens_q + b + 1) - q_start).to(tl.int32)
        ctx = tl.load(context_lens + b).to(tl.int32)
        q_base = Q + q_start.to(tl.int64) * stride_qt + h * stride_qh
        o_base = O + q_start.to(tl.int64) * stride_ot + h * stride_oh
        k_base = K + kvh * stride_kh
        v_base = V + kvh * stride_kh
        bt_row = block_tables + b.to(tl.int64) * stride_bt
    else:
        q_len = T_q
        ctx = S_k
        q_base = Q + b.to(tl.int64) * stride_qb + h * stride_qh
        o_base = O + b.to(tl.int64) * stride_ob + h * stride_oh
        k_base = K + b.to(tl.int64) * stride_kb + kvh * stride_kh
        v_base = V + b.to(tl.int64) * stride_kb + kvh * stride_kh
        bt_row = block_tables
    m0 = pid_m * BLOCK_M
    if m0 >= q_len:
        return
    rows = m0 + tl.arange(0, BLOCK_M)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q_ok = (rows < q_len)[:, None] & d_ok[None, :]
    q = tl.load(q_base + rows[:, None].to(tl.int64) * stride_qt + d[None, :], mask=q_ok, other=0.0)
    past = ctx - q_len                                           # keys before the first query
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    full_end = ((past + m0 + 1) // BLOCK_N) * BLOCK_N            # keys every row of the block sees
    end = tl.minimum(ctx, past + m0 + BLOCK_M)
    # sliding window (window > 0): tiles before the first row's window skipped, the rest masked
    start = tl.where(window > 0, (tl.maximum(past + m0 + 1 - window, 0) // BLOCK_N) * BLOCK_N, 0)
    full_end = tl.where(window > 0, start, full_end)
    for n0 in range(start, full_end, BLOCK_N):
        acc, m_i, l_i = _attn_tile(acc, m_i, l_i, q, k_base, v_base, bt_row, n0, rows, past, ctx,
                                   qk_scale, window, stride_kb, stride_kt, d, d_ok,
                                   False, PAGED, PAGE, BLOCK_N, UPCAST, HEAD_DIM == BLOCK_D)
    for n0 in range(full_end, end, BLOCK_N):
        acc, m_i, l_i = _attn_tile(acc, m_i, l_i, q, k_base, v_base, bt_row, n0, rows, past, ctx,
                                   qk_scale, window, stride_kb, stride_kt, d, d_ok,
                                   True, PAGED, PAGE, BLOCK_N, UPCAST, HEAD_DIM == BLOCK_D)
    acc = acc / l_i[:, None]
    tl.store(o_base + rows[:, None].to(tl.int64) * stride_ot + d[None, :], acc.to(O.dtype.element_ty),
             mask=q_ok)


_attn_fwd_tuned = triton.autotune(configs=GPU_CONFIGS, key=["T_BUCKET", "HEAD_DIM", "PAGED"])(_attn_fwd_kernel)


def launch(q, k, v, out, scale, *, paged, block_tables=None, cu_seqlens_q=None, context_lens=None,
           max_rows: int, n_seqs: int, ctx=None, config=None, window: int = 0):
    """Shared launcher. Contiguous: q/out (B, T, H, D), k/v (B, S, KVH, D). Paged: q/out
    (T_total, H, D), k/v (num_blocks, block_size, KVH, D) and the block table metadata."""
    H, hd = q.shape[-2], q.shape[-1]
    KVH = k.shape[-2]
    interp = ctx.interpret if ctx is not None else interpreting()
    if paged:
        sq, so = (0, q.stride(0), q.stride(1)), (0, out.stride(0), out.stride(1))
        sk, page, T_q, S_k, sbt = (k.stride(0), k.stride(1), k.stride(2)), k.shape[1], 0, 0, block_tables.stride(0)
    else:
        sq, so = (q.stride(0), q.stride(1), q.stride(2)), (out.stride(0), out.stride(1), out.stride(2))
        sk, page, T_q, S_k, sbt = (k.stride(0), k.stride(1), k.stride(2)), 1, q.shape[1], k.shape[1], 0
        block_tables = cu_seqlens_q = context_lens = q            # unused pointers
    args = (q, k, v, out, block_tables, cu_seqlens_q, context_lens, scale * LOG2E, *sq, *sk, *so, sbt,
            T_q, S_k, H, H // KVH, min(pow2(max_rows, 16), 4096), int(window))
    const = dict(HEAD_DIM=hd, BLOCK_D=pow2(hd, 16), PAGED=paged, PAGE=page, UPCAST=dot_upcast(q.dtype, interp))
    if config is None and not interp:
        grid = lambda m: (triton.cdiv(max_rows, m["BLOCK_M"]), n_seqs * H)  # noqa: E731
        _attn_fwd_tuned[grid](*args, **const)
        return out
    cfg = dict(config or INTERPRET_CONFIG)
    opts = {k_: cfg.pop(k_) for k_ in ("num_warps", "num_stages") if k_ in cfg}
    _attn_fwd_kernel[(triton.cdiv(max_rows, cfg["BLOCK_M"]), n_seqs * H)](*args, **const, **cfg, **opts)
    return out


def check_window(window) -> int:
    """A sliding-window length: an int >= 0 (0: no window)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"window={window!r} must be an int >= 0 (0: no sliding window)")
    return window


def check_qkv(q, k, v, dev, q_dims: int, kv_dims: int):
    check_float("q", q, dev, ndim=q_dims)
    check_float("k", k, dev, ndim=kv_dims)
    check_float("v", v, dev, ndim=kv_dims)
    if k.shape != v.shape or k.stride() != v.stride():
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must have the same shape and strides")
    if k.dtype != v.dtype:
        raise ValueError(f"k is {k.dtype}, v is {v.dtype}: they must match")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k has head_dim {k.shape[-1]}, q has {q.shape[-1]}")
    if q.shape[-2] % k.shape[-2]:
        raise ValueError(f"q has {q.shape[-2]} heads, not a multiple of k's {k.shape[-2]} (GQA groups)")


def attention_prefill(out, q, k, v, scale, window=0, *, ctx=None, config=None):
    """Causal GQA attention over contiguous K/V. out, q: (T, H, hd); k, v: (S, KVH, hd), S >= T;
    query i sees keys 0 .. S - T + i (the last ``window`` of them when window > 0)."""
    window = check_window(window)
    dev = device_of(ctx, q)
    check_qkv(q, k, v, dev, 3, 3)
    check_float("out", out, dev, ndim=3)
    check_shape("out", out, q.shape)
    if q.shape[0] > k.shape[0]:
        raise ValueError(f"attention_prefill: {q.shape[0]} queries but only {k.shape[0]} keys "
                         f"(queries are the last T positions)")
    return attention_prefill_batched(out[None], q[None], k[None], v[None], scale, ctx=ctx, config=config,
                                     window=window)[0]


def attention_prefill_batched(out, q, k, v, scale, *, ctx=None, config=None, window=0):
    """out, q: (B, T, H, hd); k, v: (B, S, KVH, hd), any strides with the last dim contiguous
    (so SDPA's (B, H, S, D) tensors can be passed as .transpose(1, 2) views)."""
    dev = device_of(ctx, q)
    check_qkv(q, k, v, dev, 4, 4)
    check_float("out", out, dev, ndim=4)
    check_shape("out", out, q.shape)
    if q.shape[0] != k.shape[0] or q.shape[1] > k.shape[1]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)}: batch must match and T <= S")
    if q.shape[1] == 0:
        return out
    return launch(q, k, v, out, float(scale), paged=False, max_rows=q.shape[1], n_seqs=q.shape[0],
                  ctx=ctx, config=config, window=window)


def paged_prefill_launch(out, q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale,
                         *, ctx=None, config=None, window=0):
    """Checked varlen paged prefill (see paged_attention.paged_prefill_attention)."""
    dev = device_of(ctx, q)
    check_qkv(q, k_cache, v_cache, dev, 3, 4)
    check_float("out", out, dev, ndim=3)
    check_shape("out", out, q.shape)
    check_index("block_tables", block_tables, dev, ndim=2)
    check_index("cu_seqlens_q", cu_seqlens_q, dev, ndim=1)
    check_index("context_lens", context_lens, dev, ndim=1)
    B = context_lens.shape[0]
    check_shape("cu_seqlens_q", cu_seqlens_q, (B + 1,))
    if block_tables.shape[0] != B:
        raise ValueError(f"block_tables has {block_tables.shape[0]} rows, context_lens has {B} sequences")
    if q.shape[0] == 0 or B == 0:
        return out
    return launch(q, k_cache, v_cache, out, float(scale), paged=True, block_tables=block_tables,
                  cu_seqlens_q=cu_seqlens_q, context_lens=context_lens, max_rows=q.shape[0], n_seqs=B,
                  ctx=ctx, config=config, window=check_window(window))


def sdpa_flops(B: int, H: int, T: int, S: int, head_dim: int) -> float:
    """FLOPs of causal attention with queries the last T of S keys (4 * hd per visible pair)."""
    pairs = T * (S - T) + T * (T + 1) // 2
    return 4.0 * head_dim * H * B * pairs

