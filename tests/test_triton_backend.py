"""The Triton kernels against the numpy reference: seeded random inputs, ragged shapes (not
multiples of any tile, length 1, block boundaries +-1), block-table indirection, GQA, causal,
NaN-poisoned outputs; plus the backend's arrays, argument checks, and the model end to end.

CI has no GPU: this module sets TRITON_INTERPRET=1 (unless the environment already says otherwise)
before triton is imported, so the kernels run in Triton's interpreter on torch CPU tensors. Other
test modules are unaffected (nothing else in the suite imports triton). On a GPU machine,
TRITON_INTERPRET=0 pytest tests/test_triton_backend.py runs the same tests on CUDA tensors.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pyinfer import quant  # noqa: E402
from pyinfer.config import ModelConfig, SamplingParams  # noqa: E402
from pyinfer.generate import generate  # noqa: E402
from pyinfer.kernels import reference as ref  # noqa: E402
from pyinfer.kernels import triton_gpu  # noqa: E402
from pyinfer.kernels.triton_gpu import attention as attn  # noqa: E402
from pyinfer.kernels.triton_gpu import matmul as mm  # noqa: E402
from pyinfer.kernels.triton_gpu import norm_rope as nr  # noqa: E402
from pyinfer.kernels.triton_gpu import paged_attention as pa  # noqa: E402
from pyinfer.kernels.triton_gpu._common import make_context  # noqa: E402
from pyinfer.loaders import load_checkpoint  # noqa: E402
from pyinfer.model import Model  # noqa: E402
from pyinfer.ops import BackendUnavailable, Ops, available_backends  # noqa: E402
from pyinfer.weights import random_weights  # noqa: E402
from tests.conftest import TOLERANCES, poisoned, tolerance  # noqa: E402

CTX = make_context()                                   # cpu under the interpreter, cuda otherwise
DEV = CTX.device
# float16/bfloat16 rows are not in conftest's table yet; these stand in until they are
LOW_PRECISION = {"float16": (2e-2, 2e-2), "bfloat16": (6e-2, 6e-2)}


def tol(dtype: str = "float32") -> dict:
    if (dtype, "triton") in TOLERANCES:
        return tolerance("triton", dtype)
    rtol, atol = LOW_PRECISION[dtype]
    return {"rtol": rtol, "atol": atol}


def dev(a, dtype=None) -> torch.Tensor:
    """A copy of numpy ``a`` on the backend's device (never a view of ``a``: kernels write in place)."""
    t = torch.from_numpy(np.array(a, copy=True)).to(DEV)
    return t if dtype is None else t.to(dtype)


def host(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def nan_out(shape, dtype=torch.float32) -> torch.Tensor:
    return dev(poisoned(shape)).to(dtype)


def rounded(a, dtype) -> np.ndarray:
    """a as the kernel sees it in ``dtype``, back in float32 (the reference's input)."""
    return host(dev(a, dtype))


# ---- the backend itself -----------------------------------------------------------------------------

def test_backend_loads_and_every_model_op_is_native():
    assert available_backends()["triton"] is None          # CI installs triton + torch: never a skip
    ops = Ops("triton")
    assert set(triton_gpu.OPS) == set(ops.native)
    assert {"argmax", "softmax"} <= set(ops.fallbacks)     # the sampler calls these with numpy


def test_load_without_gpu_or_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ImportError, match="needs a CUDA GPU.*TRITON_INTERPRET=1"):
        triton_gpu.load()
    with pytest.raises(BackendUnavailable, match="backend 'triton' is unavailable here"):
        Ops("triton")


def test_arrays_move_and_keep_index_dtypes():
    A = triton_gpu.arrays()
    assert not A.is_numpy
    assert A.from_numpy(np.arange(3, dtype=np.int64)).dtype == torch.int64
    assert A.from_numpy(np.arange(3, dtype=np.int32)).dtype == torch.int32
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    t = A.from_numpy(x)
    assert t.dtype == torch.float32 and t.device.type == DEV.type
    np.testing.assert_array_equal(A.to_numpy(t), x)
    assert A.empty((2, 5)).shape == (2, 5) and A.zeros((4,), np.int64).dtype == torch.int64
    half = triton_gpu.arrays("float16")
    h = half.from_numpy(x)
    assert h.dtype == torch.float16 and half.from_numpy(np.arange(2)).dtype == torch.int64
    back = half.to_numpy(h)
    assert back.dtype == np.float32 and np.abs(back - x).max() < 1e-3
    assert A.from_numpy(h).dtype == torch.float32            # a tensor is moved like an array
    with pytest.raises(ValueError, match="dtype 'float64'"):
        triton_gpu.arrays("float64")


def test_bad_arguments_are_named(rng):
    x, w = dev(np.ones((2, 4), np.float32)), dev(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="x must be a torch tensor"):
        nr.rmsnorm(nan_out((2, 4)), np.ones((2, 4), np.float32), w, 1e-5, ctx=CTX)
    with pytest.raises(ValueError, match="weight has shape"):
        nr.rmsnorm(nan_out((2, 4)), x, dev(np.ones(5, np.float32)), 1e-5, ctx=CTX)
    with pytest.raises(ValueError, match="x must be one of float32, float16, bfloat16, got float64"):
        nr.rmsnorm(nan_out((2, 4)), x.double(), w, 1e-5, ctx=CTX)
    with pytest.raises(ValueError, match="out has shape"):
        mm.matmul(nan_out((2, 3)), x, dev(np.ones((5, 4), np.float32)), ctx=CTX)
    with pytest.raises(ValueError, match="x must be contiguous in its last dimension"):
        mm.matmul(nan_out((4, 5)), x.t(), dev(np.ones((5, 2), np.float32)), ctx=CTX)
    qt = quant.quantize(rng.standard_normal((8, 64)).astype(np.float32), "int4-g32")
    args = (dev(qt.qweight), dev(qt.scales), None, 32)
    with pytest.raises(ValueError, match="x has K=60"):
        mm.matmul_w4a16(nan_out((1, 8)), dev(np.ones((1, 60), np.float32)), *args, ctx=CTX)
    with pytest.raises(ValueError, match="group_size=16"):
        mm.matmul_w4a16(nan_out((1, 8)), dev(np.ones((1, 64), np.float32)), *args[:3], 16, ctx=CTX)
    with pytest.raises(ValueError, match="qweight must be one of uint8"):
        mm.matmul_w4a16(nan_out((1, 8)), dev(np.ones((1, 64), np.float32)), args[0].to(torch.int8),
                        *args[1:], ctx=CTX)
    q, kc = dev(np.ones((2, 4, 8), np.float32)), dev(np.ones((3, 16, 3, 8), np.float32))
    with pytest.raises(ValueError, match="not a multiple of k's 3"):
        pa.paged_decode_attention(nan_out((2, 4, 8)), q, kc, kc, dev(np.zeros((2, 1), np.int32)),
                                  dev(np.ones(2, np.int32)), 1.0, ctx=CTX)
    with pytest.raises(ValueError, match="block_tables must be one of int32, int64"):
        kc2 = dev(np.ones((3, 16, 2, 8), np.float32))
        pa.paged_decode_attention(nan_out((2, 4, 8)), q, kc2, kc2, dev(np.zeros((2, 1), np.float32)),
                                  dev(np.ones(2, np.int32)), 1.0, ctx=CTX)


# ---- row and elementwise ops --------------------------------------------------------------------------

@pytest.mark.parametrize("T,D", [(1, 1), (3, 7), (17, 257), (2, 8193)])    # 8193: the two-pass path
def test_rmsnorm(rng, T, D):
    x = (rng.standard_normal((T, D)) * rng.uniform(0.01, 100)).astype(np.float32)
    w = rng.standard_normal(D).astype(np.float32)
    got = nr.rmsnorm(nan_out((T, D)), dev(x), dev(w), 1e-5, ctx=CTX)
    np.testing.assert_allclose(host(got), ref.rmsnorm(poisoned((T, D)), x, w, 1e-5), **tol())


@pytest.mark.parametrize("T,H,hd,in_place", [(1, 1, 2, False), (5, 3, 8, True), (9, 4, 64, False)])
def test_rope(rng, T, H, hd, in_place):
    x = rng.standard_normal((T, H * hd)).astype(np.float32)
    pos = rng.integers(0, 200_000, T).astype(np.int64)          # far positions: no angle drift
    want = ref.rope(poisoned(x.shape), x, pos, ref.plain_inv_freq(hd, 500000.0))
    xt = dev(x)
    got = nr.rope(xt if in_place else nan_out(x.shape), xt, dev(pos), dev(ref.plain_inv_freq(hd, 500000.0)), ctx=CTX)
    np.testing.assert_allclose(host(got), want, **tol())


@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (3, 70001)])       # 3 x 70001: several programs
def test_silu_mul_and_add_alias_their_first_input(rng, shape):
    g, u = (rng.standard_normal(shape).astype(np.float32) * 4 for _ in range(2))
    gt = dev(g)
    nr.silu_mul(gt, gt, dev(u), ctx=CTX)
    np.testing.assert_allclose(host(gt), ref.silu_mul(poisoned(shape), g, u), **tol())
    xt = dev(g)
    nr.add(xt, xt, dev(u), ctx=CTX)
    np.testing.assert_allclose(host(xt), g + u, **tol())


def test_embedding_and_out_of_range_ids(rng):
    table = rng.standard_normal((11, 33)).astype(np.float32)
    tokens = np.array([0, 10, 3, 3, 7], np.int64)
    got = nr.embedding(nan_out((5, 33)), dev(tokens), dev(table), ctx=CTX)
    np.testing.assert_array_equal(host(got), ref.embedding(poisoned((5, 33)), tokens, table))
    bad = host(nr.embedding(nan_out((2, 33)), dev(np.array([11, 2])), dev(table), ctx=CTX))
    assert np.isnan(bad[0]).all() and np.array_equal(bad[1], table[2])      # no read out of bounds


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kv_cache_write_through_slot_mapping(rng, dtype):
    nb, bs, kvh, hd, T = 5, 4, 2, 8, 7
    kc, vc = (rng.standard_normal((nb, bs, kvh, hd)).astype(np.float32) for _ in range(2))
    k, v = (rng.standard_normal((T, kvh, hd)).astype(np.float32) for _ in range(2))
    slots = rng.permutation(nb * bs)[:T].astype(np.int64)
    slots[3] = -1                                            # padding: skipped
    kt, vt = dev(kc, dtype), dev(vc, dtype)
    nr.kv_cache_write(kt, vt, dev(k), dev(v), dev(slots), ctx=CTX)
    keep = slots >= 0
    want_k, want_v = ref.kv_cache_write(rounded(kc, dtype), rounded(vc, dtype), rounded(k, dtype)[keep],
                                        rounded(v, dtype)[keep], slots[keep])
    np.testing.assert_array_equal(host(kt), want_k)
    np.testing.assert_array_equal(host(vt), want_v)


# ---- matmuls --------------------------------------------------------------------------------------------

SPLIT = {"gemm": {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "SPLIT_K": 3},
         "gemv_w8": {"BLOCK_N": 16, "BLOCK_K": 32, "SPLIT_K": 3},
         "gemv_w4": {"BLOCK_N": 16, "GROUPS": 2, "SPLIT_K": 3},
         "gemm_w4": {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_K": 2}}


@pytest.mark.parametrize("M,N,K,cfg", [(1, 1, 1, None), (1, 37, 50, "gemm"), (3, 130, 257, None),
                                       (17, 33, 40, "gemm"), (70, 20, 24, None)])
def test_matmul(rng, M, N, K, cfg):
    x, w = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((N, K)).astype(np.float32)
    got = mm.matmul(nan_out((M, N)), dev(x), dev(w), ctx=CTX, config=SPLIT.get(cfg))
    np.testing.assert_allclose(host(got), ref.matmul(poisoned((M, N)), x, w), **tol())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_matmul_low_precision(rng, dtype):
    M, N, K = 5, 70, 96
    dt = getattr(torch, dtype)
    x, w = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((N, K)).astype(np.float32)
    got = mm.matmul(nan_out((M, N), dt), dev(x, dt), dev(w, dt), ctx=CTX)
    want = ref.matmul(poisoned((M, N)), rounded(x, dt), rounded(w, dt))
    np.testing.assert_allclose(host(got) / np.sqrt(K), want / np.sqrt(K), **tol(dtype))


@pytest.mark.parametrize("M,N,K,cfg", [(1, 37, 64, None), (1, 45, 96, "gemv_w8"), (4, 130, 256, None),
                                       (6, 33, 48, "gemm")])
def test_matmul_w8a16(rng, M, N, K, cfg):
    qt = quant.quantize(rng.standard_normal((N, K)).astype(np.float32), "int8")
    x = rng.standard_normal((M, K)).astype(np.float32)
    got = mm.matmul_w8a16(nan_out((M, N)), dev(x), dev(qt.qweight), dev(qt.scales), ctx=CTX,
                          config=SPLIT.get(cfg))
    want = ref.matmul_w8a16(poisoned((M, N)), x, qt.qweight, qt.scales)
    np.testing.assert_allclose(host(got), want, **tol())


@pytest.mark.parametrize("fmt,M,N,K,cfg", [
    ("int4-g32", 1, 37, 100, None), ("int4-g32", 1, 45, 160, "gemv_w4"), ("int4-g64-zp", 3, 130, 200, None),
    ("int4-g128", 1, 300, 130, None), ("int4-g128-zp", 2, 33, 256, "gemm_w4"), ("int4-g32-zp", 1, 20, 64, None)])
def test_matmul_w4a16_through_qtensor(rng, fmt, M, N, K, cfg):
    """K not a multiple of G: QTensor.matmul pads x; out compared with the reference on the same weights."""
    qt = quant.quantize(rng.standard_normal((N, K)).astype(np.float32), fmt)
    x = rng.standard_normal((M, K)).astype(np.float32)
    want = qt.matmul(Ops("numpy"), poisoned((M, N)), x)
    ops = Ops("triton")
    if cfg is not None:
        ops.matmul_w4a16 = lambda *a: mm.matmul_w4a16(*a, ctx=CTX, config=SPLIT[cfg])
    moved = quant.QTensor(qt.fmt, qt.shape, dev(qt.qweight), dev(qt.scales),
                          None if qt.zeros is None else dev(qt.zeros))
    got = moved.matmul(ops, nan_out((M, N)), dev(x))
    np.testing.assert_allclose(host(got), want, **tol())


@pytest.mark.parametrize("dtype,M", [("float16", 1), ("float16", 5), ("bfloat16", 4)])
def test_matmul_w4a16_low_precision(rng, dtype, M):
    dt = getattr(torch, dtype)
    N, K = 40, 256
    qt = quant.quantize(rng.standard_normal((N, K)).astype(np.float32), "int4-g64-zp")
    x = rng.standard_normal((M, K)).astype(np.float32)
    got = mm.matmul_w4a16(nan_out((M, N), dt), dev(x, dt), dev(qt.qweight), dev(qt.scales, dt), dev(qt.zeros),
                          64, ctx=CTX)
    scales = rounded(qt.scales, dt)
    want = ref.matmul_w4a16(poisoned((M, N)), rounded(x, dt), qt.qweight, scales, qt.zeros, 64)
    np.testing.assert_allclose(host(got), want, **tol(dtype))


def test_int4_layout_is_made_once_and_never_stale(rng):
    ctx = make_context(DEV)
    qt = quant.quantize(rng.standard_normal((24, 64)).astype(np.float32), "int4-g32-zp")
    qw, s, z = dev(qt.qweight), dev(qt.scales), dev(qt.zeros)
    x = dev(rng.standard_normal((1, 64)).astype(np.float32))
    a = mm.matmul_w4a16(nan_out((1, 24)), x, qw, s, z, 32, ctx=ctx)
    b = mm.matmul_w4a16(nan_out((1, 24)), x, qw, s, z, 32, ctx=ctx)
    assert len(ctx.weights) == 1 and torch.equal(a, b)
    c = mm.matmul_w4a16(nan_out((1, 24)), x, qw, s * 2, z, 32, ctx=ctx)   # new scales: repacked
    np.testing.assert_allclose(host(c), 2 * host(a), **tol())
    packed = ctx.weights.int4(qw, s, z, 32)
    assert packed.scales_t.shape == (2, 24) and packed.scales_t.is_contiguous()


# ---- attention --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("T,S,H,KVH,hd,cfg", [
    (1, 1, 1, 1, 8, None), (5, 5, 4, 2, 16, None), (33, 40, 6, 2, 64, {"BLOCK_M": 16, "BLOCK_N": 16}),
    (17, 17, 2, 2, 128, None), (1, 50, 4, 1, 32, {"BLOCK_M": 16, "BLOCK_N": 16})])
def test_attention_prefill(rng, T, S, H, KVH, hd, cfg):
    q = rng.standard_normal((T, H, hd)).astype(np.float32)
    k, v = (rng.standard_normal((S, KVH, hd)).astype(np.float32) for _ in range(2))
    scale = 1 / np.sqrt(hd)
    got = attn.attention_prefill(nan_out(q.shape), dev(q), dev(k), dev(v), scale, ctx=CTX, config=cfg)
    np.testing.assert_allclose(host(got), ref.attention_prefill(poisoned(q.shape), q, k, v, scale), **tol())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_attention_prefill_low_precision(rng, dtype):
    dt = getattr(torch, dtype)
    T, S, H, KVH, hd = 20, 29, 4, 1, 64
    q = rng.standard_normal((T, H, hd)).astype(np.float32)
    k, v = (rng.standard_normal((S, KVH, hd)).astype(np.float32) for _ in range(2))
    got = attn.attention_prefill(nan_out(q.shape, dt), dev(q, dt), dev(k, dt), dev(v, dt), 0.125, ctx=CTX)
    want = ref.attention_prefill(poisoned(q.shape), rounded(q, dt), rounded(k, dt), rounded(v, dt), 0.125)
    np.testing.assert_allclose(host(got), want, **tol(dtype))


def paged_cache(rng, context_lens, block_size, kvh, hd, dtype=torch.float32):
    """A cache whose blocks are handed out in random order; every slot no sequence owns is NaN,
    so a kernel that lets an unowned slot into its sums fails."""
    n_blocks = [-(-c // block_size) for c in context_lens]
    ids = rng.permutation(sum(n_blocks) + 3)
    tables = np.zeros((len(context_lens), max(n_blocks)), np.int32)
    shape = (len(ids), block_size, kvh, hd)
    kc, vc = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
    start = 0
    for b, (c, n) in enumerate(zip(context_lens, n_blocks)):
        tables[b, :n] = ids[start:start + n]
        start += n
        for p in range(c):
            blk, off = tables[b, p // block_size], p % block_size
            kc[blk, off], vc[blk, off] = rng.standard_normal((2, kvh, hd))
    kc, vc = rounded(kc, dtype), rounded(vc, dtype)
    return kc, vc, tables


@pytest.mark.parametrize("block_size,H,KVH,hd", [(1, 4, 2, 8), (5, 6, 3, 16), (16, 4, 1, 64)])
def test_paged_prefill_attention_varlen(rng, block_size, H, KVH, hd):
    q_lens = np.array([1, 6, 0, 19])                             # one sequence with nothing new
    context_lens = np.array([5, 6, 3, 40], np.int32)             # prefix, fresh, chunked prefill
    kc, vc, tables = paged_cache(rng, context_lens, block_size, KVH, hd)
    cu = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int64)
    q = rng.standard_normal((cu[-1], H, hd)).astype(np.float32)
    want = ref.paged_prefill_attention(poisoned(q.shape), q, kc, vc, tables, cu, context_lens, 0.3)
    got = pa.paged_prefill_attention(nan_out(q.shape), dev(q), dev(kc), dev(vc), dev(tables), dev(cu),
                                     dev(context_lens), 0.3, ctx=CTX, config={"BLOCK_M": 16, "BLOCK_N": 16})
    np.testing.assert_allclose(host(got), want, **tol())


@pytest.mark.parametrize("block_size,H,KVH,hd,cfg", [
    (1, 4, 4, 8, None), (16, 8, 2, 64, {"BLOCK_T": 16, "split_len": 32}), (16, 4, 1, 16, None),
    (256, 6, 2, 32, {"BLOCK_T": 16, "split_len": 48}), (7, 4, 2, 128, {"BLOCK_T": 32, "split_len": 32})])
def test_paged_decode_attention(rng, block_size, H, KVH, hd, cfg):
    context_lens = np.array([1, 15, 16, 17, 100], np.int32)       # block boundaries +-1, one token
    kc, vc, tables = paged_cache(rng, context_lens, block_size, KVH, hd)
    q = rng.standard_normal((len(context_lens), H, hd)).astype(np.float32)
    want = ref.paged_decode_attention(poisoned(q.shape), q, kc, vc, tables, context_lens, 0.2)
    got = pa.paged_decode_attention(nan_out(q.shape), dev(q), dev(kc), dev(vc), dev(tables),
                                    dev(context_lens), 0.2, ctx=CTX, config=cfg)
    np.testing.assert_allclose(host(got), want, **tol())


def test_paged_decode_attention_float16_with_splits(rng):
    dt = torch.float16
    context_lens = np.array([3, 70], np.int32)
    kc, vc, tables = paged_cache(rng, context_lens, 16, 2, 64, dt)
    q = rounded(rng.standard_normal((2, 8, 64)).astype(np.float32), dt)
    want = ref.paged_decode_attention(poisoned(q.shape), q, kc, vc, tables, context_lens, 0.125)
    got = pa.paged_decode_attention(nan_out(q.shape, dt), dev(q, dt), dev(kc, dt), dev(vc, dt), dev(tables),
                                    dev(context_lens), 0.125, ctx=CTX, config={"BLOCK_T": 16, "split_len": 16})
    np.testing.assert_allclose(host(got), want, **tol("float16"))


# ---- the model end to end -------------------------------------------------------------------------------

SMALL = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=300,
                    max_seq_len=300, name="small-gqa")


def mixed_batch_logits(model, prompts, decodes):
    """A prefill of every prompt together, then decode steps of all sequences together."""
    cache = model.new_cache(num_blocks=40, block_size=16)
    ids = list(range(len(prompts)))
    out = [model.forward(cache.prepare(ids, prompts), cache)]
    for step in range(decodes.shape[1]):
        out.append(model.forward(cache.prepare(ids, [d[step:step + 1] for d in decodes]), cache))
    return np.array(out)                                        # (1 + steps, B, vocab)


@pytest.mark.parametrize("fmt", [None, "int8", "int4-g32-zp"])
def test_model_logits_match_the_reference(rng, fmt):
    weights = random_weights(SMALL, seed=3)
    if fmt is not None:
        weights = quant.quantize_weights(weights, fmt)
    prompts = [rng.integers(0, SMALL.vocab_size, n) for n in (1, 16, 17)]
    decodes = rng.integers(0, SMALL.vocab_size, (3, 2))
    want = mixed_batch_logits(Model(weights, Ops("numpy")), prompts, decodes)
    got = mixed_batch_logits(Model(weights, Ops("triton")), prompts, decodes)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_model_in_float16(rng):
    weights = random_weights(SMALL, seed=4)
    ops = Ops("triton")
    impls = triton_gpu.load("float16")
    for name, fn in impls.items():
        setattr(ops, name, fn)
    ops.arrays = triton_gpu.arrays("float16")
    model = Model(weights, ops)
    assert model.weights.layers[0].wq.dtype == torch.float16
    prompts, decodes = [rng.integers(0, SMALL.vocab_size, 9)], rng.integers(0, SMALL.vocab_size, (1, 2))
    want = mixed_batch_logits(Model(weights, Ops("numpy")), prompts, decodes)
    got = mixed_batch_logits(model, prompts, decodes)
    assert np.abs(got - want).max() < 2e-2 * np.abs(want).max()


GREEDY_STEPS = 24    # positions 0..23, across a block boundary; the interpreter takes ~1-3 s a token on 2 cores


def test_stories260k_greedy_tokens_equal_numpy(stories260k):
    weights = load_checkpoint(stories260k["model"])
    prompt = [1, 403, 407, 261, 378]                            # BOS and four tokens
    runs = [generate(Model(weights, Ops(b)), prompt, GREEDY_STEPS, SamplingParams(temperature=0.0))
            for b in ("numpy", "triton")]
    assert runs[1].output_ids == runs[0].output_ids
