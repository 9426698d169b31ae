"""Row-wise C ops give each row the same bits wherever it sits in the batch: batch-invariant mode
(pyinfer/engine/batch_invariant.py) runs them unchanged, so a row's result must not depend on its
position in the flattened array (silu_mul's scalar tail used libm's exp while the vector body used its
own, and a 1000-request engine run on the C backend diverged from its run alone)."""
from __future__ import annotations

import numpy as np
import pytest

from c_support import isa  # noqa: F401 - fixture
from pyinfer.ops import load_backend


@pytest.mark.parametrize("D", [1, 7, 16, 33, 172, 688])
@pytest.mark.parametrize("op", ["silu_mul", "rmsnorm", "add"])
def test_each_row_has_the_same_bits_alone_and_in_a_batch(op, D, rng, isa):  # noqa: F811
    c = load_backend("c")
    T = int(rng.integers(2, 40))
    a = rng.standard_normal((T, D)).astype(np.float32) * 4
    b = rng.standard_normal((T, D)).astype(np.float32)
    w = rng.standard_normal(D).astype(np.float32)

    def run(rows):
        out = np.full((len(rows), D), np.nan, np.float32)
        if op == "rmsnorm":
            c[op](out, np.ascontiguousarray(a[rows]), w, 1e-5)
        else:
            c[op](out, np.ascontiguousarray(a[rows]), np.ascontiguousarray(b[rows]))
        return out

    batched = run(np.arange(T))
    for t in range(T):
        np.testing.assert_array_equal(run(np.array([t])), batched[t:t + 1], err_msg=f"row {t} of {T}")
    perm = rng.permutation(T)
    np.testing.assert_array_equal(run(perm), batched[perm])
