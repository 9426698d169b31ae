"""The C kernels (pyinfer._C via cffi) against the numpy reference, plus their argument checks."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyinfer.kernels import reference as ref
from pyinfer.ops import Ops, available_backends, load_backend
from tests.conftest import poisoned, tolerance


def test_c_backend_is_built():
    # CI installs the extension; a missing build is a failure here, never a skip.
    assert available_backends()["c"] is None


@pytest.fixture(scope="module")
def c():
    return load_backend("c")


@pytest.mark.parametrize("T,D", [(1, 1), (1, 64), (3, 7), (17, 257), (64, 4096)])
def test_rmsnorm_matches_reference(c, rng, T, D):
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


@settings(max_examples=60, deadline=None)
@given(T=st.integers(0, 9), D=st.integers(1, 70), transpose=st.booleans(), dtype=st.sampled_from(["f4", "f8"]),
       seed=st.integers(0, 2**31 - 1))
def test_rmsnorm_random_arguments_match_or_raise(c, T, D, transpose, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((D, T) if transpose else (T, D)).astype(dtype)
    x = x.T if transpose else x
    w = rng.standard_normal(D).astype(np.float32)
    out = poisoned((T, D))
    valid = dtype == "f4" and (x.flags.c_contiguous)
    if not valid:
        with pytest.raises(ValueError):
            c["rmsnorm"](out, x, w, 1e-5)
        return
    np.testing.assert_allclose(c["rmsnorm"](out, x, w, 1e-5), ref.rmsnorm(poisoned((T, D)), x, w, 1e-5),
                               **tolerance("c"))


def test_ops_facade_reports_fallbacks_honestly():
    ops = Ops("c")
    assert "rmsnorm" in ops.native and "rmsnorm" not in ops.fallbacks
    assert "matmul" in ops.fallbacks
    assert "numpy reference for" in ops.describe()
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        Ops("cuda")
