"""Triton backend: the decoder's ops as Triton kernels on torch tensors, on a CUDA GPU or, with
TRITON_INTERPRET=1 set before triton is imported, in Triton's interpreter on the CPU (how CI runs).

    load(dtype="float32") -> {op name: callable}     one backend instance (its own caches)
    arrays(dtype="float32") -> TorchArrays             how the model allocates and moves arrays

Nothing here imports torch or triton at ``import pyinfer`` time: ``load()`` does, and raises
ImportError with the reason when torch or triton is missing, or when there is neither a CUDA
device nor TRITON_INTERPRET=1.

Float dtype: the registry's "triton" is float32 end to end (the reference's dtype; logits match
it to the float32 tolerance). ``load("float16")`` / ``arrays("float16")`` (also the module
``pyinfer.kernels.triton_gpu.fp16``) keep activations, float weights, quantization scales and the
KV cache in float16: from_numpy turns float32 arrays into float16 tensors, to_numpy returns float32.
Index arrays keep their integer dtype. Files: matmul.py, attention.py, paged_attention.py,
norm_rope.py, layout.py (quantized weights' GPU layout).
"""
from __future__ import annotations

import functools
import os

import numpy as np

OPS = ("embedding", "rmsnorm", "rope", "matmul", "silu_mul", "add", "bias_add", "kv_cache_write",
       "attention_prefill", "paged_prefill_attention", "paged_decode_attention",
       "matmul_w8a16", "matmul_w4a16")


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")


def _toolchain():
    """(torch module, device) for this process, or ImportError saying what is missing."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"the triton backend needs torch ({e})") from e
    try:
        import triton  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the triton backend needs triton ({e})") from e
    if _interpreting():
        return torch, torch.device("cpu")
    if not torch.cuda.is_available():
        raise ImportError("the triton backend needs a CUDA GPU and torch sees none "
                          "(torch.cuda.is_available() is False); to run its kernels on the CPU in "
                          "Triton's interpreter, set TRITON_INTERPRET=1 before triton is imported")
    return torch, torch.device("cuda", torch.cuda.current_device())


def load(dtype: str = "float32") -> dict:
    """One backend instance: its ops bound to a fresh context (device, float dtype, caches)."""
    _, device = _toolchain()
    from . import attention, matmul, norm_rope, paged_attention
    from ._common import make_context
    ctx = make_context(device, dtype)
    modules = (norm_rope, matmul, attention, paged_attention)
    impls = {}
    for name in OPS:
        fn = next(getattr(m, name) for m in modules if hasattr(m, name))
        impls[name] = functools.wraps(fn)(functools.partial(fn, ctx=ctx))
    return impls


class TorchArrays:
    """ops.arrays for the triton backend: torch tensors on its device (see NumpyArrays)."""

    is_numpy = False

    def __init__(self, device, float_dtype):
        self.device, self.float_dtype = device, float_dtype

    def _dtype(self, dtype):
        import torch
        dt = np.dtype(dtype)
        if dt.kind == "f":
            return self.float_dtype
        return {np.dtype(np.int64): torch.int64, np.dtype(np.int32): torch.int32,
                np.dtype(np.uint8): torch.uint8, np.dtype(np.int8): torch.int8,
                np.dtype(np.bool_): torch.bool}[dt]

    def empty(self, shape, dtype=np.float32):
        import torch
        return torch.empty(shape, dtype=self._dtype(dtype), device=self.device)

    def zeros(self, shape, dtype=np.float32):
        import torch
        return torch.zeros(shape, dtype=self._dtype(dtype), device=self.device)

    def from_numpy(self, a):
        """A copy on the device: float arrays in the backend's float dtype, integers as they are
        (a torch tensor is moved likewise: the model may be rebuilt from backend weights)."""
        import torch
        if isinstance(a, torch.Tensor):
            return a.to(device=self.device, dtype=self.float_dtype if a.is_floating_point() else a.dtype)
        a = np.asarray(a)
        if self.device.type == "cpu" or not a.flags.writeable or not a.flags.c_contiguous:
            a = np.array(a, copy=True, order="C")      # never a view of the caller's array
        return torch.from_numpy(a).to(device=self.device, dtype=self._dtype(a.dtype))

    @staticmethod
    def to_numpy(t):
        """float32 numpy for float tensors; integer tensors keep their dtype."""
        t = t.detach()
        if t.is_floating_point():
            t = t.float()
        return t.cpu().numpy()


def arrays(dtype: str = "float32") -> TorchArrays:
    torch, device = _toolchain()
    from ._common import FLOAT_DTYPES
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(FLOAT_DTYPES)}")
    return TorchArrays(device, FLOAT_DTYPES[dtype])
