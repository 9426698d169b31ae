"""The C matmuls' prefill (M > 1, GEMM) paths against kernels/reference.py: every instruction-set body
(AMX int8 tiles for W8A8 / W4A8 / W8A16 / W4A16, the float32 packed GEMM with its AVX-512 transposing
pack), token counts around the tile sizes (16 tokens per AMX tile, pairs of tiles for A8), ragged N
around the 16/32-row weight panels, ragged K (W8A16 pads K to 64), zero points, groups 32/64/128,
non-finite activation rows, NaN-poisoned outputs."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.kernels import reference as ref
from pyinfer.quant import quantize
from c_support import SUM_RTOL, assert_sum_close, c, isa  # noqa: F401 - fixtures
from conftest import poisoned
from test_c_quant import magnitude

MS = (1, 2, 4, 6, 15, 16, 17, 33)   # around AMX_A16_MIN_T (4), AMX_MIN_T (6), 16-token tiles, A8 tile pairs
# (format, N, K): N around 16 / 32-row panels, K with odd group counts; int8 (W8A16) K not a multiple of 64
CASES = [("int8-g32", 47, 96), ("int8-g64", 33, 192), ("int8-g64", 16, 384),
         ("int4-g32-a8", 31, 160), ("int4-g64-zp-a8", 65, 128), ("int4-g128-a8", 17, 256),
         ("int4-g32", 40, 96), ("int4-g64-zp", 33, 192), ("int4-g128-zp", 1, 384),
         ("int8", 47, 100), ("int8", 32, 64), ("int8", 5, 7)]


def _inputs(rng, M, N, K):
    w = rng.standard_normal((N, K)).astype(np.float32)
    w[0, : K // 3] = 0.0                                       # zero groups: scale 0
    x = rng.standard_normal((M, K)).astype(np.float32) * rng.uniform(0.01, 10)
    x[0, : K // 2] *= 1e-4                                      # a small-valued stretch
    return w, x


@pytest.mark.parametrize("M", MS)
@pytest.mark.parametrize("fmt,N,K", CASES)
def test_quantized_gemm_matches_reference(c, isa, rng, fmt, N, K, M):
    w, x = _inputs(rng, M, N, K)
    qt = quantize(w, fmt)
    name = qt.fmt.kernel
    got = c[name](poisoned((M, N)), x, *qt.kernel_args())
    want = getattr(ref, name)(poisoned((M, N)), x, *qt.kernel_args())
    assert_sum_close(got, want, magnitude(x, qt, qt.fmt.act_int8), what=f"{fmt} M={M} N={N} K={K} ({isa})")


@pytest.mark.parametrize("M", (2, 17, 33))
@pytest.mark.parametrize("G,N,K", [(128, 33, 384), (96, 17, 192), (256, 40, 512)])
def test_w8a8_gemm_other_groups(c, isa, rng, G, N, K, M):
    """W8A8 with groups no format names (128, a multiple of 32 but not 64, 256): raw int8 weights."""
    q = rng.integers(-127, 128, (N, K), dtype=np.int8)
    s = rng.uniform(0.001, 0.1, (N, K // G)).astype(np.float32)
    x = rng.standard_normal((M, K)).astype(np.float32)
    got = c["matmul_w8a8"](poisoned((M, N)), x, q, s, G)
    want = ref.matmul_w8a8(poisoned((M, N)), x, q, s, G)
    xq, xs = ref.quantize_act(np.empty(x.shape, np.int8), np.empty((M, K // G), np.float32), x, G)
    xd = (xq.reshape(M, -1, G) * xs[:, :, None]).reshape(M, K)
    wd = (q.reshape(N, -1, G) * s[:, :, None]).reshape(N, K)
    assert_sum_close(got, want, np.abs(xd) @ np.abs(wd).T, what=f"w8a8 G={G} ({isa})")


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("fmt", ["int8", "int4-g32", "int4-g64-zp"])
def test_a16_gemm_non_finite_rows(c, isa, rng, fmt):
    """A row holding inf/NaN cannot be fixed point: computed in float, the other rows unaffected."""
    M, N, K = 18, 33, 128
    w, x = _inputs(rng, M, N, K)
    x[3, 5] = np.inf
    x[17, 0] = np.nan
    qt = quantize(w, fmt)
    got = c[qt.fmt.kernel](poisoned((M, N)), x, *qt.kernel_args())
    want = getattr(ref, qt.fmt.kernel)(poisoned((M, N)), x, *qt.kernel_args())
    finite = [t for t in range(M) if t not in (3, 17)]
    assert_sum_close(got[finite], want[finite], magnitude(x[finite], qt, False), what=f"{fmt} ({isa})")
    np.testing.assert_array_equal(np.isnan(got[[3, 17]]), np.isnan(want[[3, 17]]))
    np.testing.assert_array_equal(got[3][~np.isnan(got[3])], want[3][~np.isnan(want[3])])


@pytest.mark.parametrize("M", MS + (40,))
@pytest.mark.parametrize("N,K", [(1, 1), (33, 17), (64, 256), (31, 300), (70, 513)])
def test_f32_gemm_matches_reference(c, isa, rng, M, N, K):
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    got = c["matmul"](poisoned((M, N)), x, w)
    want = ref.matmul(poisoned((M, N)), x, w)
    assert_sum_close(got, want, np.abs(x) @ np.abs(w).T, rtol=SUM_RTOL, what=f"f32 M={M} N={N} K={K} ({isa})")


@pytest.mark.parametrize("fmt", [None, "int8-g32", "int4-g32-a8", "int4-g64-zp"])
def test_gemm_result_does_not_depend_on_the_thread_count(c, isa, rng, fmt):
    """Panels are handed to threads dynamically; each output tile is still summed over the K blocks in
    order, so 1, 2 and 3 threads give the same bits (K spans several 256-wide blocks, N ragged)."""
    from pyinfer import threads
    M, N, K = int(rng.integers(17, 70)), int(rng.integers(33, 150)), 64 * int(rng.integers(5, 12))
    w, x = _inputs(rng, M, N, K)
    name, args = ("matmul", (w,)) if fmt is None else (quantize(w, fmt).fmt.kernel, quantize(w, fmt).kernel_args())
    before = threads.current()
    outs = []
    try:
        for n in (1, 2, 3, 2):
            threads.set_threads(n)
            outs.append(c[name](poisoned((M, N)), x, *args))
    finally:
        threads.set_threads(before)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
