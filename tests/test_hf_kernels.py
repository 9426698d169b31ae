"""The ops real checkpoints added, on every backend against kernels/reference.py: RoPE from a scaled
inverse-frequency table, bias_add (q/k/v biases), and sliding-window attention (prefill, chunked
prefill and paged decode; windows of 1, ragged, and past the context). Fresh seeded inputs, NaN-
poisoned outputs; Triton under its interpreter on small shapes."""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")      # as tests/test_triton_backend.py: before triton loads

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import poisoned, tolerance  # noqa: E402
from pyinfer.config import ModelConfig, RopeScaling  # noqa: E402
from pyinfer.kernels import reference as ref  # noqa: E402
from pyinfer.ops import load_backend  # noqa: E402
from pyinfer.rope import rope_inv_freq  # noqa: E402

BACKENDS = ["c", "numba", "triton"]


def call(backend, name, out, *args):
    """Run op ``name`` of ``backend`` on numpy inputs (torch CPU tensors for Triton), numpy back."""
    fn = load_backend(backend)[name]
    if backend != "triton":
        return fn(out, *args)
    import torch
    conv = [torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in (out, *args)]
    return fn(*conv).numpy()


def scaled_table(hd, rope_type):
    c = ModelConfig(dim=4 * hd, n_layers=1, n_heads=4, n_kv_heads=2, hidden_dim=8, vocab_size=8, max_seq_len=8192,
                    rope_theta=500000.0, rope_scaling=RopeScaling(rope_type, 8.0, 1.0, 4.0, 64))
    return rope_inv_freq(c)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rope_type", ["llama3", "linear"])
@pytest.mark.parametrize("T, H, hd", [(1, 1, 2), (7, 3, 16), (33, 2, 64)])
def test_rope_with_scaled_table(rng, backend, rope_type, T, H, hd):
    inv_freq = scaled_table(hd, rope_type)
    x = rng.standard_normal((T, H * hd), dtype=np.float32)
    pos = rng.integers(0, 8192, T)
    want = ref.rope(poisoned(x.shape), x, pos, inv_freq)
    got = call(backend, "rope", poisoned(x.shape), x, pos, inv_freq)
    np.testing.assert_allclose(got, want, **tolerance(backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("T, N", [(1, 1), (5, 24), (17, 100), (64, 33)])
def test_bias_add(rng, backend, T, N):
    x = rng.standard_normal((T, N), dtype=np.float32)
    bias = rng.standard_normal(N, dtype=np.float32)
    want = ref.bias_add(poisoned(x.shape), x, bias)
    np.testing.assert_allclose(want, x + bias[None, :], rtol=0, atol=0)
    np.testing.assert_allclose(call(backend, "bias_add", poisoned(x.shape), x, bias), want, **tolerance(backend))
    if backend != "triton":                                       # in place, as the model calls it
        y = x.copy()
        call(backend, "bias_add", y, y, bias)
        np.testing.assert_allclose(y, want, **tolerance(backend))
    with pytest.raises(ValueError, match="bias"):
        call(backend, "bias_add", poisoned(x.shape), x, np.ones(N + 1, np.float32))


def _paged(rng, H, KVH, hd, bs, ctx, q_lens):
    nb = sum(-(-c // bs) for c in ctx) + 3
    kc = rng.standard_normal((nb, bs, KVH, hd), dtype=np.float32)
    vc = rng.standard_normal((nb, bs, KVH, hd), dtype=np.float32)
    width = max(-(-c // bs) for c in ctx)
    perm = rng.permutation(nb)
    tables = np.stack([np.roll(perm, 7 * b)[:width] for b in range(len(ctx))]).astype(np.int64)
    cu = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int64)
    q = rng.standard_normal((int(cu[-1]), H, hd), dtype=np.float32)
    return q, kc, vc, tables, cu, np.array(ctx, np.int64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window", [1, 5, 16, 17, 300])
@pytest.mark.parametrize("H, KVH, hd, bs", [(4, 2, 16, 4), (2, 2, 8, 16), (6, 2, 32, 1)])
def test_windowed_paged_attention(rng, backend, window, H, KVH, hd, bs):
    """Sequences mixing a whole prefill, a chunk after a cached prefix, and a decode-like row."""
    small = backend == "triton"
    ctx, q_lens = ([40, 23, 31], [40, 9, 1]) if small else ([150, 97, 130], [150, 33, 1])
    q, kc, vc, tables, cu, lens = _paged(rng, H, KVH, hd, bs, ctx, q_lens)
    want = ref.paged_prefill_attention(poisoned(q.shape), q, kc, vc, tables, cu, lens, 0.3, window)
    full = ref.paged_prefill_attention(poisoned(q.shape), q, kc, vc, tables, cu, lens, 0.3)
    if window < min(ctx):
        assert not np.allclose(want, full)                      # the window changes the result
    got = call(backend, "paged_prefill_attention", poisoned(q.shape), q, kc, vc, tables, cu, lens, 0.3, window)
    np.testing.assert_allclose(got, want, **tolerance(backend))
    qd = rng.standard_normal((len(ctx), H, hd), dtype=np.float32)
    want_d = ref.paged_decode_attention(poisoned(qd.shape), qd, kc, vc, tables, lens, 0.3, window)
    got_d = call(backend, "paged_decode_attention", poisoned(qd.shape), qd, kc, vc, tables, lens, 0.3, window)
    np.testing.assert_allclose(got_d, want_d, **tolerance(backend))


@pytest.mark.parametrize("backend", ["c", "numba"])
def test_windowed_contiguous_prefill_and_bad_window(rng, backend):
    q = rng.standard_normal((20, 4, 16), dtype=np.float32)
    k = rng.standard_normal((50, 2, 16), dtype=np.float32)
    v = rng.standard_normal((50, 2, 16), dtype=np.float32)
    want = ref.attention_prefill(poisoned(q.shape), q, k, v, 0.25, 7)
    np.testing.assert_allclose(call(backend, "attention_prefill", poisoned(q.shape), q, k, v, 0.25, 7), want,
                               **tolerance(backend))
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="window"):
            call(backend, "attention_prefill", poisoned(q.shape), q, k, v, 0.25, bad)
