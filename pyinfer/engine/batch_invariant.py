"""Batch-invariant execution: a token's logits are bit-identical whatever it is batched with.

Float32 results normally depend, in the last bits, on the shape of the call: OpenBLAS computes a
one-row matmul with GEMV and small ones with special kernels, each summing in its own order, and
a prompt's attention rows come out of a different kernel than a decode's (measured on stories260K:
batched and alone logits are never bit-identical, up to 4e-5 apart). A greedy argmax can then flip
on a near-tie, so "the same request gives the same tokens in any batch" would hold almost always,
not always. ``BatchInvariantOps`` wraps a backend's ops so that it holds always:

- matmul runs in fixed tiles of ``tile_rows`` rows (the last one zero-padded), so every row goes
  through the same kernel with the same shapes, wherever it sits in the batch;
- attention, prefill and decode alike, runs one query row at a time through one numpy routine
  whose shapes depend only on that row's context length, so a prompt chunk, a whole prompt, a
  recomputation after preemption and a run of decodes produce the same bits;
- the other ops are row-wise already (checked on the numpy reference: rmsnorm, rope, SwiGLU,
  residual add, cache writes).

The price is extra matmul work on small batches (a decode of B < tile_rows sequences computes
tile_rows rows) and attention in a Python loop over query rows. It applies to float32 weights on backends whose
arrays are numpy (the CPU ones); a backend whose matmul kernel is not row-invariant within a fixed
tile would need its own mode.
"""
from __future__ import annotations

import numpy as np

from ..ops import REGISTRY


class BatchInvariantOps:
    """Every op of ``ops``, with matmul tiled and prefill attention run as per-row decodes."""

    def __init__(self, ops, tile_rows: int = 16):
        if not 1 <= tile_rows <= 4096:
            raise ValueError(f"tile_rows={tile_rows} must be in [1, 4096]")
        arrays = getattr(ops, "arrays", None)
        if arrays is not None and not arrays.is_numpy:
            raise ValueError(f"batch-invariant mode needs a backend on numpy arrays, not {ops.backend!r}")
        self.base = ops
        self.tile_rows = tile_rows
        self.backend = ops.backend
        if arrays is not None:
            self.arrays = arrays
        self.native = ()                        # no fused multi-op kernels: they have their own shapes
        for name in REGISTRY:
            setattr(self, name, getattr(ops, name))
        self.matmul = self._tiled_matmul
        self.paged_prefill_attention = self._prefill_attention
        self.paged_decode_attention = self._decode_attention

    def describe(self) -> str:
        return (f"{self.base.describe()}; batch-invariant (matmul in tiles of {self.tile_rows} rows, "
                "attention row by row in numpy)")

    def _tiled_matmul(self, out, x, w):
        """out (T, N) = x (T, K) @ w.T, computed tile_rows rows at a time with zero padding."""
        T, tile = x.shape[0], self.tile_rows
        buf = np.zeros((tile, x.shape[1]), np.float32)                        # (tile, K)
        res = np.empty((tile, w.shape[0]), np.float32)                        # (tile, N)
        for start in range(0, T, tile):
            n = min(tile, T - start)
            buf[:n] = x[start:start + n]
            buf[n:] = 0
            self.base.matmul(res, buf, w)
            out[start:start + n] = res[:n]
        return out

    def _prefill_attention(self, out, q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale):
        """paged_prefill_attention's contract: row i of sequence b sees its first
        context_len_b - (q_len_b - 1 - i) cached tokens."""
        cu, ctx = np.asarray(cu_seqlens_q, np.int64), np.asarray(context_lens, np.int64)
        for b in range(len(ctx)):
            lo, hi = int(cu[b]), int(cu[b + 1])
            lens = ctx[b] - (hi - 1 - np.arange(lo, hi))                       # (q_len,)
            _attend_rows(out[lo:hi], q[lo:hi], k_cache, v_cache, block_tables[b], lens, scale)
        return out

    def _decode_attention(self, out, q, k_cache, v_cache, block_tables, context_lens, scale):
        """paged_decode_attention's contract: one query row per sequence over its whole context."""
        for b in range(q.shape[0]):
            _attend_rows(out[b:b + 1], q[b:b + 1], k_cache, v_cache, block_tables[b],
                         np.asarray(context_lens[b:b + 1], np.int64), scale)
        return out


def _attend_rows(out, q, k_cache, v_cache, block_table, lens, scale) -> None:
    """out, q: (R, H, hd) rows of one sequence; row r attends to the sequence's first lens[r] tokens.
    Every array a row touches has shapes set by lens[r] alone, so its bits do not depend on R."""
    block_size, KVH, hd = k_cache.shape[1:]
    H = q.shape[1]
    n_blocks = -(-int(lens.max()) // block_size)
    blocks = np.asarray(block_table[:n_blocks])
    k_seq = k_cache[blocks].reshape(-1, KVH, hd)                                # (S_max, KVH, hd)
    v_seq = v_cache[blocks].reshape(-1, KVH, hd)
    for r, n in enumerate(lens):
        k, v = k_seq[:n], v_seq[:n]                                               # (n, KVH, hd), contiguous
        qg = q[r].reshape(KVH, H // KVH, hd)                                      # (KVH, group, hd)
        scores = np.matmul(qg, k.transpose(1, 2, 0)) * np.float32(scale)         # (KVH, group, n)
        p = np.exp(scores - scores.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        out[r] = np.matmul(p, v.transpose(1, 0, 2)).reshape(H, hd)               # (KVH, group, hd)
