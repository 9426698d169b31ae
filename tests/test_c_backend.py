"""The C kernels (pyinfer._C via cffi) against the numpy reference, every instruction-set body,
plus their argument checks: elementwise ops, norms, RoPE, float32 matmul, sampling primitives."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.kernels import c_cpu
from pyinfer.kernels import reference as ref
from pyinfer.ops import Ops, available_backends
from tests.c_support import assert_sum_close, c, isa  # noqa: F401 - fixtures
from tests.conftest import poisoned, tolerance


def test_c_backend_is_built():
    # CI installs the extension; a missing build is a failure here, never a skip.
    assert available_backends()["c"] is None
    assert c_cpu.isa() in c_cpu.ISA_NAMES and c_cpu.num_threads() >= 1


def test_isa_cap_and_threads_are_restored():
    before, threads = c_cpu.isa(), c_cpu.num_threads()
    with c_cpu.isa_cap("scalar"):
        assert c_cpu.isa() == "scalar"
    assert c_cpu.isa() == before
    c_cpu.set_num_threads(1)
    assert c_cpu.num_threads() == 1
    c_cpu.set_num_threads(threads)
    with pytest.raises(ValueError, match="unknown instruction set"):
        c_cpu.set_isa("sse9")


@pytest.mark.parametrize("T,D", [(1, 1), (1, 64), (3, 7), (17, 257), (64, 4096)])
def test_rmsnorm_matches_reference(c, isa, rng, T, D):
    x = (rng.standard_normal((T, D)) * rng.uniform(0.01, 100)).astype(np.float32)
    w = rng.standard_normal(D).astype(np.float32)
    got = c["rmsnorm"](poisoned((T, D)), x, w, 1e-5)
    np.testing.assert_allclose(got, ref.rmsnorm(poisoned((T, D)), x, w, 1e-5), **tolerance("c"))


def test_rmsnorm_rejects_bad_arguments(c):
    x, w, out = np.ones((2, 4), np.float32), np.ones(4, np.float32), np.empty((2, 4), np.float32)
    with pytest.raises(ValueError, match="x must be float32"):
        c["rmsnorm"](out, x.astype(np.float64), w, 1e-5)
    with pytest.raises(ValueError, match="weight has shape"):
        c["rmsnorm"](out, x, np.ones(5, np.float32), 1e-5)
    with pytest.raises(ValueError, match="out has shape"):
        c["rmsnorm"](np.empty((3, 4), np.float32), x, w, 1e-5)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        c["rmsnorm"](out, np.ones((4, 2), np.float32).T, w, 1e-5)
    with pytest.raises(ValueError, match="x must be 2-D"):
        c["rmsnorm"](out, np.ones(4, np.float32), w, 1e-5)
    with pytest.raises(ValueError, match="out must be writable"):
        ro = np.empty((2, 4), np.float32)
        ro.flags.writeable = False
        c["rmsnorm"](ro, x, w, 1e-5)
    with pytest.raises(ValueError, match="must be a numpy array"):
        c["rmsnorm"](out, [[1.0] * 4] * 2, w, 1e-5)


@pytest.mark.parametrize("T,V,D", [(1, 1, 1), (5, 17, 3), (33, 512, 64)])
def test_embedding_matches_reference_and_checks_ids(c, rng, T, V, D):
    table = rng.standard_normal((V, D)).astype(np.float32)
    tokens = rng.integers(0, V, T)
    np.testing.assert_array_equal(c["embedding"](poisoned((T, D)), tokens, table),
                                  ref.embedding(poisoned((T, D)), tokens, table))
    tokens[-1] = V
    with pytest.raises(ValueError, match=rf"tokens\[{T - 1}\]={V} is outside \[0, {V}\)"):
        c["embedding"](poisoned((T, D)), tokens, table)
    with pytest.raises(ValueError, match="tokens must hold integers"):
        c["embedding"](poisoned((T, D)), tokens.astype(np.float32), table)


@pytest.mark.parametrize("T,H,hd", [(1, 1, 2), (3, 4, 8), (17, 6, 64), (5, 2, 128)])
def test_rope_matches_reference_in_place_and_not(c, rng, T, H, hd):
    x = rng.standard_normal((T, H * hd)).astype(np.float32)
    pos = rng.integers(0, 5000, T)
    want = ref.rope(poisoned(x.shape), x, pos, ref.plain_inv_freq(hd, 10000.0))
    np.testing.assert_allclose(c["rope"](poisoned(x.shape), x, pos, ref.plain_inv_freq(hd, 10000.0)), want, **tolerance("c"))
    inplace = x.copy()
    np.testing.assert_allclose(c["rope"](inplace, inplace, pos.astype(np.int32), ref.plain_inv_freq(hd, 10000.0)), want, **tolerance("c"))
    with pytest.raises(ValueError, match="must divide the width"):
        c["rope"](poisoned(x.shape), x, pos, np.ones(hd // 2 + 1, np.float32))


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (4, 2048), (1, 100003)])
def test_silu_mul_and_add_match_reference(c, isa, rng, shape):
    g = (rng.standard_normal(shape) * 8).astype(np.float32)   # the exp's range, both tails
    u = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(c["silu_mul"](poisoned(shape), g, u), ref.silu_mul(poisoned(shape), g, u),
                               **tolerance("c"))
    np.testing.assert_array_equal(c["add"](poisoned(shape), g, u), ref.add(poisoned(shape), g, u))
    alias = g.copy()
    np.testing.assert_array_equal(c["add"](alias, alias, u), g + u)


def test_kv_cache_write_matches_reference_and_checks_slots(c, rng):
    nb, bs, kvh, hd, T = 5, 4, 2, 8, 7
    k, v = (rng.standard_normal((T, kvh, hd)).astype(np.float32) for _ in range(2))
    slots = rng.permutation(nb * bs)[:T]
    got = [np.full((nb, bs, kvh, hd), 7.0, np.float32) for _ in range(2)]
    want = [a.copy() for a in got]
    c["kv_cache_write"](*got, k, v, slots)
    ref.kv_cache_write(*want, k, v, slots)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    slots[3] = nb * bs
    before = got[0].copy()
    with pytest.raises(ValueError, match=rf"slot_mapping\[3\]={nb * bs} is outside"):
        c["kv_cache_write"](*got, k, v, slots)
    np.testing.assert_array_equal(got[0], before)             # nothing written on a refused call


@pytest.mark.parametrize("B,V", [(1, 1), (3, 17), (2, 32000)])
def test_argmax_and_softmax_match_reference(c, isa, rng, B, V):
    logits = (rng.standard_normal((B, V)) * 5).astype(np.float32)
    logits[0, -1] = logits[0].max()                            # a tie: the first index wins
    out = np.full(B, -1, np.int64)
    np.testing.assert_array_equal(c["argmax"](out, logits), ref.argmax(np.empty(B, np.int64), logits))
    for temp in (0.3, 1.0):
        np.testing.assert_allclose(c["softmax"](poisoned((B, V)), logits, temp),
                                   ref.softmax(poisoned((B, V)), logits, temp), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="temperature=0"):
        c["softmax"](poisoned((B, V)), logits, 0)


# T = 1..3 take the streaming GEMV; 4 and more the packed GEMM (tiles of 8 x 32 or 4 x 16)
@pytest.mark.parametrize("T,N,K", [(1, 1, 1), (1, 7, 5), (2, 33, 17), (3, 65, 129), (4, 31, 7), (9, 33, 257),
                                   (17, 100, 64), (64, 97, 300), (1, 1000, 1024), (0, 5, 5), (3, 4, 0)])
def test_matmul_matches_reference(c, isa, rng, T, N, K):
    x = rng.standard_normal((T, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    got = c["matmul"](poisoned((T, N)), x, w)
    assert_sum_close(got, ref.matmul(poisoned((T, N)), x, w), np.abs(x) @ np.abs(w).T, what="matmul")


def test_matmul_rejects_bad_arguments(c):
    x, w = np.ones((2, 4), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="w has shape"):
        c["matmul"](np.empty((2, 3), np.float32), x, np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="out has shape"):
        c["matmul"](np.empty((2, 4), np.float32), x, w)
    with pytest.raises(ValueError, match="out must not overlap x"):
        buf = np.ones(20, np.float32)
        c["matmul"](buf[:6].reshape(2, 3), buf[4:12].reshape(2, 4), w)


def test_ops_facade_reports_native_ops_honestly():
    ops = Ops("c")
    assert {"rmsnorm", "matmul", "matmul_w4a8", "paged_decode_attention"} <= set(ops.native)
    assert ops.fallbacks == ()
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        Ops("cuda")
