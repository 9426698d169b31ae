"""Argument checks of the C backend's wrappers: every array's type, dtype, rank, shape and layout is
checked before C sees a pointer, and each failure is a ValueError naming the argument."""
from __future__ import annotations

import numpy as np

F32, I64 = np.dtype(np.float32), np.dtype(np.int64)


def array(name, a, dtype, ndim, writable=False):
    """a itself, after checking it is a C-contiguous numpy array of ``dtype`` and rank ``ndim``."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype).name}, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    flags = a.flags
    if not flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writable and not flags.writeable:
        raise ValueError(f"{name} must be writable")
    return a


def f32(name, a, ndim, writable=False):
    # the common case in a handful of attribute reads; anything else gets array()'s messages
    if type(a) is np.ndarray and a.dtype is F32 and a.ndim == ndim:
        flags = a.flags
        if flags.c_contiguous and (flags.writeable or not writable):
            return a
    return array(name, a, F32, ndim, writable)


def index(name, a, ndim):
    """An integer index array as contiguous int64 (copied only when it is another integer type)."""
    if type(a) is np.ndarray and a.ndim == ndim:        # the common cases without the checks' calls
        if a.dtype is I64:
            return a if a.flags.c_contiguous else np.ascontiguousarray(a)
        if a.dtype.kind in "iu":
            return np.ascontiguousarray(a, dtype=np.int64)
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.dtype is not I64 or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a, dtype=np.int64)
    return a


def shape(name, a, want):
    if a.shape != tuple(want):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(want)}")


def disjoint(out_name, out, **inputs):
    """out's bytes and each input's bytes do not overlap (np.may_share_memory: a bounds check)."""
    for name, a in inputs.items():
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"{out_name} must not overlap {name}")


def group_size(g, K, weight_bits):
    if not isinstance(g, (int, np.integer)) or isinstance(g, bool) or g <= 0:
        raise ValueError(f"group_size must be a positive int, got {g!r}")
    if K % g:
        raise ValueError(f"K={K} is not a multiple of group_size={g}")
    if weight_bits == 4 and g % 2:
        raise ValueError(f"group_size={g} must be even for int4 (two weights per byte)")
    return int(g)


def explain_paged(block_tables, context_lens, num_blocks, block_size, cu_seqlens_q=None, T_total=0):
    """The message for the first sequence whose metadata the C kernel refused."""
    for b in range(len(context_lens)):
        ctx = int(context_lens[b])
        if cu_seqlens_q is not None:
            lo, hi = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1])
            if not 0 <= lo <= hi <= T_total:
                return f"cu_seqlens_q[{b}:{b + 2}]=({lo}, {hi}) is not an increasing range within [0, {T_total}]"
            if hi == lo:
                continue
            if ctx < hi - lo:
                return (f"sequence {b}: {hi - lo} queries but only {ctx} keys in context_lens "
                        f"(queries are the last positions)")
        if ctx < 1:
            return f"context_lens[{b}]={ctx} must be >= 1"
        cap = block_tables.shape[1] * block_size
        if ctx > cap:
            return f"context_lens[{b}]={ctx} exceeds the block table's {block_tables.shape[1]} blocks of {block_size}"
        used = block_tables[b, :-(-ctx // block_size)]
        bad = used[(used < 0) | (used >= num_blocks)]
        if len(bad):
            return f"block_tables[{b}] holds block id {int(bad[0])} outside [0, {num_blocks})"
    return "invalid paged attention metadata"


def window(value) -> int:
    """A sliding-window length: an int >= 0 (0: no window)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"window={value!r} must be an int >= 0 (0: no sliding window)")
    return int(value)
