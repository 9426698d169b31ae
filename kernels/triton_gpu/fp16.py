"""The triton backend in float16: activations, float weights, quantization scales and the KV cache
in float16, float32 accumulation inside every kernel. A backend module of its own so one registry
line ("triton-fp16": "pyinfer.kernels.triton_gpu.fp16") makes it selectable by name."""
from __future__ import annotations

from . import arrays as _arrays
from . import load as _load


def load() -> dict:
    return _load("float16")


def arrays():
    return _arrays("float16")
