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

    def run(self, batch: ScheduledBatch, all_logits: bool = False) -> np.ndarray:
        """Logits (B, vocab) of each scheduled sequence's last new token, in batch order; with
        ``all_logits``, (T, vocab) of every new token (sequence b's rows cu[b]:cu[b+1], cu the
        cumulative sum of batch.num_tokens)."""
        new_tokens = [np.asarray(seq.token_ids[seq.num_computed_tokens:seq.num_computed_tokens + n], np.int64)
                      for seq, n in zip(batch.seqs, batch.num_tokens)]          # B arrays of (n_b,)
        meta = self.cache.prepare([seq.seq_id for seq in batch.seqs], new_tokens, register=False)
        self.num_forward_passes += 1
        logits = self.model.forward(meta, self.cache, all_logits=all_logits)    # (B or T, vocab)
        self.cache.register_full_blocks(meta.seq_ids)     # their K/V is written now: shareable
        return logits
