"""Speculative decoding inside the engine (engine/spec_decode.py): greedy outputs are the plain engine's
under continuous batching, prefix caching, chunked prefill, preemption and a short token budget; sampled
outputs keep the target's law (chi-square through the engine); a draft equal to the target is always
accepted; bad setups are refused by name. The forward pass's row-wise attention (a sequence of up to
ROWWISE_MAX_Q new tokens attends as decode rows; the C backend's fused step runs them) is checked
against the numpy backend on ragged batches."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.config import ModelConfig, SamplingParams
from pyinfer.engine import Engine, EngineConfig
from pyinfer.engine.speculative import layer_draft, truncated_draft
from pyinfer.model import ROWWISE_MAX_Q, Model
from pyinfer.ops import Ops
from pyinfer.quant import quantize_weights
from pyinfer.weights import random_weights
from test_speculative import V8_PROMPT, check_tokens_2_and_3, v8_target_and_draft

CFG = ModelConfig(dim=32, n_layers=3, n_heads=4, n_kv_heads=2, hidden_dim=48, vocab_size=64, max_seq_len=64,
                  name="tiny3")


def workload(rng, n=10):
    shared = [1] + [int(t) for t in rng.integers(3, 64, 9)]
    prompts = [(shared if rng.random() < 0.5 else [1]) + [int(t) for t in rng.integers(3, 64, int(rng.integers(0, 14)))]
               for _ in range(n)]
    return [(p, SamplingParams(temperature=0.0, max_tokens=int(rng.integers(1, 24)), ignore_eos=bool(i % 2),
                               stop_token_ids=(int(rng.integers(3, 64)),) if i % 3 == 0 else None))
            for i, p in enumerate(prompts)]


def run(model, requests, config, draft=None):
    engine = Engine(model, config=config, draft_model=draft)
    ids = [engine.add_request(p, sp) for p, sp in requests]
    outs = {o.request_id: o for o in engine.run_until_done()}
    assert engine.cache.blocks_in_use() == 0
    if draft is not None:
        assert engine.speculator.cache.blocks_in_use() == 0
    return [(outs[i].output_ids, outs[i].finish_reason) for i in ids], engine.stats()


@pytest.mark.parametrize("setup", ["roomy", "prefix-cache", "short-budget", "tiny-pool"])
def test_greedy_speculation_in_the_engine_gives_the_plain_engines_outputs(rng, setup):
    model = Model(random_weights(CFG, seed=int(rng.integers(1 << 30))))
    requests = workload(rng)
    config = {"roomy": EngineConfig(block_size=4, enable_prefix_caching=False, batch_invariant=True),
              "prefix-cache": EngineConfig(block_size=4, batch_invariant=True),
              "short-budget": EngineConfig(block_size=2, max_num_batched_tokens=7, max_num_seqs=5, batch_invariant=True),
              "tiny-pool": EngineConfig(block_size=4, num_blocks=18, max_num_batched_tokens=16, batch_invariant=True),
              }[setup]
    want, plain = run(model, requests, config)
    for draft, k in ((layer_draft(model, [0, 2]), 3), (truncated_draft(model, 1), 1), (model, 4)):
        got, stats = run(model, requests, config.__class__(**{**config.to_dict(), "num_speculative_tokens": k}), draft)
        spec = stats["speculative"]
        print(setup, draft.config.name, k, {x: spec[x] for x in ("rounds", "proposed", "accepted", "acceptance_rate")},
              "preemptions", stats["preemptions"], "steps", stats["steps"], "plain steps", plain["steps"])
        assert got == want, f"{setup}: draft {draft.config.name}, k={k}"
        assert spec["rounds"] > 0 and spec["accepted"] <= spec["evaluated"] <= spec["proposed"]
        if draft is model:                                   # batch-invariant: the target agrees with itself
            assert spec["acceptance_rate"] == 1.0 and stats["steps"] < plain["steps"]
    if setup == "tiny-pool":
        assert plain["preemptions"] > 0


def test_the_engine_keeps_the_target_distribution_while_speculating(seed):
    """Vocab 8, an unrelated draft, 2000 seeded requests batched 64 at a time with prefix caching: the
    joint law of the 2nd and 3rd generated tokens (both from verification rounds) is the target's."""
    target, draft = v8_target_and_draft()
    n = 2000
    params = [SamplingParams(temperature=1.0, top_k=6, seed=seed + i, max_tokens=4, ignore_eos=True) for i in range(n)]
    engine = Engine(target, config=EngineConfig(block_size=4, max_num_seqs=64, max_num_batched_tokens=512,
                                                num_speculative_tokens=2), draft_model=draft)
    for sp in params:
        engine.add_request(V8_PROMPT, sp)
    outs = engine.run_until_done()
    spec = engine.stats()["speculative"]
    print(spec)
    assert all(len(o.output_ids) == 4 for o in outs) and 0.2 < spec["acceptance_rate"] < 0.95
    check_tokens_2_and_3(outs, target, draft, params[0])


def test_a_stories260k_int4_draft_speculates_exactly_on_the_c_backend(stories260k):
    """The real checkpoint, its int4 first-4-layers draft, the C backend (fused steps for the draft and for
    the verification rows): greedy outputs equal the plain engine's, with drafts accepted."""
    from pyinfer.api import load
    gen = load(stories260k["model"], tokenizer=stories260k["tokenizer"], backend="c")
    target = gen.model
    draft = truncated_draft(Model(quantize_weights(target.host_weights, "int4-g32-a8"), Ops("c")), 4)
    prompts = ["Once upon a time", "The little dog", "Lily and Tom went", "Once upon a time there was"]
    sp = SamplingParams(temperature=0.0, max_tokens=60)
    outs = []
    for k, d in ((0, None), (2, draft)):
        engine = Engine(target, gen.tokenizer, EngineConfig(max_num_seqs=4, num_speculative_tokens=k,
                                                            batch_invariant=True), draft_model=d)
        ids = [engine.add_request(p, sp) for p in prompts]
        done = {o.request_id: o for o in engine.run_until_done()}
        outs.append([done[i].outputs[0].text for i in ids])
        if d is not None:
            spec = engine.stats()["speculative"]
            print(spec)
            assert spec["accepted"] > 0
    assert outs[0] == outs[1]


def test_bad_speculative_engine_setups_are_refused():
    model = Model(random_weights(CFG, seed=0))
    with pytest.raises(ValueError, match="needs both a draft_model and EngineConfig.num_speculative_tokens"):
        Engine(model, config=EngineConfig(num_speculative_tokens=2))
    with pytest.raises(ValueError, match="num_speculative_tokens=0"):
        Engine(model, draft_model=model)
    with pytest.raises(ValueError, match="EngineConfig.num_speculative_tokens=65"):
        EngineConfig(num_speculative_tokens=65)
    other = Model(random_weights(CFG.with_(vocab_size=70, name="v70"), seed=0))
    with pytest.raises(ValueError, match="vocab of 70 differs from the model's 64"):
        Engine(model, config=EngineConfig(num_speculative_tokens=1), draft_model=other)
    short = Model(random_weights(CFG.with_(max_seq_len=32, name="short"), seed=0))
    with pytest.raises(ValueError, match="context of 32 is shorter than the engine's 64"):
        Engine(model, config=EngineConfig(num_speculative_tokens=1), draft_model=short)
    Engine(model, config=EngineConfig(num_speculative_tokens=1), draft_model=short, max_model_len=32)
    with pytest.raises(ValueError, match="must be a pyinfer Model"):
        Engine(model, config=EngineConfig(num_speculative_tokens=1), draft_model="tiny")


def test_requests_the_rule_does_not_model_decode_one_token_a_step(rng):
    """Sampled requests with penalties, min_p or logprobs never get drafts (their outputs are those of
    the plain engine, seeded); greedy ones with logprobs do, and their logprobs match the plain engine's."""
    model = Model(random_weights(CFG, seed=int(rng.integers(1 << 30))))
    prompt = [1] + [int(t) for t in rng.integers(3, 64, 6)]
    cases = [SamplingParams(temperature=0.8, seed=3, max_tokens=12, repetition_penalty=1.3, ignore_eos=True),
             SamplingParams(temperature=0.8, seed=4, max_tokens=12, min_p=0.1, ignore_eos=True),
             SamplingParams(temperature=0.8, seed=5, max_tokens=12, logprobs=2, ignore_eos=True)]
    base = dict(block_size=4, batch_invariant=True)
    for sp in cases:
        want, _ = run(model, [(prompt, sp)], EngineConfig(**base))
        got, stats = run(model, [(prompt, sp)], EngineConfig(**base, num_speculative_tokens=3), model)
        assert got == want and stats["speculative"]["rounds"] == 0
    sp = SamplingParams(temperature=0.0, max_tokens=12, logprobs=3, ignore_eos=True)
    engines = [Engine(model, config=EngineConfig(**base, num_speculative_tokens=k), draft_model=model if k else None)
               for k in (0, 3)]
    res = []
    for e in engines:
        e.add_request(prompt, sp)
        (o,) = e.run_until_done()
        res.append((o.output_ids, [{t: lp.logprob for t, lp in d.items()} for d in o.outputs[0].logprobs]))
    assert res[0] == res[1] and engines[1].stats()["speculative"]["rounds"] > 0


def test_forward_rows_as_decodes_match_the_numpy_backend(rng):
    """Ragged batch on a cache with history: sequences of 1..ROWWISE_MAX_Q new tokens (row-wise; all of
    them: the C fused step) and longer ones (prefill kernel), all rows' logits against numpy's; then
    logit_rows picks rows in the order given, and a bad logit_rows is refused."""
    cfg = CFG.with_(vocab_size=96, name="rows")
    weights = random_weights(cfg, seed=int(rng.integers(1 << 30)))
    for q_lens in ([1, 3, ROWWISE_MAX_Q, 2], [1, 5, ROWWISE_MAX_Q + 1, 2, 13]):
        history = [int(x) for x in rng.integers(0, 20, len(q_lens))]
        toks = [rng.integers(3, 96, h + q) for h, q in zip(history, q_lens)]
        T = sum(q_lens)

        def batch(m):
            """A fresh cache holding each sequence's history, and the batch of their new tokens."""
            cache, ids = m.new_cache(num_blocks=64, block_size=4), list(range(len(q_lens)))
            old = [i for i in ids if history[i]]
            if old:
                m.forward(cache.prepare(old, [toks[i][:history[i]] for i in old]), cache)
            return cache.prepare(ids, [t[h:] for t, h in zip(toks, history)]), cache

        logits = {}
        for backend in ("numpy", "c"):
            m = Model(weights, Ops(backend))
            logits[backend] = m.forward(*batch(m), all_logits=True)                 # (T, V)
            assert logits[backend].shape == (T, 96)
            rows = np.array([4, 0, T - 1, 4])
            np.testing.assert_allclose(m.forward(*batch(m), logit_rows=rows), logits[backend][rows],
                                       rtol=1e-5, atol=1e-5)    # the head's GEMM over 4 rows, not T: may round apart
            assert m.forward(*batch(m), logit_rows=np.zeros(0, np.int64)).shape == (0, 96)
            for bad in (np.array([T]), np.array([[0]]), np.array([0.5])):
                with pytest.raises(ValueError, match="logit_rows must be a flat array"):
                    m.forward(*batch(m), logit_rows=bad)
        np.testing.assert_allclose(logits["c"], logits["numpy"], rtol=2e-4, atol=2e-4)
