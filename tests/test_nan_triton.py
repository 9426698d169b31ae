"""The NaN rule (docs/numerics.md) on the Triton backend, under TRITON_INTERPRET=1 on the CPU (as
tests/test_triton_backend.py runs it; TRITON_INTERPRET=0 on a GPU machine runs the same checks on
CUDA tensors): the float ops' NaN and inf outputs equal the reference's, inputs poisoned at the
first, a middle and the last element. Small shapes: the interpreter is slow."""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pyinfer.kernels import reference as ref  # noqa: E402
from pyinfer.kernels.triton_gpu._common import make_context  # noqa: E402
from pyinfer.ops import load_backend  # noqa: E402
from test_nan_rule import cases  # noqa: E402

DEV = make_context().device
OPS = ["rmsnorm", "rope", "matmul", "silu_mul", "add", "attention_prefill", "paged_prefill_attention",
       "paged_decode_attention", "matmul_w8a16", "matmul_w4a16"]


def to_dev(v):
    return torch.from_numpy(np.array(v, copy=True)).to(DEV) if isinstance(v, np.ndarray) else v


@pytest.mark.parametrize("op", OPS)
def test_triton_follows_the_nan_rule(op, rng):
    fn = load_backend("triton")[op]
    base, inputs = cases(rng)[op]
    for arg in inputs:
        values = (np.nan,) if arg == "scales" else (np.nan, np.inf, -np.inf)
        for where in ("first", "last"):
            for value in values:
                args = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in base.items()}
                a = args[arg]
                i = 0 if where == "first" else a.size - 1
                if op.startswith("paged") and arg != "q":
                    i = (1 * 4 + 2) * a.shape[2] * a.shape[3] + (0 if where == "first" else a.shape[3] - 1)
                a.reshape(-1)[i] = value
                with np.errstate(all="ignore"):
                    want = np.asarray(getattr(ref, op)(*[v.copy() if isinstance(v, np.ndarray) else v
                                                         for v in args.values()]))
                dev_args = [to_dev(v) for v in args.values()]
                fn(*dev_args)
                got = dev_args[0].detach().float().cpu().numpy()
                what = f"{op}: {arg}[{i}] = {value}"
                assert np.array_equal(np.isnan(got), np.isnan(want)), what
                assert np.array_equal(np.isinf(got), np.isinf(want)), what
