"""The block manager of the paged KV cache: fixed-size blocks handed out from a free list, shared by
reference count, named by prefix hashes, with transactions (begin / commit / rollback) so a failed
engine step leaves it as it was. kv_cache.PagedKVCache owns one; see kv_cache.py for the layout."""
from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np

_ROOT_HASH = 0x9E3779B97F4A7C15     # parent hash of a sequence's first block


def block_hash(parent: int, tokens) -> int:
    """Chained hash of a full block: equal hashes mean equal token prefixes (up to collisions,
    which the cache guards against by also comparing the block's tokens and parent)."""
    return hash((parent, tuple(int(t) for t in tokens)))


class KVCacheFullError(RuntimeError):
    """The block pool cannot hold what was asked; nothing was allocated."""


class BlockManager:
    """Fixed-size blocks handed out from a free list and shared by reference count.

    Free blocks sit in two places: ``free_ids`` (holding nothing worth keeping) and ``cached_free``
    (holding a full block registered under a prefix hash, least recently released first).
    ``allocate`` drains ``free_ids`` first and evicts from ``cached_free`` only when it is empty."""

    def __init__(self, num_blocks: int, block_size: int):
        if not 1 <= block_size <= 256:
            raise ValueError(f"block_size={block_size} must be in [1, 256]")
        if num_blocks < 1:
            raise ValueError(f"num_blocks={num_blocks} must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free_ids: deque[int] = deque(range(num_blocks))
        self.cached_free: OrderedDict[int, None] = OrderedDict()   # LRU order, oldest first
        self.ref_counts = np.zeros(num_blocks, dtype=np.int32)     # (num_blocks,)
        self.hash_of: dict[int, tuple[int, int, tuple[int, ...]]] = {}  # block -> (hash, parent, tokens)
        self.block_of: dict[int, int] = {}                          # hash -> block
        self.num_allocated = 0      # fresh blocks handed out, ever
        self.num_evicted = 0        # cached blocks whose prefix was forgotten to make room
        self._in_txn = False        # inside begin() .. commit()/rollback()
        self._saved = None          # the state at begin(), copied at the first change after it

    # ---- transactions: an engine step's changes are undone when the step raises ------------------

    def begin(self) -> None:
        """Start a transaction. The state is copied lazily, at the first change (most decode steps
        change nothing here), so an unchanged step costs nothing."""
        self._in_txn, self._saved = True, None

    def commit(self) -> None:
        self._in_txn, self._saved = False, None

    def rollback(self) -> None:
        """Back to the state at begin(), except that a block whose prefix entry was dropped since
        (evicted or written in place) stays dropped: its K/V may have been overwritten."""
        saved, self._in_txn, self._saved = self._saved, False, None
        if saved is None:
            return
        now = self.hash_of
        (self.free_ids, self.cached_free, self.ref_counts, self.hash_of, self.block_of,
         self.num_allocated, self.num_evicted) = saved
        for b, entry in list(self.hash_of.items()):
            if now.get(b) != entry:
                self.unregister(b)

    def _save(self) -> None:
        if self._in_txn and self._saved is None:
            self._saved = (deque(self.free_ids), OrderedDict(self.cached_free), self.ref_counts.copy(),
                           dict(self.hash_of), dict(self.block_of), self.num_allocated, self.num_evicted)

    @property
    def num_free(self) -> int:
        return len(self.free_ids) + len(self.cached_free)

    @property
    def num_cached(self) -> int:
        return len(self.block_of)

    def allocate(self, n: int) -> list[int]:
        """n fresh blocks with reference count 1, or KVCacheFullError leaving the pool unchanged."""
        if n > self.num_free:
            raise KVCacheFullError(
                f"KV cache out of blocks: need {n} more, {self.num_free} of {self.num_blocks} free "
                f"(block_size {self.block_size}); give the cache more blocks or run fewer/shorter sequences")
        self._save()
        ids = []
        for _ in range(n):
            if self.free_ids:
                b = self.free_ids.popleft()
            else:
                b, _ = self.cached_free.popitem(last=False)      # evict the least recently released
                self.unregister(b)
                self.num_evicted += 1
            ids.append(b)
        self.ref_counts[ids] = 1
        self.num_allocated += n
        return ids

    def share(self, block_id: int) -> None:
        """One more owner for a block: an allocated one, or a cached free one brought back."""
        self._save()
        if self.ref_counts[block_id] < 1:
            if block_id not in self.cached_free:
                raise ValueError(f"block {block_id} is not allocated")
            del self.cached_free[block_id]
        self.ref_counts[block_id] += 1

    def release(self, block_ids: list[int]) -> None:
        """Drop one reference from each block; blocks nobody owns become free (cached if hashed)."""
        self._save()
        for b in block_ids:
            if self.ref_counts[b] < 1:
                raise ValueError(f"block {b} released more often than allocated")
            self.ref_counts[b] -= 1
            if self.ref_counts[b] == 0:
                if b in self.hash_of:
                    self.cached_free[b] = None
                else:
                    self.free_ids.append(b)

    def register(self, block_id: int, h: int, parent: int, tokens: tuple[int, ...]) -> None:
        """Name a full block by its prefix hash; the first block registered under a hash keeps it."""
        if h not in self.block_of and block_id not in self.hash_of:
            self._save()
            self.block_of[h] = block_id
            self.hash_of[block_id] = (h, parent, tokens)

    def unregister(self, block_id: int) -> None:
        """Forget a block's prefix (it is being overwritten or evicted)."""
        if block_id not in self.hash_of:
            return
        self._save()
        entry = self.hash_of.pop(block_id)
        if entry is not None:
            del self.block_of[entry[0]]
            if self.ref_counts[block_id] == 0 and block_id in self.cached_free:
                del self.cached_free[block_id]
                self.free_ids.append(block_id)

    def lookup(self, h: int, parent: int, tokens: tuple[int, ...]) -> int | None:
        """The cached block holding exactly this prefix, or None."""
        b = self.block_of.get(h)
        if b is None or self.hash_of[b][1:] != (parent, tokens):
            return None
        return b
