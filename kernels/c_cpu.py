"""C kernels (csrc/, built into pyinfer._C by cffi at install): check, allocate, call.

Every wrapper validates shapes, dtypes and contiguity and raises ValueError naming the argument
before the C code sees a pointer: C never trusts a size it was not given.
"""
from __future__ import annotations

import numpy as np


def _check_f32(name, arr, ndim, writable=False):
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.float32:
        raise ValueError(f"{name} must be float32, got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writable and not arr.flags.writeable:
        raise ValueError(f"{name} must be writable")


def load():
    """The C backend's kernels by op name; ImportError when the extension was not built."""
    from pyinfer import _C  # noqa: PLC0415 - a missing build must not break import pyinfer
    ffi, lib = _C.ffi, _C.lib

    def ptr(arr):
        return ffi.from_buffer("float[]", arr)

    def rmsnorm(out, x, weight, eps):
        """out, x: (T, D) float32; weight: (D,)."""
        _check_f32("x", x, 2)
        _check_f32("weight", weight, 1)
        _check_f32("out", out, 2, writable=True)
        if weight.shape[0] != x.shape[1]:
            raise ValueError(f"weight has shape {weight.shape}, x has D={x.shape[1]}")
        if out.shape != x.shape:
            raise ValueError(f"out has shape {out.shape}, x has {x.shape}")
        lib.rmsnorm_f32(ptr(out), ptr(x), ptr(weight), x.shape[0], x.shape[1], float(eps))
        return out

    return {"rmsnorm": rmsnorm}
