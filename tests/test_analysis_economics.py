"""Cost and energy per token, memory sizing and tensor/pipeline-parallel plans."""
from __future__ import annotations

import pytest

from pyinfer.analysis import get_device, kv_bytes_per_token, plan, token_economics, weight_bytes
from pyinfer.analysis.economics import linear_bytes
from pyinfer.config import PRESETS, CacheConfig
from pyinfer.kv_cache import PagedKVCache
from pyinfer.quant import quantize, quantize_weights
from pyinfer.weights import random_weights

LLAMA7, LLAMA70 = PRESETS["llama-7b"], PRESETS["llama-70b"]
H100 = get_device("h100")


@pytest.mark.parametrize("fmt", [None, "int8", "int8-g32", "int4-g64", "int4-g128-zp"])
def test_weight_bytes_equal_the_stored_weights(fmt, rng):
    config = PRESETS["toy"]
    w = random_weights(config, seed=int(rng.integers(1 << 30)))
    if fmt:
        w = quantize_weights(w, fmt)
    assert weight_bytes(config, fmt or "float32", "float32") == w.nbytes()


def test_linear_bytes_ragged_k(rng):
    n, k = int(rng.integers(1, 50)), int(rng.integers(1, 300))
    w = rng.standard_normal((n, k), dtype="float32")
    for fmt in ("int8", "int8-g32", "int4-g32", "int4-g128-zp"):
        assert linear_bytes(n, k, fmt) == quantize(w, fmt).nbytes, fmt


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_kv_bytes_per_token_equal_the_cache(dtype):
    for name in ("toy", "stories15M"):
        config = PRESETS[name]
        cache = PagedKVCache(config, CacheConfig(num_blocks=1, dtype=dtype))
        assert kv_bytes_per_token(config, dtype) == cache.bytes_per_token


def test_money_and_energy_follow_time():
    e = token_economics(LLAMA7, H100, 8, 1024, "float16")
    assert e.usd_per_m_output == pytest.approx(H100.price_per_hour / 3600 * e.tpot_s / 8 * 1e6)
    assert e.joules_per_output_token == pytest.approx(H100.power_w * e.tpot_s / 8)
    assert e.usd_per_m_input < e.usd_per_m_output              # prefill is compute-bound and batched
    assert token_economics(LLAMA7, get_device("tpu-v5e"), 1, 128, "int4").joules_per_output_token is None


def test_batching_and_quantization_lower_the_cost_per_token():
    cost = {b: token_economics(LLAMA7, H100, b, 512, "float16").usd_per_m_output for b in (1, 8, 64)}
    assert cost[1] > cost[8] > cost[64]
    fp16, int8, int4 = (token_economics(LLAMA7, H100, 1, 512, w).tpot_s for w in ("float16", "int8", "int4"))
    assert fp16 > int8 > int4                                  # memory-bound: fewer weight bytes, less time


def test_max_concurrent_sequences_fill_the_memory():
    e = token_economics(LLAMA7, H100, 1, 2048, "float16")
    per_seq = 2049 * e.kv_bytes_per_token
    usable = 0.9 * H100.memory_bytes - e.weight_bytes
    assert e.max_concurrent_seqs * per_seq <= usable < (e.max_concurrent_seqs + 1) * per_seq
    gqa = token_economics(LLAMA70, H100, 1, 2048, "int4", tp=2)
    assert gqa.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2      # 8 KV heads of 128, fp16


def test_plan_picks_the_fewest_devices_that_fit():
    one = plan(LLAMA7, H100, 1, 1024, "float16")
    assert (one.tp, one.pp) == (1, 1) and one.fits
    big = plan(LLAMA70, H100, 1, 1024, "float16")
    assert big.n_devices == 2 and big.fits
    assert big.memory_per_device < 0.9 * H100.memory_bytes
    single = token_economics(LLAMA70, get_device("mi300x"), 1, 1024, "float16")
    assert single.fits                                          # 192 GB holds 138 GB of weights
    # tensor parallel adds all-reduces: more than half the single-device time on two devices
    tp2 = token_economics(LLAMA70, get_device("mi300x"), 1, 1024, "float16", tp=2)
    assert single.tpot_s / 2 < tp2.tpot_s < single.tpot_s


def test_impossible_configurations_are_clear_errors():
    with pytest.raises(ValueError, match=r"does not fit: needs 13.\d+ GB on 2 devices.*at least \d\d+ devices hold it"):
        plan(LLAMA7, get_device("groq-lpu"), 1, 512, "float16", device_counts=(1, 2))
    with pytest.raises(ValueError, match="no device-to-device interconnect"):
        token_economics(LLAMA7, get_device("snapdragon-x-elite"), 1, 512, "int4", tp=2)
    with pytest.raises(ValueError, match="does not divide"):
        token_economics(LLAMA7, H100, 1, 512, "float16", tp=3)
    with pytest.raises(ValueError, match="more stages than"):
        token_economics(PRESETS["toy"], H100, 1, 64, "float16", pp=8)
    with pytest.raises(ValueError, match="unknown quantization format"):
        token_economics(LLAMA7, H100, 1, 512, "int5")
    with pytest.raises(ValueError, match="KV format"):
        token_economics(LLAMA7, H100, 1, 512, "int4", kv_dtype="int2")
