"""Hypothesis drives the C wrappers with random shapes (sizes 0 and 1, odd sizes), wrong dtypes and
non-contiguous arrays: every call either matches the reference or raises a clear ValueError."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyinfer.kernels import reference as ref
from pyinfer.quant import FORMATS, quantize
from tests.c_support import assert_sum_close, c  # noqa: F401 - fixture
from tests.conftest import poisoned

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MUTATIONS = st.sampled_from(["none", "float64", "transposed", "strided", "list"])


def mutate(a: np.ndarray, how: str):
    """a, or a version of it the wrappers must refuse (valid only for 'none', and for layout
    mutations that happen to leave a C-contiguous array, e.g. a 1-row transpose)."""
    if how == "float64":
        return a.astype(np.float64)
    if how == "transposed" and a.ndim == 2:
        return np.ascontiguousarray(a.T).T
    if how == "strided":
        return np.repeat(a, 2, axis=-1)[..., ::2]
    if how == "list":
        return a.tolist()
    return a


def acceptable(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous


@SETTINGS
@given(T=st.integers(0, 9), N=st.integers(0, 40), K=st.integers(0, 70), how=MUTATIONS, seed=st.integers(0, 2**31 - 1))
def test_matmul_random_arguments_match_or_raise(c, T, N, K, how, seed):
    rng = np.random.default_rng(seed)
    x = mutate(rng.standard_normal((T, K)).astype(np.float32), how)
    w = rng.standard_normal((N, K)).astype(np.float32)
    if not acceptable(x):
        with pytest.raises(ValueError):
            c["matmul"](poisoned((T, N)), x, w)
        return
    got = c["matmul"](poisoned((T, N)), x, w)
    assert_sum_close(got, ref.matmul(poisoned((T, N)), x, w), np.abs(x) @ np.abs(w).T)


@SETTINGS
@given(fmt=st.sampled_from(sorted(FORMATS)), T=st.integers(0, 5), N=st.integers(1, 20), groups=st.integers(1, 5),
       how=MUTATIONS, seed=st.integers(0, 2**31 - 1))
def test_quantized_matmul_random_arguments_match_or_raise(c, fmt, T, N, groups, how, seed):
    rng = np.random.default_rng(seed)
    f = FORMATS[fmt]
    K = groups * (f.group_size or 7)
    qt = quantize(rng.standard_normal((N, K)).astype(np.float32), fmt)
    x = mutate(rng.standard_normal((T, K)).astype(np.float32), how)
    name = f.kernel
    if not acceptable(x):
        with pytest.raises(ValueError):
            c[name](poisoned((T, N)), x, *qt.kernel_args())
        return
    got = c[name](poisoned((T, N)), x, *qt.kernel_args())
    if T == 0:                                  # the reference's reshape(T, -1, G) cannot take T = 0
        assert got.shape == (0, N)
        return
    want = getattr(ref, name)(poisoned((T, N)), x, *qt.kernel_args())
    scale = np.abs(x).max(initial=0.0) * np.abs(qt.dequantize()).sum(axis=1)[None, :]
    # A16 kernels hold x as 24-bit fixed point per row: up to 2^-22 max|x| per element (csrc/quant_act.c)
    assert_sum_close(got, want, np.abs(x) @ np.abs(qt.dequantize()).T + scale * (2.0**-22 / 1e-5), rtol=1e-5)


@SETTINGS
@given(T=st.integers(1, 12), extra=st.integers(0, 20), kvh=st.integers(1, 3), group=st.integers(1, 3),
       hd=st.integers(1, 40), how=MUTATIONS, seed=st.integers(0, 2**31 - 1))
def test_attention_prefill_random_arguments_match_or_raise(c, T, extra, kvh, group, hd, how, seed):
    rng = np.random.default_rng(seed)
    S, H = T + extra, kvh * group
    q = mutate(rng.standard_normal((T, H, hd)).astype(np.float32), how)
    k, v = (rng.standard_normal((S, kvh, hd)).astype(np.float32) for _ in range(2))
    if not acceptable(q):
        with pytest.raises(ValueError):
            c["attention_prefill"](poisoned((T, H, hd)), q, k, v, 0.5)
        return
    got = c["attention_prefill"](poisoned((T, H, hd)), q, k, v, 0.5)
    np.testing.assert_allclose(got, ref.attention_prefill(poisoned((T, H, hd)), q, k, v, 0.5), rtol=2e-5, atol=2e-5)


@SETTINGS
@given(lens=st.lists(st.integers(1, 60), min_size=1, max_size=4), block_size=st.integers(1, 9), kvh=st.integers(1, 2),
       group=st.integers(1, 3), hd=st.integers(1, 20), table_dtype=st.sampled_from(["i4", "i8", "u2", "f4"]),
       seed=st.integers(0, 2**31 - 1))
def test_paged_decode_random_arguments_match_or_raise(c, lens, block_size, kvh, group, hd, table_dtype, seed):
    rng = np.random.default_rng(seed)
    need = [-(-n // block_size) for n in lens]
    nb = sum(need) + 1
    kc, vc = (rng.standard_normal((nb, block_size, kvh, hd)).astype(np.float32) for _ in range(2))
    tables = rng.permutation(nb)[:sum(need)]
    table = np.zeros((len(lens), max(need)), table_dtype)
    at = 0
    for b, n in enumerate(need):
        table[b, :n] = tables[at:at + n]
        at += n
    q = rng.standard_normal((len(lens), kvh * group, hd)).astype(np.float32)
    lens = np.array(lens)
    if table_dtype == "f4":
        with pytest.raises(ValueError, match="block_tables must hold integers"):
            c["paged_decode_attention"](poisoned(q.shape), q, kc, vc, table, lens, 0.7)
        return
    got = c["paged_decode_attention"](poisoned(q.shape), q, kc, vc, table, lens, 0.7)
    want = ref.paged_decode_attention(poisoned(q.shape), q, kc, vc, table, lens, 0.7)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@SETTINGS
@given(T=st.integers(1, 6), H=st.integers(1, 4), half=st.integers(1, 9), how=MUTATIONS, seed=st.integers(0, 2**31 - 1))
def test_rope_and_silu_random_arguments_match_or_raise(c, T, H, half, how, seed):
    rng = np.random.default_rng(seed)
    hd = 2 * half
    x = mutate(rng.standard_normal((T, H * hd)).astype(np.float32), how)
    pos = rng.integers(0, 1000, T)
    if not acceptable(x):
        with pytest.raises(ValueError):
            c["rope"](poisoned((T, H * hd)), x, pos, ref.plain_inv_freq(hd, 10000.0))
        with pytest.raises(ValueError):
            c["silu_mul"](poisoned((T, H * hd)), x, np.ones((T, H * hd), np.float32))
        return
    np.testing.assert_allclose(c["rope"](poisoned(x.shape), x, pos, ref.plain_inv_freq(hd, 10000.0)),
                               ref.rope(poisoned(x.shape), x, pos, ref.plain_inv_freq(hd, 10000.0)), rtol=1e-5, atol=1e-5)
    u = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(c["silu_mul"](poisoned(x.shape), x, u), ref.silu_mul(poisoned(x.shape), x, u),
                               rtol=1e-5, atol=1e-6)
