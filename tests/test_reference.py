"""The numpy reference (the spec) checked against plain float64 formulas and naive loops."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer import op_costs
from pyinfer.kernels import reference as ref
from tests.conftest import poisoned


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("T,D", [(1, 1), (3, 7), (5, 64), (17, 257)])
def test_rmsnorm_matches_formula(rng, T, D):
    x, w = f32(rng, T, D), f32(rng, D)
    out = ref.rmsnorm(poisoned((T, D)), x, w, 1e-5)
    x64 = x.astype(np.float64)
    want = w * x64 / np.sqrt(np.mean(x64 * x64, axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("T,H,hd", [(1, 1, 2), (5, 3, 8), (9, 2, 64)])
def test_rope_is_pairwise_complex_rotation(rng, T, H, hd):
    x = f32(rng, T, H * hd)
    pos = rng.integers(0, 4096, size=T)
    out = ref.rope(poisoned(x.shape), x, pos, ref.plain_inv_freq(hd, 10000.0))
    z = x.astype(np.float64).reshape(T, H, hd // 2, 2)
    z = z[..., 0] + 1j * z[..., 1]
    freq = 1.0 / 10000.0 ** (np.arange(0, hd, 2) / hd)
    rot = z * np.exp(1j * pos[:, None, None] * freq[None, None, :])
    want = np.stack([rot.real, rot.imag], axis=-1).reshape(T, H * hd)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-3 * np.abs(x).max())
    inplace = x.copy()
    ref.rope(inplace, inplace, pos, ref.plain_inv_freq(hd, 10000.0))
    np.testing.assert_array_equal(inplace, out)


def test_matmul_silu_add_embedding(rng):
    x, w = f32(rng, 5, 33), f32(rng, 17, 33)
    np.testing.assert_allclose(ref.matmul(poisoned((5, 17)), x, w), x.astype(np.float64) @ w.T.astype(np.float64),
                               rtol=1e-5, atol=1e-5)
    g, u = f32(rng, 4, 9), f32(rng, 4, 9)
    np.testing.assert_allclose(ref.silu_mul(poisoned((4, 9)), g, u), g / (1 + np.exp(-g.astype(np.float64))) * u,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ref.add(poisoned((4, 9)), g, u), g + u)
    table, toks = f32(rng, 11, 6), rng.integers(0, 11, size=7)
    np.testing.assert_array_equal(ref.embedding(poisoned((7, 6)), toks, table), table[toks])


def naive_attention(q, k, v, scale):
    """float64 loops: query i of T sees keys 0..S-T+i; head h reads kv head h // (H // KVH)."""
    T, H, hd = q.shape
    S, KVH, _ = k.shape
    out = np.zeros((T, H, hd))
    for i in range(T):
        for h in range(H):
            kh = h // (H // KVH)
            n = S - T + i + 1
            s = np.array([q[i, h].astype(np.float64) @ k[j, kh] for j in range(n)]) * scale
            p = np.exp(s - s.max())
            out[i, h] = (p / p.sum()) @ v[:n, kh].astype(np.float64)
    return out


@pytest.mark.parametrize("T,S,H,KVH,hd", [(1, 1, 1, 1, 4), (4, 4, 4, 2, 8), (3, 11, 6, 2, 16), (7, 7, 2, 2, 3)])
def test_attention_prefill_matches_naive_loops(rng, T, S, H, KVH, hd):
    q, k, v = f32(rng, T, H, hd), f32(rng, S, KVH, hd), f32(rng, S, KVH, hd)
    out = ref.attention_prefill(poisoned(q.shape), q, k, v, 1 / np.sqrt(hd))
    np.testing.assert_allclose(out, naive_attention(q, k, v, 1 / np.sqrt(hd)), rtol=1e-5, atol=1e-5)


def scatter_to_pool(rng, seqs_kv, block_size, num_blocks):
    """Write each sequence's (S, KVH, hd) K and V into shuffled blocks; returns pools and tables."""
    KVH, hd = seqs_kv[0][0].shape[1:]
    k_cache = poisoned((num_blocks, block_size, KVH, hd))
    v_cache = poisoned((num_blocks, block_size, KVH, hd))
    free = list(rng.permutation(num_blocks))
    tables = []
    for k, v in seqs_kv:
        nb = -(-len(k) // block_size)
        blocks = [int(free.pop()) for _ in range(nb)]
        slots = np.array([blocks[p // block_size] * block_size + p % block_size for p in range(len(k))])
        ref.kv_cache_write(k_cache, v_cache, k, v, slots)
        tables.append(blocks)
    table = np.zeros((len(tables), max(map(len, tables))), np.int32)
    for i, t in enumerate(tables):
        table[i, :len(t)] = t
    return k_cache, v_cache, table


@pytest.mark.parametrize("block_size", [1, 3, 16])
def test_paged_attention_equals_contiguous(rng, block_size):
    H, KVH, hd = 4, 2, 8
    ctx = [1, block_size, block_size + 1, 2 * block_size - 1, 37]
    q_lens = [min(q, s) for q, s in zip([1, 5, 1, 2, 37], ctx)]
    kv = [(f32(rng, s, KVH, hd), f32(rng, s, KVH, hd)) for s in ctx]
    k_cache, v_cache, tables = scatter_to_pool(rng, kv, block_size, sum(-(-s // block_size) for s in ctx) + 3)
    q = f32(rng, sum(q_lens), H, hd)
    cu = np.concatenate([[0], np.cumsum(q_lens)])
    out = ref.paged_prefill_attention(poisoned(q.shape), q, k_cache, v_cache, tables, cu,
                                      np.array(ctx, np.int32), 0.3)
    for b, (k, v) in enumerate(kv):
        want = ref.attention_prefill(poisoned((q_lens[b], H, hd)), q[cu[b]:cu[b + 1]], k, v, 0.3)
        np.testing.assert_array_equal(out[cu[b]:cu[b + 1]], want)
    qd = f32(rng, len(ctx), H, hd)
    outd = ref.paged_decode_attention(poisoned(qd.shape), qd, k_cache, v_cache, tables, np.array(ctx, np.int32), 0.3)
    for b, (k, v) in enumerate(kv):
        np.testing.assert_allclose(outd[b], naive_attention(qd[b:b + 1], k, v, 0.3)[0], rtol=1e-5, atol=1e-5)


def test_sampling_primitives(rng):
    logits = f32(rng, 3, 50)
    logits[1, [7, 30]] = 100.0                     # a tie: the first index wins, as run.c's argmax
    assert list(ref.argmax(np.empty(3, np.int64), logits)) == [int(np.argmax(r)) for r in logits]
    assert ref.argmax(np.empty(3, np.int64), logits)[1] == 7
    p = ref.softmax(poisoned(logits.shape), logits, 0.7)
    e = np.exp((logits[0] - logits[0].max()) / 0.7)
    np.testing.assert_allclose(p[0], e / e.sum(), rtol=1e-5)
    probs = np.array([0.1, 0.4, 0.05, 0.3, 0.15])
    assert list(np.flatnonzero(ref.top_k_filter(probs, 2))) == [1, 3]
    assert list(np.flatnonzero(ref.top_p_filter(probs, 0.7))) == [1, 3]     # 0.4 + 0.3 reaches 0.7
    assert list(np.flatnonzero(ref.top_p_filter(probs, 0.71))) == [1, 3, 4]
    assert ref.top_p_filter(probs, 1.0) is probs


def test_attention_cost_counts_exactly_the_visible_pairs(rng):
    for T, S in [(1, 1), (1, 9), (5, 5), (3, 10)]:
        q, k = f32(rng, T, 2, 4), f32(rng, S, 1, 4)
        visible = sum(1 for i in range(T) for j in range(S) if j <= S - T + i)
        c = op_costs.attention_prefill(q, q, k, k, 1.0)
        assert c.flops == 4 * 4 * 2 * visible
        assert c.bytes_kv == 2 * k.nbytes
    x, w = f32(rng, 3, 8), f32(rng, 5, 8)
    c = op_costs.matmul(np.empty((3, 5), np.float32), x, w)
    assert (c.flops, c.bytes_weights, c.bytes_activations) == (2 * 3 * 5 * 8, 5 * 8 * 4, (3 * 8 + 3 * 5) * 4)
