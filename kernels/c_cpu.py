"""C kernels (csrc/, built into pyinfer._C by cffi at install): check, allocate, call.

Every wrapper validates shapes, dtypes and contiguity and raises ValueError naming the argument
before the C code sees a pointer: C never trusts a size it was not given. Index arguments (tokens,
slots, block tables) are range-checked inside C before anything is written.

Module-level controls (process-wide, like OpenMP's own): ``num_threads()``, ``set_num_threads(n)``,
``isa()`` / ``set_isa(level)`` and the ``isa_cap(name)`` context manager that tests use to run the
AVX2 and scalar bodies on a machine that has AVX-512.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np

from . import c_checks as chk

ISA_NAMES = ("scalar", "avx2", "avx512", "amx")


def _lib():
    from pyinfer import _C  # noqa: PLC0415 - a missing build must not break import pyinfer
    return _C.ffi, _C.lib


def isa() -> str:
    """The instruction set the kernels use now: scalar, avx2, avx512 (with VNNI) or amx."""
    return ISA_NAMES[_lib()[1].pyinfer_isa()]


def detected_isa() -> str:
    return ISA_NAMES[_lib()[1].pyinfer_detected_isa()]


def set_isa(name: str) -> str:
    """Cap the instruction set (never above what the CPU has); returns the previous cap."""
    if name not in ISA_NAMES:
        raise ValueError(f"unknown instruction set {name!r}; known: {', '.join(ISA_NAMES)}")
    return ISA_NAMES[_lib()[1].pyinfer_set_isa(ISA_NAMES.index(name))]


@contextlib.contextmanager
def isa_cap(name: str):
    previous = set_isa(name)
    try:
        yield
    finally:
        set_isa(previous)


def num_threads() -> int:
    return _lib()[1].pyinfer_num_threads()


def max_threads() -> int:
    """The most OpenMP threads set_num_threads accepts: 4 per CPU this process may run on (more
    only oversubscribes; 100000 overflowed libgomp's stack)."""
    import os  # noqa: PLC0415
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 4 * cpus


def set_num_threads(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
        raise ValueError(f"thread count must be an int, got {type(n).__name__} {n!r}")
    if not 1 <= n <= max_threads():
        raise ValueError(f"thread count must be in [1, {max_threads()}] (4 per CPU this process may use), got {n}")
    _lib()[1].pyinfer_set_num_threads(int(n))




def load():
    """The C backend's kernels by op name; ImportError when the extension was not built."""
    ffi, lib = _lib()
    buf = ffi.from_buffer
    F, I8, U8, I64 = "float[]", "int8_t[]", "uint8_t[]", "int64_t[]"

    def embedding(out, tokens, table):
        """out: (T, D) float32; tokens: (T,) int; table: (V, D) float32."""
        tokens = chk.index("tokens", tokens, 1)
        chk.f32("table", table, 2)
        chk.f32("out", out, 2, writable=True)
        chk.shape("out", out, (len(tokens), table.shape[1]))
        bad = lib.embedding_f32(buf(F, out), buf(I64, tokens), buf(F, table), len(tokens), *table.shape)
        if bad:
            raise ValueError(f"tokens[{bad - 1}]={int(tokens[bad - 1])} is outside [0, {table.shape[0]})")
        return out

    def rmsnorm(out, x, weight, eps):
        """out, x: (T, D) float32; weight: (D,)."""
        chk.f32("x", x, 2)
        chk.f32("weight", weight, 1)
        chk.f32("out", out, 2, writable=True)
        if weight.shape[0] != x.shape[1]:
            raise ValueError(f"weight has shape {weight.shape}, x has D={x.shape[1]}")
        if out.shape != x.shape:
            raise ValueError(f"out has shape {out.shape}, x has {x.shape}")
        lib.rmsnorm_f32(buf(F, out), buf(F, x), buf(F, weight), x.shape[0], x.shape[1], float(eps))
        return out

    def rope(out, x, positions, inv_freq):
        """out, x: (T, n_heads * head_dim) float32 (out may be x); positions: (T,) int;
        inv_freq: (head_dim / 2,) float32 (the numpy reference's table, pyinfer/rope.py)."""
        chk.f32("x", x, 2)
        chk.f32("out", out, 2, writable=True)
        chk.f32("inv_freq", inv_freq, 1)
        positions = chk.index("positions", positions, 1)
        chk.shape("out", out, x.shape)
        chk.shape("positions", positions, (x.shape[0],))
        head_dim = 2 * inv_freq.shape[0]
        if head_dim < 2 or x.shape[1] % head_dim:
            raise ValueError(f"inv_freq has {inv_freq.shape[0]} entries: head_dim={head_dim} must divide "
                             f"the width {x.shape[1]}")
        if out is not x:
            chk.disjoint("out", out, x=x)
        freq = inv_freq
        lib.rope_f32(buf(F, out), buf(F, x), buf(I64, positions), buf(F, freq), x.shape[0], x.shape[1], int(head_dim))
        return out

    def matmul(out, x, w):
        """out: (T, N) float32; x: (T, K); w: (N, K). out = x @ w.T"""
        chk.f32("x", x, 2)
        chk.f32("w", w, 2)
        chk.f32("out", out, 2, writable=True)
        if w.shape[1] != x.shape[1]:
            raise ValueError(f"w has shape {w.shape}, x has K={x.shape[1]}")
        chk.shape("out", out, (x.shape[0], w.shape[0]))
        chk.disjoint("out", out, x=x, w=w)
        lib.matmul_f32(buf(F, out), buf(F, x), buf(F, w), x.shape[0], w.shape[0], x.shape[1])
        return out

    def silu_mul(out, gate, up):
        """out, gate, up: (T, H) float32."""
        chk.f32("gate", gate, gate.ndim if isinstance(gate, np.ndarray) else 2)
        chk.f32("up", up, gate.ndim)
        chk.f32("out", out, gate.ndim, writable=True)
        chk.shape("up", up, gate.shape)
        chk.shape("out", out, gate.shape)
        lib.silu_mul_f32(buf(F, out), buf(F, gate), buf(F, up), gate.size)
        return out

    def add(out, x, y):
        """out, x, y: same shape float32 (out may alias x)."""
        chk.f32("x", x, x.ndim if isinstance(x, np.ndarray) else 1)
        chk.f32("y", y, x.ndim)
        chk.f32("out", out, x.ndim, writable=True)
        chk.shape("y", y, x.shape)
        chk.shape("out", out, x.shape)
        lib.add_f32(buf(F, out), buf(F, x), buf(F, y), x.size)
        return out

    def bias_add(out, x, bias):
        """out, x: (T, N) float32 (out may be x); bias: (N,). out = x + bias per row."""
        chk.f32("x", x, 2)
        chk.f32("bias", bias, 1)
        chk.f32("out", out, 2, writable=True)
        chk.shape("out", out, x.shape)
        chk.shape("bias", bias, (x.shape[1],))
        if out is not x:
            chk.disjoint("out", out, x=x)
        lib.bias_add_f32(buf(F, out), buf(F, x), buf(F, bias), x.shape[0], x.shape[1])
        return out

    def kv_cache_write(k_cache, v_cache, k, v, slot_mapping):
        """k_cache, v_cache: (num_blocks, block_size, KVH, hd); k, v: (T, KVH, hd); slot_mapping: (T,)."""
        chk.f32("k_cache", k_cache, 4, writable=True)
        chk.f32("v_cache", v_cache, 4, writable=True)
        chk.shape("v_cache", v_cache, k_cache.shape)
        chk.f32("k", k, 3)
        chk.f32("v", v, 3)
        slots = chk.index("slot_mapping", slot_mapping, 1)
        chk.shape("k", k, (len(slots), *k_cache.shape[2:]))
        chk.shape("v", v, k.shape)
        num_slots = k_cache.shape[0] * k_cache.shape[1]
        bad = lib.kv_cache_write_f32(buf(F, k_cache), buf(F, v_cache), buf(F, k), buf(F, v), buf(I64, slots),
                                     len(slots), num_slots, k_cache.shape[2] * k_cache.shape[3])
        if bad:
            raise ValueError(f"slot_mapping[{bad - 1}]={int(slots[bad - 1])} is outside [0, {num_slots})")
        return k_cache, v_cache

    def attention_prefill(out, q, k, v, scale):
        """out, q: (T, n_heads, head_dim); k, v: (S, n_kv_heads, head_dim), S >= T; causal."""
        chk.f32("q", q, 3)
        chk.f32("k", k, 3)
        chk.f32("v", v, 3)
        chk.f32("out", out, 3, writable=True)
        T, H, hd = q.shape
        S, KVH, _ = k.shape
        chk.shape("k", k, (S, KVH, hd))
        chk.shape("v", v, k.shape)
        chk.shape("out", out, q.shape)
        if KVH == 0 or H % KVH:
            raise ValueError(f"n_heads={H} is not a multiple of n_kv_heads={KVH}")
        if T > S:
            raise ValueError(f"attention_prefill: {T} queries but only {S} keys (queries are the last T positions)")
        chk.disjoint("out", out, q=q, k=k, v=v)
        lib.attention_prefill_f32(buf(F, out), buf(F, q), buf(F, k), buf(F, v), T, S, H, KVH, hd, float(scale))
        return out

    def _paged_common(out, q, k_cache, v_cache, block_tables, context_lens, overlap=True):
        chk.f32("q", q, 3)
        chk.f32("out", out, 3, writable=True)
        chk.shape("out", out, q.shape)
        chk.f32("k_cache", k_cache, 4)
        chk.f32("v_cache", v_cache, 4)
        chk.shape("v_cache", v_cache, k_cache.shape)
        tables = chk.index("block_tables", block_tables, 2)
        lens = chk.index("context_lens", context_lens, 1)
        _, H, hd = q.shape
        KVH = k_cache.shape[2]
        if k_cache.shape[3] != hd:
            raise ValueError(f"k_cache has head_dim {k_cache.shape[3]}, q has {hd}")
        if KVH == 0 or H % KVH:
            raise ValueError(f"n_heads={H} is not a multiple of n_kv_heads={KVH}")
        if tables.shape[0] != lens.shape[0]:
            raise ValueError(f"block_tables has {tables.shape[0]} rows, context_lens {lens.shape[0]}")
        if overlap:             # else the caller's C kernel checks it (cheaper than may_share_memory)
            chk.disjoint("out", out, q=q, k_cache=k_cache, v_cache=v_cache)
        return tables, lens

    def paged_prefill_attention(out, q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale):
        """out, q: (T_total, H, hd); caches: (num_blocks, block_size, KVH, hd); block_tables: (B, max_blocks);
        cu_seqlens_q: (B + 1,); context_lens: (B,)."""
        tables, lens = _paged_common(out, q, k_cache, v_cache, block_tables, context_lens)
        cu = chk.index("cu_seqlens_q", cu_seqlens_q, 1)
        chk.shape("cu_seqlens_q", cu, (len(lens) + 1,))
        nb, bs, KVH, hd = k_cache.shape
        bad = lib.paged_prefill_attention_f32(buf(F, out), buf(F, q), buf(F, k_cache), buf(F, v_cache), buf(I64, tables),
                                              buf(I64, cu), buf(I64, lens), len(lens), tables.shape[1], nb, bs,
                                              q.shape[0], q.shape[1], KVH, hd, float(scale))
        if bad:
            raise ValueError(chk.explain_paged(tables, lens, nb, bs, cu, q.shape[0]))
        return out

    def paged_decode_attention(out, q, k_cache, v_cache, block_tables, context_lens, scale):
        """out, q: (B, H, hd); caches: (num_blocks, block_size, KVH, hd); block_tables: (B, max_blocks);
        context_lens: (B,) >= 1."""
        tables, lens = _paged_common(out, q, k_cache, v_cache, block_tables, context_lens, overlap=False)
        if len(lens) != q.shape[0]:
            raise ValueError(f"context_lens has {len(lens)} entries, q has {q.shape[0]} sequences")
        nb, bs, KVH, hd = k_cache.shape
        bad = lib.paged_decode_attention_f32(buf(F, out), buf(F, q), buf(F, k_cache), buf(F, v_cache), buf(I64, tables),
                                             buf(I64, lens), len(lens), tables.shape[1], nb, bs, q.shape[1], KVH, hd,
                                             float(scale))
        if bad == -2:
            chk.disjoint("out", out, q=q, k_cache=k_cache, v_cache=v_cache)    # names the overlap
            raise ValueError("out must not overlap q, k_cache or v_cache")
        if bad < 0:
            raise MemoryError("paged_decode_attention: no memory for its per-call scratch")
        if bad:
            raise ValueError(chk.explain_paged(tables, lens, nb, bs))
        return out

    def argmax(out, logits):
        """out: (B,) int64; logits: (B, V) float32."""
        chk.f32("logits", logits, 2)
        chk.array("out", out, np.int64, 1, writable=True)
        chk.shape("out", out, logits.shape[:1])
        if logits.shape[1] == 0 and logits.shape[0]:
            raise ValueError("argmax of an empty vocabulary")
        lib.argmax_f32(ffi.from_buffer(I64, out), buf(F, logits), *logits.shape)
        return out

    def softmax(out, logits, temperature):
        """out, logits: (B, V) float32; softmax(logits / temperature), temperature > 0."""
        chk.f32("logits", logits, 2)
        chk.f32("out", out, 2, writable=True)
        chk.shape("out", out, logits.shape)
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        lib.softmax_f32(buf(F, out), buf(F, logits), *logits.shape, float(temperature))
        return out

    def _qcommon(out, x, qweight, qdtype, k_factor):
        chk.f32("x", x, 2)
        chk.array("qweight", qweight, qdtype, 2)
        chk.f32("out", out, 2, writable=True)
        T, K = x.shape
        N = qweight.shape[0]
        if qweight.shape[1] * k_factor != K:
            raise ValueError(f"qweight has shape {qweight.shape}, x has K={K}")
        chk.shape("out", out, (T, N))
        chk.disjoint("out", out, x=x)
        return T, N, K

    def matmul_w8a16(out, x, qweight, scales):
        """out: (T, N) f32; x: (T, K) f32; qweight: int8 (N, K); scales: f32 (N,)."""
        T, N, K = _qcommon(out, x, qweight, np.int8, 1)
        chk.f32("scales", scales, 1)
        chk.shape("scales", scales, (N,))
        lib.matmul_w8a16(buf(F, out), buf(F, x), buf(I8, qweight), buf(F, scales), T, N, K)
        return out

    def matmul_w8a8(out, x, qweight, scales, group_size):
        """out: (T, N) f32; x: (T, K) f32; qweight: int8 (N, K); scales: f32 (N, K/G)."""
        T, N, K = _qcommon(out, x, qweight, np.int8, 1)
        G = chk.group_size(group_size, K, 8)
        chk.f32("scales", scales, 2)
        chk.shape("scales", scales, (N, K // G))
        lib.matmul_w8a8(buf(F, out), buf(F, x), buf(I8, qweight), buf(F, scales), T, N, K, G)
        return out

    def _w4(fn, out, x, qweight, scales, zeros, group_size):
        T, N, K = _qcommon(out, x, qweight, np.uint8, 2)
        G = chk.group_size(group_size, K, 4)
        chk.f32("scales", scales, 2)
        chk.shape("scales", scales, (N, K // G))
        zp = ffi.NULL
        if zeros is not None:
            chk.array("zeros", zeros, np.uint8, 2)
            chk.shape("zeros", zeros, (N, K // G))
            zp = buf(U8, zeros)
        fn(buf(F, out), buf(F, x), buf(U8, qweight), buf(F, scales), zp, T, N, K, G)
        return out

    def matmul_w4a16(out, x, qweight, scales, zeros, group_size):
        """out: (T, N) f32; x: (T, K) f32; qweight: uint8 (N, K/2) nibbles; scales: f32 (N, K/G);
        zeros: uint8 (N, K/G) or None (symmetric, z = 8)."""
        return _w4(lib.matmul_w4a16, out, x, qweight, scales, zeros, group_size)

    def matmul_w4a8(out, x, qweight, scales, zeros, group_size):
        """As matmul_w4a16 with x quantized to int8 per group: integer dots of xq and (u - z)."""
        return _w4(lib.matmul_w4a8, out, x, qweight, scales, zeros, group_size)

    ops = {"embedding": embedding, "rmsnorm": rmsnorm, "rope": rope, "matmul": matmul, "silu_mul": silu_mul, "bias_add": bias_add,
           "add": add, "kv_cache_write": kv_cache_write, "attention_prefill": attention_prefill,
           "paged_prefill_attention": paged_prefill_attention, "paged_decode_attention": paged_decode_attention,
           "argmax": argmax, "softmax": softmax, "matmul_w8a16": matmul_w8a16, "matmul_w8a8": matmul_w8a8,
           "matmul_w4a16": matmul_w4a16, "matmul_w4a8": matmul_w4a8}
    from pyinfer.ops import REGISTRY  # noqa: PLC0415
    if "decode_step" in REGISTRY:                  # the fused op, once the registry lists it
        from .c_fused import make_decode_step  # noqa: PLC0415
        ops["decode_step"] = make_decode_step(ffi, lib)
    return ops
