"""The C quantized matmuls against the reference's integer math, every instruction-set body, ragged
shapes (odd group counts, K not a multiple of 64, tokens 1..17), and activation quantization bit-exact."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.kernels import reference as ref
from pyinfer.quant import QuantFormat, quantize
from c_support import SUM_RTOL, assert_sum_close, c, isa  # noqa: F401 - fixtures
from conftest import poisoned

# (format, K): K a multiple of G but odd group counts and K % 64 != 0 included; W8A16 past one
# 8192-wide int32 chunk
CASES = [("int8", 1), ("int8", 7), ("int8", 300), ("int8", 8257), ("int8-g32", 32), ("int8-g32", 96), ("int8-g64", 192),
         ("int8-g32", 4096), ("int4-g32", 32), ("int4-g32", 96), ("int4-g64-zp", 64), ("int4-g128", 384),
         ("int4-g32-a8", 32), ("int4-g32-a8", 160), ("int4-g64-a8", 128), ("int4-g128-zp-a8", 256),
         ("int4-g32-zp-a8", 1056), ("int4-g128-a8", 4096)]


def magnitude(x, qt, a8: bool):
    """sum over k of |x| |w| per output: the scale of the rounding error a reordered sum may make.
    With int8 activations the reference's own xq * xs stands in for x. The A16 kernels hold each
    row of x as 24-bit fixed point (csrc/quant_act.c): up to 2^-23 max|x| per element, so their
    bound adds 2^-22 max|x| sum|w| / SUM_RTOL."""
    w = np.abs(qt.dequantize())
    if not a8:
        fixed = np.ldexp(np.abs(x).max(axis=1, keepdims=True), -22) / SUM_RTOL     # (T, 1)
        return np.abs(x) @ w.T + fixed * w.sum(axis=1)[None, :]
    if a8:
        G = qt.fmt.group_size
        xq, xs = ref.quantize_act(np.empty(x.shape, np.int8), np.empty((x.shape[0], x.shape[1] // G), np.float32),
                                  x, G)
        x = (xq.reshape(x.shape[0], -1, G) * xs[:, :, None]).reshape(x.shape)
    return np.abs(x) @ w.T


@pytest.mark.parametrize("fmt,K", CASES)
@pytest.mark.parametrize("T,N", [(1, 1), (1, 67), (3, 17), (17, 40)])
def test_quantized_matmul_matches_reference(c, isa, rng, fmt, K, T, N):
    w = rng.standard_normal((N, K)).astype(np.float32)
    w[0, : K // 3] = 0.0                                       # zero groups: scale 0 must not divide
    qt = quantize(w, fmt)
    x = rng.standard_normal((T, K)).astype(np.float32) * rng.uniform(0.01, 10)
    x[0, : K // 2] *= 1e-4                                      # a small-valued stretch of activations
    name = qt.fmt.kernel
    got = c[name](poisoned((T, N)), x, *qt.kernel_args())
    want = getattr(ref, name)(poisoned((T, N)), x, *qt.kernel_args())
    assert_sum_close(got, want, magnitude(x, qt, qt.fmt.act_int8), what=f"{fmt} K={K} ({isa})")


# The int4 AVX-512 bodies read 64-byte blocks (128 weights) of four rows at a time: group sizes that put
# 16, 8, 4, 2 or 1 groups in a block, groups that straddle blocks (24, 96) and span several (256);
# K/2 not a multiple of 64 (a partial last block); N % 4 != 0 (rows left over from the four-row pass).
@pytest.mark.parametrize("G,K", [(8, 40), (24, 264), (32, 4160), (64, 192), (96, 480), (128, 1152), (256, 768)])
@pytest.mark.parametrize("zp", [False, True])
@pytest.mark.parametrize("a8", [False, True])
def test_int4_group_sizes_blocks_and_row_tails(c, isa, rng, G, K, zp, a8):
    fmt = QuantFormat(f"int4-g{G}{'-zp' if zp else ''}{'-a8' if a8 else ''}", 4, G, zp, a8)
    T, N = 2, 4 * int(rng.integers(1, 4)) + int(rng.integers(1, 4))
    w = rng.standard_normal((N, K)).astype(np.float32)
    w[-1, : K // 2] = 0.0                                       # zero groups in a leftover row
    qt = quantize(w, fmt)
    x = rng.standard_normal((T, K)).astype(np.float32) * rng.uniform(0.01, 10)
    name = fmt.kernel
    got = c[name](poisoned((T, N)), x, *qt.kernel_args())
    want = getattr(ref, name)(poisoned((T, N)), x, *qt.kernel_args())
    assert_sum_close(got, want, magnitude(x, qt, a8), what=f"{fmt.name} K={K} N={N} ({isa})")


@pytest.mark.parametrize("fmt", ["int4-g32", "int4-g128-zp", "int8"])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_a16_non_finite_activation_row(c, isa, rng, fmt, bad):
    """A token holding inf or NaN takes the float path (no 24-bit fixed point); the others are unaffected."""
    K, N = 256, 9
    qt = quantize(rng.standard_normal((N, K)).astype(np.float32), fmt)
    x = rng.standard_normal((3, K)).astype(np.float32)
    x[1, 5] = bad
    name = qt.fmt.kernel
    got = c[name](poisoned((3, N)), x, *qt.kernel_args())
    with np.errstate(invalid="ignore"):
        want = getattr(ref, name)(poisoned((3, N)), x, *qt.kernel_args())
    keep = [0, 2]
    assert_sum_close(got[keep], want[keep], magnitude(x[keep], qt, False), what=f"{fmt} ({isa})")
    np.testing.assert_array_equal(got[1], want[1])             # +-inf or nan (inf * 0) as numpy gives


@pytest.mark.parametrize("K,G", [(32, 32), (96, 32), (128, 64), (48, 16), (10, 2)])
def test_quantize_act_is_bit_exact(c, isa, rng, K, G):
    from pyinfer import _C
    T = 5
    x = (rng.standard_normal((T, K)) * rng.uniform(0.01, 100)).astype(np.float32)
    x[1] = 0.0
    x[2, :G] = 127.5 * np.float32(1e-3)                        # exact halves: rounding to even
    xq, xs = np.full((T, K), 99, np.int8), np.full((T, K // G), np.nan, np.float32)
    ffi = _C.ffi
    _C.lib.quantize_act_i8(ffi.from_buffer("int8_t[]", xq), ffi.from_buffer("float[]", xs),
                           ffi.from_buffer("float[]", x), T, K, G)
    wq, ws = ref.quantize_act(np.empty((T, K), np.int8), np.empty((T, K // G), np.float32), x, G)
    np.testing.assert_array_equal(xq, wq)
    np.testing.assert_array_equal(xs, ws)


def test_quantized_matmul_rejects_bad_arguments(c):
    qt = quantize(np.ones((4, 64), np.float32), "int4-g32-zp")
    x, out = np.ones((2, 64), np.float32), np.empty((2, 4), np.float32)
    with pytest.raises(ValueError, match="qweight must be uint8"):
        c["matmul_w4a16"](out, x, qt.qweight.view(np.int8), qt.scales, qt.zeros, 32)
    with pytest.raises(ValueError, match="K=64 is not a multiple of group_size=48"):
        c["matmul_w4a16"](out, x, qt.qweight, qt.scales, qt.zeros, 48)
    with pytest.raises(ValueError, match="group_size=3 must be even|not a multiple"):
        c["matmul_w4a8"](out, x, qt.qweight, qt.scales, qt.zeros, 3)
    with pytest.raises(ValueError, match="zeros has shape"):
        c["matmul_w4a8"](out, x, qt.qweight, qt.scales, qt.zeros[:, :1].copy(), 32)
    with pytest.raises(ValueError, match="qweight has shape"):
        c["matmul_w4a8"](out, np.ones((2, 32), np.float32), qt.qweight, qt.scales, qt.zeros, 32)
    q8 = quantize(np.ones((4, 64), np.float32), "int8")
    with pytest.raises(ValueError, match="scales has shape"):
        c["matmul_w8a16"](out, x, q8.qweight, np.ones(5, np.float32))
    with pytest.raises(ValueError, match="group_size must be a positive int"):
        c["matmul_w8a8"](out, x, q8.qweight, np.ones((4, 2), np.float32), 0)
