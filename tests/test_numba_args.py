"""The Numba wrappers refuse bad arguments with a ValueError naming what is wrong (Numba itself does
not bounds-check), and hypothesis drives them with random shapes (0, 1, odd), dtypes and layouts:
every call either matches the reference or raises ValueError."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyinfer.kernels import reference as ref
from pyinfer.ops import load_backend
from pyinfer.quant import quantize
from tests.conftest import poisoned, tolerance

TOL = tolerance("numba")
NB = load_backend("numba")
f32 = np.float32


def ones(*shape, dtype=f32):
    return np.ones(shape, dtype)


def paged(num_blocks=4, bs=4, kvh=2, hd=8):
    return ones(num_blocks, bs, kvh, hd), ones(num_blocks, bs, kvh, hd)


BAD_CALLS = [
    ("rmsnorm", lambda: (ones(2, 4), ones(2, 4, dtype=np.float64), ones(4), 1e-5), "x must be float32"),
    ("rmsnorm", lambda: (ones(2, 4), ones(4, 2).T, ones(4), 1e-5), "x must be C-contiguous"),
    ("rmsnorm", lambda: (ones(2, 4), ones(2, 4), ones(5), 1e-5), "weight has shape"),
    ("rmsnorm", lambda: (ones(3, 4), ones(2, 4), ones(4), 1e-5), "out has shape"),
    ("rmsnorm", lambda: ([[1.0] * 4] * 2, ones(2, 4), ones(4), 1e-5), "out must be a numpy array"),
    ("rmsnorm", lambda: (ones(2, 4), ones(2, 4), ones(4), float("nan")), "eps must be a finite"),
    ("rope", lambda: (ones(2, 8), ones(2, 8), np.zeros(2), ones(2)), "positions must be an integer array"),
    ("rope", lambda: (ones(2, 8), ones(2, 8), np.zeros(3, int), ones(2)), "positions has shape"),
    ("rope", lambda: (ones(2, 8), ones(2, 8), np.zeros(2, int), ones(3)), "head_dim=6 must divide"),
    ("rope", lambda: (ones(2, 8), ones(2, 8), np.zeros(2, int), ones(2, 1)), "inv_freq must be"),
    ("embedding", lambda: (ones(2, 3), np.array([0, 5]), ones(5, 3)), r"tokens values must be in \[0, 5\)"),
    ("embedding", lambda: (ones(2, 3), np.array([-1, 0]), ones(5, 3)), "tokens values"),
    ("matmul", lambda: (ones(2, 3), ones(2, 4), ones(3, 5)), "x has K=4, the weight has K=5"),
    ("matmul", lambda: (ones(2, 4), ones(2, 5), ones(3, 5)), "out has shape"),
    ("matmul", lambda: (ones(2, 3), ones(2, 5), ones(3, 5, dtype=np.float16)), "w must be float32"),
    ("matmul", lambda: (ones(2, 3)[:, ::-1], ones(2, 5), ones(3, 5)), "out must be C-contiguous"),
    ("silu_mul", lambda: (ones(2, 3), ones(2, 3), ones(3, 2)), "up has shape"),
    ("add", lambda: (ones(2, 3), ones(2, 3, dtype=np.int32), ones(2, 3)), "x must be float32"),
    ("kv_cache_write", lambda: (*paged(), ones(2, 2, 8), ones(2, 2, 8), np.array([0, 16])),
     r"slot_mapping values must be in \[0, 16\)"),
    ("kv_cache_write", lambda: (*paged(), ones(2, 3, 8), ones(2, 3, 8), np.array([0, 1])), "k has shape"),
    ("kv_cache_write", lambda: (ones(4, 4, 2, 8), ones(4, 4, 2, 7), ones(1, 2, 8), ones(1, 2, 8), np.array([0])),
     "v_cache has shape"),
    ("attention_prefill", lambda: (ones(3, 2, 8), ones(3, 2, 8), ones(2, 1, 8), ones(2, 1, 8), 0.3),
     "3 queries but only 2 keys"),
    ("attention_prefill", lambda: (ones(2, 3, 8), ones(2, 3, 8), ones(2, 2, 8), ones(2, 2, 8), 0.3),
     "not a multiple of n_kv_heads"),
    ("attention_prefill", lambda: (ones(2, 2, 8), ones(2, 2, 8), ones(2, 1, 4), ones(2, 1, 4), 0.3),
     "q has head_dim 8, K/V have 4"),
    ("paged_decode_attention", lambda: (ones(1, 2, 8), ones(1, 2, 8), *paged(), np.array([[0, 9]]), np.array([5]), 0.3),
     r"block_tables \(used entries\) values must be in \[0, 4\)"),
    ("paged_decode_attention", lambda: (ones(1, 2, 8), ones(1, 2, 8), *paged(), np.array([[0]]), np.array([5]), 0.3),
     "needs 2 blocks but block_tables has 1 columns"),
    ("paged_decode_attention", lambda: (ones(1, 2, 8), ones(1, 2, 8), *paged(), np.array([[0]]), np.array([0]), 0.3),
     "context_lens must be >= 1"),
    ("paged_decode_attention", lambda: (ones(2, 2, 8), ones(2, 2, 8), *paged(), np.array([[0]]), np.array([1, 1]), 0.3),
     "block_tables has shape"),
    ("paged_prefill_attention", lambda: (ones(3, 2, 8), ones(3, 2, 8), *paged(), np.array([[0]]),
                                         np.array([0, 3]), np.array([2]), 0.3), "3 queries but context_lens=2"),
    ("paged_prefill_attention", lambda: (ones(3, 2, 8), ones(3, 2, 8), *paged(), np.array([[0]]),
                                         np.array([0, 4]), np.array([4]), 0.3), "cu_seqlens_q must be non-decreasing"),
    ("paged_prefill_attention", lambda: (ones(3, 2, 8), ones(3, 2, 8), *paged(), np.array([[0]]),
                                         np.array([0, 3, 1]), np.array([4]), 0.3), "cu_seqlens_q has shape"),
    ("argmax", lambda: (np.zeros(2, np.int32), ones(2, 5)), "out must be int64"),
    ("argmax", lambda: (np.zeros(2, np.int64), ones(2, 0)), "V = 0"),
    ("softmax", lambda: (ones(2, 5), ones(2, 5), 0.0), "temperature must be a finite positive"),
    ("matmul_w8a16", lambda: (ones(1, 3), ones(1, 4), np.ones((3, 4), np.uint8), ones(3)), "qweight must be int8"),
    ("matmul_w8a16", lambda: (ones(1, 3), ones(1, 4), np.ones((3, 4), np.int8), ones(3, 1)), "scales must be 1-D"),
    ("matmul_w8a8", lambda: (ones(1, 3), ones(1, 48), np.ones((3, 48), np.int8), ones(3, 1), 32),
     "K=48 is not a multiple of group_size=32"),
    ("matmul_w8a8", lambda: (ones(1, 3), ones(1, 64), np.ones((3, 64), np.int8), ones(3, 2), 0),
     "group_size must be a positive integer"),
    ("matmul_w8a8", lambda: (ones(1, 3), ones(1, 64), np.ones((3, 64), np.int8), ones(3, 3), 32), "scales has shape"),
    ("matmul_w4a16", lambda: (ones(1, 3), ones(1, 64), np.ones((3, 32), np.int8), ones(3, 2), None, 32),
     "qweight must be uint8"),
    ("matmul_w4a16", lambda: (ones(1, 3), ones(1, 64), np.ones((3, 32), np.uint8), ones(3, 2), None, 7),
     "group_size=7 must be even"),
    ("matmul_w4a8", lambda: (ones(1, 3), ones(1, 64), np.ones((3, 32), np.uint8), ones(3, 2),
                             np.ones((3, 2), np.int8), 32), "zeros must be uint8"),
    ("matmul_w4a8", lambda: (ones(1, 3), ones(1, 32), np.ones((3, 32), np.uint8), ones(3, 2), None, 32),
     "x has K=32, the weight has K=64"),
]


@pytest.mark.parametrize("op,args,message", BAD_CALLS, ids=[f"{c[0]}:{c[2][:30]}" for c in BAD_CALLS])
def test_bad_arguments_raise_clear_value_error(op, args, message):
    with pytest.raises(ValueError, match=message):
        NB[op](*args())


def test_read_only_out_is_refused():
    out = ones(2, 4)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writable"):
        NB["rmsnorm"](out, ones(2, 4), ones(4), 1e-5)


def layout(a: np.ndarray, transpose: bool) -> np.ndarray:
    """a itself, or a non-contiguous array with a's values (a transposed copy, transposed back)."""
    return np.ascontiguousarray(a.T).T if transpose and a.ndim == 2 and min(a.shape) > 1 else a


def valid(*arrays) -> bool:
    return all(a.dtype == f32 and a.flags.c_contiguous for a in arrays)


@settings(max_examples=60, deadline=None)
@given(T=st.integers(0, 6), N=st.integers(0, 9), K=st.integers(0, 40),
       bad=st.sampled_from(["", "x64", "xT", "wT", "w16"]), seed=st.integers(0, 2**31 - 1))
def test_matmul_random_arguments_match_or_raise(T, N, K, bad, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, K)).astype("f8" if bad == "x64" else "f4")
    w = rng.standard_normal((N, K)).astype("f2" if bad == "w16" else "f4")
    x, w = layout(x, bad == "xT"), layout(w, bad == "wT")
    if not valid(x, w):
        with pytest.raises(ValueError):
            NB["matmul"](poisoned((T, N)), x, w)
        return
    np.testing.assert_allclose(NB["matmul"](poisoned((T, N)), x, w), ref.matmul(poisoned((T, N)), x, w), **TOL)


FORMATS = ["int8", "int8-g32", "int4-g32", "int4-g32-zp", "int4-g64-a8", "int4-g32-zp-a8"]


@settings(max_examples=60, deadline=None)
@given(fmt=st.sampled_from(FORMATS), T=st.integers(0, 5), N=st.integers(1, 9), K=st.integers(1, 70),
       bad=st.sampled_from(["", "", "x64", "xT", "q", "scales", "K"]), seed=st.integers(0, 2**31 - 1))
def test_quantized_matmul_random_arguments_match_or_raise(fmt, T, N, K, bad, seed):
    rng = np.random.default_rng(seed)
    qt = quantize(rng.standard_normal((N, K)).astype(np.float32), fmt)
    x = rng.standard_normal((T, qt.k_pad + (1 if bad == "K" else 0))).astype("f8" if bad == "x64" else "f4")
    x = layout(x, bad == "xT")
    args = list(qt.kernel_args())
    if bad == "q":
        args[0] = args[0].astype(np.int16)
    if bad == "scales":
        args[1] = args[1][..., :-1] if args[1].ndim == 2 else args[1][:-1]
    kernel = qt.fmt.kernel
    if bad and not (bad == "xT" and valid(x)):
        with pytest.raises(ValueError):
            NB[kernel](poisoned((T, N)), x, *args)
        return
    got = NB[kernel](poisoned((T, N)), x, *args)
    if T == 0:                                  # (the reference's activation quantizer cannot reshape T = 0)
        assert got.shape == (0, N)
        return
    want = getattr(ref, kernel)(poisoned((T, N)), x, *args)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max(initial=0)))


@settings(max_examples=50, deadline=None)
@given(op=st.sampled_from(["rmsnorm", "silu_mul", "add", "softmax"]), T=st.integers(0, 5), D=st.integers(1, 33),
       bad=st.sampled_from(["", "", "64", "T", "shape"]), seed=st.integers(0, 2**31 - 1))
def test_rowwise_ops_random_arguments_match_or_raise(op, T, D, bad, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, D)).astype("f8" if bad == "64" else "f4")
    x = layout(x, bad == "T")
    y = rng.standard_normal((T, D + (bad == "shape"))).astype(np.float32)
    weight = rng.standard_normal(D + (bad == "shape")).astype(np.float32)
    second = {"rmsnorm": weight, "silu_mul": y, "add": y, "softmax": 0.7}[op]
    extra = (1e-5,) if op == "rmsnorm" else ()
    ok = valid(x) and (op == "softmax" or bad != "shape")
    if op == "softmax":
        ok = ok and D > 0
    if not ok:
        with pytest.raises(ValueError):
            NB[op](poisoned((T, D)), x, second, *extra)
        return
    got = NB[op](poisoned((T, D)), x, second, *extra)
    np.testing.assert_allclose(got, getattr(ref, op)(poisoned((T, D)), x, second, *extra), **TOL)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(0, 5), extra=st.integers(0, 6), H=st.sampled_from([1, 2, 4]), KVH=st.sampled_from([1, 2, 3]),
       hd=st.integers(1, 9), bad=st.sampled_from(["", "", "qT", "k64", "kv"]), seed=st.integers(0, 2**31 - 1))
def test_attention_prefill_random_arguments_match_or_raise(T, extra, H, KVH, hd, bad, seed):
    rng = np.random.default_rng(seed)
    S = T + extra
    q = rng.standard_normal((T, H, hd)).astype(np.float32)
    k = rng.standard_normal((S, KVH, hd)).astype("f8" if bad == "k64" else "f4")
    v = rng.standard_normal((S + (bad == "kv"), KVH, hd)).astype(np.float32)
    if bad == "qT":
        q = np.ascontiguousarray(q.transpose(1, 0, 2)).transpose(1, 0, 2)
    ok = valid(q, k, v) and H % KVH == 0 and bad != "kv"
    if not ok:
        with pytest.raises(ValueError):
            NB["attention_prefill"](poisoned(q.shape), q, k, v, 0.5)
        return
    got = NB["attention_prefill"](poisoned(q.shape), q, k, v, 0.5)
    if T == 0:                                  # (the reference's softmax cannot take S = 0 keys)
        assert got.shape == q.shape
        return
    np.testing.assert_allclose(got, ref.attention_prefill(poisoned(q.shape), q, k, v, 0.5), **TOL)


@settings(max_examples=40, deadline=None)
@given(ctx=st.lists(st.integers(0, 40), min_size=0, max_size=4), bs=st.integers(1, 6),
       bad_block=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_paged_decode_random_tables_match_or_raise(ctx, bs, bad_block, seed):
    rng = np.random.default_rng(seed)
    B, H, kvh, hd = len(ctx), 4, 2, 4
    n_blocks = [-(-c // bs) for c in ctx]
    num_blocks = sum(n_blocks) + 1
    tables = np.zeros((B, max(n_blocks, default=0) + 1), np.int64)
    ids = rng.permutation(num_blocks)
    start = 0
    for b, n in enumerate(n_blocks):
        tables[b, :n] = ids[start:start + n]
        start += n
    if bad_block and B and n_blocks[0]:
        tables[0, 0] = num_blocks                               # one past the pool
    kc = rng.standard_normal((num_blocks, bs, kvh, hd)).astype(np.float32)
    vc = rng.standard_normal((num_blocks, bs, kvh, hd)).astype(np.float32)
    q = rng.standard_normal((B, H, hd)).astype(np.float32)
    lens = np.array(ctx, np.int64)
    if (bad_block and B and n_blocks[0]) or (B and min(ctx) < 1):
        with pytest.raises(ValueError):
            NB["paged_decode_attention"](poisoned(q.shape), q, kc, vc, tables, lens, 0.5)
        return
    got = NB["paged_decode_attention"](poisoned(q.shape), q, kc, vc, tables, lens, 0.5)
    np.testing.assert_allclose(got, ref.paged_decode_attention(poisoned(q.shape), q, kc, vc, tables, lens, 0.5), **TOL)
