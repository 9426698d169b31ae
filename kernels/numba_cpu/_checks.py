"""Argument checks shared by the Numba wrappers (plain numpy: no numba import here).

Every wrapper checks before it calls a jitted function, because Numba does not bounds-check:
float arrays must be float32, C-contiguous and of the right shape (a wrong one is a ValueError
naming the argument, never a silent copy); index arrays may be any integer dtype and are cast to
C-contiguous int64 here, so each kernel compiles exactly one specialization; indices that would
read or write outside a buffer are refused.
"""
from __future__ import annotations

import numpy as np


def f32(name: str, arr, ndim: int, writable: bool = False) -> np.ndarray:
    """arr itself, after checking it is a C-contiguous float32 ndarray with ``ndim`` dimensions."""
    return typed(name, arr, ndim, np.float32, writable)


def typed(name: str, arr, ndim: int, dtype, writable: bool = False) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype).name}, got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writable and not arr.flags.writeable:
        raise ValueError(f"{name} must be writable")
    return arr


def index(name: str, arr, ndim: int) -> np.ndarray:
    """An integer array as C-contiguous int64 (a no-op for the int64 arrays the model passes)."""
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def in_range(name: str, idx: np.ndarray, lo: int, hi: int) -> None:
    """Every value of idx in [lo, hi)."""
    if idx.size and (idx.min() < lo or idx.max() >= hi):
        raise ValueError(f"{name} values must be in [{lo}, {hi}), got [{idx.min()}, {idx.max()}]")


def shape(name: str, arr: np.ndarray, expected: tuple, what: str = "") -> None:
    if arr.shape != tuple(expected):
        raise ValueError(f"{name} has shape {arr.shape}, expected {tuple(expected)}{what}")


def positive_int(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def finite_float(name: str, value, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, got {value!r}")
    return v


def block_tables_used(block_tables: np.ndarray, n_blocks: np.ndarray, num_blocks: int) -> None:
    """Entries a kernel will read, block_tables[b, :n_blocks[b]], must be valid block ids."""
    B, max_blocks = block_tables.shape
    if n_blocks.size and n_blocks.max() > max_blocks:
        b = int(np.argmax(n_blocks))
        raise ValueError(f"context of sequence {b} needs {n_blocks[b]} blocks but block_tables has "
                         f"{max_blocks} columns")
    used = np.arange(max_blocks)[None, :] < n_blocks[:, None]              # (B, max_blocks)
    in_range("block_tables (used entries)", block_tables[used], 0, num_blocks)


def paged_cache(k_cache, v_cache) -> tuple[int, int, int, int]:
    """(num_blocks, block_size, n_kv_heads, head_dim) after checking both caches."""
    f32("k_cache", k_cache, 4)
    f32("v_cache", v_cache, 4)
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache has shape {v_cache.shape}, k_cache has {k_cache.shape}")
    return k_cache.shape


def heads(q_name: str, q: np.ndarray, n_kv_heads: int, head_dim: int) -> int:
    """Query heads per KV head, after checking q's last two dimensions against the cache."""
    H, hd = q.shape[-2:]
    if hd != head_dim:
        raise ValueError(f"{q_name} has head_dim {hd}, K/V have {head_dim}")
    if n_kv_heads == 0 or H % n_kv_heads:
        raise ValueError(f"{q_name} has {H} heads, not a multiple of n_kv_heads={n_kv_heads}")
    return H // n_kv_heads


def window(value) -> int:
    """A sliding-window length: an int >= 0 (0: no window)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"window={value!r} must be an int >= 0 (0: no sliding window)")
    return int(value)
