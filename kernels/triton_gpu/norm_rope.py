"""Row and elementwise ops: rmsnorm, rope, silu_mul, add, embedding, kv_cache_write.

All compute in float32 and store in the output's dtype. Each is one pass over memory: rmsnorm
keeps its row in registers between the sum of squares and the scaling (a second, cached read only
for rows wider than MAX_ROW), silu_mul reads gate and up once and writes once (the product is
fused, never a separate silu pass), rope computes its angles in-kernel (no cos/sin table read):
angle = float32(pos) * freq_i as run.c does (freq from the host, bit-equal to the reference),
cos and sin in float64 then rounded, so long positions do not drift from the reference.
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from ._common import check_float, check_index, check_shape, device_of, interpreting, pow2

MAX_ROW = 8192           # rmsnorm rows up to this width stay in registers
BLOCK = 1024             # elements per program of the elementwise ops


@triton.jit
def _rmsnorm_kernel(out, x, w, T, D, stride_x, stride_o, eps,
                    ROWS: tl.constexpr, BLOCK_D: tl.constexpr, ONE_PASS: tl.constexpr):
    """grid (cdiv(T, ROWS),): ROWS rows per program; a row wider than BLOCK_D takes two passes."""
    t = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    t_ok = t < T
    x_rows = x + t[:, None].to(tl.int64) * stride_x                       # (ROWS, 1)
    o_rows = out + t[:, None].to(tl.int64) * stride_o
    if ONE_PASS:
        d = tl.arange(0, BLOCK_D)
        ok = t_ok[:, None] & (d < D)[None, :]
        v = tl.load(x_rows + d[None, :], mask=ok, other=0.0).to(tl.float32)  # (ROWS, BLOCK_D)
        inv = 1.0 / tl.sqrt(tl.sum(v * v, axis=1) / D + eps)                 # (ROWS,)
        wv = tl.load(w + d, mask=d < D, other=0.0).to(tl.float32)
        tl.store(o_rows + d[None, :], (v * inv[:, None] * wv[None, :]).to(out.dtype.element_ty), mask=ok)
    else:
        acc = tl.zeros((ROWS, BLOCK_D), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            ok = t_ok[:, None] & (d < D)[None, :]
            v = tl.load(x_rows + d[None, :], mask=ok, other=0.0).to(tl.float32)
            acc += v * v
        inv = 1.0 / tl.sqrt(tl.sum(acc, axis=1) / D + eps)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            ok = t_ok[:, None] & (d < D)[None, :]
            v = tl.load(x_rows + d[None, :], mask=ok, other=0.0).to(tl.float32)
            wv = tl.load(w + d, mask=d < D, other=0.0).to(tl.float32)
            tl.store(o_rows + d[None, :], (v * inv[:, None] * wv[None, :]).to(out.dtype.element_ty), mask=ok)


@triton.jit
def _rope_kernel(out, x, positions, freqs, T, n_pairs, stride_x, stride_o,
                 HALF: tl.constexpr, ROWS: tl.constexpr, BLOCK_P: tl.constexpr):
    """grid (cdiv(T, ROWS), cdiv(n_pairs, BLOCK_P)); pair p of a row is (x[2p], x[2p+1]) with
    frequency freqs[p % HALF]."""
    t = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    ok = (t < T)[:, None] & (p < n_pairs)[None, :]                        # (ROWS, BLOCK_P)
    pos = tl.load(positions + t, mask=t < T, other=0).to(tl.float32)
    freq = tl.load(freqs + p % HALF, mask=p < n_pairs, other=0.0)
    angle = (pos[:, None] * freq[None, :]).to(tl.float64)                 # float32 product, as run.c
    c = tl.cos(angle).to(tl.float32)
    s = tl.sin(angle).to(tl.float32)
    xp = x + t[:, None].to(tl.int64) * stride_x + 2 * p[None, :]
    x0 = tl.load(xp, mask=ok, other=0.0).to(tl.float32)
    x1 = tl.load(xp + 1, mask=ok, other=0.0).to(tl.float32)
    o = out + t[:, None].to(tl.int64) * stride_o + 2 * p[None, :]
    tl.store(o, (x0 * c - x1 * s).to(out.dtype.element_ty), mask=ok)
    tl.store(o + 1, (x0 * s + x1 * c).to(out.dtype.element_ty), mask=ok)


@triton.jit
def _elementwise_kernel(out, a, b, n, OP: tl.constexpr, BLOCK_E: tl.constexpr):
    """OP 0: out = a + b; OP 1: out = silu(a) * b = a * (1 / (1 + exp(-a))) * b."""
    i = tl.program_id(0).to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)
    ok = i < n
    av = tl.load(a + i, mask=ok, other=0.0).to(tl.float32)
    bv = tl.load(b + i, mask=ok, other=0.0).to(tl.float32)
    if OP == 0:
        r = av + bv
    else:
        r = av * (1.0 / (1.0 + tl.exp(-av))) * bv
    tl.store(out + i, r.to(out.dtype.element_ty), mask=ok)


@triton.jit
def _bias_add_kernel(out, x, bias, n, N, BLOCK_E: tl.constexpr):
    """out = x + bias[i % N] over the flat (T * N,) elements."""
    i = tl.program_id(0).to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)
    ok = i < n
    xv = tl.load(x + i, mask=ok, other=0.0).to(tl.float32)
    bv = tl.load(bias + i % N, mask=ok, other=0.0).to(tl.float32)
    tl.store(out + i, (xv + bv).to(out.dtype.element_ty), mask=ok)


@triton.jit
def _embedding_kernel(out, tokens, table, T, V, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """grid (cdiv(T, ROWS), cdiv(D, BLOCK_D)); an id outside [0, V) writes a NaN row instead of
    reading out of bounds."""
    t = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    tok = tl.load(tokens + t, mask=t < T, other=0).to(tl.int64)
    valid = (tok >= 0) & (tok < V)                                        # (ROWS,)
    ok = (t < T)[:, None] & (d < D)[None, :]
    row = tl.load(table + tl.where(valid, tok, 0)[:, None] * D + d[None, :], mask=ok, other=0.0)
    row = tl.where(valid[:, None], row, float("nan"))
    tl.store(out + t[:, None].to(tl.int64) * D + d[None, :], row.to(out.dtype.element_ty), mask=ok)


@triton.jit
def _kv_write_kernel(k_cache, v_cache, k, v, slot_mapping, T, n_slots,
                     ROW: tl.constexpr, ROWS: tl.constexpr, BLOCK_R: tl.constexpr):
    """grid (cdiv(T, ROWS),); token t's KVH * hd values go to slot slot_mapping[t] (a negative or
    out-of-range slot is skipped)."""
    t = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    slot = tl.load(slot_mapping + t, mask=t < T, other=-1).to(tl.int64)
    r = tl.arange(0, BLOCK_R)
    ok = ((t < T) & (slot >= 0) & (slot < n_slots))[:, None] & (r < ROW)[None, :]   # (ROWS, BLOCK_R)
    src = t[:, None].to(tl.int64) * ROW + r[None, :]
    dst = slot[:, None] * ROW + r[None, :]
    tl.store(k_cache + dst, tl.load(k + src, mask=ok).to(k_cache.dtype.element_ty), mask=ok)
    tl.store(v_cache + dst, tl.load(v + src, mask=ok).to(v_cache.dtype.element_ty), mask=ok)


def _rows(T: int, width: int, ctx) -> int:
    """Rows per program: about 4096 elements a program on the GPU, everything at once (up to 64K
    elements) under the interpreter, whose cost is per program and per op."""
    budget = 1 << 16 if (ctx.interpret if ctx is not None else interpreting()) else 4096
    return max(1, min(pow2(T), budget // pow2(width)))


# ---- wrappers --------------------------------------------------------------------------------------

def rmsnorm(out, x, weight, eps, *, ctx=None):
    """out, x: (T, D); weight: (D,). out = weight * x / sqrt(mean(x^2) + eps)."""
    dev = device_of(ctx, x)
    check_float("x", x, dev, ndim=2)
    check_float("weight", weight, dev, ndim=1, contiguous=True)
    check_float("out", out, dev, ndim=2)
    check_shape("out", out, x.shape)
    if weight.shape[0] != x.shape[1]:
        raise ValueError(f"weight has shape {tuple(weight.shape)}, x has D={x.shape[1]}")
    T, D = x.shape
    if T:
        one_pass = D <= MAX_ROW
        block = pow2(D) if one_pass else 2048
        rows = _rows(T, block, ctx) if one_pass else 1
        _rmsnorm_kernel[(triton.cdiv(T, rows),)](out, x, weight, T, D, x.stride(0), out.stride(0), float(eps),
                                                 ROWS=rows, BLOCK_D=block, ONE_PASS=one_pass)
    return out


def rope(out, x, positions, inv_freq, *, ctx=None):
    """out, x: (T, n_heads * head_dim) (out may be x); positions: (T,) int; inv_freq: (head_dim/2,)
    float32 on the device (the numpy reference's table, pyinfer/rope.py). Adjacent-pair RoPE."""
    dev = device_of(ctx, x)
    check_float("x", x, dev, ndim=2)
    check_float("out", out, dev, ndim=2)
    check_float("inv_freq", inv_freq, dev, ndim=1, contiguous=True)
    check_shape("out", out, x.shape)
    check_index("positions", positions, dev, ndim=1)
    T, width = x.shape
    check_shape("positions", positions, (T,))
    head_dim = 2 * inv_freq.shape[0]
    if inv_freq.dtype != torch.float32:
        raise ValueError(f"inv_freq must be float32, got {inv_freq.dtype}")
    if head_dim < 2 or width % head_dim:
        raise ValueError(f"inv_freq has {inv_freq.shape[0]} entries: head_dim={head_dim} must divide "
                         f"x's width {width}")
    if T:
        freqs = inv_freq
        n_pairs = width // 2
        block = min(1024, pow2(n_pairs))
        rows = _rows(T, block, ctx)
        _rope_kernel[(triton.cdiv(T, rows), triton.cdiv(n_pairs, block))](
            out, x, positions, freqs, T, n_pairs, x.stride(0), out.stride(0),
            HALF=head_dim // 2, ROWS=rows, BLOCK_P=block)
    return out


def _elementwise(op, out, a, b, names, ctx):
    dev = device_of(ctx, a)
    for name, t in zip(names, (out, a, b)):
        check_float(name, t, dev, contiguous=True)
    check_shape(names[1], a, out.shape)
    check_shape(names[2], b, out.shape)
    n = out.numel()
    if n:
        block = min(pow2(n), 1 << 16) if (ctx.interpret if ctx is not None else interpreting()) else BLOCK
        _elementwise_kernel[(triton.cdiv(n, block),)](out, a, b, n, OP=op, BLOCK_E=block)
    return out


def add(out, x, y, *, ctx=None):
    """out, x, y: same shape (out may alias x). The residual connection."""
    return _elementwise(0, out, x, y, ("out", "x", "y"), ctx)


def bias_add(out, x, bias, *, ctx=None):
    """out, x: (T, N) (out may be x); bias: (N,). out = x + bias per row (q/k/v biases)."""
    dev = device_of(ctx, x)
    check_float("x", x, dev, ndim=2, contiguous=True)
    check_float("out", out, dev, ndim=2, contiguous=True)
    check_float("bias", bias, dev, ndim=1, contiguous=True)
    check_shape("out", out, x.shape)
    check_shape("bias", bias, (x.shape[1],))
    n = out.numel()
    if n:
        block = min(pow2(n), 1 << 16) if (ctx.interpret if ctx is not None else interpreting()) else BLOCK
        _bias_add_kernel[(triton.cdiv(n, block),)](out, x, bias, n, x.shape[1], BLOCK_E=block)
    return out


def silu_mul(out, gate, up, *, ctx=None):
    """out, gate, up: (T, H). SwiGLU's middle: silu(gate) * up, one pass (out may alias gate)."""
    return _elementwise(1, out, gate, up, ("out", "gate", "up"), ctx)


def embedding(out, tokens, table, *, ctx=None):
    """out: (T, D); tokens: (T,) int; table: (V, D)."""
    dev = device_of(ctx, table)
    check_float("table", table, dev, ndim=2, contiguous=True)
    check_float("out", out, dev, ndim=2, contiguous=True)
    check_index("tokens", tokens, dev, ndim=1)
    T, (V, D) = tokens.shape[0], table.shape
    check_shape("out", out, (T, D))
    if T:
        block = min(1024, pow2(D))
        rows = _rows(T, block, ctx)
        _embedding_kernel[(triton.cdiv(T, rows), triton.cdiv(D, block))](out, tokens, table, T, V, D,
                                                                          ROWS=rows, BLOCK_D=block)
    return out


def kv_cache_write(k_cache, v_cache, k, v, slot_mapping, *, ctx=None):
    """k_cache, v_cache: (num_blocks, block_size, KVH, hd) contiguous; k, v: (T, KVH, hd);
    slot_mapping: (T,) int, slot = block_id * block_size + offset (negative: skipped, as vLLM's padding)."""
    dev = device_of(ctx, k)
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        check_float(name, t, dev, ndim=4, contiguous=True)
    for name, t in (("k", k), ("v", v)):
        check_float(name, t, dev, ndim=3, contiguous=True)
    check_index("slot_mapping", slot_mapping, dev, ndim=1)
    check_shape("v_cache", v_cache, k_cache.shape)
    T, KVH, hd = k.shape
    check_shape("v", v, k.shape)
    check_shape("slot_mapping", slot_mapping, (T,))
    if tuple(k_cache.shape[2:]) != (KVH, hd):
        raise ValueError(f"k has (n_kv_heads, head_dim) = {(KVH, hd)}, the cache {tuple(k_cache.shape[2:])}")
    if T:
        row = KVH * hd
        rows = _rows(T, row, ctx)
        _kv_write_kernel[(triton.cdiv(T, rows),)](k_cache, v_cache, k, v, slot_mapping, T,
                                                  k_cache.shape[0] * k_cache.shape[1],
                                                  ROW=row, ROWS=rows, BLOCK_R=pow2(row))
    return k_cache, v_cache
