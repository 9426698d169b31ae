"""The Numba backend: every decoder op as ``@njit(cache=True)`` kernels, parallel (prange) where
the work is big enough to pay for a thread launch, behind wrappers that check shapes, dtypes and
contiguity and raise ValueError naming the argument (Numba does not bounds-check).

Numba is imported only by ``load()``, never at ``import pyinfer``. Kernels compile on first call
(then come from Numba's on-disk cache) with one specialization each: float arrays must be
C-contiguous float32, index arrays are cast to int64 by the wrappers. Threads: the process's count
(pyinfer.threads). ``numba.set_num_threads`` belongs to the calling thread, so each kernel first gives
the thread it runs in that count when it differs (a worker thread that never set it would otherwise
take every core whatever --threads said).

Files, one per op family: norm_rope (rmsnorm, rope), elementwise (embedding, silu_mul, add,
kv_cache_write, argmax, softmax), matmul (float32 GEMV / GEMM), quant_int8 (W8A16, W8A8),
quant_int4 (W4A16, W4A8), attention (prefill, paged prefill), attention_decode (paged decode);
beneath them gemm_micro (float32 micro-kernels), quant_common (activation quantization and
layouts), simd / simd_int (explicit 16-lane vectors, vector exp, VNNI dpbusd with a portable
fallback), _checks (argument checks) and _par (when a parallel launch pays).
"""
from __future__ import annotations


def _in_process_thread_count(kernels: dict) -> dict:
    """Each kernel behind a check that the calling thread's Numba count is the process's. The main
    thread's is set by pyinfer.threads itself; another thread compares PYINFER_NUM_THREADS with what it
    last applied and calls numba.set_num_threads only when it changed (reading the environment on
    every call cost the numba backend ~15% of stories260K's decode)."""
    import functools
    import os
    import threading

    import numba

    from pyinfer.threads import ENV, current
    applied = threading.local()
    main = threading.main_thread().ident
    get_ident = threading.get_ident

    def wrap(fn):
        @functools.wraps(fn)
        def call(*args):
            if get_ident() != main:
                want = os.environ.get(ENV)
                if getattr(applied, "env", None) != want:
                    numba.set_num_threads(max(1, min(current(), numba.config.NUMBA_NUM_THREADS)))
                    applied.env = want
            return fn(*args)
        return call
    return {name: wrap(fn) for name, fn in kernels.items()}


def load() -> dict:
    """Op name -> kernel; ImportError when numba is not installed."""
    from . import attention, attention_decode, elementwise, matmul, norm_rope, quant_int4, quant_int8

    return _in_process_thread_count({
        "embedding": elementwise.embedding,
        "rmsnorm": norm_rope.rmsnorm,
        "rope": norm_rope.rope,
        "matmul": matmul.matmul,
        "silu_mul": elementwise.silu_mul,
        "add": elementwise.add,
        "bias_add": elementwise.bias_add,
        "kv_cache_write": elementwise.kv_cache_write,
        "attention_prefill": attention.attention_prefill,
        "paged_prefill_attention": attention.paged_prefill_attention,
        "paged_decode_attention": attention_decode.paged_decode_attention,
        "argmax": elementwise.argmax,
        "softmax": elementwise.softmax,
        "matmul_w8a16": quant_int8.matmul_w8a16,
        "matmul_w8a8": quant_int8.matmul_w8a8,
        "matmul_w4a16": quant_int4.matmul_w4a16,
        "matmul_w4a8": quant_int4.matmul_w4a8,
    })
