"""The serving engine: continuous batching with chunked prefill and preemption loses, duplicates
and changes nothing; bad requests are refused at the door; metrics follow their definitions."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from pyinfer.api import load
from pyinfer.config import ModelConfig, SamplingParams
from pyinfer.engine import LLM, Engine, EngineConfig
from pyinfer.engine.metrics import RequestMetrics, latency_summary, summarize
from pyinfer.engine.trace import LengthDist, synthetic_trace
from pyinfer.model import Model
from pyinfer.weights import random_weights


@pytest.fixture(scope="module")
def gen260k(stories260k):
    return load(stories260k["model"], tokenizer=stories260k["tokenizer"])


def run_alone(engine: Engine, prompt, params: SamplingParams):
    engine.add_request(prompt, params)
    (out,) = engine.run_until_done()
    return out


def test_thousand_requests_through_a_tenth_sized_pool_equal_runs_alone(gen260k, rng):
    """1000 requests, random prompt/output lengths, arriving in random bursts between steps, through
    a pool that holds a tenth of them: each finishes exactly once, and its greedy output equals
    the same request run alone, token for token (float32, numpy reference). Batch-invariant mode
    makes that exact by construction; without it the logits differ in the last bits between
    batch compositions and a near-tie could flip (docs/engine.md, "Numerics")."""
    bs, n = 8, 1000
    requests = []
    for _ in range(n):
        plen = int(rng.integers(64, 161)) if rng.random() < 0.05 else int(rng.integers(1, 13))
        prompt = [1] + [int(t) for t in rng.integers(3, 512, plen - 1)]
        requests.append((prompt, SamplingParams(temperature=0.0, max_tokens=int(rng.integers(1, 25)),
                                                ignore_eos=True)))
    full_blocks = sum(-(-(len(p) + sp.max_tokens - 1) // bs) for p, sp in requests)
    # Tuned by replaying the scheduling alone (stop tokens are off, so it does not depend on the
    # logits) for 1300 seeds: every one preempted (>= 2 times) and cut prompts into chunks (>= 4).
    engine = Engine(gen260k.model, config=EngineConfig(max_num_seqs=256, max_num_batched_tokens=384,
                                                       block_size=bs, num_blocks=full_blocks // 10,
                                                       batch_invariant=True))
    ids, outputs, i = [], {}, 0
    while i < n or engine.has_unfinished():
        for _ in range(int(rng.integers(0, 300))):          # requests arrive at any time, in bursts
            if i < n:
                ids.append(engine.add_request(*requests[i]))
                i += 1
        for out in (o for o in engine.step() if o.finished):
            assert out.request_id not in outputs, f"request {out.request_id} finished twice"
            outputs[out.request_id] = out
    stats = engine.stats()
    print(stats)
    assert sorted(outputs) == sorted(ids) and len(ids) == n
    assert stats["preemptions"] > 0 and stats["cut_prefill_chunks"] > 0, "the workload must exercise both"
    assert engine.cache.blocks_in_use() == 0

    alone = Engine(gen260k.model, config=EngineConfig(max_num_seqs=1, block_size=bs, enable_prefix_caching=False,
                                                      batch_invariant=True))
    mismatches = []
    for rid, (prompt, params) in zip(ids, requests):
        want = run_alone(alone, prompt, params)
        got = outputs[rid]
        assert got.finish_reason == "length" and len(got.output_ids) == params.max_tokens
        if got.output_ids != want.output_ids:
            mismatches.append((rid, got.metrics.num_preemptions, got.output_ids, want.output_ids))
    assert not mismatches, f"{len(mismatches)} requests differ from their run alone, first: {mismatches[0]}"


def test_seeded_sampling_does_not_depend_on_batch_mates(gen260k):
    """Temperature, top-k, top-p and seed are per request: a request's sampled text is the same
    alone and in a batch of different requests."""
    tok = gen260k.tokenizer
    reqs = [("Once upon a time", SamplingParams(temperature=1.0, top_p=0.9, seed=7, max_tokens=40)),
            ("The cat sat", SamplingParams(temperature=0.8, top_k=20, seed=3, max_tokens=30)),
            ("Lily wanted", SamplingParams(temperature=0.0, max_tokens=25)),
            ("A big dog", SamplingParams(temperature=1.2, top_k=5, top_p=0.5, seed=11, max_tokens=35))]
    llm = LLM(gen260k.model, tokenizer=tok, max_num_seqs=8, max_num_batched_tokens=8,   # forces prompt chunks
              batch_invariant=True)
    batched = llm.generate([p for p, _ in reqs], [sp for _, sp in reqs])
    alone = Engine(gen260k.model, tok, EngineConfig(max_num_seqs=1, batch_invariant=True))
    for (prompt, params), got in zip(reqs, batched):
        assert got.output_ids == run_alone(alone, prompt, params).output_ids
        assert isinstance(got.text, str) and got.text
    again = llm.generate([p for p, _ in reqs], [sp for _, sp in reqs])
    assert [o.output_ids for o in again] == [o.output_ids for o in batched]


def test_greedy_engine_matches_single_sequence_generate(gen260k):
    """The engine's tokens after the prompt are generate()'s (run.c semantics) for the same positions."""
    prompt = "Once upon a time"
    ids = gen260k.tokenizer.encode(prompt)
    steps = 60
    ref = gen260k.generate(prompt, steps=steps, params=SamplingParams(temperature=0.0)).result
    out = LLM(gen260k.model, tokenizer=gen260k.tokenizer).generate(
        prompt, SamplingParams(temperature=0.0, max_tokens=steps - len(ids) + 1))[0]
    assert out.output_ids == ref.output_ids[len(ids) - 1:]


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48, vocab_size=300,
                      max_seq_len=64, name="tiny")
    return Model(random_weights(cfg, seed=5))


def test_bad_requests_are_refused_and_the_rest_are_served(tiny):
    engine = Engine(tiny, config=EngineConfig(block_size=4, num_blocks=8))
    good = [engine.add_request([1, 5, 6], SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)),
            engine.add_request([1, 7], SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True))]
    cases = [
        (([], None), "empty prompt"),
        (("", None), "empty prompt"),
        (("hello", None), "needs a tokenizer"),
        ((list(range(1, 66)), None), "longer than the model's context of 64"),
        (([1, 300], None), r"token ids must be in \[0, 300\)"),
        (([[1, 2]], None), "one flat sequence"),
        (([1.5, 2.0], None), "must be integers"),
        (([1, 2], SamplingParams(temperature=0.0, max_tokens=40)), "needs up to 41 tokens of KV cache .* pool holds 32"),
        (([1, 2], {"max_tokens": 3}), "params must be SamplingParams"),
    ]
    for field, value, msg in (("max_tokens", 0, "max_tokens=0 must be"),
                              ("top_p", 0.0, r"top_p=0.0 must be in \(0, 1\]"),
                              ("top_p", 1.5, r"top_p=1.5 must be in \(0, 1\]"),
                              ("temperature", -0.5, "temperature=-0.5"),
                              ("temperature", math.nan, "temperature must be a finite number, got float nan"),
                              ("stop_token_ids", (999,), "stop_token_ids")):
        broken = SamplingParams(temperature=0.0, max_tokens=4)
        object.__setattr__(broken, field, value)             # get past SamplingParams' own checks
        cases.append((([1, 2], broken), msg))
    for (prompt, params), msg in cases:
        with pytest.raises(ValueError, match=msg):
            engine.add_request(prompt, params)
    for kwargs, msg in (({"max_tokens": 0}, "max_tokens=0"), ({"top_p": 0.0}, "top_p=0.0"),
                        ({"temperature": -1.0}, "temperature=-1.0")):
        with pytest.raises(ValueError, match=msg):      # SamplingParams itself refuses them too
            SamplingParams(**kwargs)
    good.append(engine.add_request([1, 9, 9, 9], SamplingParams(temperature=0.0, max_tokens=4)))
    outs = {o.request_id: o for o in engine.run_until_done()}
    assert sorted(outs) == good == [0, 1, 2]                  # refused requests took no id
    assert [len(outs[i].output_ids) for i in good[:2]] == [5, 3]


def test_finish_reasons_stop_length_context(tiny):
    engine = Engine(tiny, config=EngineConfig(block_size=4))
    probe = engine.add_request([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True))
    (out,) = engine.run_until_done()
    assert out.request_id == probe and out.finish_reason == "length" and len(out.output_ids) == 6
    stop_at = out.output_ids[2]
    first = out.output_ids.index(stop_at)
    engine.add_request([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=6, stop_token_ids=(stop_at,)))
    (stopped,) = engine.run_until_done()
    assert stopped.finish_reason == "stop" and stopped.output_ids == out.output_ids[:first]
    assert stopped.metrics.num_output_tokens == first + 1       # the stop token was sampled, not emitted
    engine.add_request(list(range(1, 61)), SamplingParams(temperature=0.0, max_tokens=50, ignore_eos=True))
    (ctx,) = engine.run_until_done()
    assert ctx.finish_reason == "length" and len(ctx.output_ids) == 64 - 60 + 1   # run.c: context positions


def test_long_prompt_is_chunked_and_chunks_equal_one_pass(tiny, rng):
    prompt = [1] + [int(t) for t in rng.integers(3, 300, 50)]
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    whole = Engine(tiny, config=EngineConfig(max_num_batched_tokens=64, enable_prefix_caching=False,
                                             batch_invariant=True))
    chunked = Engine(tiny, config=EngineConfig(max_num_batched_tokens=7, block_size=4, batch_invariant=True))
    a, b = run_alone(whole, prompt, params), run_alone(chunked, prompt, params)
    assert chunked.stats()["cut_prefill_chunks"] == math.ceil(51 / 7) - 1
    assert b.output_ids == a.output_ids


def test_batch_invariant_logits_are_bit_identical_in_any_batch(tiny, rng):
    """One sequence's logits, computed alone (whole prompt, then decodes) and inside batches of other
    sequences (its prompt in chunks, beside prefills and decodes), agree bit for bit."""
    from pyinfer.engine.model_runner import batch_invariant_model, make_cache
    model = batch_invariant_model(tiny, tile_rows=8)
    assert batch_invariant_model(model) is model and "batch-invariant" in model.ops.describe()
    prompt, decodes = rng.integers(3, 300, 21), rng.integers(3, 300, 5)
    cache = make_cache(model, 4, 64)
    alone = [model.forward(cache.prepare([0], [prompt]), cache)[0]]
    alone += [model.forward(cache.prepare([0], [decodes[i:i + 1]]), cache)[0] for i in range(5)]
    cache = make_cache(model, 4, 64)
    others = [rng.integers(3, 300, n) for n in (9, 1, 30)]
    model.forward(cache.prepare([1, 2], others[:2]), cache)
    got = []
    for chunk in np.split(prompt, [5, 6]):                              # 5, 1, 15 tokens
        step = [chunk, rng.integers(3, 300, 1), others[2][:len(chunk) + 2]]   # beside a decode and a prefill
        out = model.forward(cache.prepare([0, 1, 3], step), cache)
    got.append(out[0])
    for i in range(5):
        out = model.forward(cache.prepare([2, 0], [rng.integers(3, 300, 3), decodes[i:i + 1]]), cache)
        got.append(out[1])
    for a, b in zip(alone, got):
        np.testing.assert_array_equal(a, b)


def test_abort_and_llm_all_or_nothing(tiny):
    engine = Engine(tiny, config=EngineConfig(block_size=4))
    rid = engine.add_request([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=10))
    engine.step()
    assert engine.abort(rid) and not engine.abort(rid) and not engine.has_unfinished()
    assert engine.cache.blocks_in_use() == 0
    llm = LLM(tiny, max_num_seqs=2)
    with pytest.raises(ValueError, match="empty prompt"):
        llm.generate([[1, 2], []])
    assert not llm.engine.has_unfinished()
    with pytest.raises(ValueError, match="2 SamplingParams for 1 prompts"):
        llm.generate([[1, 2]], [SamplingParams(), SamplingParams()])
    with pytest.raises(ValueError, match="max_num_seqs=0"):
        EngineConfig(max_num_seqs=0)


def test_metrics_follow_their_definitions():
    m1 = RequestMetrics(arrival_s=10.0, token_times_s=(10.5, 10.6, 10.8), finish_s=10.8, prompt_len=4,
                        num_output_tokens=3)
    m2 = RequestMetrics(arrival_s=10.2, token_times_s=(11.2,), finish_s=11.2, prompt_len=6, num_output_tokens=1)
    assert m1.ttft_s == pytest.approx(0.5) and m1.e2e_s == pytest.approx(0.8)
    assert m1.tpot_s == pytest.approx(0.15) and m1.itl_s == pytest.approx([0.1, 0.2]) and m2.tpot_s is None
    s = summarize([m1, m2], ttft_target_s=0.6, tpot_target_s=0.2)
    assert s["duration_s"] == pytest.approx(1.2)
    assert s["request_throughput_per_s"] == pytest.approx(2 / 1.2)
    assert s["output_token_throughput_per_s"] == pytest.approx(4 / 1.2)
    assert s["total_token_throughput_per_s"] == pytest.approx(14 / 1.2)
    assert s["ttft_s"]["mean"] == pytest.approx(0.75) and s["tpot_s"]["n"] == 1 and s["itl_s"]["n"] == 2
    assert s["goodput"]["good_requests"] == 1 and s["goodput"]["requests_per_s"] == pytest.approx(1 / 1.2)
    assert latency_summary([1.0, 2.0, 3.0, 4.0])["p90"] == pytest.approx(3.7)     # linear interpolation
    with pytest.raises(ValueError, match="no finished requests"):
        summarize([])


def test_trace_is_seeded_and_poisson():
    kw = dict(prompt_len=LengthDist.parse("uniform:4:20"), output_len=LengthDist.parse("exp:10"),
              vocab_size=300, max_seq_len=64, seed=3)
    a, b = synthetic_trace(2000, 50.0, **kw), synthetic_trace(2000, 50.0, **kw)
    assert a == b
    gaps = np.diff([r.arrival_s for r in a])
    assert abs(gaps.mean() - 1 / 50) < 0.1 / 50                  # exponential gaps at the given rate
    assert all(4 <= len(r.prompt_ids) <= 20 and r.prompt_ids[0] == 1 and r.max_tokens >= 1 for r in a)
    assert all(r.arrival_s == 0 for r in synthetic_trace(5, math.inf, **kw))
    for spec in ("uniform:5", "gamma:1:2", "uniform:9:3", "x"):
        with pytest.raises(ValueError, match="bad length distribution"):
            LengthDist.parse(spec)


def test_bench_serve_and_sweep_commands(tmp_path, capsys):
    from pyinfer.commands import bench_serve
    parser = argparse.ArgumentParser()
    bench_serve.register_bench(parser.add_subparsers(dest="bench", required=True))
    common = ["--preset", "toy", "--num-requests", "6", "--prompt-len", "uniform:2:12", "--output-len", "3",
              "--rate", "200", "--no-progress", "--ttft-target-ms", "10000", "--tpot-target-ms", "10000"]
    args = parser.parse_args(["serve", *common, "--json", str(tmp_path / "serve.json")])
    assert args.handler(args) == 0
    result = json.loads((tmp_path / "serve.json").read_text())
    assert result["summary"]["num_requests"] == 6 and result["summary"]["output_tokens"] == 18
    assert result["summary"]["goodput"]["fraction"] == 1.0 and result["machine"]["cpu"]
    assert "TTFT" in capsys.readouterr().out
    args = parser.parse_args(["sweep", *common, "--values", "1,4", "--png", str(tmp_path / "sweep.png"),
                              "--json", str(tmp_path / "sweep.json")])
    assert args.handler(args) == 0
    points = json.loads((tmp_path / "sweep.json").read_text())["points"]
    assert [p["max-num-seqs"] for p in points] == [1, 4]
    pytest.importorskip("matplotlib")
    assert (tmp_path / "sweep.png").stat().st_size > 1000
