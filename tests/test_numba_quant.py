"""The Numba quantized matmuls against the reference: W8A8 and W4A8 tight against the reference's
integer math (activation quantization bit for bit, then exact integer group dots scaled in float),
W8A16 and W4A16 within float32 rounding of the same products. Formats from pyinfer/quant.py,
ragged K (padded by QTensor), T on both sides of the GEMV/GEMM switch, serial and threaded paths."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from pyinfer.kernels import reference as ref
from pyinfer.kernels.numba_cpu.quant_common import quantized_act
from pyinfer.ops import load_backend
from pyinfer.quant import FORMATS, quantize
from conftest import poisoned

SHAPES = [(1, 1, 32), (1, 7, 100), (1, 5, 256), (2, 33, 64), (2, 9, 512), (3, 130, 515), (3, 6, 384),
          (4, 4, 128), (5, 17, 257), (19, 67, 1024)]


@pytest.fixture(scope="module")
def nb():
    return load_backend("numba")


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = numba.get_num_threads()
    numba.set_num_threads(min(request.param, numba.config.NUMBA_NUM_THREADS))
    yield request.param
    numba.set_num_threads(before)


def padded_input(rng, qt, T):
    """x (T, K_pad) float32 with zeros past K, as QTensor.matmul passes it."""
    x = np.zeros((T, qt.k_pad), np.float32)
    x[:, :qt.shape[1]] = rng.standard_normal((T, qt.shape[1])) * rng.uniform(0.1, 10)
    return x


def integer_math(x, qt):
    """float64 value of the reference's integer math, and sum |terms| (the scale of float32 rounding)."""
    f = qt.fmt
    T, K = x.shape
    G = f.group_size
    xq, xs = ref.quantize_act(np.empty((T, K), np.int8), np.empty((T, K // G), np.float32), x, G)
    if f.weight_bits == 8:
        w_int = qt.qweight.astype(np.int64)
    else:
        z = 8 if qt.zeros is None else np.repeat(qt.zeros.astype(np.int64), G, axis=1)
        w_int = ref.unpack_int4(qt.qweight, G).astype(np.int64) - z
    dots = np.einsum("tgk,ngk->tng", xq.astype(np.int64).reshape(T, -1, G), w_int.reshape(len(w_int), -1, G))
    terms = dots * xs.astype(np.float64)[:, None, :] * qt.scales.astype(np.float64)[None, :, :]   # (T, N, G)
    return terms.sum(axis=2), np.abs(terms).sum(axis=2)


def float_math(x, qt):
    """float64 x @ deq(w).T and sum |x_k w_nk| for the float-activation formats."""
    w = ref.dequantize_weight(qt.qweight, qt.scales, qt.zeros, qt.fmt.group_size, qt.fmt.weight_bits)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    return x64 @ w64.T, np.abs(x64) @ np.abs(w64).T


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("T,N,K", SHAPES)
def test_quantized_matmul_matches_reference(nb, rng, threads, name, T, N, K):
    qt = quantize(rng.standard_normal((N, K)).astype(np.float32), name)
    x = padded_input(rng, qt, T)
    kernel = qt.fmt.kernel
    got = nb[kernel](poisoned((T, N)), x, *qt.kernel_args())
    want = getattr(ref, kernel)(poisoned((T, N)), x, *qt.kernel_args())
    exact, magnitude = (integer_math if qt.fmt.act_int8 else float_math)(x, qt)
    bound = 2e-6 * magnitude + 1e-30                  # float32 rounding of the sums; integer parts exact
    assert np.all(np.abs(got - exact) <= bound), f"{name}: worst {np.max(np.abs(got - exact) / bound):.2f} x bound"
    assert np.all(np.abs(got - want) <= 2 * bound)


@pytest.mark.parametrize("T,K,G", [(1, 32, 32), (3, 96, 32), (70, 640, 64), (2, 1024, 128)])
def test_activation_quantization_is_bit_exact(rng, threads, T, K, G):
    x = (rng.standard_normal((T, K)) * rng.uniform(0.01, 100)).astype(np.float32)
    x[0, :G] = 0.0                                   # an all-zero group: scale 0, codes 0
    xq, xs = quantized_act(x, G)
    rq, rs = ref.quantize_act(np.empty((T, K), np.int8), np.empty((T, K // G), np.float32), x, G)
    np.testing.assert_array_equal(xq, rq)
    np.testing.assert_array_equal(xs, rs)


@pytest.mark.parametrize("kernel,args", [
    ("matmul_w8a8", lambda rng: (rng.integers(-128, 128, (5, 64), dtype=np.int8),
                                  rng.uniform(0.01, 1, (5, 2)).astype(np.float32), 32)),
    ("matmul_w4a8", lambda rng: (rng.integers(0, 256, (5, 48), dtype=np.uint8),
                                  rng.uniform(-1, 1, (5, 3)).astype(np.float32),
                                  rng.integers(0, 256, (5, 3), dtype=np.uint8), 32)),
    ("matmul_w4a16", lambda rng: (rng.integers(0, 256, (5, 48), dtype=np.uint8),
                                   rng.uniform(-1, 1, (5, 3)).astype(np.float32), None, 32)),
])
@pytest.mark.parametrize("T", [1, 6])
def test_full_code_range(nb, rng, kernel, args, T):
    """Codes a quantizer never makes (int8 -128, zero points past 15) still follow the reference math."""
    a = args(rng)
    K = 64 if kernel == "matmul_w8a8" else 96
    x = rng.standard_normal((T, K)).astype(np.float32)
    got = nb[kernel](poisoned((T, 5)), x, *a)
    want = getattr(ref, kernel)(poisoned((T, 5)), x, *a)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * np.abs(want).max())
