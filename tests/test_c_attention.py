"""The C attention kernels against the reference: flash prefill (tiles of 128 keys, GQA, causal
bottom-right), varlen paged prefill, and split-K paged decode (log-sum-exp combine), every body."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.kernels import c_cpu
from pyinfer.kernels import reference as ref
from c_support import c, isa  # noqa: F401 - fixtures
from conftest import poisoned

ATOL = RTOL = 2e-5     # outputs are convex combinations of V rows of magnitude ~1


@pytest.mark.parametrize("T,S,H,KVH,hd", [(1, 1, 1, 1, 2), (3, 7, 4, 2, 8), (17, 40, 6, 2, 64), (130, 130, 4, 1, 64),
                                          (33, 300, 8, 8, 80), (1, 257, 4, 4, 128), (129, 129, 2, 2, 16)])
def test_attention_prefill_matches_reference(c, isa, rng, T, S, H, KVH, hd):
    q = rng.standard_normal((T, H, hd)).astype(np.float32)
    k, v = (rng.standard_normal((S, KVH, hd)).astype(np.float32) for _ in range(2))
    scale = 1 / np.sqrt(hd)
    got = c["attention_prefill"](poisoned(q.shape), q, k, v, scale)
    np.testing.assert_allclose(got, ref.attention_prefill(poisoned(q.shape), q, k, v, scale), rtol=RTOL, atol=ATOL)


def test_attention_prefill_rejects_bad_arguments(c):
    q, k = np.ones((3, 4, 8), np.float32), np.ones((2, 2, 8), np.float32)
    with pytest.raises(ValueError, match="3 queries but only 2 keys"):
        c["attention_prefill"](poisoned(q.shape), q, k, k, 1.0)
    with pytest.raises(ValueError, match="n_heads=4 is not a multiple of n_kv_heads=3"):
        c["attention_prefill"](poisoned(q.shape), q, np.ones((5, 3, 8), np.float32), np.ones((5, 3, 8), np.float32), 1.0)


def paged_setup(rng, context_lens, block_size, KVH, hd, spare=3):
    """A cache with random K/V and each sequence's blocks scattered at random."""
    need = [-(-n // block_size) for n in context_lens]
    num_blocks = sum(need) + spare
    kc, vc = (rng.standard_normal((num_blocks, block_size, KVH, hd)).astype(np.float32) for _ in range(2))
    ids = rng.permutation(num_blocks)
    tables = np.zeros((len(context_lens), max(need) + 1), np.int32)
    at = 0
    for b, n in enumerate(need):
        tables[b, :n] = ids[at:at + n]
        at += n
    return kc, vc, tables, np.array(context_lens, np.int32)


@pytest.mark.parametrize("block_size", [1, 5, 16])
@pytest.mark.parametrize("H,KVH,hd", [(4, 2, 16), (6, 6, 64)])
def test_paged_prefill_matches_reference(c, isa, rng, block_size, H, KVH, hd):
    q_lens = [3, 0, 1, 20, 7]
    context_lens = [3, 9, 5, 20, 40]                  # chunked: some queries come after cached tokens
    kc, vc, tables, lens = paged_setup(rng, context_lens, block_size, KVH, hd)
    cu = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int64)
    q = rng.standard_normal((cu[-1], H, hd)).astype(np.float32)
    args = (q, kc, vc, tables, cu, lens, 0.3)
    got = c["paged_prefill_attention"](poisoned(q.shape), *args)
    np.testing.assert_allclose(got, ref.paged_prefill_attention(poisoned(q.shape), *args), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("block_size,context_lens", [(16, [1, 17, 16, 700]), (1, [3]), (7, [1300]), (16, [4096])])
@pytest.mark.parametrize("H,KVH,hd", [(4, 1, 64), (8, 8, 128), (3, 3, 6)])
def test_paged_decode_matches_reference(c, isa, rng, threads, block_size, context_lens, H, KVH, hd):
    kc, vc, tables, lens = paged_setup(rng, context_lens, block_size, KVH, hd)
    q = rng.standard_normal((len(context_lens), H, hd)).astype(np.float32)
    before = c_cpu.num_threads()
    c_cpu.set_num_threads(threads)                    # one thread: no split; two: split-K over the context
    try:
        got = c["paged_decode_attention"](poisoned(q.shape), q, kc, vc, tables, lens, 1 / np.sqrt(hd))
    finally:
        c_cpu.set_num_threads(before)
    want = ref.paged_decode_attention(poisoned(q.shape), q, kc, vc, tables, lens, 1 / np.sqrt(hd))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_paged_attention_refuses_bad_metadata(c, rng):
    kc, vc, tables, lens = paged_setup(rng, [5, 9], 4, 2, 8, spare=0)
    q = np.ones((2, 4, 8), np.float32)
    bad = tables.copy()
    bad[1, 0] = kc.shape[0]
    with pytest.raises(ValueError, match=rf"block_tables\[1\] holds block id {kc.shape[0]} outside"):
        c["paged_decode_attention"](poisoned(q.shape), q, kc, vc, bad, lens, 1.0)
    with pytest.raises(ValueError, match=r"context_lens\[0\]=0 must be >= 1"):
        c["paged_decode_attention"](poisoned(q.shape), q, kc, vc, tables, np.array([0, 9]), 1.0)
    with pytest.raises(ValueError, match=r"context_lens\[1\]=17 exceeds"):
        c["paged_decode_attention"](poisoned(q.shape), q, kc, vc, tables, np.array([5, 17]), 1.0)
    cu = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        c["paged_prefill_attention"](poisoned(q.shape), q, kc, vc, tables, np.array([0, 3, 2]), lens, 1.0)
    with pytest.raises(ValueError, match="block_tables must hold integers"):
        c["paged_prefill_attention"](poisoned(q.shape), q, kc, vc, tables.astype(float), cu, lens, 1.0)


def poison_unused(kc, vc, tables, context_lens):
    """NaN in every cache row no sequence's context holds (tails of last blocks, spare blocks): a
    kernel reading past a context, even with weight 0, returns NaN there."""
    used = np.zeros(kc.shape[:2], bool)                 # (num_blocks, block_size)
    bs = kc.shape[1]
    for b, n in enumerate(context_lens):
        for s in range(n):
            used[tables[b, s // bs], s % bs] = True
    kc[~used] = np.nan
    vc[~used] = np.nan


# group sizes 1..12 (one and two head tiles of 8), head_dim a multiple of 16 or not (tail columns, < 16),
# blocks of 1, 16, 256; contexts at chunk (16), partition (256) and block boundaries +-1, mixed batches
DECODE_CASES = [
    (8, 8, 64, 16, [15, 16, 17, 1]),
    (8, 4, 128, 16, [255, 256, 257]),
    (8, 2, 67, 1, [31, 33, 1]),
    (16, 2, 80, 256, [511, 512, 513, 300]),
    (8, 1, 8, 16, [47, 2]),
    (12, 1, 128, 7, [530, 6]),
    (18, 2, 33, 16, [64, 1, 255]),
    (32, 8, 128, 16, [1024, 3]),
    (12, 4, 160, 16, [40, 17]),             # group 3: a 128-column register block, then 16-column steps
    (14, 2, 96, 16, [100, 33]),             # group 7: 2-key QK blocks, 32-column PV blocks
    # head_dim < 16 takes the keys-along-lanes path (8 keys a step): step boundaries +-1, hd 8 (the
    # transposed loads) and others (gathered columns), the hd = 16 edge of the large-head path
    (8, 4, 8, 16, [7, 8, 9, 1, 255, 256, 257]),
    (8, 4, 8, 7, [530, 15, 17]),
    (9, 3, 8, 256, [600, 3]),
    (6, 2, 15, 1, [9, 263]),
    (3, 3, 1, 16, [8, 1, 40]),
    (4, 1, 16, 16, [17, 1]),
]


@pytest.mark.parametrize("H,KVH,hd,block_size,context_lens", DECODE_CASES)
def test_paged_decode_shapes_threads_and_bounds(c, isa, rng, H, KVH, hd, block_size, context_lens):
    kc, vc, tables, lens = paged_setup(rng, context_lens, block_size, KVH, hd)
    poison_unused(kc, vc, tables, lens)
    q = rng.standard_normal((len(context_lens), H, hd)).astype(np.float32)
    scale = 1 / np.sqrt(hd)
    got = {}
    before = c_cpu.num_threads()
    try:
        for threads in (1, 2):
            c_cpu.set_num_threads(threads)
            got[threads] = c["paged_decode_attention"](poisoned(q.shape), q, kc, vc, tables, lens, scale)
    finally:
        c_cpu.set_num_threads(before)
    want = ref.paged_decode_attention(poisoned(q.shape), q, kc, vc, tables, lens, scale)
    np.testing.assert_allclose(got[1], want, rtol=RTOL, atol=ATOL)
    # fixed partitions of the context: the same arithmetic whatever the thread count
    np.testing.assert_array_equal(got[2], got[1])


@pytest.mark.parametrize("hd", [32, 8])
def test_paged_decode_large_scores_stay_finite(c, isa, rng, hd):
    """Scores of a few hundred: the running max and the log-sum-exp merge of partitions keep exp finite."""
    kc, vc, tables, lens = paged_setup(rng, [700, 40, 3], 16, 2, hd)
    kc *= 30.0
    q = 3 * rng.standard_normal((3, 4, hd)).astype(np.float32)
    got = c["paged_decode_attention"](poisoned(q.shape), q, kc, vc, tables, lens, 1.0)
    want = ref.paged_decode_attention(poisoned(q.shape), q, kc, vc, tables, lens, 1.0)
    assert np.all(np.isfinite(got))
    # a float32 score of sum |q_d k_d| = S carries an error of a few eps * S (S ~ 2,000 here: ~1e-4), and
    # each softmax weight inherits it as a relative error: the output's error scales with S * max|v|
    S = float(np.max(np.abs(q).reshape(-1, hd) @ np.abs(kc).reshape(-1, hd).T))
    tol = 4 * np.finfo(np.float32).eps * S * float(np.max(np.abs(vc)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=max(tol, 1e-4))


@pytest.mark.parametrize("alias", ["q", "k_cache", "v_cache"])
def test_paged_decode_refuses_out_overlapping_an_input(c, rng, alias):
    """The overlap check is in C (cheaper per call than np.may_share_memory); nothing is written."""
    kc, vc, tables, lens = paged_setup(rng, [5, 9], 4, 2, 8)
    q = rng.standard_normal((2, 4, 8)).astype(np.float32)
    inputs = {"q": q, "k_cache": kc, "v_cache": vc}
    before = {k: v.copy() for k, v in inputs.items()}
    if alias == "q":                                        # the same array
        out = q
    else:                                                   # a view into the cache, not at its start
        out = inputs[alias].reshape(-1)[3:3 + q.size].reshape(q.shape)
    with pytest.raises(ValueError, match=f"out must not overlap {alias}"):
        c["paged_decode_attention"](out, q, kc, vc, tables, lens, 0.35)
    for k, v in inputs.items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("T,S,KVH,group,hd", [(130, 130, 6, 1, 32), (70, 200, 8, 2, 16), (64, 64, 4, 1, 64)])
def test_prefill_heads_across_threads(c, isa, rng, threads, T, S, KVH, group, hd):
    """With KV heads >= 2 x threads the flash prefill shares heads, not query blocks, among threads:
    the reference's result at every thread count, and the same bits as one thread."""
    H = KVH * group
    q = rng.standard_normal((T, H, hd)).astype(np.float32)
    k, v = (rng.standard_normal((S, KVH, hd)).astype(np.float32) for _ in range(2))
    scale = 1 / np.sqrt(hd)
    before = c_cpu.num_threads()
    try:
        c_cpu.set_num_threads(1)
        one = c["attention_prefill"](poisoned(q.shape), q, k, v, scale)
        c_cpu.set_num_threads(threads)
        got = c["attention_prefill"](poisoned(q.shape), q, k, v, scale)
    finally:
        c_cpu.set_num_threads(before)
    np.testing.assert_allclose(got, ref.attention_prefill(poisoned(q.shape), q, k, v, scale), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(got, one)
