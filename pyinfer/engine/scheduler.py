"""Which sequences run in the next forward pass, and how many tokens each.

Each step, under a token budget (``max_num_batched_tokens``) and a sequence cap (``max_num_seqs``):

1. Running sequences, oldest first. A decode takes one token, plus its ``lookahead`` (the draft
   tokens speculative decoding will verify with it; 0 without a draft) as far as the budget left
   over for the decodes after it allows. A sequence still prefilling takes a
   chunk: what is left of its prompt, cut to the budget minus one token for every decode not yet
   scheduled, so decodes are never starved by a long prompt (chunked prefill).
   When the KV pool cannot hold a sequence's new tokens, the newest running sequence is
   preempted: its blocks are freed and it goes back to the waiting queue to be recomputed later
   (its sampled tokens are kept). The oldest sequence is never preempted for a newer one, and a
   request is admitted only if it fits the pool alone, so every request finishes.
2. If nobody was preempted, waiting sequences in arrival order: each first takes what the prefix
   cache holds of its tokens (a sequence still computing prompt logprobs: no further than the
   positions already done), then a chunk of the rest, while budget, sequence slots and free
   blocks last.

Nothing here touches the model; the block accounting asks the cache, which is passed in.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable

from ..kv_cache import PagedKVCache
from .sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class ScheduledBatch:
    """One step's work: ``seqs[i]`` computes its next ``num_tokens[i]`` tokens."""
    seqs: tuple[Sequence, ...]
    num_tokens: tuple[int, ...]
    preempted: tuple[Sequence, ...] = ()

    @property
    def num_batched_tokens(self) -> int:
        return sum(self.num_tokens)

    def __len__(self) -> int:
        return len(self.seqs)


class Scheduler:
    def __init__(self, cache: PagedKVCache, max_num_seqs: int, max_num_batched_tokens: int,
                 lookahead: Callable[[Sequence], int] | None = None):
        self.cache = cache
        self.lookahead = lookahead              # draft tokens a decoding sequence may verify this step
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: list[Sequence] = []      # arrival (= seq_id) order
        self.running: list[Sequence] = []      # arrival order
        self.num_preemptions = 0
        self.num_cut_prefills = 0              # prefill chunks shorter than what was left of the prompt
        self.prefix_query_tokens = 0           # tokens looked up in the prefix cache at admission
        self.prefix_hit_tokens = 0             # of those, found cached

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        bisect.insort(self.waiting, seq, key=lambda s: s.seq_id)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence) -> None:
        """Take a finished sequence out of the running set and free its blocks."""
        self.running.remove(seq)
        self.cache.free(seq.seq_id)
        seq.status = SequenceStatus.FINISHED

    def abort(self, seq_id: int) -> bool:
        for queue in (self.waiting, self.running):
            for seq in queue:
                if seq.seq_id == seq_id:
                    self.cache.free(seq_id)      # first: if it raises, the sequence is still queued as before
                    queue.remove(seq)
                    seq.status, seq.finish_reason = SequenceStatus.FINISHED, "abort"
                    return True
        return False

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.cache.free(seq.seq_id)
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.add(seq)

    def schedule(self) -> ScheduledBatch:
        budget = self.max_num_batched_tokens
        reserved = 0                            # blocks promised to sequences scheduled so far
        seqs: list[Sequence] = []
        counts: list[int] = []
        preempted: list[Sequence] = []
        decodes_left = sum(1 for s in self.running if s.num_uncomputed == 1)
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            if seq.num_uncomputed == 1:
                decodes_left -= 1
                extra = self.lookahead(seq) if self.lookahead is not None else 0
                n = 1 + max(0, min(extra, budget - decodes_left - 1))
            else:
                n = min(seq.num_uncomputed, budget - decodes_left)
            if n <= 0:
                i += 1
                continue
            need = self.cache.blocks_needed(seq.seq_id, n)
            while need > self.cache.num_free_blocks - reserved:
                victim = self.running[-1]      # newest; never one already scheduled (they are older)
                if victim.num_uncomputed == 1 and victim is not seq:
                    decodes_left -= 1
                self._preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                break                           # seq was the newest left: everything after it is gone too
            seqs.append(seq)
            counts.append(n)
            reserved += need
            budget -= n
            i += 1
        if not preempted:
            self._admit(seqs, counts, budget, reserved)
        for seq, n in zip(seqs, counts):
            if seq.num_uncomputed > 1:
                seq.num_prefill_chunks += 1
                self.num_cut_prefills += n < seq.num_uncomputed
        return ScheduledBatch(tuple(seqs), tuple(counts), tuple(preempted))

    def _admit(self, seqs: list[Sequence], counts: list[int], budget: int, reserved: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            # a sequence computing prompt logprobs needs the logits of every prompt position it has
            # not done yet: its cached prefix stops there (vLLM skips the prefix cache for such requests)
            known = len(seq.prompt_logprobs) + 1 if seq.collects_prompt_logprobs else seq.num_tokens
            cached = self.cache.match_prefix(seq.seq_id, seq.token_ids[:known])
            n = min(seq.num_tokens - cached, budget)
            need = self.cache.blocks_needed(seq.seq_id, n)
            if need > self.cache.num_free_blocks - reserved:
                self.cache.free(seq.seq_id)     # give back the shared prefix blocks; try next step
                break
            self.waiting.pop(0)
            self.prefix_query_tokens += seq.num_tokens
            self.prefix_hit_tokens += cached
            if seq.num_preemptions == 0:
                seq.num_cached_tokens = cached
            seq.num_computed_tokens = cached
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self.running, seq, key=lambda s: s.seq_id)
            seqs.append(seq)
            counts.append(n)
            reserved += need
            budget -= n
