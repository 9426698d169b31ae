"""Paged KV cache: the block pool and each sequence's block table, on a BlockManager (block_manager.py:
free list, reference counts, prefix hashes, transactions).

K and V of every layer live in one pool of fixed-size blocks, shape
(n_layers, num_blocks, block_size, n_kv_heads, head_dim). A sequence owns a block table (the
block ids holding its tokens in order); token at position p lives in slot
block_table[p // block_size] * block_size + p % block_size. Attention reads and writes only
through block tables and slot mappings, which are passed to the kernels as arguments.

Prefix caching (``enable_prefix_caching=True``): every full block is named by a chained hash,
hash(parent block's hash, this block's token ids), so equal hashes mean equal prefixes. A new
sequence whose prompt starts with cached full blocks shares them by reference count instead of
recomputing them. A block nobody references keeps its hash and waits on an LRU list; it is
evicted (its hash forgotten) only when a fresh block is needed and the plain free list is empty.
A block written while another sequence still references it (a forked sequence's shared partial
last block, say) is copied first: copy-on-write.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .block_manager import _ROOT_HASH, BlockManager, KVCacheFullError, block_hash  # noqa: F401 - re-exported
from .config import CacheConfig, ModelConfig


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


def _token_array(new_tokens) -> np.ndarray:
    """The step's tokens concatenated (T,) int64; ValueError for float, bool or nested token ids
    (a float id would be truncated silently by a cast)."""
    arrays = [np.asarray(t) for t in new_tokens]
    for a in arrays:
        if a.ndim != 1 or (a.dtype.kind not in "iu" and a.size):
            raise ValueError(f"token ids must be 1-D integer arrays, got shape {a.shape} dtype {a.dtype}")
    return np.concatenate(arrays).astype(np.int64, copy=False) if arrays else np.zeros(0, np.int64)


def padded_tables(rows: list[list[int]]) -> np.ndarray:
    """(B, max_blocks) int32 block tables, each row padded with 0 past its sequence's blocks."""
    if len(rows) == 1:
        return np.array(rows, dtype=np.int32)                                     # (1, blocks)
    tables = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.int32)    # (B, max_blocks)
    for i, r in enumerate(rows):
        tables[i, :len(r)] = r
    return tables


class PagedKVCache:
    """The block pool for every layer plus each sequence's block table and length."""

    def __init__(self, model_config: ModelConfig, cache_config: CacheConfig, enable_prefix_caching: bool = False):
        c = model_config
        self.block_size = cache_config.block_size
        num_blocks = cache_config.num_blocks or -(-c.max_seq_len // self.block_size)
        self.manager = BlockManager(num_blocks, self.block_size)
        dtype = np.dtype(cache_config.dtype)
        shape = (c.n_layers, num_blocks, self.block_size, c.n_kv_heads, c.head_dim)
        # written, not calloc'd: the pool's pages are touched once here, not on each first write in a step
        # (a fresh stories110M cache cost 20 ms of page faults inside the first prefill's kv writes)
        self.k = np.full(shape, 0, dtype=dtype)     # (L, num_blocks, block_size, n_kv_heads, head_dim)
        self.v = np.full(shape, 0, dtype=dtype)
        self.max_seq_len = c.max_seq_len
        self.enable_prefix_caching = enable_prefix_caching
        self.block_tables: dict[int, list[int]] = {}
        self.seq_lens: dict[int, int] = {}
        self.seq_tokens: dict[int, list[int]] = {}      # token ids in the cache (prefix caching only)
        self.seq_hashes: dict[int, list[int]] = {}      # chained hash of each full block (prefix caching only)
        self.peak_blocks_in_use = 0
        self._saved = None                              # begin()'s copy of the tables

    @property
    def num_blocks(self) -> int:
        return self.manager.num_blocks

    @property
    def num_free_blocks(self) -> int:
        """Blocks a new allocation can get, cached-but-unreferenced ones included."""
        return self.manager.num_free

    @property
    def bytes_per_token(self) -> int:
        """K and V bytes one token occupies across all layers."""
        L, _, _, kvh, hd = self.k.shape
        return 2 * L * kvh * hd * self.k.itemsize

    def blocks_in_use(self) -> int:
        return self.manager.num_blocks - self.manager.num_free

    def bytes_in_use(self) -> int:
        return self.blocks_in_use() * self.block_size * self.bytes_per_token

    def blocks_needed(self, seq_id: int, n_new: int) -> int:
        """Fresh blocks that appending n_new tokens to seq_id takes, a copy-on-write copy included."""
        table = self.block_tables.get(seq_id, [])
        start = self.seq_lens.get(seq_id, 0)
        total = start + n_new
        grow = -(-total // self.block_size) - len(table)
        first = start // self.block_size                  # the block the first new token lands in
        cow = int(n_new > 0 and first < len(table) and self.manager.ref_counts[table[first]] > 1)
        return grow + cow

    def match_prefix(self, seq_id: int, token_ids) -> int:
        """Give a new sequence the cached full blocks its tokens start with; returns how many tokens
        they hold (a multiple of block_size). At least one token is always left to compute, so the
        step that finishes the prompt still yields its logits."""
        if seq_id in self.block_tables:
            raise ValueError(f"sequence {seq_id} already has blocks; match_prefix is for new sequences")
        if not self.enable_prefix_caching:
            return 0
        bs, parent, table, hashes = self.block_size, _ROOT_HASH, [], []
        for j in range((len(token_ids) - 1) // bs):
            tokens = tuple(int(t) for t in token_ids[j * bs:(j + 1) * bs])
            h = block_hash(parent, tokens)
            b = self.manager.lookup(h, parent, tokens)
            if b is None:
                break
            self.manager.share(b)
            table.append(b)
            hashes.append(h)
            parent = h
        n = len(table) * bs
        if table:
            self.block_tables[seq_id] = table
            self.seq_lens[seq_id] = n
            self.seq_tokens[seq_id] = [int(t) for t in token_ids[:n]]
            self.seq_hashes[seq_id] = hashes
        return n

    def prepare(self, seq_ids: list[int], new_tokens: list[np.ndarray], register: bool = True) -> BatchMetadata:
        """Reserve slots for each sequence's new tokens and build the step's metadata.

        All-or-nothing: if the pool cannot hold every sequence's new tokens (KVCacheFullError) or an
        argument is wrong (ValueError), nothing changes. With prefix caching, the new full blocks are
        registered here unless ``register=False``: then the caller registers them with
        ``register_full_blocks`` once the forward pass has written their K/V (the engine does)."""
        tokens = _token_array(new_tokens)                                            # (T,) int64
        if not self.enable_prefix_caching and len(seq_ids) == len(new_tokens):
            batch = self._prepare_decode(seq_ids, new_tokens, tokens)
            if batch is not None:
                return batch
        if len(seq_ids) != len(new_tokens) or len(set(seq_ids)) != len(seq_ids):
            raise ValueError("prepare needs one token array per distinct sequence id")
        for sid, toks in zip(seq_ids, new_tokens):
            if len(toks) == 0:
                raise ValueError(f"sequence {sid} has no new tokens in this step")
            if self.seq_lens.get(sid, 0) + len(toks) > self.max_seq_len:
                raise ValueError(
                    f"sequence {sid} would reach {self.seq_lens.get(sid, 0) + len(toks)} tokens, "
                    f"past the model's context of {self.max_seq_len}")
        need = sum(self.blocks_needed(s, len(t)) for s, t in zip(seq_ids, new_tokens))
        if need > self.manager.num_free:
            raise KVCacheFullError(
                f"KV cache out of blocks: this step needs {need} more, {self.manager.num_free} of "
                f"{self.manager.num_blocks} free (block_size {self.block_size})")
        bs, positions, slots = self.block_size, [], []
        for sid, toks in zip(seq_ids, new_tokens):
            table = self.block_tables.setdefault(sid, [])
            start = self.seq_lens.get(sid, 0)
            self._copy_on_write(table, start // bs)
            table.extend(self.manager.allocate(self.blocks_needed(sid, len(toks))))
            if len(toks) == 1:                          # decode: plain ints, no per-sequence arrays
                positions.append(start)
                slots.append(table[start // bs] * bs + start % bs)
            else:
                pos = np.arange(start, start + len(toks), dtype=np.int64)              # (t,)
                positions.extend(pos.tolist())
                slots.extend((np.asarray(table, dtype=np.int64)[pos // bs] * bs + pos % bs).tolist())
            self.seq_lens[sid] = start + len(toks)
            if self.enable_prefix_caching:
                self.seq_tokens.setdefault(sid, []).extend(int(t) for t in toks)
                if register:
                    self._register_full_blocks(sid)
        self.peak_blocks_in_use = max(self.peak_blocks_in_use, self.blocks_in_use())
        lens = [len(t) for t in new_tokens]
        return BatchMetadata(
            seq_ids=tuple(seq_ids),
            tokens=tokens,
            positions=np.array(positions, dtype=np.int64),
            cu_seqlens_q=np.array([0, *itertools.accumulate(lens)], dtype=np.int64),
            context_lens=np.array([self.seq_lens[s] for s in seq_ids], dtype=np.int32),
            block_tables=padded_tables([self.block_tables[s] for s in seq_ids]),
            slot_mapping=np.array(slots, dtype=np.int64),
        )

    def _prepare_decode(self, seq_ids: list[int], new_tokens: list[np.ndarray],
                        tokens: np.ndarray) -> BatchMetadata | None:
        """prepare() for the common decode step, one new token per distinct sequence, no prefix caching and
        no write into a shared block: the same metadata with a fraction of the general path's Python (at
        stories260K's 60 us a token, prepare() was a fifth of it). None, before anything changes, when
        the step is not that one; the general path then does it, or raises its error."""
        bs, lens, tables, refs = self.block_size, self.seq_lens, self.block_tables, self.manager.ref_counts
        starts, grow = [], 0
        for sid, toks in zip(seq_ids, new_tokens):
            start = lens.get(sid, 0)
            if len(toks) != 1 or start >= self.max_seq_len:
                return None
            table, idx = tables.get(sid, ()), start // bs
            if idx == len(table):
                grow += 1
            elif idx > len(table) or refs[table[idx]] > 1:
                return None
            starts.append(start)
        if len(set(seq_ids)) != len(seq_ids) or grow > self.manager.num_free:
            return None
        fresh = iter(self.manager.allocate(grow) if grow else ())
        slots, rows = [], []
        for sid, start in zip(seq_ids, starts):
            table = tables.setdefault(sid, [])
            if start // bs == len(table):
                table.append(next(fresh))
            slots.append(table[start // bs] * bs + start % bs)
            lens[sid] = start + 1
            rows.append(table)
        self.peak_blocks_in_use = max(self.peak_blocks_in_use, self.blocks_in_use())
        B = len(seq_ids)
        return BatchMetadata(
            seq_ids=tuple(seq_ids),
            tokens=tokens,
            positions=np.array(starts, dtype=np.int64),
            cu_seqlens_q=np.arange(B + 1, dtype=np.int64),
            context_lens=np.array([s + 1 for s in starts], dtype=np.int32),
            block_tables=padded_tables(rows),
            slot_mapping=np.array(slots, dtype=np.int64),
        )

    def _copy_on_write(self, table: list[int], idx: int) -> None:
        """Before writing into table[idx]: copy it if another sequence shares it; forget its prefix
        hash if this sequence is its only owner (its contents are about to change)."""
        if idx >= len(table):
            return
        old = table[idx]
        if self.manager.ref_counts[old] > 1:
            new = self.manager.allocate(1)[0]
            self.k[:, new] = self.k[:, old]
            self.v[:, new] = self.v[:, old]
            self.manager.release([old])
            table[idx] = new
        else:
            self.manager.unregister(old)

    def register_full_blocks(self, seq_ids) -> None:
        """Name the full blocks of these sequences in the prefix cache (after their K/V is written)."""
        if self.enable_prefix_caching:
            for sid in seq_ids:
                if sid in self.seq_tokens:
                    self._register_full_blocks(sid)

    def _register_full_blocks(self, sid: int) -> None:
        tokens = self.seq_tokens[sid]
        hashes, table, bs = self.seq_hashes.setdefault(sid, []), self.block_tables[sid], self.block_size
        for j in range(len(hashes), len(tokens) // bs):
            parent = hashes[-1] if hashes else _ROOT_HASH
            block_tokens = tuple(tokens[j * bs:(j + 1) * bs])
            h = block_hash(parent, block_tokens)
            self.manager.register(table[j], h, parent, block_tokens)
            hashes.append(h)

    def fork(self, src_id: int, dst_id: int) -> None:
        """dst_id starts as a copy of src_id that shares every block, a partial last one included;
        whichever writes a shared block first gets its own copy (copy-on-write)."""
        if src_id not in self.block_tables:
            raise ValueError(f"cannot fork sequence {src_id}: it has no blocks")
        if dst_id in self.block_tables:
            raise ValueError(f"cannot fork into sequence {dst_id}: it already has blocks")
        for b in self.block_tables[src_id]:
            self.manager.share(b)
        self.block_tables[dst_id] = list(self.block_tables[src_id])
        self.seq_lens[dst_id] = self.seq_lens[src_id]
        if self.enable_prefix_caching:
            self.seq_tokens[dst_id] = list(self.seq_tokens.get(src_id, []))
            self.seq_hashes[dst_id] = list(self.seq_hashes.get(src_id, []))

    def truncate(self, seq_id: int, length: int) -> None:
        """Keep only the first ``length`` tokens of a sequence (speculative decoding's rollback):
        blocks past them are released, and the now-partial last block loses its prefix hash."""
        cur = self.seq_lens.get(seq_id, 0)
        if not 0 <= length <= cur:
            raise ValueError(f"cannot truncate sequence {seq_id} of {cur} tokens to {length}")
        table = self.block_tables.get(seq_id, [])
        keep = -(-length // self.block_size)
        self.manager.release(table[keep:][::-1])
        del table[keep:]
        self.seq_lens[seq_id] = length
        if seq_id in self.seq_tokens:
            if self._saved is not None:                  # inside a transaction these lists shrink: keep
                for saved, live in ((self._saved[2], self.seq_tokens), (self._saved[3], self.seq_hashes)):
                    lst, n = saved.get(seq_id, (None, 0))    # their begin() contents for rollback
                    if lst is not None and lst is live.get(seq_id):
                        saved[seq_id] = (lst[:n], n)     # a copy, no longer the live list
            del self.seq_tokens[seq_id][length:]
            del self.seq_hashes.setdefault(seq_id, [])[length // self.block_size:]

    # ---- transactions ---------------------------------------------------------------------------

    def begin(self) -> None:
        """Remember the tables (the pool's bookkeeping is remembered lazily by the manager); K/V
        written after this goes only to slots past each sequence's length or to fresh blocks, so
        rollback() needs no copy of the pool itself."""
        self._saved = ({s: list(t) for s, t in self.block_tables.items()}, dict(self.seq_lens),
                       {s: (t, len(t)) for s, t in self.seq_tokens.items()},
                       {s: (h, len(h)) for s, h in self.seq_hashes.items()}, self.peak_blocks_in_use)
        self.manager.begin()

    def commit(self) -> None:
        self._saved = None
        self.manager.commit()

    def rollback(self) -> None:
        """Every table, length and block count as at begin()."""
        saved, self._saved = self._saved, None
        self.manager.rollback()
        if saved is None:
            return
        self.block_tables, self.seq_lens, tokens, hashes, self.peak_blocks_in_use = saved
        for saved_lists in (tokens, hashes):
            for lst, n in saved_lists.values():
                del lst[n:]                              # live lists only grew; truncated ones were copied
        self.seq_tokens = {s: lst for s, (lst, _) in tokens.items()}
        self.seq_hashes = {s: lst for s, (lst, _) in hashes.items()}

    def free(self, seq_id: int) -> None:
        """Return a finished (or preempted) sequence's blocks to the pool. The last blocks are
        released first, so a cached prefix's tail is evicted before its head."""
        self.manager.release(self.block_tables.pop(seq_id, [])[::-1])
        self.seq_lens.pop(seq_id, None)
        self.seq_tokens.pop(seq_id, None)
        self.seq_hashes.pop(seq_id, None)


class OneSequenceDecode:
    """Decode steps of one sequence (generate()'s loop), its metadata arrays written in place:
    prepare() builds seven arrays a step (~13 us, an eighth of a stories260K token). Each step's
    BatchMetadata is valid until the next step. A step the fast path does not cover (prefix caching,
    a shared block to copy on write) goes through prepare(), which also raises its errors."""

    def __init__(self, cache: PagedKVCache, seq_id: int):
        self.cache, self.seq_id = cache, seq_id
        width = -(-cache.max_seq_len // cache.block_size)
        self.table = np.zeros((1, width), np.int32)         # (1, max_blocks) the sequence's blocks, 0-padded
        self.tokens = np.zeros(1, np.int64)                 # (1,)
        self.positions = np.zeros(1, np.int64)              # (1,)
        self.slots = np.zeros(1, np.int64)                  # (1,)
        self.context_lens = np.zeros(1, np.int32)           # (1,)
        self.cu = np.arange(2, dtype=np.int64)              # (2,)

    def step(self, token: int) -> BatchMetadata:
        c, sid = self.cache, self.seq_id
        start = c.seq_lens.get(sid, 0)
        table = c.block_tables.get(sid)
        bs = c.block_size
        idx = start // bs
        if (c.enable_prefix_caching or table is None or start >= c.max_seq_len or idx > len(table)
                or (idx < len(table) and c.manager.ref_counts[table[idx]] > 1)):
            return c.prepare([sid], [np.array([token], dtype=np.int64)])
        if idx == len(table):
            table.extend(c.manager.allocate(1))             # KVCacheFullError leaves everything as it was
            c.peak_blocks_in_use = max(c.peak_blocks_in_use, c.blocks_in_use())
        n = len(table)
        self.table[0, :n] = table
        self.tokens[0], self.positions[0], self.context_lens[0] = token, start, start + 1
        self.slots[0] = table[idx] * bs + start % bs
        c.seq_lens[sid] = start + 1
        return BatchMetadata(seq_ids=(sid,), tokens=self.tokens, positions=self.positions, cu_seqlens_q=self.cu,
                             context_lens=self.context_lens, block_tables=self.table[:, :n],
                             slot_mapping=self.slots)
