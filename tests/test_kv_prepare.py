"""PagedKVCache.prepare's decode fast path gives the general path's metadata and state, step for step:
random decode batches over new, growing, forked (copy-on-write) and finished sequences, block
boundaries, and the errors (full pool, context end, duplicate ids) from the general path."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pyinfer.config import CacheConfig, ModelConfig
from pyinfer.kv_cache import KVCacheFullError, PagedKVCache

CFG = ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=32, vocab_size=50, max_seq_len=40,
                  name="kv-prepare-test")


def pair(block_size: int, num_blocks: int):
    fast = PagedKVCache(CFG, CacheConfig(block_size=block_size, num_blocks=num_blocks))
    general = PagedKVCache(CFG, CacheConfig(block_size=block_size, num_blocks=num_blocks))
    general._prepare_decode = lambda *a: None            # always the general path
    return fast, general


def same_state(a: PagedKVCache, b: PagedKVCache):
    assert a.block_tables == b.block_tables and a.seq_lens == b.seq_lens
    assert a.manager.num_free == b.manager.num_free and a.peak_blocks_in_use == b.peak_blocks_in_use
    np.testing.assert_array_equal(a.manager.ref_counts, b.manager.ref_counts)


def same_batch(x, y):
    for f in dataclasses.fields(x):
        u, v = getattr(x, f.name), getattr(y, f.name)
        if isinstance(u, np.ndarray):
            assert u.dtype == v.dtype and u.shape == v.shape, f.name
            np.testing.assert_array_equal(u, v, err_msg=f.name)
        else:
            assert u == v, f.name


@pytest.mark.parametrize("block_size", [1, 3, 16])
def test_decode_fast_path_matches_the_general_path(block_size):
    rng = np.random.default_rng()
    fast, general = pair(block_size, num_blocks=-(-40 // block_size) * 3)
    live, next_id = [], 0
    for _ in range(120):
        if rng.random() < 0.15 and len(live) < 4:               # a new sequence (its first token is a decode)
            live.append(next_id)
            next_id += 1
        if rng.random() < 0.1 and live:                         # fork one: shared blocks, copy on write
            src = live[int(rng.integers(len(live)))]
            if fast.seq_lens.get(src, 0):
                for c in (fast, general):
                    c.fork(src, next_id)
                live.append(next_id)
                next_id += 1
        if rng.random() < 0.1 and live:                         # finish one
            sid = live.pop(int(rng.integers(len(live))))
            for c in (fast, general):
                c.free(sid)
        step = [s for s in live if rng.random() < 0.8]
        if not step:
            continue
        toks = [np.array([rng.integers(50)]) for _ in step]
        outcomes = []
        for c in (fast, general):
            try:
                outcomes.append(c.prepare(list(step), toks))
            except (KVCacheFullError, ValueError) as e:
                outcomes.append(type(e))
        if isinstance(outcomes[0], type):
            assert outcomes[0] is outcomes[1]
            for sid in step:                                    # drop what cannot go on
                if sid in live:
                    live.remove(sid)
                    for c in (fast, general):
                        c.free(sid)
        else:
            same_batch(*outcomes)
        same_state(fast, general)


def test_duplicate_ids_and_the_context_end_raise_as_before():
    fast, _ = pair(4, 30)
    with pytest.raises(ValueError, match="distinct"):
        fast.prepare([0, 0], [np.array([1]), np.array([2])])
    fast.prepare([1], [np.arange(40)])
    with pytest.raises(ValueError, match="past the model's context"):
        fast.prepare([1], [np.array([3])])


@pytest.mark.parametrize("block_size", [1, 3, 16])
def test_one_sequence_decode_matches_prepare(block_size, rng):
    """generate()'s in-place stepper: prepare()'s metadata and state at every step, through block
    boundaries, a shared block (copy on write, via prepare), the context end and a full pool."""
    from pyinfer.kv_cache import OneSequenceDecode
    fast, general = pair(block_size, num_blocks=-(-40 // block_size) + 1)
    n_prompt = int(rng.integers(1, 20))
    prompt, forked = rng.integers(0, 50, n_prompt), rng.random() < 0.5
    for c in (fast, general):
        c.prepare([0], [prompt])
        if forked:                                              # a twin shares the prompt's blocks
            c.fork(0, 1)
    steps = OneSequenceDecode(fast, 0)
    for pos in range(n_prompt, 40):
        tok = int(rng.integers(0, 50))
        same_batch(steps.step(tok), general.prepare([0], [np.array([tok])]))
        same_state(fast, general)
    for c in (fast, general):                                   # the context is full: both refuse alike
        with pytest.raises(ValueError, match="context"):
            OneSequenceDecode(c, 0).step(1) if c is fast else c.prepare([0], [np.array([1])])
        same_state(fast, general)
    # a pool with no block left for the next token: KVCacheFullError, nothing changed
    small = PagedKVCache(CFG, CacheConfig(block_size=block_size, num_blocks=1))
    small.prepare([0], [np.arange(block_size) % 50])
    before = (dict(small.seq_lens), {s: list(t) for s, t in small.block_tables.items()}, small.manager.num_free)
    with pytest.raises(KVCacheFullError):
        OneSequenceDecode(small, 0).step(1)
    assert before == (dict(small.seq_lens), {s: list(t) for s, t in small.block_tables.items()},
                      small.manager.num_free)
