"""Quantized weights in the layout the Triton matmuls read, made once per weight and cached per
backend instance (keyed by the weight tensor itself, weakly: a dropped model frees its entries).

int4 (W4A16), for a weight w (N, K_pad) quantized per group of G along K:

  qweight  uint8 (N, K_pad / 2)  kept as pyinfer.quant packs it: row-major, K contiguous, and
                                  within each group byte j = u[j] | u[j + G/2] << 4. A 16-byte load
                                  (one thread, one vector instruction) then holds 32 weights of one
                                  group: two runs of 16 consecutive k, one scale, one zero point. It
                                  unpacks with one AND (low half) and one AND or shift (high half),
                                  no shuffles, and the matching x values are two contiguous runs.
  scales_t (K_pad / G, N)        transposed: a tile of BLOCK_N output channels reads the scales of
                                  one group as one contiguous (coalesced) row instead of BLOCK_N
                                  strided scalars; dtype kept (float32, or float16 in the fp16 mode).
  zeros_t  uint8 (K_pad / G, N)  transposed likewise, or None for the symmetric code (z = 8).

int8 (W8A16): qweight int8 (N, K) row-major (a 16-byte load = 16 consecutive k of one channel)
and scales (N,) need no repacking; they are only checked.

A row stride that is a multiple of 16 bytes lets Triton prove 16-byte alignment of every row:
K_pad is a multiple of G >= 32, so int4 rows (K_pad/2 bytes) always are; int8 rows are when
K % 16 == 0 (all model shapes).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Int4Weight:
    qweight: torch.Tensor            # uint8 (N, K_pad / 2)
    scales_t: torch.Tensor           # (K_pad / G, N) float
    zeros_t: torch.Tensor | None     # uint8 (K_pad / G, N) or None (z = 8)
    group_size: int

    @property
    def n(self) -> int:
        return self.qweight.shape[0]

    @property
    def k_pad(self) -> int:
        return 2 * self.qweight.shape[1]


def repack_int4(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                group_size: int) -> Int4Weight:
    """QTensor int4 fields (already on the device) -> Int4Weight; copies only the scales and zeros."""
    N, half = qweight.shape
    n_groups = 2 * half // group_size
    if tuple(scales.shape) != (N, n_groups):
        raise ValueError(f"scales has shape {tuple(scales.shape)}, expected {(N, n_groups)} for "
                         f"qweight {tuple(qweight.shape)} and group_size {group_size}")
    if zeros is not None and tuple(zeros.shape) != (N, n_groups):
        raise ValueError(f"zeros has shape {tuple(zeros.shape)}, expected {(N, n_groups)}")
    scales_t = scales.t().contiguous()                                   # (K_pad/G, N)
    zeros_t = None if zeros is None else zeros.t().contiguous()          # (K_pad/G, N)
    return Int4Weight(qweight, scales_t, zeros_t, group_size)


class WeightCache:
    """qweight tensor -> its repacked scales/zeros, made on first use. Keyed by the tensor's id,
    checked against a weak reference to it (an id is reused only after its tensor died) and
    dropped when the tensor dies; an entry also remembers which scales and zeros tensors it was
    made from, so a different pairing is repacked rather than served stale. (A WeakKeyDictionary
    cannot hold torch tensors: its key comparison calls the elementwise ==.)"""

    def __init__(self):
        self._int4: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self._int4)

    def int4(self, qweight, scales, zeros, group_size) -> Int4Weight:
        entry = self._int4.get(id(qweight))
        if entry is not None:
            src, src_scales, src_zeros, g, scales_t, zeros_t = entry
            if (src() is qweight and src_scales() is scales and g == group_size
                    and (src_zeros is None if zeros is None else src_zeros() is zeros)):
                return Int4Weight(qweight, scales_t, zeros_t, group_size)
        packed = repack_int4(qweight, scales, zeros, group_size)
        key = id(qweight)
        self._int4[key] = (weakref.ref(qweight), weakref.ref(scales),
                           None if zeros is None else weakref.ref(zeros), group_size,
                           packed.scales_t, packed.zeros_t)
        weakref.finalize(qweight, self._int4.pop, key, None)
        return packed
