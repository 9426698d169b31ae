"""pytest-benchmark suite of the C kernels beside the numpy reference (run: pytest benchmarks/).
Not collected by the default `pytest` run (testpaths is tests/). Sizes are decode/prefill shapes of
a 4096-wide model; results are pytest-benchmark's table (and --benchmark-json if asked)."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.kernels import reference as ref
from pyinfer.ops import load_backend
from pyinfer.quant import quantize

IMPLS = ["numpy", "c"]


@pytest.fixture(scope="module")
def kernels():
    return {"numpy": {n: getattr(ref, n) for n in ("matmul", "matmul_w8a8", "matmul_w4a8", "attention_prefill",
                                                     "paged_decode_attention", "rmsnorm")},
            "c": load_backend("c")}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4096, 4096), dtype=np.float32) / np.float32(64)
    return {"w": w, "x1": rng.standard_normal((1, 4096), dtype=np.float32),
            "x128": rng.standard_normal((128, 4096), dtype=np.float32), "rng": rng,
            "q8": quantize(w, "int8-g32"), "q4": quantize(w, "int4-g32-a8")}


@pytest.mark.parametrize("impl", IMPLS)
def test_gemv_f32(benchmark, kernels, data, impl):
    out = np.empty((1, 4096), np.float32)
    benchmark(kernels[impl]["matmul"], out, data["x1"], data["w"])


@pytest.mark.parametrize("fmt", ["q8", "q4"])
def test_gemv_quantized_c(benchmark, kernels, data, fmt):
    qt, out = data[fmt], np.empty((1, 4096), np.float32)
    benchmark(kernels["c"][qt.fmt.kernel], out, data["x1"], *qt.kernel_args())


@pytest.mark.parametrize("impl", IMPLS)
def test_gemm_f32_128(benchmark, kernels, data, impl):
    out = np.empty((128, 4096), np.float32)
    benchmark(kernels[impl]["matmul"], out, data["x128"], data["w"])


def test_gemm_w8a8_128_c(benchmark, kernels, data):
    qt, out = data["q8"], np.empty((128, 4096), np.float32)
    benchmark(kernels["c"]["matmul_w8a8"], out, data["x128"], *qt.kernel_args())


@pytest.mark.parametrize("impl", IMPLS)
def test_attention_prefill_1024(benchmark, kernels, data, impl):
    rng = data["rng"]
    q = rng.standard_normal((1024, 8, 64), dtype=np.float32)
    k, v = (rng.standard_normal((1024, 2, 64), dtype=np.float32) for _ in range(2))
    benchmark(kernels[impl]["attention_prefill"], np.empty_like(q), q, k, v, 0.125)


@pytest.mark.parametrize("impl", IMPLS)
def test_paged_decode_4096(benchmark, kernels, data, impl):
    rng = data["rng"]
    kc, vc = (rng.standard_normal((256, 16, 8, 128), dtype=np.float32) for _ in range(2))
    tables = rng.permutation(256).astype(np.int32)[None, :]
    q = rng.standard_normal((1, 32, 128), dtype=np.float32)
    benchmark(kernels[impl]["paged_decode_attention"], np.empty_like(q), q, kc, vc, tables,
              np.array([4096], np.int32), 128 ** -0.5)
