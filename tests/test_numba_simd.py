"""The SIMD layer under the Numba kernels (kernels/numba_cpu/simd.py, simd_int.py): VNNI's dpbusd
and its portable form (what a CPU without VNNI runs) against numpy integer math over the full byte
range, the lane reductions and scale layouts against their definitions, and the float vectors."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from pyinfer.kernels.numba_cpu.simd import (f32x16_exp, f32x16_fma, f32x16_from_i8, f32x16_from_nibbles,
                                            f32x16_load, f32x16_load_masked, f32x16_store, f32x16_store_masked,
                                            f32x16_sum, f32x16_zero, row_max)
from pyinfer.kernels.numba_cpu.simd_int import (dpbusd, dpbusd_portable, f32x16_lane, gather4, gather4_u8,
                                                i8x64_flip_sign, i8x64_load, i8x64_nibbles, i32x16_load,
                                                i32x16_to_f32, reduce4, rep4, rep4_i32)


@njit(cache=True)
def _dots(out, a, b, acc):
    # out: (2, 16) int32, via the CPU's dpbusd and via the portable path
    for which in range(2):
        v = i32x16_load(acc, 0)
        if which == 0:
            v = dpbusd(v, i8x64_load(a, 0), i8x64_load(b, 0))
        else:
            v = dpbusd_portable(v, i8x64_load(a, 0), i8x64_load(b, 0))
        f = i32x16_to_f32(v)
        for i in range(16):
            out[which, i] = np.int32(f32x16_lane(f, i))


def test_dpbusd_matches_integer_math_on_the_full_byte_range(rng):
    a = rng.integers(0, 256, 64, dtype=np.uint8)
    a[:4] = 255                                          # extremes: 255 * -128 four times, no saturation
    b = rng.integers(-128, 128, 64, dtype=np.int8)
    b[:4] = -128
    acc = rng.integers(-2**20, 2**20, 16, dtype=np.int32)
    out = np.empty((2, 16), np.int32)
    _dots(out, a, b, acc)
    want = acc + (a.astype(np.int64) * b).reshape(16, 4).sum(axis=1)
    np.testing.assert_array_equal(out[0], want)
    np.testing.assert_array_equal(out[1], want)


@njit(cache=True)
def _bytes(out, q, u):
    # out: (3, 16) lane sums of flip_sign(q) (as uint8) and of u's low / high nibbles, via dpbusd with ones
    ones = np.ones(64, np.int8)
    v = i32x16_to_f32(dpbusd(i32x16_load(np.zeros(16, np.int32), 0), i8x64_flip_sign(i8x64_load(q, 0)),
                             i8x64_load(ones, 0)))
    lo = i32x16_to_f32(dpbusd(i32x16_load(np.zeros(16, np.int32), 0), i8x64_nibbles(u, 0, False), i8x64_load(ones, 0)))
    hi = i32x16_to_f32(dpbusd(i32x16_load(np.zeros(16, np.int32), 0), i8x64_nibbles(u, 0, True), i8x64_load(ones, 0)))
    for i in range(16):
        out[0, i] = f32x16_lane(v, i)
        out[1, i] = f32x16_lane(lo, i)
        out[2, i] = f32x16_lane(hi, i)


def test_byte_transforms(rng):
    q = rng.integers(-128, 128, 64, dtype=np.int8)
    u = rng.integers(0, 256, 64, dtype=np.uint8)
    out = np.empty((3, 16), np.float32)
    _bytes(out, q, u)
    np.testing.assert_array_equal(out[0], (q.astype(np.int64) + 128).reshape(16, 4).sum(1))
    np.testing.assert_array_equal(out[1], (u & 15).astype(np.int64).reshape(16, 4).sum(1))
    np.testing.assert_array_equal(out[2], (u >> 4).astype(np.int64).reshape(16, 4).sum(1))


@njit(cache=True)
def _layouts(out, d, s, z, xi, n_parts):
    # out: (4, 16): reduce4, gather4 (rows start at 1, 2, 0, 3), gather4_u8, rep4 * rep4_i32
    a0, a1, a2, a3 = i32x16_load(d[0], 0), i32x16_load(d[1], 0), i32x16_load(d[2], 0), i32x16_load(d[3], 0)
    if n_parts == 1:
        v = reduce4(a0, a1, a2, a3, 1)
        g = gather4(s[0], 1, s[1], 2, s[2], 0, s[3], 3, 1)
        u = gather4_u8(z[0], 1, z[1], 2, z[2], 0, z[3], 3, 1)
        r = rep4(s[0], 2, 1)
        ri = rep4_i32(xi, 1, 1)
    elif n_parts == 2:
        v = reduce4(a0, a1, a2, a3, 2)
        g = gather4(s[0], 1, s[1], 2, s[2], 0, s[3], 3, 2)
        u = gather4_u8(z[0], 1, z[1], 2, z[2], 0, z[3], 3, 2)
        r = rep4(s[0], 2, 2)
        ri = rep4_i32(xi, 1, 2)
    else:
        v = reduce4(a0, a1, a2, a3, 4)
        g = gather4(s[0], 1, s[1], 2, s[2], 0, s[3], 3, 4)
        u = gather4_u8(z[0], 1, z[1], 2, z[2], 0, z[3], 3, 4)
        r = rep4(s[0], 2, 4)
        ri = rep4_i32(xi, 1, 4)
    vf, uf, rif = i32x16_to_f32(v), i32x16_to_f32(u), i32x16_to_f32(ri)
    for i in range(16):
        out[0, i] = f32x16_lane(vf, i)
        out[1, i] = f32x16_lane(g, i)
        out[2, i] = f32x16_lane(uf, i)
        out[3, i] = f32x16_lane(r, i) * f32x16_lane(rif, i)


@pytest.mark.parametrize("n_parts", [1, 2, 4])
def test_reduce4_and_scale_layouts(rng, n_parts):
    d = rng.integers(-2**20, 2**20, (4, 16)).astype(np.int32)
    s = rng.standard_normal((4, 8)).astype(np.float32)
    z = rng.integers(0, 256, (4, 8)).astype(np.uint8)
    xi = rng.integers(-100, 100, 8).astype(np.int32)
    out = np.empty((4, 16), np.float32)
    _layouts(out, d, s, z, xi, n_parts)
    used = 4 * n_parts
    starts = [1, 2, 0, 3]
    np.testing.assert_array_equal(out[0, :used], d.reshape(4, n_parts, 16 // n_parts).sum(2).reshape(-1))
    def rows(a):
        return np.concatenate([a[r, starts[r]:starts[r] + n_parts] for r in range(4)])
    np.testing.assert_array_equal(out[1, :used], rows(s))
    np.testing.assert_array_equal(out[2, :used], rows(z))
    np.testing.assert_array_equal(out[3, :used], np.tile(s[0, 2:2 + n_parts] * xi[1:1 + n_parts].astype(np.float32), 4))
    assert not out[:, used:].any()                       # lanes past 4 * n_parts are 0


@njit(cache=True)
def _floats(out, x, q, u):
    # out[0:16] = x[0:16] * q[0:16] + x[16:32]; out[16] = sum(x[0:16]); out[17] = sum(lo(u)); out[18] = sum(hi(u))
    f32x16_store(out, 0, f32x16_fma(f32x16_load(x, 0), f32x16_from_i8(q, 0), f32x16_load(x, 16)))
    out[16] = f32x16_sum(f32x16_load(x, 0))
    out[17] = f32x16_sum(f32x16_fma(f32x16_from_nibbles(u, 0, False), f32x16_load(np.ones(16, np.float32), 0),
                                    f32x16_zero()))
    out[18] = f32x16_sum(f32x16_from_nibbles(u, 0, True))


def test_float_vectors(rng):
    x = rng.standard_normal(32).astype(np.float32)
    q = rng.integers(-128, 128, 16, dtype=np.int8)
    u = rng.integers(0, 256, 16, dtype=np.uint8)
    out = np.full(19, np.nan, np.float32)
    _floats(out, x, q, u)
    np.testing.assert_allclose(out[:16], x[:16] * q + x[16:], rtol=1e-6)
    np.testing.assert_allclose(out[16], x[:16].sum(), rtol=1e-5, atol=1e-6)
    assert out[17] == (u & 15).sum() and out[18] == (u >> 4).sum()


@njit(cache=True)
def _vexp(out, x):
    for i in range(0, x.shape[0], 16):
        n = min(16, x.shape[0] - i)
        f32x16_store_masked(out, i, n, f32x16_exp(f32x16_load_masked(x, i, n, np.float32(0.0))))


def test_vector_exp_accuracy_and_special_values(rng):
    x = np.concatenate([rng.uniform(-86.5, 88.7, 20000), rng.standard_normal(5000) * 3,
                        [np.nan, np.inf, -np.inf, 0.0, -0.0, 88.72, 89.0, -86.7, -200.0]]).astype(np.float32)
    out = np.full_like(x, -1.0)
    _vexp(out, x)                                        # 25009 values: a masked tail too
    with np.errstate(over="ignore"):
        want = np.exp(x)
    normal = np.isfinite(want) & (want > 2.5e-38)
    ulps = np.abs(out[normal].astype(np.float64) - want[normal]) / np.spacing(want[normal])
    assert ulps.max() <= 4, f"worst {ulps.max()} ulp"
    assert np.isnan(out[-9]) and out[-8] == np.inf and out[-7] == 0.0 and out[-6] == 1.0 and out[-5] == 1.0
    assert out[-3] == np.inf and out[-2] == 0.0 and out[-1] == 0.0
    assert abs(out[-4] / want[-4] - 1) < 1e-6                # 88.72: finite, next to FLT_MAX


@njit(cache=True)
def _row_max(s, n):
    return row_max(s, n)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 40])
def test_row_max_reads_only_n_and_propagates_nan(rng, n):
    s = rng.standard_normal(48).astype(np.float32)
    s[n:] = 100.0                                        # past n: must be ignored
    assert _row_max(s, n) == s[:n].max()
    s[n - 1] = np.nan
    assert np.isnan(_row_max(s, n))
