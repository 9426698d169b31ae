"""The small defects of issue #12's adversarial run, each at its cause: thread counts (D3), Numba
aliasing (D4), tiny temperatures (D5), SamplingParams types (D14), the fused decode path on T == B
alone (D15), float token ids (D16), the reference's index checks (D24), and the sampler's error on
non-finite logits (D11)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from pyinfer.config import ModelConfig, SamplingParams
from pyinfer.kernels import c_cpu
from pyinfer.kernels import reference as ref
from pyinfer.kv_cache import BatchMetadata
from pyinfer.model import Model
from pyinfer.ops import Ops, load_backend
from pyinfer.sampling import NonFiniteLogitsError, Sampler
from pyinfer.weights import random_weights

CFG = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48, vocab_size=64, max_seq_len=32)


@pytest.mark.parametrize("n", [4 * len(os.sched_getaffinity(0)) + 1, 100000, 2 ** 31, 2 ** 64, 0, -1, 1.5, "2", True])
def test_set_num_threads_refuses_counts_it_cannot_honour(n):
    before = c_cpu.num_threads()
    with pytest.raises(ValueError, match="thread count"):
        c_cpu.set_num_threads(n)
    assert c_cpu.num_threads() == before


def test_set_num_threads_takes_the_cpus_it_may_use():
    before = c_cpu.num_threads()
    try:
        c_cpu.set_num_threads(len(os.sched_getaffinity(0)))
        assert c_cpu.num_threads() == len(os.sched_getaffinity(0))
    finally:
        c_cpu.set_num_threads(before)


@pytest.mark.parametrize("op,T", [("matmul", 2), ("matmul", 5), ("rope", 2)])
def test_numba_refuses_the_aliasing_c_refuses(op, T, rng):
    """out overlapping x (one buffer seen twice, shifted by a row): C and Numba both refuse it (Numba's
    T < 4 matmul returned wrong values)."""
    buf = rng.standard_normal(64).astype(np.float32)
    x, out = buf[:T * 8].reshape(T, 8), buf[8:8 + T * 8].reshape(T, 8)
    args = (out, x, rng.standard_normal((8, 8)).astype(np.float32)) if op == "matmul" else \
        (out, x, np.arange(T), (10000.0 ** -(np.arange(2) / 2)).astype(np.float32))   # head_dim 4
    for backend in ("c", "numba"):
        with pytest.raises(ValueError, match="overlap"):
            load_backend(backend)[op](*args)


@pytest.mark.parametrize("temperature", [1e-6, 1e-38, 1e-50, 5e-324])
@pytest.mark.parametrize("backend", ["numpy", "c", "numba"])
def test_tiny_temperatures_are_greedy(temperature, backend, rng):
    logits = rng.standard_normal(512).astype(np.float32)
    sampler = Sampler(SamplingParams(temperature=temperature, seed=1), Ops(backend))
    assert {sampler.sample(logits) for _ in range(5)} == {int(np.argmax(logits))}


@pytest.mark.parametrize("field,value", [("temperature", "0.5"), ("top_k", None), ("max_tokens", "5"),
                                         ("stop_token_ids", 5), ("top_p", [1]), ("seed", 1.5),
                                         ("temperature", float("inf")), ("stop_token_ids", (1, "2")),
                                         ("max_tokens", True)])
def test_sampling_params_check_types_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


@pytest.mark.parametrize("row", [[0.0, np.nan, 1.0], [np.nan] * 3, [np.inf, 0.0, 1.0], [-np.inf] * 3])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_sampler_refuses_nonfinite_logits_naming_where(row, temperature):
    sampler = Sampler(SamplingParams(temperature=temperature, seed=0))
    with pytest.raises(NonFiniteLogitsError, match="step 7, request 3"):
        sampler.sample(np.array(row, np.float32), where="step 7, request 3")


def test_minus_inf_logits_beside_a_finite_maximum_are_a_mask():
    row = np.array([-np.inf, 2.0, -np.inf, 1.0], np.float32)
    assert Sampler(SamplingParams(temperature=0)).sample(row) == 1
    draws = {Sampler(SamplingParams(temperature=1.0, seed=s)).sample(row) for s in range(20)}
    assert draws <= {1, 3}


def test_fused_decode_path_needs_one_token_per_sequence(rng):
    """D15: T == B with q_lens [0, 2] is not a decode batch: refused, never wrong logits."""
    model = Model(random_weights(CFG, seed=int(rng.integers(1 << 30))), Ops("c"))
    cache = model.new_cache(num_blocks=8, block_size=4)
    model.forward(cache.prepare([0, 1], [np.array([1, 5, 9]), np.array([1, 7])]), cache)
    bad = BatchMetadata(seq_ids=(0, 1), tokens=np.array([3, 4]), positions=np.array([2, 3]),
                        cu_seqlens_q=np.array([0, 0, 2]), context_lens=np.array([3, 4], np.int32),
                        block_tables=np.array([[0, 0], [1, 0]], np.int32), slot_mapping=np.array([6, 7]))
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        model.forward(bad, cache)


@pytest.mark.parametrize("tokens", [np.array([1.9, 403.7]), np.array([1.0]), np.array([True]), np.array([[1, 2]])])
def test_prepare_refuses_float_or_nested_token_ids(tokens):
    cache = Model(random_weights(CFG, seed=0)).new_cache(num_blocks=4, block_size=4)
    with pytest.raises(ValueError, match="token ids"):
        cache.prepare([0], [tokens])
    assert cache.seq_lens == {} and cache.blocks_in_use() == 0


def test_reference_validates_indices_like_the_c_wrappers(rng):
    """D24: the reference (the default backend) refuses what C refuses, never wraps or truncates."""
    c = load_backend("c")
    kc = rng.standard_normal((4, 2, 1, 8)).astype(np.float32)
    q = rng.standard_normal((1, 2, 8)).astype(np.float32)
    cases = {
        "negative slot": ("kv_cache_write", (kc.copy(), kc.copy(), q[:, :1], q[:, :1], np.array([-1]))),
        "slot past the pool": ("kv_cache_write", (kc.copy(), kc.copy(), q[:, :1], q[:, :1], np.array([8]))),
        "token out of range": ("embedding", (np.zeros((1, 8), np.float32), np.array([4]), kc[:, 0, 0])),
        "negative block id": ("paged_decode_attention", (np.zeros_like(q), q, kc, kc, np.array([[-1, 1]]),
                                                         np.array([3]), 0.3)),
        "context past the table": ("paged_decode_attention", (np.zeros_like(q), q, kc, kc, np.array([[0, 1]]),
                                                              np.array([5]), 0.3)),
        "empty context": ("paged_decode_attention", (np.zeros_like(q), q, kc, kc, np.array([[0, 1]]),
                                                     np.array([0]), 0.3)),
        "queries past the context": ("paged_prefill_attention", (np.zeros((3, 2, 8), np.float32),
                                                                 np.zeros((3, 2, 8), np.float32), kc, kc,
                                                                 np.array([[0, 1]]), np.array([0, 3]),
                                                                 np.array([2]), 0.3)),
        "kv heads not dividing": ("attention_prefill", (np.zeros((1, 3, 8), np.float32), np.zeros((1, 3, 8), np.float32),
                                                        np.zeros((2, 2, 8), np.float32), np.zeros((2, 2, 8), np.float32),
                                                        0.3)),
    }
    for what, (op, args) in cases.items():
        for name, fn in (("numpy", getattr(ref, op)), ("c", c[op])):
            with pytest.raises(ValueError):
                fn(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
            print(what, name, "refused")
