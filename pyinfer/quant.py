"""Weight quantization formats, shared by every backend: int8 per channel, int8 per group,
int4 per group (symmetric or with a zero point), and the kernels that consume them.

A linear weight w (N, K) (out_features, in_features) becomes a QTensor:

  int8         W8A16  qweight int8 (N, K), scales f32 (N,)         w = q * s[n]
  int8-gG      W8A8   qweight int8 (N, K), scales f32 (N, K/G)     w = q * s[n, k // G]; activations
                      are quantized to int8 per group of G at run time (llama.cpp Q8_0 x Q8_0, run.c's runq)
  int4-gG      W4A16  qweight uint8 (N, K/2), scales f32 (N, K/G)  w = (u - 8) * s     (Q4_0's symmetric code)
  int4-gG-zp   W4A16  + zeros uint8 (N, K/G)                       w = (u - z) * s     (asymmetric, min/max)
  int4-gG-a8, int4-gG-zp-a8: the same weights, activations to int8 per group (W4A8, Q4_0 x Q8_0)

Nibble layout (chosen for SIMD unpacking, as llama.cpp's Q4_0): within each group of G weights of a
row, byte j holds element j in its low nibble and element j + G/2 in its high nibble.
K not a multiple of G is padded with zero weights to K_pad; ``matmul`` pads x to match.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from .kernels import reference as ref
from .weights import LayerWeights, ModelWeights


@dataclass(frozen=True)
class QuantFormat:
    name: str
    weight_bits: int          # 8 or 4
    group_size: int           # 0: one scale per output channel
    zero_point: bool          # int4 only: per-group integer zero point
    act_int8: bool            # activations quantized to int8 per group (integer dot products)

    @property
    def kernel(self) -> str:
        """The ops registry name of the matmul that consumes this format."""
        return f"matmul_w{self.weight_bits}a{8 if self.act_int8 else 16}"

    def bits_per_weight(self, k: int) -> float:
        """Exact storage bits per weight of a row of k inputs (scales f32, zeros u8), padding included."""
        if self.group_size == 0:
            return self.weight_bits + 32 / k
        g = self.group_size
        k_pad = -(-k // g) * g
        per_group = self.weight_bits * g + 32 + (8 if self.zero_point else 0)
        return per_group * (k_pad // g) / k


def _formats() -> dict[str, QuantFormat]:
    out = {"int8": QuantFormat("int8", 8, 0, False, False)}
    for g in (32, 64):
        out[f"int8-g{g}"] = QuantFormat(f"int8-g{g}", 8, g, False, True)
    for g in (32, 64, 128):
        for zp in (False, True):
            for a8 in (False, True):
                name = f"int4-g{g}" + ("-zp" if zp else "") + ("-a8" if a8 else "")
                out[name] = QuantFormat(name, 4, g, zp, a8)
    return out


FORMATS = _formats()


def get_format(name: str) -> QuantFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown quantization format {name!r}; known: {', '.join(FORMATS)}") from None


@dataclass(frozen=True)
class QTensor:
    fmt: QuantFormat
    shape: tuple[int, int]            # (N, K) of the float weight it stands for
    qweight: np.ndarray               # int8 (N, K_pad) or uint8 (N, K_pad // 2)
    scales: np.ndarray                # f32 (N,) or (N, K_pad // G)
    zeros: np.ndarray | None = None   # u8 (N, K_pad // G) for -zp formats

    @property
    def k_pad(self) -> int:
        return self.qweight.shape[1] * (2 if self.fmt.weight_bits == 4 else 1)

    @property
    def nbytes(self) -> int:
        return self.qweight.nbytes + self.scales.nbytes + (0 if self.zeros is None else self.zeros.nbytes)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.nbytes / (self.shape[0] * self.shape[1])

    def kernel_args(self) -> tuple:
        """Arguments after (out, x) of this format's matmul op."""
        f = self.fmt
        if f.weight_bits == 8:
            return (self.qweight, self.scales) if f.group_size == 0 else (self.qweight, self.scales, f.group_size)
        return self.qweight, self.scales, self.zeros, f.group_size

    def matmul(self, ops, out: np.ndarray, x: np.ndarray) -> np.ndarray:
        """out (T, N) = x (T, K) @ dequantized(w).T through the format's kernel in ``ops``."""
        if x.shape[1] != self.k_pad:
            xp = ops.arrays.zeros((x.shape[0], self.k_pad))         # (T, K_pad), zero tail
            xp[:, :x.shape[1]] = x
            x = xp
        return getattr(ops, self.fmt.kernel)(out, x, *self.kernel_args())

    def dequantize(self) -> np.ndarray:
        """float32 (N, K): the weight this tensor stands for."""
        f = self.fmt
        w = ref.dequantize_weight(self.qweight, self.scales, self.zeros, f.group_size, f.weight_bits)
        return np.ascontiguousarray(w[:, :self.shape[1]])


def _pad_k(w: np.ndarray, g: int) -> np.ndarray:
    k = w.shape[1]
    if g == 0 or k % g == 0:
        return w
    out = np.zeros((w.shape[0], -(-k // g) * g), np.float32)
    out[:, :k] = w
    return out


def pack_int4(u: np.ndarray, group_size: int) -> np.ndarray:
    """u: uint8 (N, K) values 0..15 -> (N, K/2): per group, byte j = u[j] | u[j + G/2] << 4."""
    N, K = u.shape
    v = u.reshape(N, K // group_size, 2, group_size // 2)
    return (v[:, :, 0, :] | (v[:, :, 1, :] << 4)).reshape(N, K // 2).astype(np.uint8)


def quantize(w: np.ndarray, fmt: QuantFormat | str) -> QTensor:
    """Quantize a float32 linear weight (N, K) to ``fmt``, round half to even."""
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    if isinstance(w, QTensor):
        raise ValueError(f"a weight is already quantized ({w.fmt.name}, e.g. a GGUF's Q8_0 / Q4_0): "
                         f"requantizing it to {fmt.name} is refused")
    if w.ndim != 2 or w.dtype != np.float32:
        raise ValueError(f"quantize needs a float32 (N, K) weight, got {w.dtype} {w.shape}")
    N, K = w.shape
    g = fmt.group_size
    wp = _pad_k(w, g)                                                # (N, K_pad)
    groups = wp.reshape(N, -1, g) if g else wp.reshape(N, 1, K)      # (N, G, g)
    if fmt.weight_bits == 8:
        s = np.abs(groups).max(axis=2) / np.float32(127)             # (N, G)
        safe = np.where(s == 0, np.float32(1), s)[:, :, None]
        q = np.clip(np.rint(groups / safe), -127, 127).astype(np.int8).reshape(N, -1)
        return QTensor(fmt, (N, K), q, (s[:, 0] if g == 0 else s).astype(np.float32))
    if fmt.zero_point:
        lo = np.minimum(groups.min(axis=2), 0)                       # the range includes 0
        hi = np.maximum(groups.max(axis=2), 0)
        s = ((hi - lo) / np.float32(15)).astype(np.float32)          # (N, G)
        safe = np.where(s == 0, np.float32(1), s)
        z = np.clip(np.rint(-lo / safe), 0, 15).astype(np.uint8)     # (N, G)
        u = np.clip(np.rint(groups / safe[:, :, None]) + z[:, :, None], 0, 15)
    else:                                                            # Q4_0: the extreme maps to -8
        idx = np.abs(groups).argmax(axis=2)[:, :, None]
        m = np.take_along_axis(groups, idx, axis=2)[:, :, 0]         # signed value of largest |w|
        s = (m / np.float32(-8)).astype(np.float32)
        safe = np.where(s == 0, np.float32(1), s)
        z = None
        u = np.clip(np.rint(groups / safe[:, :, None]) + 8, 0, 15)
    return QTensor(fmt, (N, K), pack_int4(u.astype(np.uint8).reshape(N, -1), g), s, z)


LINEAR_WEIGHTS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


def quantize_weights(weights: ModelWeights, fmt: QuantFormat | str) -> ModelWeights:
    """Every linear weight of the decoder and the output head quantized; embeddings and norms stay f32."""
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    from .arena import pack_weights      # arena imports this module
    layers = [replace(lw, **{n: quantize(getattr(lw, n), fmt) for n in LINEAR_WEIGHTS}) for lw in weights.layers]
    return pack_weights(ModelWeights(weights.config, weights.tok_embeddings, layers, weights.norm,
                                     quantize(weights.output, fmt)))


def dequantize_weights(weights: ModelWeights) -> ModelWeights:
    """The float32 model a quantized one stands for (for quality measurements)."""
    def f(w):
        return w.dequantize() if isinstance(w, QTensor) else w
    layers = [LayerWeights(**{fl.name: f(getattr(lw, fl.name)) for fl in fields(LayerWeights)})
              for lw in weights.layers]
    return ModelWeights(weights.config, weights.tok_embeddings, layers, weights.norm, f(weights.output))
