"""The Numba kernels (pyinfer.kernels.numba_cpu) against the numpy reference: seeded random inputs,
ragged shapes (1, odd, tile and block boundaries +-1), outputs poisoned with NaN, serial and
threaded paths. Quantized matmuls: tests/test_numba_quant.py; argument checks and random shapes:
tests/test_numba_args.py; the whole model: tests/test_numba_e2e.py."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from pyinfer.kernels import reference as ref
from pyinfer.kernels.numba_cpu import attention, attention_decode
from pyinfer.ops import NATIVE_ONLY_OPS, REGISTRY, Ops, load_backend
from tests.conftest import poisoned, tolerance

TOL = tolerance("numba")


def test_numba_backend_loads_with_every_op_native():
    # CI installs numba: a backend that fails to load is a failure here, never a skip.
    native = set(load_backend("numba"))             # raises BackendUnavailable if numba is missing
    assert native == set(REGISTRY) - NATIVE_ONLY_OPS  # (the fused decode_step is the C backend's alone)
    ops = Ops("numba")
    assert ops.fallbacks == () and "every op native" in ops.describe()


@pytest.fixture(scope="module")
def nb():
    return load_backend("numba")


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Run under 1 and 2 Numba threads (the serial and prange paths), restoring the setting."""
    before = numba.get_num_threads()
    numba.set_num_threads(min(request.param, numba.config.NUMBA_NUM_THREADS))
    yield request.param
    numba.set_num_threads(before)


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("T,D", [(1, 1), (3, 7), (17, 257), (70, 600)])
def test_rmsnorm(nb, rng, threads, T, D):
    x, w = randn(rng, T, D, scale=rng.uniform(0.01, 100)), randn(rng, D)
    got = nb["rmsnorm"](poisoned((T, D)), x, w, 1e-5)
    np.testing.assert_allclose(got, ref.rmsnorm(poisoned((T, D)), x, w, 1e-5), **TOL)


@pytest.mark.parametrize("T,H,hd", [(1, 1, 2), (3, 3, 6), (5, 4, 64), (70, 8, 64)])
def test_rope_in_place_and_out_of_place(nb, rng, threads, T, H, hd):
    x = randn(rng, T, H * hd)
    positions = rng.integers(0, 4096, T)
    want = ref.rope(poisoned(x.shape), x, positions, ref.plain_inv_freq(hd, 10000.0))
    np.testing.assert_allclose(nb["rope"](poisoned(x.shape), x, positions, ref.plain_inv_freq(hd, 10000.0)), want, **TOL)
    y = x.copy()
    nb["rope"](y, y, positions.astype(np.int32), ref.plain_inv_freq(hd, 10000.0))          # out is x, int32 positions
    np.testing.assert_allclose(y, want, **TOL)


@pytest.mark.parametrize("T,V,D", [(0, 5, 3), (1, 1, 1), (9, 512, 64)])
def test_embedding(nb, rng, T, V, D):
    table, tokens = randn(rng, V, D), rng.integers(0, V, T)
    np.testing.assert_array_equal(nb["embedding"](poisoned((T, D)), tokens, table), table[tokens])


@pytest.mark.parametrize("shape", [(1, 1), (3, 11), (64, 1031)])
def test_silu_mul_and_add(nb, rng, threads, shape):
    g, u = randn(rng, *shape, scale=4.0), randn(rng, *shape)
    np.testing.assert_allclose(nb["silu_mul"](poisoned(shape), g, u), ref.silu_mul(poisoned(shape), g, u), **TOL)
    np.testing.assert_allclose(nb["add"](poisoned(shape), g, u), ref.add(poisoned(shape), g, u), **TOL)
    gg, xx = g.copy(), g.copy()
    nb["silu_mul"](gg, gg, u)                                    # the model's aliasing: out is gate
    nb["add"](xx, xx, u)                                         # and out is x
    np.testing.assert_allclose(gg, ref.silu_mul(poisoned(shape), g, u), **TOL)
    np.testing.assert_allclose(xx, g + u, **TOL)


@pytest.mark.parametrize("T,N,K", [(1, 1, 1), (1, 5, 7), (2, 17, 33), (3, 300, 300), (4, 4, 16),
                                   (5, 67, 129), (9, 130, 515), (33, 257, 64)])
def test_matmul(nb, rng, threads, T, N, K):
    x, w = randn(rng, T, K, scale=K ** -0.5), randn(rng, N, K)
    np.testing.assert_allclose(nb["matmul"](poisoned((T, N)), x, w), ref.matmul(poisoned((T, N)), x, w), **TOL)


def test_matmul_empty_dimensions(nb):
    np.testing.assert_array_equal(nb["matmul"](poisoned((3, 4)), np.ones((3, 0), np.float32),
                                               np.ones((4, 0), np.float32)), np.zeros((3, 4)))
    assert nb["matmul"](poisoned((0, 4)), np.ones((0, 5), np.float32), np.ones((4, 5), np.float32)).shape == (0, 4)


def test_kv_cache_write(nb, rng):
    num_blocks, bs, kvh, hd, T = 6, 4, 2, 8, 9
    kc, vc = randn(rng, num_blocks, bs, kvh, hd), randn(rng, num_blocks, bs, kvh, hd)
    k, v = randn(rng, T, kvh, hd), randn(rng, T, kvh, hd)
    slots = rng.permutation(num_blocks * bs)[:T]
    want_k, want_v = ref.kv_cache_write(kc.copy(), vc.copy(), k, v, slots)
    got_k, got_v = nb["kv_cache_write"](kc, vc, k, v, slots.astype(np.int32))
    assert got_k is kc and got_v is vc
    np.testing.assert_array_equal(kc, want_k)
    np.testing.assert_array_equal(vc, want_v)


def test_argmax_first_max_and_nan(nb, rng):
    logits = rng.integers(-3, 4, (6, 37)).astype(np.float32)      # many ties: the first index wins
    logits[4, 10] = np.nan
    logits[5, 0] = np.nan
    got = nb["argmax"](np.full(6, -1, np.int64), logits)
    np.testing.assert_array_equal(got, np.argmax(logits, axis=-1))


@pytest.mark.parametrize("temperature", [1.0, 0.3, 7.0])
def test_softmax(nb, rng, temperature):
    logits = randn(rng, 4, 513, scale=5.0)
    logits[1, ::3] = -np.inf
    np.testing.assert_allclose(nb["softmax"](poisoned(logits.shape), logits, temperature),
                               ref.softmax(poisoned(logits.shape), logits, temperature), **TOL)
    bad = logits.copy()
    bad[2, 7] = np.nan
    bad[3, 5] = np.inf
    got = nb["softmax"](poisoned(bad.shape), bad, temperature)
    with np.errstate(invalid="ignore"):                          # inf - inf in the reference
        want = ref.softmax(poisoned(bad.shape), bad, temperature)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


BK, ROWS = attention.BK, attention.ROWS


@pytest.mark.parametrize("T,S,H,KVH,hd", [
    (1, 1, 1, 1, 4), (5, 5, 4, 2, 8), (3, 70, 8, 2, 16), (7, 9, 3, 3, 5),
    (ROWS + 1, ROWS + 1, 2, 1, 8),                 # a query tile boundary +1 (group 2: tiles of ROWS/2)
    (BK - 1, 2 * BK + 1, 4, 4, 32), (2 * BK + 3, 2 * BK + 3, 8, 1, 64),   # key tile boundaries, GQA 8
])
def test_attention_prefill(nb, rng, threads, T, S, H, KVH, hd):
    q, k, v = randn(rng, T, H, hd), randn(rng, S, KVH, hd), randn(rng, S, KVH, hd)
    scale = hd ** -0.5
    np.testing.assert_allclose(nb["attention_prefill"](poisoned(q.shape), q, k, v, scale),
                               ref.attention_prefill(poisoned(q.shape), q, k, v, scale), **TOL)


def paged_setup(rng, context_lens, block_size, kvh, hd, spare=3):
    """A cache whose blocks are handed out in shuffled order, and block tables padded with 0."""
    n_blocks = -(-np.asarray(context_lens) // block_size)
    num_blocks = int(n_blocks.sum()) + spare
    ids = rng.permutation(num_blocks)
    tables = np.zeros((len(context_lens), max(1, int(n_blocks.max()))), np.int32)
    start = 0
    for b, n in enumerate(n_blocks):
        tables[b, :n] = ids[start:start + n]
        start += n
    kc = randn(rng, num_blocks, block_size, kvh, hd)
    vc = randn(rng, num_blocks, block_size, kvh, hd)
    return kc, vc, tables


SPLIT = attention_decode.split_keys_for(16)


@pytest.mark.parametrize("block_size", [1, 5, 16])
@pytest.mark.parametrize("context_lens", [[1], [17, 1, 40], [SPLIT - 1, SPLIT, SPLIT + 1], [3 * SPLIT + 7]])
def test_paged_decode_attention(nb, rng, threads, block_size, context_lens):
    H, kvh, hd = 4, 2, 16
    kc, vc, tables = paged_setup(rng, context_lens, block_size, kvh, hd)
    q = randn(rng, len(context_lens), H, hd)
    ctx = np.array(context_lens, np.int32)
    np.testing.assert_allclose(nb["paged_decode_attention"](poisoned(q.shape), q, kc, vc, tables, ctx, 0.25),
                               ref.paged_decode_attention(poisoned(q.shape), q, kc, vc, tables, ctx, 0.25), **TOL)


@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("q_lens,context_lens", [
    ([1], [1]),
    ([5, 0, 70], [5, 9, 90]),                # a sequence with no new tokens, a chunked prefill
    ([BK + 1, 2], [BK + 1, 30]),
])
def test_paged_prefill_attention(nb, rng, threads, block_size, q_lens, context_lens):
    H, kvh, hd = 6, 3, 8
    kc, vc, tables = paged_setup(rng, context_lens, block_size, kvh, hd)
    cu = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int64)
    q = randn(rng, int(cu[-1]) + 2, H, hd)                       # 2 rows past the last sequence stay NaN
    ctx = np.array(context_lens, np.int32)
    got = nb["paged_prefill_attention"](poisoned(q.shape), q, kc, vc, tables, cu, ctx, 0.3)
    want = ref.paged_prefill_attention(poisoned(q.shape), q, kc, vc, tables, cu, ctx, 0.3)
    np.testing.assert_allclose(got, want, **TOL)
    assert np.isnan(got[-2:]).all()
