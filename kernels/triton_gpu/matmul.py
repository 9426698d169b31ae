"""Matmuls out (M, N) = x (M, K) @ W.T for a float W (N, K), int8 per channel (W8A16) and int4
per group (W4A16), with weights dequantized in registers.

Two kernel shapes per quantized format:
  GEMV (M == 1, decode at batch 1): memory bound. Each program owns BLOCK_N output channels and a
    split of K; weights become floats with no conversion instruction (an integer OR-ed into the
    mantissa of 2^23 is the float 2^23 + u; the 2^23 and the zero point come off in one
    subtraction), products accumulate in float32 registers and are reduced once at the end.
  GEMM (M > 1): tensor cores (tl.dot) on a weight tile dequantized in the activation dtype with
    the same trick (1024 + u in float16), int4 one group per step so a scale is one row.
Split-K: when the (M, N) tiles alone cannot fill the GPU, programs also split K and write float32
partials (SPLIT_K, M, N) that a second kernel sums in a fixed order (deterministic, no atomics).
Tiles come from a shape heuristic (``default_config``) or an explicit ``config``; the GPU suite
times alternatives. Layouts: see layout.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (check_float, check_shape, check_tensor, device_of, dot_upcast, helper, interpreting,
                      launch_opts, mma, pow2)
from .layout import Int4Weight, WeightCache

# Integer-to-float without a conversion instruction (conversions issue at 16 a clock per SM on sm_80/90,
# float adds and FMAs at 128, per the CUDA guide's throughput table): OR a small
# integer u into the mantissa of a power of two whose ulp is 1 and read the bits as a float:
# 0x4B000000 | u is 2^23 + u in float32, 0x6400 | u is 1024 + u in float16, 0x4300 | u is 128 + u in
# bfloat16 (u < 128). The power of two comes off in the same subtraction as the zero point.
BIAS = {torch.float32: 8388608.0, torch.float16: 1024.0, torch.bfloat16: 128.0}


@helper
def _small_uint_to(u, DT: tl.constexpr):
    """int32 u in [0, 16) -> BIAS[DT] + u in float DT, exactly."""
    if DT == tl.float16:
        r = (u | 0x6400).to(tl.int16).to(tl.float16, bitcast=True)        # 1024 + u
    elif DT == tl.bfloat16:
        r = (u | 0x4300).to(tl.int16).to(tl.bfloat16, bitcast=True)       # 128 + u
    else:
        r = (u | 0x4B000000).to(tl.float32, bitcast=True)                 # 2^23 + u
    return r


@helper
def _write(acc, out, part, scales, offs_m, offs_n, M, N, stride_om, pid_k,
           SPLIT_K: tl.constexpr, HAS_SCALE: tl.constexpr):
    """acc (BLOCK_M, BLOCK_N) float32 -> out (times a per-channel scale), or -> the split's partial."""
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if SPLIT_K == 1:
        if HAS_SCALE:
            acc = acc * tl.load(scales + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        tl.store(out + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :],
                 acc.to(out.dtype.element_ty), mask=mask)
    else:
        rows = (pid_k * M + offs_m[:, None]).to(tl.int64)
        tl.store(part + rows * N + offs_n[None, :], acc, mask=mask)


@triton.jit
def _splitk_reduce_kernel(part, scales, out, M, N, stride_om,
                          SPLIT_K: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK_N: tl.constexpr):
    """out[m, n] = sum_s part[s, m, n] (* scales[n]); grid (M, cdiv(N, BLOCK_N))."""
    m = tl.program_id(0)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = n < N
    acc = tl.zeros((BLOCK_N,), tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(part + (s * M + m).to(tl.int64) * N + n, mask=mask, other=0.0)
    if HAS_SCALE:
        acc = acc * tl.load(scales + n, mask=mask, other=0.0).to(tl.float32)
    tl.store(out + m.to(tl.int64) * stride_om + n, acc.to(out.dtype.element_ty), mask=mask)


@triton.jit
def _gemm_kernel(x, w, scales, out, part, M, N, K, stride_xm, stride_wn, stride_om,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 SPLIT_K: tl.constexpr, W_INT8: tl.constexpr, UPCAST: tl.constexpr):
    """x (M, K) @ w (N, K).T for float w, or int8 w times scales (N,) (W_INT8). grid (N/BN, M/BM, SPLIT_K)."""
    pid_n, pid_m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    k_per_split = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    kk = tl.arange(0, BLOCK_K)
    x_rows = x + offs_m[:, None].to(tl.int64) * stride_xm                 # (BM, 1) pointers
    w_cols = w + offs_n[None, :].to(tl.int64) * stride_wn                 # (1, BN) pointers
    m_ok = offs_m[:, None] < M
    n_ok = offs_n[None, :] < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        k = k0 + kk
        a = tl.load(x_rows + k[None, :], mask=m_ok & (k[None, :] < k_hi), other=0.0)     # (BM, BK)
        b = tl.load(w_cols + k[:, None], mask=n_ok & (k[:, None] < k_hi), other=0)       # (BK, BN)
        if W_INT8:
            if a.dtype == tl.float16:           # 1024 + (q + 128) in float16, exact
                bf = (((b.to(tl.int32) & 0xFF) ^ 0x80) | 0x6400).to(tl.int16).to(tl.float16, bitcast=True)
                b = bf - 1152.0
            else:
                bf = (((b.to(tl.int32) & 0xFF) ^ 0x80) | 0x4B000000).to(tl.float32, bitcast=True)
                b = (bf - 8388736.0).to(a.dtype)
        acc = mma(a, b, acc, UPCAST)
    _write(acc, out, part, scales, offs_m, offs_n, M, N, stride_om, pid_k, SPLIT_K, W_INT8)


@triton.jit
def _gemv_w8_kernel(x, qw, scales, out, part, N, K, stride_qn,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    """out (1, N) = (x (1, K) @ q (N, K).T) * scales; grid (N/BN, SPLIT_K)."""
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    k_per_split = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    kk = tl.arange(0, BLOCK_K)
    rows = qw + offs_n[:, None].to(tl.int64) * stride_qn                 # (BN, 1) pointers
    n_ok = offs_n[:, None] < N
    acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        k = k0 + kk
        xv = tl.load(x + k, mask=k < k_hi, other=0.0).to(tl.float32)                     # (BK,)
        q = tl.load(rows + k[None, :], mask=n_ok & (k[None, :] < k_hi), other=0)         # (BN, BK) int8
        w = (((q.to(tl.int32) & 0xFF) ^ 0x4B000080).to(tl.float32, bitcast=True)        # 2^23 + q + 128
             - 8388736.0)
        acc += w * xv[None, :]
    res = tl.sum(acc, axis=1)                                                            # (BN,)
    _write(res[None, :], out, part, scales, tl.arange(0, 1), offs_n, 1, N, 0, pid_k, SPLIT_K, True)


@triton.jit
def _gemv_w4_kernel(x, qw, scales_t, zeros_t, out, part, N, NG, stride_qn,
                    G: tl.constexpr, GROUPS: tl.constexpr, BLOCK_N: tl.constexpr,
                    SPLIT_K: tl.constexpr, HAS_ZEROS: tl.constexpr):
    """out (1, N) = x (1, K_pad) @ ((u - z) * s).T, GROUPS groups of G per step; grid (N/BN, SPLIT_K)."""
    HG: tl.constexpr = G // 2
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    g_per_split = tl.cdiv(tl.cdiv(NG, GROUPS), SPLIT_K) * GROUPS
    g_lo = pid_k * g_per_split
    g_hi = tl.minimum(NG, g_lo + g_per_split)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    gi = tl.arange(0, GROUPS)
    j = tl.arange(0, HG)
    rows = qw + offs_n[:, None, None].to(tl.int64) * stride_qn            # (BN, 1, 1) pointers
    acc = tl.zeros((BLOCK_N, GROUPS), tl.float32)
    for g0 in range(g_lo, g_hi, GROUPS):
        g = g0 + gi                                                       # (GROUPS,)
        g_ok = g < g_hi
        b = tl.load(rows + (g[None, :, None] * HG + j[None, None, :]),
                    mask=n_ok[:, None, None] & g_ok[None, :, None], other=0).to(tl.int32)  # (BN, GR, HG)
        k_lo_half = g[:, None] * G + j[None, :]                            # (GR, HG)
        x_lo = tl.load(x + k_lo_half, mask=g_ok[:, None], other=0.0).to(tl.float32)
        x_hi = tl.load(x + k_lo_half + HG, mask=g_ok[:, None], other=0.0).to(tl.float32) * 0.0625
        sg = g[None, :] * N + offs_n[:, None]                              # (BN, GR) into (NG, N)
        sg_ok = n_ok[:, None] & g_ok[None, :]
        s = tl.load(scales_t + sg, mask=sg_ok, other=0.0).to(tl.float32)
        if HAS_ZEROS:
            z = tl.load(zeros_t + sg, mask=sg_ok, other=0).to(tl.float32)
        else:
            z = tl.full((BLOCK_N, GROUPS), 8.0, tl.float32)
        lo = ((b & 0x0F) | 0x4B000000).to(tl.float32, bitcast=True) - (8388608.0 + z)[:, :, None]
        hi = ((b & 0xF0) | 0x4B000000).to(tl.float32, bitcast=True) - (8388608.0 + 16.0 * z)[:, :, None]
        acc += tl.sum(lo * x_lo[None, :, :] + hi * x_hi[None, :, :], axis=2) * s    # hi is 16 (u - z)
    res = tl.sum(acc, axis=1)
    _write(res[None, :], out, part, scales_t, tl.arange(0, 1), offs_n, 1, N, 0, pid_k, SPLIT_K, False)


@triton.jit
def _gemm_w4_kernel(x, qw, scales_t, zeros_t, out, part, M, N, NG, stride_xm, stride_qn, stride_om,
                    G: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    SPLIT_K: tl.constexpr, HAS_ZEROS: tl.constexpr, UPCAST: tl.constexpr,
                    BIAS: tl.constexpr):
    """x (M, K_pad) @ dequant(w).T on tensor cores, one group per step; grid (N/BN, M/BM, SPLIT_K)."""
    HG: tl.constexpr = G // 2
    if UPCAST:                                  # float32 math (bfloat16 under the interpreter too)
        DT: tl.constexpr = tl.float32
    else:
        DT: tl.constexpr = x.dtype.element_ty
    pid_n, pid_m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    g_per_split = tl.cdiv(NG, SPLIT_K)
    g_lo = pid_k * g_per_split
    g_hi = tl.minimum(NG, g_lo + g_per_split)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    j = tl.arange(0, HG)
    m_ok = offs_m[:, None] < M
    n_ok = offs_n < N
    x_rows = x + offs_m[:, None].to(tl.int64) * stride_xm                 # (BM, 1)
    w_cols = qw + offs_n[None, :].to(tl.int64) * stride_qn                # (1, BN)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for g in range(g_lo, g_hi):
        b = tl.load(w_cols + g * HG + j[:, None], mask=n_ok[None, :], other=0).to(tl.int32)  # (HG, BN)
        s = tl.load(scales_t + g * N + offs_n, mask=n_ok, other=0.0).to(DT)               # (BN,)
        if HAS_ZEROS:
            zb = (tl.load(zeros_t + g * N + offs_n, mask=n_ok, other=0).to(tl.float32) + BIAS).to(DT)
        else:
            zb = tl.full((BLOCK_N,), 8.0 + BIAS, DT)
        w_lo = (_small_uint_to(b & 0x0F, DT) - zb[None, :]) * s[None, :]                 # (HG, BN)
        w_hi = (_small_uint_to(b >> 4, DT) - zb[None, :]) * s[None, :]
        a_lo = tl.load(x_rows + g * G + j[None, :], mask=m_ok, other=0.0)               # (BM, HG)
        a_hi = tl.load(x_rows + g * G + HG + j[None, :], mask=m_ok, other=0.0)
        acc = mma(a_lo, w_lo, acc, UPCAST)
        acc = mma(a_hi, w_hi, acc, UPCAST)
    _write(acc, out, part, scales_t, offs_m, offs_n, M, N, stride_om, pid_k, SPLIT_K, False)


# ---- tile choice ----------------------------------------------------------------------------------

def _split_k(tiles: int, steps: int, sm_count: int) -> int:
    """Split K until tiles x splits fills the GPU about four programs deep, keeping >= 4 steps a split."""
    split = 1
    while tiles * split < 4 * sm_count and steps // (2 * split) >= 4 and split < 16:
        split *= 2
    return split


def default_config(kind: str, M: int, N: int, K: int, group_size: int = 0, *, sm_count: int = 1,
                   interpret: bool = False, dtype: torch.dtype = torch.float32) -> dict:
    """Tiles for kind in gemm | gemv_w8 | gemv_w4 | gemm_w4. Under the interpreter: few, large
    programs (its cost is per program and per op, not per element)."""
    bn = min(128 if interpret else 64, pow2(N, 16))
    if kind == "gemv_w8":
        bk = min(256, pow2(K, 16)) if interpret else 128
        return {"BLOCK_N": bn if interpret else 32, "BLOCK_K": bk, "num_warps": 4, "num_stages": 3,
                "SPLIT_K": 1 if interpret else _split_k(triton.cdiv(N, 32), triton.cdiv(K, bk), sm_count)}
    if kind == "gemv_w4":
        ng = K // group_size
        groups = min(pow2(ng), 16) if interpret else max(1, 256 // group_size)
        return {"BLOCK_N": bn if interpret else 32, "GROUPS": groups, "num_warps": 4, "num_stages": 3,
                "SPLIT_K": 1 if interpret else _split_k(triton.cdiv(N, 32), triton.cdiv(ng, groups), sm_count)}
    bm = min(64, pow2(M, 16))
    bn = min(128, pow2(N, 16))
    tiles = triton.cdiv(M, bm) * triton.cdiv(N, bn)
    if kind == "gemm_w4":
        steps = K // group_size
        return {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": 4, "num_stages": 3,
                "SPLIT_K": 1 if interpret else _split_k(tiles, steps, sm_count)}
    bk = min(128, pow2(K, 16)) if interpret else (32 if dtype == torch.float32 else 64)
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "num_warps": 4, "num_stages": 3,
            "SPLIT_K": 1 if interpret else _split_k(tiles, triton.cdiv(K, bk), sm_count)}


# ---- wrappers: check, pick tiles, launch -----------------------------------------------------------

def _check_xo(out, x, N, dev):
    check_float("x", x, dev, ndim=2)
    check_float("out", out, dev, ndim=2)
    check_shape("out", out, (x.shape[0], N))


def _launch(kernel, grid, args, cfg, out, part_args):
    """Run ``kernel`` with cfg; with SPLIT_K > 1 it writes partials that the reduce kernel sums."""
    meta, opts = launch_opts(cfg)
    split = meta["SPLIT_K"]
    M, N = out.shape
    part = out if split == 1 else torch.empty((split, M, N), dtype=torch.float32, device=out.device)
    kernel[grid(meta)](*args(part), **meta, **opts)
    if split > 1:
        scales, has_scale = part_args
        bn = min(1024, pow2(N, 16))
        _splitk_reduce_kernel[(M, triton.cdiv(N, bn))](part, scales, out, M, N, out.stride(0),
                                                        SPLIT_K=split, HAS_SCALE=has_scale, BLOCK_N=bn)
    return out


def _cfg(kind, config, M, N, K, G, ctx, dtype):
    if config is not None:
        return dict(config)
    sm = ctx.sm_count if ctx is not None else 1
    interp = ctx.interpret if ctx is not None else interpreting()
    return default_config(kind, M, N, K, G, sm_count=sm, interpret=interp, dtype=dtype)


def matmul(out, x, w, *, ctx=None, config=None):
    """out (M, N) = x (M, K) @ w (N, K).T, any of float32/float16/bfloat16 (w cast to x's dtype)."""
    dev = device_of(ctx, x)
    check_float("w", w, dev, ndim=2)
    _check_xo(out, x, w.shape[0], dev)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"w has K={w.shape[1]}, x has K={x.shape[1]}")
    (M, K), N = x.shape, w.shape[0]
    cfg = _cfg("gemm", config, M, N, K, 0, ctx, x.dtype)
    interp = ctx.interpret if ctx is not None else interpreting()
    grid = lambda m: (triton.cdiv(N, m["BLOCK_N"]), triton.cdiv(M, m["BLOCK_M"]), m["SPLIT_K"])  # noqa: E731
    args = lambda part: (x, w, w, out, part, M, N, K, x.stride(0), w.stride(0), out.stride(0))  # noqa: E731
    cfg.update(W_INT8=False, UPCAST=dot_upcast(x.dtype, interp))
    return _launch(_gemm_kernel, grid, args, cfg, out, (w, False))


def matmul_w8a16(out, x, qweight, scales, *, ctx=None, config=None):
    """out (M, N) = (x (M, K) @ qweight (N, K) int8 .T) * scales (N,)."""
    dev = device_of(ctx, x)
    check_tensor("qweight", qweight, dev, 2, (torch.int8,))
    check_float("scales", scales, dev, ndim=1, contiguous=True)
    _check_xo(out, x, qweight.shape[0], dev)
    (M, K), N = x.shape, qweight.shape[0]
    if qweight.shape[1] != K:
        raise ValueError(f"qweight has K={qweight.shape[1]}, x has K={K}")
    check_shape("scales", scales, (N,))
    interp = ctx.interpret if ctx is not None else interpreting()
    if M == 1 and (config is None or "BLOCK_K" in config and "BLOCK_M" not in config):
        cfg = _cfg("gemv_w8", config, M, N, K, 0, ctx, x.dtype)
        grid = lambda m: (triton.cdiv(N, m["BLOCK_N"]), m["SPLIT_K"])  # noqa: E731
        args = lambda part: (x, qweight, scales, out, part, N, K, qweight.stride(0))  # noqa: E731
        return _launch(_gemv_w8_kernel, grid, args, cfg, out, (scales, True))
    cfg = _cfg("gemm", config, M, N, K, 0, ctx, x.dtype)
    grid = lambda m: (triton.cdiv(N, m["BLOCK_N"]), triton.cdiv(M, m["BLOCK_M"]), m["SPLIT_K"])  # noqa: E731
    args = lambda part: (x, qweight, scales, out, part, M, N, K, x.stride(0), qweight.stride(0),  # noqa: E731
                         out.stride(0))
    cfg.update(W_INT8=True, UPCAST=dot_upcast(x.dtype, interp))
    return _launch(_gemm_kernel, grid, args, cfg, out, (scales, True))


def matmul_w4a16(out, x, qweight, scales, zeros, group_size, *, ctx=None, config=None):
    """out (M, N) = x (M, K_pad) @ ((u - z) * s).T; qweight uint8 (N, K_pad/2) (pyinfer.quant
    nibbles), scales (N, K_pad/G) float, zeros uint8 (N, K_pad/G) or None (z = 8)."""
    dev = device_of(ctx, x)
    G = int(group_size)
    if G < 32 or G & (G - 1):
        raise ValueError(f"group_size={group_size}: the triton W4A16 kernels take a power of two >= 32")
    check_tensor("qweight", qweight, dev, 2, (torch.uint8,), contiguous=True)
    check_float("scales", scales, dev, ndim=2)
    if zeros is not None:
        check_tensor("zeros", zeros, dev, 2, (torch.uint8,))
    _check_xo(out, x, qweight.shape[0], dev)
    if x.shape[1] != 2 * qweight.shape[1] or x.shape[1] % G:
        raise ValueError(f"x has K={x.shape[1]}, qweight {tuple(qweight.shape)} packs K_pad="
                         f"{2 * qweight.shape[1]} (a multiple of group_size={G})")
    cache = ctx.weights if ctx is not None else WeightCache()
    wq: Int4Weight = cache.int4(qweight, scales, zeros, G)
    return matmul_w4a16_packed(out, x, wq, ctx=ctx, config=config)


def matmul_w4a16_packed(out, x, wq: Int4Weight, *, ctx=None, config=None):
    """matmul_w4a16 on a weight already in the GPU layout (layout.repack_int4)."""
    (M, K), N, G = x.shape, wq.n, wq.group_size
    NG = K // G
    has_zeros = wq.zeros_t is not None
    zeros = wq.zeros_t if has_zeros else wq.scales_t
    interp = ctx.interpret if ctx is not None else interpreting()
    if M == 1 and (config is None or "GROUPS" in config):
        cfg = _cfg("gemv_w4", config, M, N, K, G, ctx, x.dtype)
        grid = lambda m: (triton.cdiv(N, m["BLOCK_N"]), m["SPLIT_K"])  # noqa: E731
        args = lambda part: (x, wq.qweight, wq.scales_t, zeros, out, part, N, NG,  # noqa: E731
                             wq.qweight.stride(0))
        cfg.update(G=G, HAS_ZEROS=has_zeros)
        return _launch(_gemv_w4_kernel, grid, args, cfg, out, (wq.scales_t, False))
    cfg = _cfg("gemm_w4", config, M, N, K, G, ctx, x.dtype)
    grid = lambda m: (triton.cdiv(N, m["BLOCK_N"]), triton.cdiv(M, m["BLOCK_M"]), m["SPLIT_K"])  # noqa: E731
    args = lambda part: (x, wq.qweight, wq.scales_t, zeros, out, part, M, N, NG, x.stride(0),  # noqa: E731
                         wq.qweight.stride(0), out.stride(0))
    upcast = dot_upcast(x.dtype, interp)
    cfg.update(G=G, HAS_ZEROS=has_zeros, UPCAST=upcast, BIAS=BIAS[torch.float32 if upcast else x.dtype])
    return _launch(_gemm_w4_kernel, grid, args, cfg, out, (wq.scales_t, False))
