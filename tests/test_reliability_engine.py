"""An engine step is a transaction (issue #12, D1): a failure injected at every point of a prefill,
a chunked prefill, a decode (plain, and speculative: a draft model's passes and the verification) and a
preemption step leaves the engine exactly as before the step, the
exception reaches the caller, and every request then finishes with the output it has alone (greedy,
batch-invariant mode: bit-exact); a new request with the same prompt afterwards too, so the prefix
cache holds only K/V that was written. A request whose own logits are NaN ends with "error"."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.config import ModelConfig, SamplingParams
from pyinfer.engine import Engine, EngineConfig
from pyinfer.engine.scheduler import Scheduler
from pyinfer.engine.speculative import layer_draft
from pyinfer.kv_cache import BlockManager, PagedKVCache
from pyinfer.model import Model
from pyinfer.ops import REGISTRY
from pyinfer.sampling import Sampler
from pyinfer.weights import random_weights

CFG = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48, vocab_size=64, max_seq_len=64,
                  name="tiny")
ENGINE = dict(block_size=4, num_blocks=12, max_num_batched_tokens=10, max_num_seqs=4, batch_invariant=True)


class Injected(RuntimeError):
    pass


class Faults:
    """Counts the points a step passes through (each op call, the cache's and block manager's
    changes, sampling, finishing) and raises at point ``target``."""

    KINDS = (Injected, MemoryError, KeyboardInterrupt)

    def __init__(self):
        self.count, self.target, self.kind = 0, -1, Injected

    def tick(self):
        self.count += 1
        if self.count == self.target:
            raise self.kind(f"injected at point {self.target}")

    def wrap(self, fn):
        def wrapped(*args, **kwargs):
            self.tick()
            return fn(*args, **kwargs)
        return wrapped


@pytest.fixture
def faults(monkeypatch):
    f = Faults()
    for cls, names in ((PagedKVCache, ("prepare", "register_full_blocks", "free", "truncate", "match_prefix")),
                       (BlockManager, ("allocate", "release", "register", "share")),
                       (Scheduler, ("schedule", "finish")), (Sampler, ("sample",))):
        for name in names:
            monkeypatch.setattr(cls, name, f.wrap(getattr(cls, name)))
    return f


def make_engine(model, faults=None, draft=None, **overrides):
    """draft: speculative decoding with this draft model, 3 tokens a round (its ops wrapped too), on a
    smaller pool (verification rounds finish the workload in fewer steps: it must still preempt)."""
    spec = {"num_speculative_tokens": 3, "num_blocks": 9} if draft is not None else {}
    config = EngineConfig(**{**ENGINE, **spec, **overrides})
    engine = Engine(model, config=config, draft_model=draft)
    if faults is not None:
        models = [engine.model] + ([engine.speculator.draft] if engine.speculator else [])
        for name in REGISTRY:
            for m in models:
                setattr(m.ops, name, faults.wrap(getattr(m.ops, name)))
    return engine


def workload(rng):
    """Prompts sharing a prefix (prefix cache), one longer than the token budget (chunked prefill),
    more KV demand than the pool (preemption)."""
    shared = [1] + [int(t) for t in rng.integers(3, 63, 8)]
    prompts = [shared + [int(t) for t in rng.integers(3, 63, 6)], shared + [int(t) for t in rng.integers(3, 63, 3)],
               [1] + [int(t) for t in rng.integers(3, 63, 2)], [1] + [int(t) for t in rng.integers(3, 63, 5)]]
    return [(p, SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)) for p in prompts]


def fingerprint(engine):
    """Everything a step may change, except prefix entries: a failed step may drop some (a free block's
    it evicted, or an owned block's it wrote in place, e.g. the partial block a speculative round
    truncated), never add or change one; run_with_failure checks that separately."""
    s = engine.scheduler
    seqs = [(q.seq_id, q.status, list(q.token_ids), q.num_computed_tokens, q.num_preemptions, q.finish_reason,
             len(q.token_times_s), q.num_prefill_chunks, q.num_cached_tokens, q.num_draft_computed)
            for q in s.waiting + s.running]
    caches = []
    for c in engine._caches():                     # the model's, and the draft's when speculating
        m = c.manager
        owned = {b: int(m.ref_counts[b]) for b in range(m.num_blocks) if m.ref_counts[b] > 0}
        free = sorted(set(m.free_ids) | set(m.cached_free))
        caches.append(({k: list(v) for k, v in c.block_tables.items()}, dict(c.seq_lens),
                       {k: list(v) for k, v in c.seq_tokens.items()}, {k: list(v) for k, v in c.seq_hashes.items()},
                       owned, free))
    spec = engine.stats()["speculative"]
    return (seqs, caches, engine.num_steps, s.num_preemptions, s.num_cut_prefills, s.prefix_hit_tokens,
            None if spec is None else {k: v for k, v in spec.items() if v == v})       # NaN != NaN


def run_with_failure(engine, requests, faults, target, kind):
    """Run the requests to the end with one failure at point ``target``; outputs by request index."""
    ids = [engine.add_request(p, sp) for p, sp in requests]
    faults.count, faults.target, faults.kind = 0, target, kind
    outputs, failed = {}, 0
    while engine.has_unfinished():
        before, hashes = fingerprint(engine), [dict(c.manager.hash_of) for c in engine._caches()]
        try:
            done = engine.step()
        except (Injected, MemoryError, KeyboardInterrupt):
            failed += 1
            assert fingerprint(engine) == before, f"state changed by the failed step (point {target})"
            for c, h in zip(engine._caches(), hashes):
                assert set(c.manager.hash_of.items()) <= set(h.items())
            continue
        outputs.update({ids.index(o.request_id): o.output_ids for o in done if o.finished})
    assert failed == (1 if target >= 0 else 0)
    return outputs


def step_points(model, requests, draft=None):
    """Clean run: (first point, end point, kinds) of every step."""
    f = Faults()
    engine = make_engine(model, f, draft)
    for cls_obj, names in [(c, ("prepare", "register_full_blocks", "free", "truncate", "match_prefix"))
                           for c in engine._caches()] + \
                          [(c.manager, ("allocate", "release", "register", "share")) for c in engine._caches()] + \
                          [(engine.scheduler, ("schedule", "finish"))]:
        for name in names:
            setattr(cls_obj, name, f.wrap(getattr(cls_obj, name)))
    for p, sp in requests:
        engine.add_request(p, sp)
    steps, schedule = [], engine.scheduler.schedule
    last = {}

    def spy():
        last["batch"] = b = schedule()
        last["left"] = [q.num_uncomputed for q in b.seqs]
        return b
    engine.scheduler.schedule = spy
    while engine.has_unfinished():
        start = f.count
        engine.step()
        b = last["batch"]
        kinds = {"preemption"} if b.preempted else set()
        for n, left in zip(b.num_tokens, last["left"]):
            kinds.add(("verification" if n > 1 else "decode") if left == 1 else
                      "chunked prefill" if n < left else "prefill")
        steps.append((start + 1, f.count + 1, kinds))
    return steps


@pytest.mark.parametrize("speculative", [False, True])
def test_a_failure_at_every_point_of_a_step_changes_nothing(rng, faults, speculative):
    model = Model(random_weights(CFG, seed=int(rng.integers(1 << 30))))
    draft = layer_draft(model, [1]) if speculative else None
    requests = workload(rng)
    alone_engine = make_engine(model, max_num_seqs=1, enable_prefix_caching=False)
    alone = []
    for p, sp in requests:
        alone_engine.add_request(p, sp)
        alone.append(alone_engine.run_until_done()[0].output_ids)
    steps = step_points(model, requests, draft)
    chosen = {}
    for start, end, kinds in steps:
        for kind in kinds:
            chosen.setdefault(kind, (start, end))
    need = {"prefill", "chunked prefill", "preemption", "verification" if speculative else "decode"}
    assert need <= set(chosen), f"the workload must hit every kind: {sorted(chosen)}"
    points = sorted({p for kind in need for p in range(*chosen[kind])})
    print(f"{len(steps)} steps; injecting at {len(points)} points of the steps {chosen}")
    for i, point in enumerate(points):
        engine = make_engine(model, faults, draft)
        got = run_with_failure(engine, requests, faults, point, Faults.KINDS[i % 3])
        assert [got[j] for j in range(len(requests))] == alone, f"outputs differ after a failure at point {point}"
        # the prefix cache now holds these prompts' blocks: a new request must reuse only written K/V
        again = run_with_failure(engine, requests[:2], faults, -1, Injected)
        assert [again[0], again[1]] == alone[:2], f"resubmitted prompts differ (failure at point {point})"
        assert all(c.blocks_in_use() == 0 for c in engine._caches())


def test_a_request_with_nan_logits_ends_alone_with_error(rng):
    """Token 63's embedding is NaN: the request holding it finishes with "error" naming the step
    and the request; the others go on and equal their runs alone."""
    w = random_weights(CFG, seed=int(rng.integers(1 << 30)))
    w.tok_embeddings[63] = np.nan
    model = Model(w)
    requests = workload(rng)
    bad = [1, 5, 63, 7]
    engine = make_engine(model)
    ids = [engine.add_request(p, sp) for p, sp in requests]
    bad_id = engine.add_request(bad, SamplingParams(temperature=0.8, seed=1, max_tokens=4))
    outs = {o.request_id: o for o in engine.run_until_done()}
    assert outs[bad_id].finish_reason == "error" and outs[bad_id].output_ids == []
    assert f"request {bad_id}" in outs[bad_id].error and "NaN" in outs[bad_id].error
    alone_engine = make_engine(model, max_num_seqs=1)
    for rid, (p, sp) in zip(ids, requests):
        alone_engine.add_request(p, sp)
        (want,) = alone_engine.run_until_done()       # (it may sample token 63 itself and end in error too)
        assert (outs[rid].output_ids, outs[rid].finish_reason) == (want.output_ids, want.finish_reason)


def test_engine_and_llm_refuse_a_tokenizer_of_another_vocab(stories260k):
    """D2: a tokenizer whose vocabulary differs from the model's is refused at construction, by the
    Engine and by LLM given a Model or a checkpoint path with a tokenizer object (which raised a
    TypeError before); the right one works."""
    from pyinfer.engine import LLM
    from pyinfer.tokenizer import ByteTokenizer, Llama2cTokenizer
    # A tokenizer fits when every id it can produce is below the model's vocab (real checkpoints pad
    # the embedding, issue #11): a larger tokenizer is refused, a smaller one is not.
    model = Model(random_weights(CFG.with_(vocab_size=400), seed=0))
    with pytest.raises(ValueError, match="vocab"):
        Engine(model, ByteTokenizer(512))
    with pytest.raises(ValueError, match="vocab"):
        LLM(model, tokenizer=ByteTokenizer(512))
    with pytest.raises(ValueError, match="vocab"):
        LLM(stories260k["model"], tokenizer=ByteTokenizer(600))
    Engine(Model(random_weights(CFG.with_(vocab_size=600), seed=0)), ByteTokenizer(512))
    llm = LLM(stories260k["model"], tokenizer=Llama2cTokenizer.from_file(stories260k["tokenizer"]))
    assert llm.generate("Once upon", SamplingParams(max_tokens=3))[0].text


def test_a_failure_at_every_point_of_speculative_decoding_leaves_a_rerun_exact(rng, monkeypatch):
    """SpeculativeDecoder.generate keeps its caches and sequences local: a failure at any forward
    pass, cache change or draw (drafts, verification, rollback) reaches the caller, and the same
    decoder then generates exactly the clean output (greedy and seeded)."""
    from pyinfer.engine import speculative as spec
    model = Model(random_weights(CFG, seed=int(rng.integers(1 << 30))))
    decoder = spec.SpeculativeDecoder(model, spec.truncated_draft(model, 1), num_speculative_tokens=3,
                                      block_size=4)     # a rerun repeats the same shapes: bit-exact anyway
    prompts = [[1] + [int(t) for t in rng.integers(3, 63, n)] for n in (3, 9)]
    params = [SamplingParams(temperature=0.0, max_tokens=7, stop_token_ids=()),
              SamplingParams(temperature=0.9, seed=5, max_tokens=6, stop_token_ids=())]
    clean = decoder.generate(prompts, params)[0]
    f = Faults()
    for cls, names in ((Model, ("forward",)), (PagedKVCache, ("prepare", "truncate", "free"))):
        for name in names:
            monkeypatch.setattr(cls, name, f.wrap(getattr(cls, name)))
    monkeypatch.setattr(spec, "sample_from", f.wrap(spec.sample_from))
    decoder.generate(prompts, params)
    total = f.count
    for point in range(1, total + 1):
        f.count, f.target, f.kind = 0, point, Faults.KINDS[point % 3]
        with pytest.raises(Faults.KINDS[point % 3]):
            decoder.generate(prompts, params)
        f.target = -1
        assert decoder.generate(prompts, params)[0] == clean, f"rerun differs after a failure at point {point}"
    print(f"{total} points")


def test_an_interrupted_llm_generate_leaves_nothing_behind(rng, monkeypatch):
    """Ctrl-C inside LLM.generate: the exception reaches the caller, the engine holds no request of
    that call and no block, and the next generate gives what a fresh one gives."""
    from pyinfer.engine import LLM
    model = Model(random_weights(CFG, seed=int(rng.integers(1 << 30))))
    llm = LLM(model, **ENGINE)
    requests = workload(rng)
    prompts, params = [p for p, _ in requests], [sp for _, sp in requests]
    want = [o.output_ids for o in llm.generate(prompts, params)]
    calls = {"n": 0}
    step = llm.engine.step

    def interrupted():
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return step()
    monkeypatch.setattr(llm.engine, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        llm.generate(prompts, params)
    assert not llm.engine.has_unfinished() and llm.engine.cache.blocks_in_use() == 0
    assert [o.output_ids for o in llm.generate(prompts, params)] == want
