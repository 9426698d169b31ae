"""Analytic accounting (pyinfer.analysis.estimate) against counted runs of the real Model.forward:
call by call, exactly, for every preset, prefill and decode, with and without GQA and quantization."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.analysis import Cost, CostCounter, count, estimate, step_cost
from pyinfer.config import PRESETS, ModelConfig, SamplingParams
from pyinfer.generate import count_costs, generate
from pyinfer.model import Model
from pyinfer.ops import Ops
from pyinfer.quant import quantize_weights
from pyinfer.weights import random_weights


def _random_step(config: ModelConfig, rng, block_size: int, n_seqs: int):
    """Ragged q_lens and cached lengths, some landing on block boundaries +-1, within the context."""
    q_lens, cached = [], []
    for _ in range(n_seqs):
        q = max(1, int(rng.choice([1, 1, 2, block_size - 1, block_size, block_size + 1, int(rng.integers(1, 40))])))
        c = int(rng.choice([0, 1, block_size - 1, block_size, block_size + 1, int(rng.integers(0, 80))]))
        c = min(c, config.max_seq_len - q)
        q_lens.append(q)
        cached.append(c)
    return q_lens, cached


@pytest.mark.parametrize("preset", list(PRESETS))
def test_analytic_equals_counted_for_every_preset(preset, rng):
    config = PRESETS[preset]
    for q_lens, cached in (([1], [37]), ([23], [0]), ([1, 1, 1], [5, 16, 17])):   # decode, prefill, batch decode
        assert step_cost(config, q_lens, cached).calls == tuple(count(config, q_lens, cached))
    q_lens, cached = _random_step(config, rng, 16, 3)                               # a ragged mix
    assert step_cost(config, q_lens, cached).calls == tuple(count(config, q_lens, cached)), (q_lens, cached)


@pytest.mark.parametrize("preset", ["toy", "stories15M", "llama-70b"])          # GQA, no GQA, GQA 8:1
@pytest.mark.parametrize("quant", ["int8", "int8-g32", "int4-g32", "int4-g64-zp", "int4-g128-a8", "int4-g32-zp-a8"])
def test_analytic_equals_counted_quantized(preset, quant, rng):
    config = PRESETS[preset]
    block_size = int(rng.choice([1, 7, 16, 32]))
    for q_lens, cached in (([1], [9]), ([11], [0]), _random_step(config, rng, block_size, 2)):
        a = step_cost(config, q_lens, cached, weights=quant, block_size=block_size).calls
        b = tuple(count(config, q_lens, cached, quant=quant, block_size=block_size))
        assert a == b, (quant, q_lens, cached, block_size)


def test_ragged_k_pads_like_qtensor():
    """K not a multiple of the group (hidden_dim 688 with g=64) pads x and the weight as QTensor does."""
    config = PRESETS["toy"]
    assert config.hidden_dim % 64
    a = step_cost(config, [1], [3], weights="int4-g64")
    assert a.calls == tuple(count(config, [1], [3], quant="int4-g64"))
    w2 = next(o for o in a.ops if o.role == "w2")
    assert w2.cost.flops == 2 * config.dim * 704                   # 688 padded to 704


def test_kv_float16_counted():
    config = PRESETS["toy"]
    a = step_cost(config, [1, 4], [30, 0], kv_dtype="float16").calls
    assert a == tuple(count(config, [1, 4], [30, 0], kv_dtype="float16"))
    full = step_cost(config, [1, 4], [30, 0]).total
    half = step_cost(config, [1, 4], [30, 0], kv_dtype="float16").total
    assert half.bytes_kv * 2 == full.bytes_kv and half.flops == full.flops


def test_executed_counted_run_matches(rng):
    """A real (executing) counted forward of the toy preset, float32 and int8-g32, matches too."""
    config = PRESETS["toy"]
    for quant in (None, "int8-g32"):
        w = random_weights(config, seed=int(rng.integers(1 << 30)))
        w = quantize_weights(w, quant) if quant else w
        counter = CostCounter(trace=True)
        model = Model(w, Ops("numpy", counter=counter))
        cache = model.new_cache(block_size=16)
        model.forward(cache.prepare([0, 1], [rng.integers(0, 512, 19), rng.integers(0, 512, 3)]), cache)
        counter.trace.clear()
        batch = cache.prepare([0, 1, 2], [rng.integers(0, 512, 1), rng.integers(0, 512, 1), rng.integers(0, 512, 5)])
        model.forward(batch, cache)
        got = tuple((op, cost) for _, op, cost in counter.trace)
        assert got == step_cost(config, [1, 1, 5], [19, 3, 0], weights=quant or "float32").calls


def test_generate_count_costs_equals_estimate_sums(rng):
    """pyinfer run's accounting (generate + count_costs) equals the estimates of its steps."""
    config = PRESETS["toy"]
    model = Model(random_weights(config, seed=1), Ops("numpy"))
    prompt = [1] + list(rng.integers(3, 512, 6))
    result = generate(model, prompt, steps=14, params=SamplingParams(temperature=0.0, ignore_eos=True))
    counter = count_costs(model, result)
    pre = step_cost(config, [result.step_q_lens[0]], [0]).total
    dec = sum((step_cost(config, [1], [len(prompt) + i]).total for i in range(len(result.step_q_lens) - 1)), Cost())
    assert counter.total("prefill") == pre
    assert counter.total("decode") == dec


def test_per_layer_and_per_token(rng):
    config = PRESETS["stories15M"]
    batch, context = int(rng.integers(1, 9)), int(rng.integers(1, 200))
    est = estimate(config, batch, context)
    layers = est.decode.per_layer()
    assert len(layers) == config.n_layers and all(x == layers[0] for x in layers)
    head = sum((o.cost for o in est.decode.ops if o.layer < 0), Cost())
    assert sum(layers, Cost()) + head == est.decode.total
    assert est.decode.tokens == batch and est.prefill.tokens == batch * context
    assert est.decode.per_token == est.decode.total.scaled(1 / batch)
    # the counted run split into layers (embedding first, final norm and head last) matches layer by layer
    trace = count(config, [1] * batch, [context] * batch)
    per = (len(trace) - 3) // config.n_layers
    for i in range(config.n_layers):
        chunk = trace[1 + i * per: 1 + (i + 1) * per]
        assert sum((c for _, c in chunk), Cost()) == layers[i]


def test_bad_requests_are_clear_errors():
    config = PRESETS["toy"]
    with pytest.raises(ValueError, match="max_seq_len"):
        estimate(config, 1, config.max_seq_len)
    with pytest.raises(ValueError, match="batch"):
        estimate(config, 0, 10)
    with pytest.raises(ValueError, match="dtype"):
        estimate(config, 1, 10, dtype="float64")
    with pytest.raises(ValueError, match="unknown quantization format"):
        estimate(config, 1, 10, quant="int3")
    with pytest.raises(ValueError, match="context"):
        step_cost(config, [5], [config.max_seq_len])
