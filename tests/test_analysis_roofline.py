"""The roofline's verdicts for llama-7b on an H100 (the issue's bars) and its arithmetic."""
from __future__ import annotations

import pytest

from pyinfer.analysis import Efficiency, estimate, get_device, predict, predict_estimate, where_run_sits
from pyinfer.analysis.economics import weight_bytes
from pyinfer.analysis.roofline import achieved_fraction, op_point
from pyinfer.analysis.cost import Cost
from pyinfer.config import PRESETS, SamplingParams
from pyinfer.generate import count_costs, generate
from pyinfer.model import Model
from pyinfer.ops import Ops
from pyinfer.weights import random_weights

MATMULS = ("wq", "wk", "wv", "wo", "w1", "w3", "w2", "lm_head")
LLAMA = PRESETS["llama-7b"]
H100 = get_device("h100")


def decode_roles(batch: int, context: int = 256):
    r = predict(estimate(LLAMA, batch, context, dtype="float16").decode, H100)
    return r, {p.role: p for p in r.by_role()}


def test_h100_ridge_near_300():
    assert 250 < H100.ridge("fp16") < 350
    assert H100.ridge("fp16") == H100.peak("fp16") / H100.memory_bw


def test_batch1_decode_is_memory_bound_at_bandwidth_over_weight_bytes():
    r, _ = decode_roles(1, context=128)
    assert r.bound == "memory"
    ceiling = H100.memory_bw / weight_bytes(LLAMA, "float16", "float16")   # tokens/s if only weights moved
    assert abs(r.tokens_per_s / ceiling - 1) < 0.05
    assert all(p.bound == "memory" for p in r.ops)


@pytest.mark.parametrize("batch", [1, 4, 16, 64])
def test_decode_matmul_intensity_is_about_one_flop_per_byte_per_sequence(batch):
    _, roles = decode_roles(batch)
    for role in MATMULS:
        assert 0.85 * batch < roles[role].intensity <= batch, role


def test_decode_matmuls_cross_the_ridge_between_256_and_512():
    _, at256 = decode_roles(256)
    _, at512 = decode_roles(512)
    for role in MATMULS:
        assert at256[role].intensity < H100.ridge("fp16") < at512[role].intensity, role
        assert (at256[role].bound, at512[role].bound) == ("memory", "compute"), role


@pytest.mark.parametrize("batch", [1, 64, 512, 4096])
@pytest.mark.parametrize("context", [64, 4000])
def test_attention_over_the_kv_cache_stays_memory_bound(batch, context):
    _, roles = decode_roles(batch, context)
    assert roles["attention"].bound == "memory"
    assert roles["attention"].intensity == pytest.approx(1.0, rel=0.05)    # H / KVH FLOP per KV byte (MHA, fp16)


def test_prefill_of_2048_tokens_is_compute_bound():
    pre, _ = predict_estimate(estimate(LLAMA, 1, 2048, dtype="float16"), H100)
    assert pre.tokens == 2048
    assert pre.bound == "compute"
    roles = {p.role: p for p in pre.by_role()}
    assert all(roles[r].bound == "compute" for r in MATMULS[:-1] + ("attention",))
    assert roles["lm_head"].bound == "memory"        # the head runs for the last token only


def test_op_time_is_the_max_of_compute_and_memory_time(rng):
    flops, nbytes = int(rng.integers(1, 1 << 40)), int(rng.integers(1, 1 << 36))
    p = op_point("decode", "x", "matmul", Cost(flops, nbytes, 0, 0), "fp16", H100)
    assert p.time_s == max(flops / H100.peak("fp16"), nbytes / H100.memory_bw)
    eff = Efficiency(memory=0.5, compute=0.25, overhead_s=1e-6)
    q = op_point("decode", "x", "matmul", Cost(flops, nbytes, 0, 0), "fp16", H100, eff)
    assert q.time_s == max(4 * flops / H100.peak("fp16"), 2 * nbytes / H100.memory_bw) + 1e-6
    assert q.bound == p.bound                        # the label is the nominal roofline's
    assert achieved_fraction(p.time_s, 2 * p.time_s) == 0.5


def test_quantized_decode_runs_at_int8_peak_for_a8_formats():
    est = estimate(LLAMA, 1, 128, "int8-g32", dtype="float16")
    assert {o.compute for o in est.decode.ops if o.role in MATMULS} == {"int8"}
    est = estimate(LLAMA, 1, 128, "int4-g128", dtype="float16")
    assert {o.compute for o in est.decode.ops if o.role in MATMULS} == {"fp16"}
    fp16 = predict(estimate(LLAMA, 1, 128, dtype="float16").decode, H100)
    int4 = predict(est.decode, H100)
    assert 2.5 < fp16.time_s / int4.time_s < 4           # fewer weight bytes, memory-bound


def test_device_without_the_dtype_is_a_clear_error():
    v5e = get_device("tpu-v5e")
    with pytest.raises(ValueError, match="tpu-v5e lists no fp32 peak"):
        predict(estimate(LLAMA, 1, 16).decode, v5e)
    assert predict(estimate(LLAMA, 1, 16, dtype="float16").decode, v5e).time_s > 0   # fp16 at the bf16 rate
    with pytest.raises(ValueError, match="efficiencies"):
        Efficiency(memory=0)


def test_where_run_sits_line():
    model = Model(random_weights(PRESETS["toy"], seed=0), Ops("numpy"))
    result = generate(model, [1, 5, 9], steps=8, params=SamplingParams(temperature=0.0, ignore_eos=True))
    line = where_run_sits(count_costs(model, result), len(result.step_q_lens) - 1, result.decode_time_s, H100)
    assert line.startswith("roofline    h100: decode memory-bound, predicted") and "% of the roofline" in line
