"""Expected figures beside the bound: kernel efficiency, tensor/pipeline parallelism from links,
speculative decoding on paper, closed-form sizes, and the published decode table."""
from __future__ import annotations

import time

import pytest

from pyinfer.analysis import estimate, get_device, plan, step_cost, token_economics
from pyinfer.analysis.catalog_kernels import KERNELS, LINKS
from pyinfer.analysis.economics import DoesNotFit, memory_per_device
from pyinfer.analysis.estimate import uniform_step_cost
from pyinfer.analysis.expected import comm, expected_step, kv_split, shard_step
from pyinfer.analysis.speculative import (expected_tokens_per_step, speculative_economics,
                                          speculative_speedup)
from pyinfer.analysis.validate import load_rows, predict_row
from pyinfer.config import PRESETS

LLAMA7, LLAMA70 = PRESETS["llama-7b"], PRESETS["llama-70b"]
A100, H100 = get_device("a100"), get_device("h100")


def test_every_kernel_figure_has_a_source():
    for name, figs in KERNELS.items():
        get_device(name)                                            # a catalog device
        for key in ("stream", "attn_decode", "gemm", "attn_prefill", "dequant_instr"):
            assert any(k.startswith(key.split("_")[0]) for k in figs.sources), (name, key)
    for name, link in LINKS.items():
        get_device(name)
        assert link.source


@pytest.mark.parametrize("weights", ["float16", "int8", "int4-g32", "int4-g128-zp", "int8-g32"])
@pytest.mark.parametrize("batch", [1, 16, 512])
def test_expected_is_never_faster_than_the_bound(weights, batch):
    for d in (A100, H100):
        e = token_economics(LLAMA7, d, batch, 256, weights)
        assert e.model == "expected"
        assert e.tpot_s > e.bound_tpot_s and e.prefill_s > e.bound_prefill_s
        assert e.tokens_per_s < e.roofline_tokens_per_s


def test_devices_without_kernel_figures_use_the_bound_and_say_so():
    e = token_economics(LLAMA7, get_device("tpu-v6e"), 1, 256, "float16")
    assert e.model == "roofline" and e.tpot_s == pytest.approx(e.bound_tpot_s)
    g = token_economics(LLAMA7, get_device("mi300x"), 1, 256, "float16")     # a GPU: generic kernel figures
    assert g.model == "expected-generic" and g.tpot_s > g.bound_tpot_s


def test_dequantizing_costs_grow_as_groups_shrink_and_graphs_save_time():
    t = {w: token_economics(LLAMA7, A100, 1, 128, w).tpot_s for w in ("int4-g32", "int4-g128")}
    bytes_ratio = token_economics(LLAMA7, A100, 1, 128, "int4-g32").bound_tpot_s / \
        token_economics(LLAMA7, A100, 1, 128, "int4-g128").bound_tpot_s
    assert t["int4-g32"] > t["int4-g128"] and t["int4-g32"] / t["int4-g128"] < bytes_ratio + 0.05
    on = token_economics(LLAMA7, A100, 1, 128, "float16", cuda_graphs=True)
    off = token_economics(LLAMA7, A100, 1, 128, "float16", cuda_graphs=False)
    kernels = expected_step(uniform_step_cost(LLAMA7, 1, 1, 128, weights="float16", dtype="float16"),
                            A100, "float16").kernels
    f = KERNELS["a100"]
    assert off.tpot_s - on.tpot_s == pytest.approx(kernels * (f.kernel_s_eager - f.kernel_s_graphs), rel=1e-9)


@pytest.mark.parametrize("tp", [2, 8, 16, 64])
def test_attention_and_kv_never_split_beyond_the_kv_heads(tp):
    c = LLAMA70                                                     # 64 query heads, 8 KV heads
    step = uniform_step_cost(c, 4, 1, 300, weights="float16", dtype="float16")
    one = {(o.role, o.layer): o.cost for o in step.ops}
    for o in shard_step(step, c, tp).ops:
        full = one[(o.role, o.layer)]
        if o.role == "attention":
            assert o.cost.bytes_kv == pytest.approx(full.bytes_kv / min(tp, 8))
            assert o.cost.flops == pytest.approx(full.flops / tp)
        if o.role in ("wk", "wv"):
            assert o.cost.bytes_weights == pytest.approx(full.bytes_weights / kv_split(c, tp))
    # memory holds the same share of the KV cache that the time model reads
    kvt = 2 * c.n_layers * c.kv_dim * 2
    assert memory_per_device(c, 0, kvt, 4, 300, tp, 1) == pytest.approx(4 * 301 * kvt / min(tp, 8))


def test_tensor_parallel_adds_two_all_reduces_per_layer_at_the_link_latency():
    e1 = token_economics(LLAMA70, A100, 1, 512, "float16", tp=2)
    e2 = token_economics(LLAMA70, A100, 1, 512, "float16", tp=8)
    assert e2.tpot_s < e1.tpot_s and e2.tokens_per_s / e1.tokens_per_s < 4      # sub-linear: latency, replicas
    c = comm(LLAMA70, 1, "float16", A100, 8, 1)
    assert c.expected_s - c.bound_s == pytest.approx(2 * LLAMA70.n_layers * LINKS["a100"].latency_s)
    msg = LLAMA70.dim * 2
    assert c.bound_s == pytest.approx(2 * LLAMA70.n_layers * 2 * 7 / 8 * msg / A100.interconnect_bw)


def test_pipeline_bubbles_and_micro_batches():
    one = token_economics(LLAMA70, H100, 1, 512, "float16", tp=2, pp=2)
    assert one.bubble == 0.5 and one.micro_batches == 1 and one.parallel == "tp2pp2"
    many = token_economics(LLAMA70, H100, 8, 512, "float16", tp=2, pp=2)
    assert many.bubble == 0 and many.micro_batches == 2


def test_groq_holds_the_model_in_sram_across_chips():
    groq = get_device("groq-lpu")
    e = plan(LLAMA7, groq, 1, 512, "float16")
    assert e.n_devices * 0.9 * groq.memory_bytes >= e.weight_bytes and e.fits
    assert e.n_devices >= 60                                        # 13.5 GB over 230 MB chips


def test_each_row_gets_its_own_device_count_and_a_fixed_count_is_honoured():
    assert plan(LLAMA7, H100, 1, 1024, "float16").n_devices == 1
    assert plan(LLAMA7, H100, 256, 1024, "float16").n_devices > 1
    assert plan(LLAMA7, H100, 1, 1024, "float16", device_counts=4).n_devices == 4
    with pytest.raises(DoesNotFit, match=r"does not fit: needs [\d.]+ GB on 1 devices") as ex:
        plan(LLAMA70, H100, 1, 1024, "float16", device_counts=1)
    assert ex.value.need_bytes > 0.9 * H100.memory_bytes


def test_any_batch_answers_at_once_in_closed_form(rng):
    c = PRESETS["toy"]
    b = int(rng.integers(3, 9))
    ctx = int(rng.integers(1, 200))
    assert uniform_step_cost(c, b, 1, ctx, weights="int4-g32", dtype="float16").calls == \
        step_cost(c, [1] * b, [ctx] * b, weights="int4-g32", dtype="float16").calls
    t0 = time.perf_counter()
    est = estimate(LLAMA7, 10 ** 18, 512, dtype="float16")
    with pytest.raises(DoesNotFit, match="does not fit"):
        plan(LLAMA7, H100, 10 ** 18, 512, "float16")
    assert time.perf_counter() - t0 < 5                            # no array grows with the batch
    assert est.decode.n_seqs == 10 ** 18


def test_expected_tokens_per_step_matches_the_engine():
    from pyinfer.engine.speculative import expected_tokens_per_step as engine_e
    for a in (0.0, 0.3, 0.8, 1.0):
        for k in (1, 4, 7):
            assert expected_tokens_per_step(a, k) == pytest.approx(engine_e(a, k))
    assert expected_tokens_per_step(1.0, 4) == 5 and expected_tokens_per_step(0.0, 4) == 1
    assert speculative_speedup(1.0, 4, 1.0, 0.0001, 1.0) == pytest.approx(5 / 1.0004)
    with pytest.raises(ValueError, match="acceptance"):
        expected_tokens_per_step(1.5, 4)


def test_speculative_economics():
    target, draft = PRESETS["llama-70b"], PRESETS["llama-7b"]
    plain = token_economics(target, A100, 1, 512, "int4-g32")
    good = speculative_economics(target, draft, plain, k=4, acceptance=0.8, draft_weights="int4-g32")
    bad = speculative_economics(target, draft, plain, k=4, acceptance=0.0, draft_weights="int4-g32")
    assert good.speedup > 1 > bad.speedup
    assert good.round_s == pytest.approx(4 * good.draft.tpot_s + good.verify_s)
    assert good.tokens_per_s == pytest.approx(good.tokens_per_step / good.round_s)
    assert good.usd_per_m_output < plain.usd_per_m_output
    with pytest.raises(ValueError, match="vocabulary"):
        speculative_economics(target, PRESETS["llama-3.1-8b"], plain, k=4, acceptance=0.5)


def test_published_decode_table_within_20_percent():
    rows, sources = load_rows()
    assert len(rows) >= 10 and {r["source"] for r in rows} <= set(sources)
    assert {r["tp"] for r in rows} >= {1, 8} and any(r["model"] == "llama-7b" and r["tp"] == 8 for r in rows)
    for r in rows:
        p = predict_row(r)
        assert p["model"].startswith("expected")
        assert 0.8 <= p["ratio"] <= 1.2, (r, p)
        assert p["bound"] > p["predicted"]


def test_estimate_counts_sliding_window_biases_and_qk_norms_as_the_model_runs(rng):
    from pyinfer.analysis import count
    c = PRESETS["toy"].with_(sliding_window=int(rng.integers(2, 12)), qkv_bias=True, qk_norm=True)
    for q, k in (([1], [int(rng.integers(20, 60))]), ([int(rng.integers(10, 30))], [0]), ([1, 1, 3], [5, 16, 17])):
        assert step_cost(c, q, k).calls == tuple(count(c, q, k)), (c.sliding_window, q, k)
