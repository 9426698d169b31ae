"""Turns a scheduled batch into one forward pass: gathers each sequence's next tokens, reserves
their KV slots (the cache builds the BatchMetadata), runs the model, returns last-token logits."""
from __future__ import annotations

import numpy as np

from ..config import CacheConfig
from ..kv_cache import PagedKVCache
from ..model import Model
from .batch_invariant import BatchInvariantOps
from .scheduler import ScheduledBatch


def make_cache(model: Model, block_size: int, num_blocks: int, enable_prefix_caching: bool = False) -> PagedKVCache:
    """A paged cache for ``model`` (as Model.new_cache, plus prefix caching), its pool on the backend."""
    cache = PagedKVCache(model.config, CacheConfig(block_size=block_size, num_blocks=num_blocks),
                         enable_prefix_caching=enable_prefix_caching)
    arrays = getattr(model.ops, "arrays", None)
    if arrays is not None and not arrays.is_numpy:
        cache.k, cache.v = arrays.from_numpy(cache.k), arrays.from_numpy(cache.v)
    return cache


def batch_invariant_model(model: Model, tile_rows: int = 16) -> Model:
    """The same weights behind BatchInvariantOps: logits that do not depend on batch mates."""
    if isinstance(model.ops, BatchInvariantOps):
        return model
    return Model(model.weights, BatchInvariantOps(model.ops, tile_rows))


class ModelRunner:
    def __init__(self, model: Model, cache: PagedKVCache):
        self.model = model
        self.cache = cache
        self.num_forward_passes = 0

    def run(self, batch: ScheduledBatch, all_logits: bool = False, rows_per_seq: list[int] | None = None,
            drafts: dict[int, list[int]] | None = None) -> np.ndarray:
        """Logits (B, vocab) of each scheduled sequence's last new token, in batch order; with
        ``all_logits``, (T, vocab) of every new token (sequence b's rows cu[b]:cu[b+1], cu the
        cumulative sum of batch.num_tokens); with ``rows_per_seq``, the last rows_per_seq[b] rows of
        each sequence b, stacked in batch order. ``drafts``: seq_id -> draft token ids the sequence
        feeds after its pending token (speculative verification; its num_tokens counts them)."""
        drafts = drafts or {}
        new_tokens = []                                                           # B arrays of (n_b,)
        for seq, n in zip(batch.seqs, batch.num_tokens):
            start = seq.num_computed_tokens
            toks = seq.token_ids[start:start + n] + drafts.get(seq.seq_id, [])
            if len(toks) != n:
                raise RuntimeError(f"sequence {seq.seq_id} was scheduled {n} tokens but has {len(toks)} to feed")
            new_tokens.append(np.asarray(toks, np.int64))
        meta = self.cache.prepare([seq.seq_id for seq in batch.seqs], new_tokens, register=False)
        self.num_forward_passes += 1
        rows = None                         # the default, last rows only, keeps the backend's fused decode step
        if rows_per_seq is not None and any(r != 1 for r in rows_per_seq):
            ends = meta.cu_seqlens_q[1:]                                          # (B,)
            rows = np.concatenate([np.arange(e - r, e) for e, r in zip(ends, rows_per_seq)]) \
                if len(ends) else np.zeros(0, np.int64)                           # (R,)
        logits = self.model.forward(meta, self.cache, all_logits=all_logits, logit_rows=rows)  # (B, T or R, vocab)
        self.cache.register_full_blocks(meta.seq_ids)     # their K/V is written now: shareable
        return logits
