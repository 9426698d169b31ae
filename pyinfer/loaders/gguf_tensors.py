"""GGUF tensors as pyinfer arrays: float types to float32, Q8_0 / Q4_0 to QTensors bit for bit.

    Q8_0 block (34 bytes):  float16 d, int8 qs[32]            w[j] = qs[j] * d
    Q4_0 block (18 bytes):  float16 d, uint8 qs[16]           w[j] = ((qs[j] & 15) - 8) * d
                                                              w[j + 16] = ((qs[j] >> 4) - 8) * d
(llama.cpp ggml-common.h block_q8_0 / block_q4_0.) pyinfer's ``int8-g32`` is the Q8_0 code with its
scale widened to float32 (exact), and ``int4-g32-a8`` has the Q4_0 nibble layout (byte j: element j
low, j + 16 high) and code ``(u - 8) * s``, so both are copied, never requantized, and run on the W8A8 /
W4A8 kernels as llama.cpp runs them with Q8_0 activations. K-quants are dequantized to float32 with
gguf-py's numpy dequantizers (the load report says so); any other type is refused by name.
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import quants

from ..quant import QTensor, get_format

FLOAT_TYPES = {QT.F32, QT.F16, QT.BF16}
KEPT_QUANT = {QT.Q8_0: "int8-g32", QT.Q4_0: "int4-g32-a8"}
DEQUANTIZED = {QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K}
GROUP = 32


def type_name(tensor) -> str:
    return tensor.tensor_type.name


def check_type(tensor) -> None:
    """Refuse a tensor type this loader does not handle, by name."""
    t = tensor.tensor_type
    if t not in FLOAT_TYPES and t not in KEPT_QUANT and t not in DEQUANTIZED:
        handled = sorted(x.name for x in FLOAT_TYPES | set(KEPT_QUANT) | DEQUANTIZED)
        raise ValueError(f"GGUF tensor {tensor.name} has type {t.name}, which pyinfer does not handle "
                         f"(handled: {', '.join(handled)})")


def shape_of(tensor) -> tuple[int, ...]:
    """The tensor's numpy shape (GGUF lists dimensions innermost first)."""
    return tuple(int(d) for d in reversed(tensor.shape.tolist()))


def to_float32(tensor) -> np.ndarray:
    """float32 array of the tensor's numpy shape (F32/F16/BF16 widened exactly; K-quants dequantized)."""
    check_type(tensor)
    t, shape = tensor.tensor_type, shape_of(tensor)
    if t == QT.F32:
        arr = np.asarray(tensor.data, dtype=np.float32)
    elif t == QT.F16:
        arr = np.asarray(tensor.data).view(np.float16).astype(np.float32)
    elif t == QT.BF16:
        bits = np.ascontiguousarray(tensor.data).view(np.uint16).astype(np.uint32) << 16
        arr = bits.view(np.float32)
    else:
        arr = quants.dequantize(np.asarray(tensor.data), t).astype(np.float32, copy=False)
    return np.ascontiguousarray(arr.reshape(shape))


def to_qtensor(tensor) -> QTensor:
    """A Q8_0 / Q4_0 matrix (N, K), K a multiple of 32, as the QTensor holding the same codes and scales."""
    t = tensor.tensor_type
    if t not in KEPT_QUANT:
        raise ValueError(f"GGUF tensor {tensor.name}: {t.name} is not kept quantized")
    N, K = shape_of(tensor)
    if K % GROUP:
        raise ValueError(f"GGUF tensor {tensor.name}: {t.name} rows of {K} are not whole blocks of {GROUP}")
    block_bytes = quants.GGML_QUANT_SIZES[t][1]
    blocks = np.ascontiguousarray(tensor.data).reshape(N, K // GROUP, block_bytes)   # (N, K/32, bytes)
    scales = blocks[:, :, :2].copy().view(np.float16)[:, :, 0].astype(np.float32)     # (N, K/32)
    codes = np.ascontiguousarray(blocks[:, :, 2:]).reshape(N, -1)
    if t == QT.Q8_0:
        qweight = codes.view(np.int8)                                                  # (N, K)
    else:
        qweight = codes                                                                # (N, K/2) nibbles
    return QTensor(get_format(KEPT_QUANT[t]), (N, K), np.ascontiguousarray(qweight), scales)


def permute_rows(w, n_heads: int):
    """rotate-half (NEOX) rows -> adjacent-pair rows per head, for a float array or a QTensor."""
    from .hf import permute_from_hf
    if isinstance(w, QTensor):
        idx = permute_from_hf(np.arange(w.shape[0])[:, None], n_heads)[:, 0]
        return QTensor(w.fmt, w.shape, np.ascontiguousarray(w.qweight[idx]),
                       np.ascontiguousarray(w.scales[idx]), None)
    return np.ascontiguousarray(permute_from_hf(w, n_heads))
