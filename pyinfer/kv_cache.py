"""Paged KV cache: a BlockManager (free list, reference counts) and the block pool it manages.

K and V of every layer live in one pool of fixed-size blocks, shape
(n_layers, num_blocks, block_size, n_kv_heads, head_dim). A sequence owns a block table (the
block ids holding its tokens in order); token at position p lives in slot
block_table[p // block_size] * block_size + p % block_size. Attention reads and writes only
through block tables and slot mappings, which are passed to the kernels as arguments.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .config import CacheConfig, ModelConfig


class KVCacheFullError(RuntimeError):
    """The block pool cannot hold what was asked; nothing was allocated."""


class BlockManager:
    """Fixed-size blocks handed out from a free list and shared by reference count."""

    def __init__(self, num_blocks: int, block_size: int):
        if not 1 <= block_size <= 256:
            raise ValueError(f"block_size={block_size} must be in [1, 256]")
        if num_blocks < 1:
            raise ValueError(f"num_blocks={num_blocks} must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free_ids: deque[int] = deque(range(num_blocks))
        self.ref_counts = np.zeros(num_blocks, dtype=np.int32)   # (num_blocks,)

    @property
    def num_free(self) -> int:
        return len(self.free_ids)

    def allocate(self, n: int) -> list[int]:
        """n fresh blocks with reference count 1, or KVCacheFullError leaving the pool unchanged."""
        if n > len(self.free_ids):
            raise KVCacheFullError(
                f"KV cache out of blocks: need {n} more, {len(self.free_ids)} of {self.num_blocks} free "
                f"(block_size {self.block_size}); give the cache more blocks or run fewer/shorter sequences")
        ids = [self.free_ids.popleft() for _ in range(n)]
        self.ref_counts[ids] = 1
        return ids

    def share(self, block_id: int) -> None:
        """One more owner for an allocated block (prefix sharing)."""
        if self.ref_counts[block_id] < 1:
            raise ValueError(f"block {block_id} is not allocated")
        self.ref_counts[block_id] += 1

    def release(self, block_ids: list[int]) -> None:
        """Drop one reference from each block; blocks nobody owns go back to the free list."""
        for b in block_ids:
            if self.ref_counts[b] < 1:
                raise ValueError(f"block {b} released more often than allocated")
            self.ref_counts[b] -= 1
            if self.ref_counts[b] == 0:
                self.free_ids.append(b)


@dataclass(frozen=True)
class BatchMetadata:
    """Everything a forward pass needs to place this step's tokens; passed as an argument."""
    seq_ids: tuple[int, ...]
    tokens: np.ndarray         # (T,) int64, the step's tokens of all sequences, concatenated
    positions: np.ndarray      # (T,) int64, each token's position in its sequence
    cu_seqlens_q: np.ndarray   # (B + 1,) int64, sequence b owns rows cu[b]:cu[b+1]
    context_lens: np.ndarray   # (B,) int32, tokens in the cache per sequence after this step
    block_tables: np.ndarray   # (B, max_blocks) int32, padded with 0 past each sequence's blocks
    slot_mapping: np.ndarray   # (T,) int64, cache slot of each new token

    @property
    def q_lens(self) -> np.ndarray:
        return np.diff(self.cu_seqlens_q)


class PagedKVCache:
    """The block pool for every layer plus each sequence's block table and length."""

    def __init__(self, model_config: ModelConfig, cache_config: CacheConfig):
        c = model_config
        self.block_size = cache_config.block_size
        num_blocks = cache_config.num_blocks or -(-c.max_seq_len // self.block_size)
        self.manager = BlockManager(num_blocks, self.block_size)
        dtype = np.dtype(cache_config.dtype)
        shape = (c.n_layers, num_blocks, self.block_size, c.n_kv_heads, c.head_dim)
        self.k = np.zeros(shape, dtype=dtype)   # (L, num_blocks, block_size, n_kv_heads, head_dim)
        self.v = np.zeros(shape, dtype=dtype)
        self.max_seq_len = c.max_seq_len
        self.block_tables: dict[int, list[int]] = {}
        self.seq_lens: dict[int, int] = {}

    @property
    def bytes_per_token(self) -> int:
        """K and V bytes one token occupies across all layers."""
        L, _, _, kvh, hd = self.k.shape
        return 2 * L * kvh * hd * self.k.itemsize

    def blocks_in_use(self) -> int:
        return self.manager.num_blocks - self.manager.num_free

    def bytes_in_use(self) -> int:
        return self.blocks_in_use() * self.block_size * self.bytes_per_token

    def _blocks_needed(self, seq_id: int, n_new: int) -> int:
        total = self.seq_lens.get(seq_id, 0) + n_new
        return -(-total // self.block_size) - len(self.block_tables.get(seq_id, []))

    def prepare(self, seq_ids: list[int], new_tokens: list[np.ndarray]) -> BatchMetadata:
        """Reserve slots for each sequence's new tokens and build the step's metadata.

        All-or-nothing: if the pool cannot hold every sequence's new tokens, KVCacheFullError is
        raised before any block changes hands."""
        if len(seq_ids) != len(new_tokens) or len(set(seq_ids)) != len(seq_ids):
            raise ValueError("prepare needs one token array per distinct sequence id")
        for sid, toks in zip(seq_ids, new_tokens):
            if len(toks) == 0:
                raise ValueError(f"sequence {sid} has no new tokens in this step")
            if self.seq_lens.get(sid, 0) + len(toks) > self.max_seq_len:
                raise ValueError(
                    f"sequence {sid} would reach {self.seq_lens.get(sid, 0) + len(toks)} tokens, "
                    f"past the model's context of {self.max_seq_len}")
        need = sum(self._blocks_needed(s, len(t)) for s, t in zip(seq_ids, new_tokens))
        if need > self.manager.num_free:
            raise KVCacheFullError(
                f"KV cache out of blocks: this step needs {need} more, {self.manager.num_free} of "
                f"{self.manager.num_blocks} free (block_size {self.block_size})")
        positions, slots = [], []
        for sid, toks in zip(seq_ids, new_tokens):
            table = self.block_tables.setdefault(sid, [])
            table.extend(self.manager.allocate(self._blocks_needed(sid, len(toks))))
            start = self.seq_lens.get(sid, 0)
            pos = np.arange(start, start + len(toks), dtype=np.int64)                  # (t,)
            slots.append(np.asarray(table, dtype=np.int64)[pos // self.block_size] * self.block_size
                         + pos % self.block_size)
            positions.append(pos)
            self.seq_lens[sid] = start + len(toks)
        max_blocks = max(len(self.block_tables[s]) for s in seq_ids)
        tables = np.zeros((len(seq_ids), max_blocks), dtype=np.int32)                 # (B, max_blocks)
        for i, sid in enumerate(seq_ids):
            tables[i, :len(self.block_tables[sid])] = self.block_tables[sid]
        return BatchMetadata(
            seq_ids=tuple(seq_ids),
            tokens=np.concatenate([np.asarray(t, dtype=np.int64) for t in new_tokens]),
            positions=np.concatenate(positions),
            cu_seqlens_q=np.concatenate([[0], np.cumsum([len(t) for t in new_tokens])]).astype(np.int64),
            context_lens=np.array([self.seq_lens[s] for s in seq_ids], dtype=np.int32),
            block_tables=tables,
            slot_mapping=np.concatenate(slots),
        )

    def free(self, seq_id: int) -> None:
        """Return a finished (or preempted) sequence's blocks to the pool."""
        self.manager.release(self.block_tables.pop(seq_id, []))
        self.seq_lens.pop(seq_id, None)
