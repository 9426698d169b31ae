"""One NaN rule for every backend (docs/numerics.md, issue #12 D6, D10): NaN in any input of an op
gives NaN in exactly the outputs the reference gives NaN (those it reaches); infinities give what
the reference computes (-inf stays a valid mask, silu(-inf) = 0). Inputs are poisoned at the first
element, one in the middle and the last one, so SIMD bodies and scalar tails are both hit; every C
instruction-set body runs (isa fixture); shapes are ragged (not multiples of 16)."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.kernels import reference as ref
from pyinfer.kernels.reference import plain_inv_freq
from pyinfer.ops import load_backend
from pyinfer.quant import quantize
from c_support import isa  # noqa: F401 - fixture
from conftest import poisoned

T, D, K, N, V, H, KVH, HD, BS = 5, 37, 64, 19, 45, 4, 2, 24, 4


def cases(rng):
    """op name -> (its arguments, out first, by name; the names of the float inputs to poison)."""
    def f(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    nb, ctx = 6, np.array([7, 13, 1], np.int64)
    tables = np.array([[3, 0, 0, 0], [1, 4, 2, 5], [0, 0, 0, 0]], np.int64)
    cu = np.array([0, 2, 5, 6], np.int64)
    pool_k, pool_v, q6 = f(nb, BS, KVH, HD), f(nb, BS, KVH, HD), f(6, H, HD)
    out = {
        "rmsnorm": (dict(out=poisoned((T, D)), x=f(T, D), weight=f(D), eps=1e-5), ("x", "weight")),
        "rope": (dict(out=poisoned((T, H * HD)), x=f(T, H * HD), positions=np.arange(T),
                      inv_freq=plain_inv_freq(HD, 10000.0)), ("x",)),
        "matmul": (dict(out=poisoned((T, N)), x=f(T, K), w=f(N, K)), ("x", "w")),
        "silu_mul": (dict(out=poisoned((T, D)), gate=f(T, D), up=f(T, D)), ("gate", "up")),
        "add": (dict(out=poisoned((T, D)), x=f(T, D), y=f(T, D)), ("x", "y")),
        "softmax": (dict(out=poisoned((T, V)), logits=f(T, V), temperature=0.7), ("logits",)),
        "attention_prefill": (dict(out=poisoned((3, H, HD)), q=f(3, H, HD), k=f(7, KVH, HD), v=f(7, KVH, HD),
                                   scale=0.2), ("q", "k", "v")),
        "paged_prefill_attention": (dict(out=poisoned((6, H, HD)), q=q6, k_cache=pool_k, v_cache=pool_v,
                                         block_tables=tables, cu_seqlens_q=cu, context_lens=ctx, scale=0.2),
                                    ("q", "k_cache", "v_cache")),
        "paged_decode_attention": (dict(out=poisoned((3, H, HD)), q=q6[:3].copy(), k_cache=pool_k, v_cache=pool_v,
                                        block_tables=tables, context_lens=ctx, scale=0.2), ("q", "k_cache", "v_cache")),
    }
    for fmt in ("int8", "int8-g32", "int4-g32", "int4-g32-zp-a8"):
        qt = quantize(f(N, K), fmt)
        args = qt.kernel_args()
        names = ["qweight", "scales", "zeros", "group_size"][:len(args)] if qt.fmt.weight_bits == 4 else \
            ["qweight", "scales", "group_size"][:len(args)]
        out[qt.fmt.kernel] = (dict(out=poisoned((T, N)), x=f(T, K), **dict(zip(names, args))), ("x", "scales"))
    return out


def check_op(backend, name, base, inputs):
    fn = backend[name]

    def build():
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in base.items()}
    for arg in inputs:
        # an infinite quantization scale is not held to the rule (quantize() never makes one, loaders refuse
        # non-finite weights; C's integer kernels give NaN where the reference gives +-inf): NaN only
        values = (np.nan,) if arg == "scales" else (np.nan, np.inf, -np.inf)
        for where in ("first", "middle", "last"):
            for value in values:
                want_args, got_args = build(), build()
                a = want_args[arg]
                i = {"first": 0, "middle": a.size // 2, "last": a.size - 1}[where]
                if name.startswith("paged") and arg != "q":          # a key inside a context
                    i = (1 * BS + 2) * KVH * HD + (0 if where == "first" else HD - 1 if where == "last" else HD // 2)
                want_args[arg].reshape(-1)[i] = value
                got_args[arg].reshape(-1)[i] = value
                with np.errstate(all="ignore"):
                    want = getattr(ref, name)(*want_args.values())
                got = fn(*got_args.values())
                want, got = np.asarray(want), np.asarray(got)
                what = f"{name}: {arg}[{i}] ({where}) = {value}"
                assert np.array_equal(np.isnan(got), np.isnan(want)), \
                    f"{what}: NaN at {np.argwhere(np.isnan(got) != np.isnan(want))[:4].tolist()} differs from the reference"
                fin = np.isfinite(want)
                assert np.array_equal(np.isinf(got), np.isinf(want)) and np.array_equal(got[~fin & ~np.isnan(want)],
                                                                                       want[~fin & ~np.isnan(want)]), what
                np.testing.assert_allclose(got[fin], want[fin], rtol=2e-2, atol=2e-2, err_msg=what)


@pytest.mark.parametrize("op", ["rmsnorm", "rope", "matmul", "silu_mul", "add", "softmax", "attention_prefill",
                                "paged_prefill_attention", "paged_decode_attention", "matmul_w8a16", "matmul_w8a8",
                                "matmul_w4a16", "matmul_w4a8"])
def test_c_follows_the_nan_rule_in_every_body(op, isa, rng):
    base, inputs = cases(rng)[op]
    check_op(load_backend("c"), op, base, inputs)


@pytest.mark.parametrize("op", ["rmsnorm", "rope", "matmul", "silu_mul", "add", "softmax", "attention_prefill",
                                "paged_prefill_attention", "paged_decode_attention", "matmul_w8a16", "matmul_w8a8",
                                "matmul_w4a16", "matmul_w4a8"])
def test_numba_follows_the_nan_rule(op, rng):
    base, inputs = cases(rng)[op]
    check_op(load_backend("numba"), op, base, inputs)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_silu_of_minus_inf_is_zero_and_nan_stays(value):
    gate = np.array([[value, 1.0]], np.float32)
    out = ref.silu_mul(poisoned((1, 2)), gate, np.ones((1, 2), np.float32))
    want = {"nan": np.nan, "inf": np.inf, "-inf": 0.0}[str(value)]
    np.testing.assert_equal(out[0, 0], np.float32(want))


def test_argmax_picks_the_first_nan_everywhere():
    logits = np.array([[0.0, 3.0, np.nan, 5.0, np.nan]], np.float32)
    for name in ("numpy", "c", "numba"):
        fn = ref.argmax if name == "numpy" else load_backend(name)["argmax"]
        assert fn(np.empty(1, np.int64), logits)[0] == 2, name


@pytest.mark.parametrize("backend_name", ["c-scalar", "c-avx2", "c-avx512", "numba"])
def test_every_tail_length_of_the_row_ops(backend_name, rng):
    """rmsnorm, silu_mul, add, softmax and argmax over rows of every width 1..33 (SIMD bodies of 16
    and 8 plus every tail), each position poisoned in turn with NaN, inf and -inf."""
    from pyinfer.kernels import c_cpu
    name, _, isa_name = backend_name.partition("-")
    backend = load_backend(name)
    with c_cpu.isa_cap(isa_name or "amx"):
        for n in range(1, 34):
            base = rng.standard_normal((2, n)).astype(np.float32)
            w = rng.standard_normal(n).astype(np.float32)
            for i in range(n):
                for value in (np.nan, np.inf, -np.inf):
                    x = base.copy()
                    x[1, i] = value
                    calls = {"rmsnorm": lambda f, o: f(o, x, w, 1e-5), "silu_mul": lambda f, o: f(o, x, base),
                             "add": lambda f, o: f(o, x, base), "softmax": lambda f, o: f(o, x, 0.8)}
                    for op, call in calls.items():
                        with np.errstate(all="ignore"):
                            want = call(getattr(ref, op), poisoned((2, n)))
                        got = call(backend[op], poisoned((2, n)))
                        what = f"{backend_name} {op} width {n}, x[1, {i}] = {value}"
                        assert np.array_equal(np.isnan(got), np.isnan(want)), what
                        assert np.array_equal(np.isinf(got), np.isinf(want)), what
                    idx = backend["argmax"](np.empty(2, np.int64), x)
                    assert list(idx) == list(np.argmax(x, axis=-1)), f"{backend_name} argmax width {n} at {i}"
