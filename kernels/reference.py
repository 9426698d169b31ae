"""Plain numpy reference for every op the decoder uses. This file is the spec.

Destination-passing like every backend: ``op(out, *inputs, ...)`` writes ``out``
and returns it. Float32 throughout, in the order llama2.c's run.c computes, so the
reference reproduces run.c's greedy text; fast kernels are compared against these.
"""
from __future__ import annotations

import numpy as np


def embedding(out, tokens, table):
    """out: (T, D) float32; tokens: (T,) int; table: (V, D) float32."""
    np.take(table, tokens, axis=0, out=out)
    return out


def rmsnorm(out, x, weight, eps):
    """out, x: (T, D) float32; weight: (D,). out = weight * x / sqrt(mean(x^2) + eps)."""
    ms = np.einsum("td,td->t", x, x, dtype=np.float32) / np.float32(x.shape[-1])   # (T,)
    inv = (np.float32(1.0) / np.sqrt(ms + np.float32(eps))).astype(np.float32)       # (T,)
    np.multiply(x, inv[:, None], out=out)
    np.multiply(out, weight, out=out)
    return out


def plain_inv_freq(head_dim, theta):
    """(head_dim // 2,) float32 freq_i = 1 / theta^(2i / head_dim), computed as run.c does.
    Scaled variants (linear, llama3) are derived from it in pyinfer/rope.py."""
    i2 = np.arange(0, head_dim, 2, dtype=np.float32)                                   # (hd/2,)
    return (np.float32(1.0) / np.power(np.float32(theta), i2 / np.float32(head_dim))).astype(np.float32)


def rope_cos_sin(positions, inv_freq):
    """cos, sin: (T, head_dim // 2) float32 for adjacent-pair RoPE, computed as run.c does:
    angle = pos * inv_freq_i in float32, cos and sin of it rounded to float32."""
    angle = positions.astype(np.float32)[:, None] * inv_freq[None, :].astype(np.float32)   # (T, hd/2)
    a64 = angle.astype(np.float64)
    return np.cos(a64).astype(np.float32), np.sin(a64).astype(np.float32)


def rope(out, x, positions, inv_freq):
    """out, x: (T, n_heads * head_dim) float32 (out may be x); positions: (T,) int;
    inv_freq: (head_dim // 2,) float32. Rotates each adjacent pair (x[2i], x[2i+1]) of every head
    by angle pos * inv_freq_i."""
    T = x.shape[0]
    head_dim = 2 * inv_freq.shape[0]
    if head_dim < 2 or x.shape[1] % head_dim:
        raise ValueError(f"inv_freq has {inv_freq.shape[0]} entries: head_dim={head_dim} must divide "
                         f"the width {x.shape[1]}")
    cos, sin = rope_cos_sin(positions, inv_freq)             # (T, hd/2)
    xv = x.reshape(T, -1, head_dim // 2, 2)                  # (T, H, hd/2, 2)
    x0, x1 = xv[..., 0].copy(), xv[..., 1].copy()            # (T, H, hd/2)
    c, s = cos[:, None, :], sin[:, None, :]
    ov = out.reshape(T, -1, head_dim // 2, 2)
    ov[..., 0] = x0 * c - x1 * s
    ov[..., 1] = x0 * s + x1 * c
    return out


def matmul(out, x, w):
    """out: (T, N) float32; x: (T, K); w: (N, K) (a linear weight, out_features first). out = x @ w.T"""
    np.matmul(x, w.T, out=out)
    return out


def silu_mul(out, gate, up):
    """out, gate, up: (T, H) float32. SwiGLU's middle: silu(gate) * up."""
    np.multiply(gate, np.float32(1.0) / (np.float32(1.0) + np.exp(-gate)), out=out)
    np.multiply(out, up, out=out)
    return out


def add(out, x, y):
    """out, x, y: same shape float32 (out may alias x). The residual connection."""
    np.add(x, y, out=out)
    return out


def bias_add(out, x, bias):
    """out, x: (T, N) float32 (out may be x); bias: (N,). out = x + bias on every row (q/k/v biases)."""
    np.add(x, bias[None, :], out=out)
    return out


def kv_cache_write(k_cache, v_cache, k, v, slot_mapping):
    """k_cache, v_cache: (num_blocks, block_size, n_kv_heads, head_dim); k, v: (T, n_kv_heads, head_dim);
    slot_mapping: (T,) int, slot = block_id * block_size + offset. Writes each token's K and V."""
    n_kv_heads, head_dim = k_cache.shape[2:]
    k_cache.reshape(-1, n_kv_heads, head_dim)[slot_mapping] = k
    v_cache.reshape(-1, n_kv_heads, head_dim)[slot_mapping] = v
    return k_cache, v_cache


def _softmax_rows(scores):
    """scores: (..., S) float32 with -inf for masked entries; softmax over the last axis."""
    m = np.max(scores, axis=-1, keepdims=True)
    p = np.exp(scores - m)
    p /= np.sum(p, axis=-1, keepdims=True)
    return p


def attention_prefill(out, q, k, v, scale, window=0):
    """Causal grouped-query attention over contiguous K/V.

    out, q: (T, n_heads, head_dim); k, v: (S, n_kv_heads, head_dim) with S >= T.
    The queries are the last T positions: query i (at position p = S - T + i) sees keys 0 .. p, or
    with window > 0 only keys p - window + 1 .. p (transformers' sliding window: kv > q - window)."""
    T, H, hd = q.shape
    S, KVH, _ = k.shape
    if T > S:
        raise ValueError(f"attention_prefill: {T} queries but only {S} keys (queries are the last T positions)")
    if T == 0:
        return out
    group = H // KVH
    kh = np.repeat(k.transpose(1, 0, 2), group, axis=0)        # (H, S, hd)
    vh = np.repeat(v.transpose(1, 0, 2), group, axis=0)        # (H, S, hd)
    scores = np.matmul(q.transpose(1, 0, 2), kh.transpose(0, 2, 1)) * np.float32(scale)  # (H, T, S)
    p_q = (S - T + np.arange(T))[:, None]                                                  # (T, 1)
    visible = np.arange(S)[None, :] <= p_q                                                # (T, S)
    if window > 0:
        visible &= np.arange(S)[None, :] > p_q - window
    scores = np.where(visible[None], scores, np.float32(-np.inf))
    p = _softmax_rows(scores).astype(np.float32)               # (H, T, S)
    out[...] = np.matmul(p, vh).transpose(1, 0, 2)             # (T, H, hd)
    return out


def gather_kv(k_cache, v_cache, block_table, context_len):
    """K, V of one sequence: (context_len, n_kv_heads, head_dim) each, read through its block table."""
    block_size = k_cache.shape[1]
    n_blocks = -(-context_len // block_size)
    blocks = np.asarray(block_table[:n_blocks])
    k = k_cache[blocks].reshape(-1, *k_cache.shape[2:])[:context_len]
    v = v_cache[blocks].reshape(-1, *v_cache.shape[2:])[:context_len]
    return k, v


def paged_prefill_attention(out, q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale, window=0):
    """Varlen causal attention over a paged cache (prefill, chunked prefill, or any mix).

    out, q: (T_total, n_heads, head_dim); k_cache, v_cache: (num_blocks, block_size, n_kv_heads, head_dim);
    block_tables: (B, max_blocks) int; cu_seqlens_q: (B + 1,) int, sequence b owns rows
    cu[b]:cu[b+1]; context_lens: (B,) int, tokens in the cache for b including this step's;
    window: 0 for full causal attention, else each query sees only its last ``window`` positions."""
    for b in range(len(context_lens)):
        lo, hi = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1])
        if hi == lo:
            continue
        k, v = gather_kv(k_cache, v_cache, block_tables[b], int(context_lens[b]))
        attention_prefill(out[lo:hi], q[lo:hi], k, v, scale, window)
    return out


def paged_decode_attention(out, q, k_cache, v_cache, block_tables, context_lens, scale, window=0):
    """One query token per sequence attending to its whole cached context.

    out, q: (B, n_heads, head_dim); k_cache, v_cache: (num_blocks, block_size, n_kv_heads, head_dim);
    block_tables: (B, max_blocks) int; context_lens: (B,) int (>= 1, the query's own K/V included);
    window: 0 for the whole context, else only its last ``window`` tokens."""
    for b in range(q.shape[0]):
        k, v = gather_kv(k_cache, v_cache, block_tables[b], int(context_lens[b]))
        attention_prefill(out[b:b + 1], q[b:b + 1], k, v, scale, window)
    return out


# ---- sampling primitives -------------------------------------------------------------------

def argmax(out, logits):
    """out: (B,) int64; logits: (B, V). First index of the maximum, as run.c's argmax."""
    np.argmax(logits, axis=-1, out=out)
    return out


def softmax(out, logits, temperature):
    """out, logits: (B, V) float32; softmax(logits / temperature), temperature > 0."""
    out[...] = _softmax_rows(logits.astype(np.float32) / np.float32(temperature))
    return out


def top_k_filter(probs, k):
    """probs: (V,) float; zero all but the k largest (ties at the boundary kept). k <= 0: no-op."""
    if k <= 0 or k >= probs.shape[-1]:
        return probs
    kth = np.partition(probs, -k)[-k]
    return np.where(probs >= kth, probs, 0.0)


def top_p_filter(probs, p):
    """probs: (V,) float; keep the smallest set of most likely tokens whose mass reaches p (nucleus)."""
    if p >= 1.0:
        return probs
    order = np.argsort(-probs, kind="stable")                  # (V,)
    cum = np.cumsum(probs[order])
    keep_n = int(np.searchsorted(cum, p * cum[-1])) + 1        # first index where mass >= p
    keep = np.zeros_like(probs, dtype=bool)
    keep[order[:keep_n]] = True
    return np.where(keep, probs, 0.0)


# ---- quantized matmuls (formats in pyinfer/quant.py) -----------------------------------------

def unpack_int4(qweight, group_size):
    """qweight: uint8 (N, K/2) -> uint8 (N, K) values 0..15; per group byte j = u[j] | u[j + G/2] << 4."""
    N, half = qweight.shape
    v = qweight.reshape(N, -1, group_size // 2)                       # (N, G, g/2)
    return np.concatenate([v & 0x0F, v >> 4], axis=2).reshape(N, 2 * half)


def dequantize_weight(qweight, scales, zeros, group_size, weight_bits):
    """float32 (N, K): int8 q * s, or int4 (u - z) * s with z = 8 when ``zeros`` is None."""
    if weight_bits == 8:
        q = qweight.astype(np.float32)
        if group_size == 0:
            return q * scales[:, None]
        return (q.reshape(q.shape[0], -1, group_size) * scales[:, :, None]).reshape(q.shape)
    u = unpack_int4(qweight, group_size).astype(np.float32)
    N, K = u.shape
    z = np.float32(8) if zeros is None else zeros.astype(np.float32)[:, :, None]
    return ((u.reshape(N, -1, group_size) - z) * scales[:, :, None]).reshape(N, K)


def quantize_act(xq, xs, x, group_size):
    """Dynamic symmetric int8 quantization of activations per group of G along K.
    xq: (T, K) int8 out; xs: (T, K/G) float32 out; x: (T, K) float32. x ~= xq * xs."""
    T, K = x.shape
    g = x.reshape(T, K // group_size, group_size)                     # (T, G, g)
    s = np.abs(g).max(axis=2) / np.float32(127)                       # (T, G)
    safe = np.where(s == 0, np.float32(1), s)
    xq[...] = np.rint(g / safe[:, :, None]).reshape(T, K)
    xs[...] = s
    return xq, xs


def _int_group_dots(xq, w_int, group_size):
    """int32 (T, N, G): per-group integer dot products of xq (T, K) int8 and w_int (N, K) integers."""
    T, K = xq.shape
    a = xq.astype(np.int32).reshape(T, K // group_size, group_size)  # (T, G, g)
    b = w_int.astype(np.int32).reshape(w_int.shape[0], -1, group_size)   # (N, G, g)
    return np.einsum("tgk,ngk->tng", a, b)


def matmul_w8a16(out, x, qweight, scales):
    """out: (T, N) f32; x: (T, K) f32; qweight: int8 (N, K); scales: f32 (N,). out = (x @ q.T) * s."""
    np.matmul(x, qweight.T.astype(np.float32), out=out)
    out *= scales[None, :]
    return out


def matmul_w8a8(out, x, qweight, scales, group_size):
    """out: (T, N) f32; x: (T, K) f32 quantized per group to int8 here; qweight: int8 (N, K);
    scales: f32 (N, K/G). out[t, n] = sum_g xs[t, g] * ws[n, g] * sum_{k in g} xq[t, k] * q[n, k]."""
    T, K = x.shape
    xq, xs = quantize_act(np.empty((T, K), np.int8), np.empty((T, K // group_size), np.float32), x, group_size)
    dots = _int_group_dots(xq, qweight, group_size).astype(np.float32)   # (T, N, G)
    out[...] = np.einsum("tng,tg,ng->tn", dots, xs, scales)
    return out


def matmul_w4a16(out, x, qweight, scales, zeros, group_size):
    """out: (T, N) f32; x: (T, K) f32; qweight: uint8 (N, K/2) nibbles; scales: f32 (N, K/G);
    zeros: uint8 (N, K/G) or None (symmetric, z = 8). out = x @ ((u - z) * s).T"""
    w = dequantize_weight(qweight, scales, zeros, group_size, 4)          # (N, K)
    np.matmul(x, w.T, out=out)
    return out


def matmul_w4a8(out, x, qweight, scales, zeros, group_size):
    """As matmul_w4a16 with x quantized to int8 per group: integer dots of xq and (u - z)."""
    T, K = x.shape
    xq, xs = quantize_act(np.empty((T, K), np.int8), np.empty((T, K // group_size), np.float32), x, group_size)
    u = unpack_int4(qweight, group_size).astype(np.int32)                # (N, K)
    N = u.shape[0]
    z = np.int32(8) if zeros is None else zeros.astype(np.int32)[:, :, None]
    w_int = (u.reshape(N, -1, group_size) - z).reshape(N, K)
    dots = _int_group_dots(xq, w_int, group_size).astype(np.float32)     # (T, N, G)
    out[...] = np.einsum("tng,tg,ng->tn", dots, xs, scales)
    return out
