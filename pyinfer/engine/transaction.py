"""An engine step as a transaction: whatever raises inside ``Engine.step`` (a kernel error, a
MemoryError, Ctrl-C), the engine is put back as it was before the step and the exception goes on
to the caller, so the next step continues as if the failed one had never started.

What a step can change, and how each is remembered (cheaply: nothing here copies the K/V pool):
- the scheduler's queues and counters: copied (lists of references);
- every sequence the step can touch (the running ones, and the waiting ones it could admit): a
  copy of its fields, and the lengths of its token lists (they only grow within a step);
- the samplers' random generators: their state, saved just before a draw;
- speculative decoding's counters: copied;
- the KV caches' tables and lengths (the draft model's too, when speculating): copied; its block pool's bookkeeping: copied by the block
  manager at its first change in the step (decode steps inside a block change nothing there).
K/V written by a failed step lies only in slots past each sequence's length or in blocks that go
back to the pool, so it is never read; a cached prefix block the step evicted or wrote stays
forgotten (kv_cache.BlockManager.rollback), and new full blocks enter the prefix cache only after
the forward pass that wrote them has returned (ModelRunner.run).
"""
from __future__ import annotations

import copy
import itertools


class StepTransaction:
    def __init__(self, engine):
        self.engine = engine
        sch = engine.scheduler
        self.queues = (list(sch.waiting), list(sch.running))
        self.counters = (sch.num_preemptions, sch.num_cut_prefills, sch.prefix_query_tokens, sch.prefix_hit_tokens,
                         engine.num_steps, engine.runner.num_forward_passes)
        admissible = max(0, sch.max_num_seqs - len(sch.running)) + 1      # admission takes waiting[0] each time
        self.seqs = [(s, s.__dict__.copy(), len(s.token_ids), len(s.token_times_s))
                     for s in itertools.chain(sch.running, sch.waiting[:admissible])]
        self.rng_states = []
        spec = engine.speculator
        self.spec_counters = None if spec is None else copy.copy(spec.counters)
        for cache in engine._caches():
            cache.begin()

    def save_rng(self, seq) -> None:
        """Before a sequence's sampler draws: remember its generator's state."""
        bit_generator = seq.sampler.rng.bit_generator
        self.rng_states.append((bit_generator, bit_generator.state))

    def commit(self) -> None:
        for cache in self.engine._caches():
            cache.commit()

    def rollback(self) -> None:
        e, sch = self.engine, self.engine.scheduler
        for cache in e._caches():
            cache.rollback()
        if self.spec_counters is not None:
            e.speculator.counters = self.spec_counters
        sch.waiting, sch.running = self.queues
        (sch.num_preemptions, sch.num_cut_prefills, sch.prefix_query_tokens, sch.prefix_hit_tokens,
         e.num_steps, e.runner.num_forward_passes) = self.counters
        for seq, fields, n_tokens, n_times in self.seqs:
            del seq.token_ids[n_tokens:]
            del seq.token_times_s[n_times:]
            seq.__dict__.clear()
            seq.__dict__.update(fields)
        for bit_generator, state in reversed(self.rng_states):
            bit_generator.state = state
