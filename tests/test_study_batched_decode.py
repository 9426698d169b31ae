"""Batched decode at the memory wall (issue #15 point 3): the C matmul's small-batch path (2-8 rows, two
tokens per pass) gives every row exactly what that row alone gives, on each instruction set this CPU
has, and matches the numpy reference; ragged N and K, NaN-poisoned outputs."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.kernels import reference as ref
from c_support import assert_sum_close, c, isa  # noqa: F401 - fixtures


@pytest.mark.parametrize("T", [2, 3, 5, 8])
@pytest.mark.parametrize("N,K", [(37, 19), (64, 96), (133, 257)])
def test_small_batch_rows_equal_single_rows(c, isa, rng, T, N, K):  # noqa: F811
    x = rng.standard_normal((T, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32)
    out = np.full((T, N), np.nan, np.float32)
    c["matmul"](out, x, w)
    for t in range(T):
        one = np.full((1, N), np.nan, np.float32)
        c["matmul"](one, x[t:t + 1], w)
        assert np.array_equal(out[t], one[0]), f"row {t} of {T} differs from the row alone"
    want = np.empty((T, N), np.float32)
    ref.matmul(want, x, w)
    assert_sum_close(out, want, np.abs(x) @ np.abs(w).T, what=f"matmul T={T}")
