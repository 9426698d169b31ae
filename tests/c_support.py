"""Helpers shared by the C backend's tests: the backend fixture, the instruction-set sweep, and
tolerances for sums (a matmul's error bound scales with sum |x| |w|, not with its result)."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.kernels import c_cpu
from pyinfer.ops import load_backend

# Every body of every kernel runs: caps above what this CPU has fall back to what it has, so each
# parameter is a real, distinct run wherever that body exists and a repeat of the best one elsewhere.
ISAS = ("scalar", "avx2", "avx512", "amx")

# relative error allowed per unit of sum |x| |w| (float32 summation over K terms, reordered)
SUM_RTOL = 2e-6


@pytest.fixture(scope="module")
def c():
    return load_backend("c")


@pytest.fixture(params=ISAS)
def isa(request):
    with c_cpu.isa_cap(request.param):
        yield request.param


def assert_sum_close(got, want, magnitude, rtol=SUM_RTOL, what=""):
    """|got - want| <= rtol * magnitude + 1e-30, elementwise; magnitude: sum of |terms| of each entry."""
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.size == 0:
        return
    assert np.all(np.isfinite(got)), f"{what}: non-finite output (unwritten element?)"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = rtol * magnitude + 1e-30
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (f"{what}: error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst} "
                                  f"(got {got[worst]}, want {want[worst]})")
