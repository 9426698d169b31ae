"""The decoder on the paged cache: paging is invisible, mixed batches equal runs alone, errors are clear."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.config import ModelConfig
from pyinfer.kv_cache import KVCacheFullError
from pyinfer.model import Model
from pyinfer.weights import random_weights

SMALL = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=300,
                    max_seq_len=300, name="small-gqa")


@pytest.fixture(scope="module")
def model():
    return Model(random_weights(SMALL, seed=3))


def run_alone(model, prompt, decode_tokens, block_size):
    cache = model.new_cache(num_blocks=-(-SMALL.max_seq_len // block_size), block_size=block_size)
    logits = [model.forward(cache.prepare([0], [prompt]), cache)[0]]
    for t in decode_tokens:
        logits.append(model.forward(cache.prepare([0], [np.array([t])]), cache)[0])
    return np.array(logits)                                   # (1 + n_decode, vocab)


def assert_logits_close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("block_size", [1, 16, 256])
def test_paging_is_invisible(model, rng, block_size):
    lengths = [1, 7, block_size, block_size + 1, 33, 100, 255, 257]
    prompts = [rng.integers(0, SMALL.vocab_size, n) for n in lengths]
    decodes = rng.integers(0, SMALL.vocab_size, (len(lengths), 3))
    alone = [run_alone(model, p, d, block_size) for p, d in zip(prompts, decodes)]

    cache = model.new_cache(num_blocks=sum(-(-(n + 3) // block_size) for n in lengths), block_size=block_size)
    ids = [11 * i + 5 for i in range(len(lengths))]          # arbitrary sequence ids
    batched = [model.forward(cache.prepare(ids, prompts), cache)]
    for step in range(3):
        batched.append(model.forward(cache.prepare(ids, [d[step:step + 1] for d in decodes]), cache))
    for i in range(len(lengths)):
        assert_logits_close(np.array([b[i] for b in batched]), alone[i])


def test_chunked_prefill_beside_decodes_equals_alone(model, rng):
    """Any mix in one step: a prompt arriving in chunks while other sequences decode."""
    long_prompt, short_prompt = rng.integers(0, 300, 70), rng.integers(0, 300, 5)
    decodes = rng.integers(0, 300, 4)
    want_long = run_alone(model, long_prompt, [], 16)[0]
    want_short = run_alone(model, short_prompt, decodes, 16)
    cache = model.new_cache(num_blocks=20, block_size=16)
    got_short = [model.forward(cache.prepare([1], [short_prompt]), cache)[0]]
    for i, chunk in enumerate(np.array_split(long_prompt, 4)):
        out = model.forward(cache.prepare([1, 2], [decodes[i:i + 1], chunk]), cache)
        got_short.append(out[0])
    assert_logits_close(out[1], want_long)
    assert_logits_close(np.array(got_short), want_short)


def test_all_logits_equal_one_token_at_a_time(model, rng):
    prompt = rng.integers(0, 300, 19)
    cache = model.new_cache(num_blocks=4, block_size=8)
    full = model.forward(cache.prepare([0], [prompt]), cache, all_logits=True)    # (19, vocab)
    assert_logits_close(full, run_alone(model, prompt[:1], prompt[1:], 8))


def test_cache_errors_are_clear_and_atomic(model):
    cache = model.new_cache(num_blocks=3, block_size=4)
    model.forward(cache.prepare([0], [np.arange(8)]), cache)
    with pytest.raises(KVCacheFullError, match="needs 3 more, 1 of 3 free"):
        cache.prepare([0, 1], [np.arange(1), np.arange(5)])
    assert cache.blocks_in_use() == 2 and cache.seq_lens == {0: 8}     # nothing half-allocated
    with pytest.raises(ValueError, match="past the model's context of 300"):
        cache.prepare([0], [np.arange(293)])
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 300\)"):
        model.forward(cache.prepare([1], [np.array([300])]), cache)
    cache.free(0)
    cache.free(1)
    assert cache.blocks_in_use() == 0


def test_block_manager_refcounts():
    from pyinfer.kv_cache import BlockManager
    bm = BlockManager(num_blocks=4, block_size=16)
    a = bm.allocate(3)
    bm.share(a[0])
    bm.release(a)
    assert bm.num_free == 3                                   # a[0] still has an owner
    bm.release([a[0]])
    assert bm.num_free == 4
    with pytest.raises(ValueError, match="released more often"):
        bm.release([a[0]])
    with pytest.raises(ValueError, match="block_size=0"):
        BlockManager(4, 0)
    with pytest.raises(KVCacheFullError, match="need 5 more, 4 of 4 free"):
        bm.allocate(5)
