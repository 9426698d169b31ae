"""Engine fuzzer (issue #12 point 4): random engine configs (block sizes 1..256, tiny and roomy pools,
prefix caching on and off), requests arriving between steps with random prompts (many sharing
prefixes), lengths and sampling parameters, random aborts, preemption, and failures injected into
random steps (a kernel error, MemoryError or KeyboardInterrupt at a random op call or cache change).

Half the runs speculate (a draft model: the first layer or the model itself, 1-4 tokens a round).

Checked after every run: every request not aborted finishes exactly once, with the output it has run
alone (batch-invariant mode, so seeded sampling too is bit-exact; a sampled request that speculated
draws differently, so its output is checked against the stop and length rules instead); no block
leaks in either KV cache. The seed is
printed; PYINFER_SEED=... replays a failure, PYINFER_FUZZ_ITERS=N runs longer (default 8 runs of
~30 requests here; e.g. PYINFER_FUZZ_ITERS=200 for a local soak of a few minutes)."""
from __future__ import annotations

import os

import numpy as np

from pyinfer.config import ModelConfig, SamplingParams
from pyinfer.engine import Engine, EngineConfig
from pyinfer.engine.speculative import layer_draft
from pyinfer.model import Model
from pyinfer.ops import REGISTRY
from pyinfer.weights import random_weights

CFG = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48, vocab_size=64, max_seq_len=48,
                  name="tiny")
ITERS = int(os.environ.get("PYINFER_FUZZ_ITERS", "8"))


class Fault(RuntimeError):
    pass


def random_params(rng) -> SamplingParams:
    greedy = rng.random() < 0.5
    return SamplingParams(temperature=0.0 if greedy else float(rng.choice([1e-7, 0.5, 1.0, 1.5])),
                          top_k=int(rng.choice([0, 1, 5, 40])), top_p=float(rng.choice([1.0, 0.9, 0.3])),
                          seed=int(rng.integers(1 << 30)), max_tokens=int(rng.integers(1, 13)),
                          stop_token_ids=tuple(int(t) for t in rng.choice(64, int(rng.integers(0, 3)), replace=False)))


def random_prompt(rng, prefixes) -> list[int]:
    head = list(prefixes[int(rng.integers(len(prefixes)))]) if rng.random() < 0.6 else [1]
    return (head + [int(t) for t in rng.integers(3, 64, int(rng.integers(0, 14)))])[:CFG.max_seq_len]


def arm_faults(engine, rng, rate):
    """Wrap every op and the cache's changes: each call raises with probability ``rate``."""
    kinds = (Fault, MemoryError, KeyboardInterrupt)

    def wrap(fn):
        def wrapped(*a, **k):
            if rng.random() < rate:
                raise kinds[int(rng.integers(3))]("injected")
            return fn(*a, **k)
        return wrapped
    models = [engine.model] + ([engine.speculator.draft] if engine.speculator else [])
    for name in REGISTRY:
        for m in models:
            setattr(m.ops, name, wrap(getattr(m.ops, name)))
    for obj, names in [(c, ("prepare", "free", "register_full_blocks", "truncate")) for c in engine._caches()] + \
                      [(c.manager, ("allocate", "release", "register")) for c in engine._caches()] + \
                      [(engine.scheduler, ("schedule", "finish"))]:
        for name in names:
            setattr(obj, name, wrap(getattr(obj, name)))


def one_run(model, rng, alone_cache):
    bs = int(rng.choice([1, 2, 3, 4, 7, 16, 64, 256]))
    roomy = rng.random() < 0.3
    need = -(-CFG.max_seq_len // bs)                             # one full-context request must fit
    speculative = rng.random() < 0.5           # a draft: the model's first layer, or the model itself
    draft = (layer_draft(model, [0]) if rng.random() < 0.7 else model) if speculative else None
    config = EngineConfig(block_size=bs, num_blocks=need * (8 if roomy else int(rng.integers(1, 3))),
                          max_num_seqs=int(rng.integers(1, 9)), max_num_batched_tokens=int(rng.integers(8, 65)),
                          enable_prefix_caching=bool(rng.random() < 0.7), batch_invariant=True,
                          num_speculative_tokens=int(rng.integers(1, 5)) if speculative else 0)
    engine = Engine(model, config=config, draft_model=draft)
    arm_faults(engine, rng, rate=float(rng.choice([0.0, 0.002, 0.01])))
    prefixes = [[1] + [int(t) for t in rng.integers(3, 64, int(rng.integers(1, 3)) * bs)] for _ in range(3)]
    n_requests = int(rng.integers(10, 40))
    requests, outputs, aborted, failures, steps = {}, {}, set(), 0, 0
    while len(requests) < n_requests or engine.has_unfinished():
        for _ in range(int(rng.integers(0, 4))):                 # arrivals between steps
            if len(requests) < n_requests:
                prompt, params = random_prompt(rng, prefixes), random_params(rng)
                requests[engine.add_request(prompt, params)] = (prompt, params)
        if requests and rng.random() < 0.05:                      # an abort of anything, finished or not
            rid = int(rng.choice(list(requests)))
            try:
                if engine.abort(rid):
                    aborted.add(rid)
            except (Fault, MemoryError, KeyboardInterrupt):       # an injected failure inside abort:
                failures += 1                                      # nothing changed, the request goes on
        try:
            done = [out for out in engine.step() if out.finished]   # step() streams every request that advanced
        except (Fault, MemoryError, KeyboardInterrupt):
            failures += 1
            continue
        steps += 1
        assert steps < 5000, "the engine stopped making progress"
        for out in done:
            assert out.request_id not in outputs and out.request_id not in aborted
            outputs[out.request_id] = out
    assert set(outputs) | aborted == set(requests) and not set(outputs) & aborted
    for c in engine._caches():
        assert c.blocks_in_use() == 0 and not c.manager.ref_counts.any()
    for rid, out in outputs.items():
        prompt, params = requests[rid]
        if speculative and params.temperature > 0:   # another draw than the plain engine's: check the rules
            ids, reason = out.output_ids, out.finish_reason      # a stop token is its last id, unless EOS (1, 2)
            assert len(ids) <= params.max_tokens and all(0 <= t < CFG.vocab_size and t not in (1, 2) for t in ids), (rid, ids)
            assert not set(ids[:-1]) & set(params.stop_token_ids), f"request {rid} went on past a stop token"
            assert (reason == "stop") == out.outputs[0].ended_on_token, (rid, ids, reason)
            assert reason == "stop" or len(ids) == params.max_tokens or len(prompt) + len(ids) > CFG.max_seq_len
            continue
        key = (tuple(prompt), params)
        if key not in alone_cache:
            alone = Engine(model, config=EngineConfig(max_num_seqs=1, block_size=16, batch_invariant=True,
                                                      enable_prefix_caching=False))
            alone.add_request(prompt, params)
            (want,) = alone.run_until_done()
            alone_cache[key] = (want.output_ids, want.finish_reason)
        assert (out.output_ids, out.finish_reason) == alone_cache[key], \
            f"request {rid} {prompt} {params} differs from its run alone (block_size {bs})"
    spec = engine.stats()["speculative"]
    return dict(block_size=bs, requests=n_requests, aborted=len(aborted), failures=failures,
                preemptions=engine.stats()["preemptions"], prefix_hits=engine.stats()["prefix_hit_tokens"],
                speculative_rounds=spec["rounds"] if spec else 0, accepted_drafts=spec["accepted"] if spec else 0)


def test_engine_fuzz(seed):
    rng = np.random.default_rng(seed)
    model = Model(random_weights(CFG, seed=int(rng.integers(1 << 30))))
    alone_cache: dict = {}
    totals = {}
    for i in range(ITERS):
        stats = one_run(model, rng, alone_cache)
        print(f"run {i}: {stats}")
        for k, v in stats.items():
            totals[k] = totals.get(k, 0) + (v if k != "block_size" else 1)
    print(f"seed={seed}, {ITERS} runs: {totals}")
