"""Speculative decoding inside the engine (vLLM's draft-model speculative decoding), with continuous
batching, prefix caching, chunked prefill and preemption all still on.

Each step, a decoding sequence that speculates (``Speculator.lookahead`` > 0) feeds the target its
pending token plus k_i draft tokens, and the target's k_i + 1 logits rows decide how many are kept
(the rejection rule of engine/speculative.py, so sampled outputs keep exactly the target's
distribution; greedy keeps a draft token exactly when it is the target's argmax, so greedy outputs are
the plain engine's). k_i = min(k, what max_tokens and the context leave), cut further by the step's
token budget; the scheduler reserves its KV slots, the rejected ones are truncated in the same step.

The draft model keeps its own paged KV cache (same block size and pool size, prefix caching as the
target's) in lockstep with the target: in a step's first draft pass it computes the tokens the target
computes in that step (prefill chunks included), so a decode's first proposal needs no catch-up prefill;
then k_i - 1 one-token passes. A sequence whose tokens the draft pool cannot hold this step, or whose
draft logits are not finite, simply verifies fewer (or no) drafts: the draft only proposes, it never
changes an output. Everything here happens inside the engine's step transaction.

Which sequences speculate: greedy ones always (their verification is the engine's own sampler, row by
row, so penalties, min_tokens, logprobs and stop rules apply exactly as without a draft); sampled ones
when the rule models their sampling: no penalties, no min_p, no logprobs, and min_tokens already met.
The others decode one token a step beside them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..model import Model
from ..sampling import NonFiniteLogitsError
from .model_runner import make_cache
from .probs import sample_from, sampling_probs
from .scheduler import ScheduledBatch
from .sequence import Sequence
from .speculative import expected_tokens_per_step, verify_draft


@dataclass
class SpecCounters:
    """The engine's speculative-decoding totals (restored with the rest of a failed step)."""
    k: int
    draft_passes: int = 0       # draft forward passes
    rounds: int = 0             # verification rounds: one per speculating sequence per step
    proposed: int = 0           # draft tokens fed to the target
    evaluated: int = 0          # of those, the ones the rule looked at (none after a rejection)
    accepted: int = 0
    emitted: int = 0            # tokens the rounds produced (accepted + the one after them), stops included
    full_rounds: int = 0        # rounds that verified all k drafts
    full_round_tokens: int = 0

    def to_dict(self) -> dict:
        acc = self.accepted / self.evaluated if self.evaluated else float("nan")
        return {**asdict(self), "acceptance_rate": acc,
                "mean_tokens_per_round": self.full_round_tokens / self.full_rounds if self.full_rounds else
                float("nan"), "expected_tokens_per_round": expected_tokens_per_step(acc, self.k) if acc == acc
                else float("nan")}


@dataclass
class Proposal:
    """A sequence's draft tokens this step and, when it samples, the (V,) distribution each was drawn from."""
    tokens: list[int] = field(default_factory=list)
    q: list[np.ndarray] = field(default_factory=list)


class Speculator:
    def __init__(self, draft: Model, k: int, max_seq_len: int, block_size: int, num_blocks: int,
                 enable_prefix_caching: bool):
        self.draft, self.k, self.max_seq_len = draft, k, max_seq_len
        self.cache = make_cache(draft, block_size, num_blocks, enable_prefix_caching)
        self.counters = SpecCounters(k=k)

    # ---- which sequences, how many tokens ----------------------------------------------------------

    @staticmethod
    def speculates(seq: Sequence) -> bool:
        """Whether the acceptance rule models this sequence's sampling (see the module docstring)."""
        p = seq.params
        if seq.sampler.is_greedy:
            return p.prompt_logprobs is None
        return (p.logprobs is None and p.prompt_logprobs is None and p.min_p == 0
                and not seq.sampler.has_penalties)

    def lookahead(self, seq: Sequence) -> int:
        """Draft tokens a decoding sequence verifies with its pending token: k, less what max_tokens
        and the context leave (the pending token's step emits up to k + 1 tokens, at positions up to
        num_tokens - 1 + k)."""
        if not self.speculates(seq):
            return 0
        n_out = len(seq.token_ids) - len(seq.prompt_ids)
        if not seq.sampler.is_greedy and n_out < seq.params.min_tokens:
            return 0
        return max(0, min(self.k, seq.params.max_tokens - n_out - 1, self.max_seq_len - seq.num_tokens))

    # ---- proposing -----------------------------------------------------------------------------

    def propose(self, batch: ScheduledBatch, save_rng) -> tuple[ScheduledBatch, dict[int, Proposal]]:
        """Run the draft for this step: the batch with each speculating decode's count set to
        1 + the drafts it got, and seq_id -> Proposal. ``save_rng(seq)`` is called before a draw."""
        fed, props = {}, {}                    # seq -> token ids the first pass feeds; seq_id -> Proposal
        reserved = 0                           # draft blocks promised to the sequences taken so far
        for seq, n in zip(batch.seqs, batch.num_tokens):
            if not self.speculates(seq):
                continue
            end = seq.num_computed_tokens + min(n, seq.num_uncomputed)      # what the target computes this step
            if seq.num_draft_computed == 0 and seq.seq_id not in self.cache.block_tables:
                seq.num_draft_computed = self.cache.match_prefix(seq.seq_id, seq.token_ids[:end])
            drafts = n - 1 if seq.num_uncomputed == 1 else 0                 # the scheduler's k_i
            need = self.cache.blocks_needed(seq.seq_id, end - seq.num_draft_computed + max(0, drafts - 1))
            if need > self.cache.num_free_blocks - reserved:
                continue                                                     # the draft pool is full: no drafts
            reserved += need
            fed[seq] = seq.token_ids[seq.num_draft_computed:end]
            if drafts:
                props[seq.seq_id] = Proposal()
        if fed:
            self._first_pass(fed, props, save_rng)
        want = {seq.seq_id: n for seq, n in zip(batch.seqs, batch.num_tokens) if seq.seq_id in props}
        for j in range(1, max(want.values(), default=1) - 1):
            group = [s for s in fed if s.seq_id in props and len(props[s.seq_id].tokens) == j < want[s.seq_id] - 1]
            if not group:
                break
            meta = self.cache.prepare([s.seq_id for s in group], [np.array(props[s.seq_id].tokens[-1:], np.int64)
                                                                  for s in group], register=False)
            self.counters.draft_passes += 1
            logits = self.draft.forward(meta, self.cache)                               # (B_j, V)
            self.cache.register_full_blocks(meta.seq_ids)
            for s, row in zip(group, logits):
                s.num_draft_computed += 1
                self._draw(s, row, props[s.seq_id], save_rng)
        counts = tuple(n if s.num_uncomputed > 1 else 1 + len(props[s.seq_id].tokens) if s.seq_id in props else 1
                       for s, n in zip(batch.seqs, batch.num_tokens))
        props = {sid: p for sid, p in props.items() if p.tokens}
        return ScheduledBatch(batch.seqs, counts, batch.preempted), props

    def _first_pass(self, fed: dict, props: dict, save_rng) -> None:
        seqs = list(fed)
        meta = self.cache.prepare([s.seq_id for s in seqs], [np.asarray(fed[s], np.int64) for s in seqs],
                                  register=False)
        ends = meta.cu_seqlens_q[1:]                                                   # (B,)
        rows = np.array([e - 1 for s, e in zip(seqs, ends) if s.seq_id in props], np.int64)
        self.counters.draft_passes += 1
        logits = self.draft.forward(meta, self.cache, logit_rows=rows)                 # (len(props), V)
        self.cache.register_full_blocks(meta.seq_ids)
        it = iter(logits)
        for s in seqs:
            s.num_draft_computed += len(fed[s])
            if s.seq_id in props:
                self._draw(s, next(it), props[s.seq_id], save_rng)

    def _draw(self, seq: Sequence, row: np.ndarray, prop: Proposal, save_rng) -> None:
        """One draft token from the draft's logits row (V,). A row without a finite maximum adds none,
        which ends this proposal (later passes take only proposals as long as the pass number)."""
        try:
            if seq.sampler.is_greedy:
                row = np.asarray(row)
                token = int(np.argmax(row))
                if not np.isfinite(row[token]):
                    return
            else:
                q = sampling_probs(row, seq.params, self.draft.ops, f"draft of request {seq.request_id}")
                save_rng(seq)
                token = sample_from(q, seq.sampler.rng)
                prop.q.append(q)
        except NonFiniteLogitsError:
            return
        prop.tokens.append(token)
        self.counters.proposed += 1

    # ---- after verification ----------------------------------------------------------------------

    def verify_sampled(self, seq: Sequence, rows: np.ndarray, prop: Proposal, target_ops, save_rng
                       ) -> tuple[list[int], int, str | None]:
        """The rejection rule (speculative.verify_draft) over the target's rows (k_i + 1, V), each
        turned into probabilities only when the rule reaches it: the tokens to emit, how many of them
        are kept drafts, and an error message if a row it needed had no finite maximum (the drafts
        before that row stand)."""
        save_rng(seq)
        reached = []                                                  # rows the rule has asked for

        def p_row(j: int) -> np.ndarray:                              # (V,)
            reached.append(j)
            return sampling_probs(rows[j], seq.params, target_ops, f"verification of request {seq.request_id}")
        try:
            m, nxt = verify_draft(prop.tokens, prop.q, p_row, seq.sampler.rng, greedy=False)
        except NonFiniteLogitsError as e:
            return prop.tokens[:reached[-1]], reached[-1], str(e)
        return prop.tokens[:m] + [nxt], m, None

    def settle(self, seq: Sequence, num_drafts: int, accepted: int, emitted: int) -> None:
        """Count the round (``emitted`` tokens came out of it, ``accepted`` of its ``num_drafts`` drafts
        were kept); keep the draft's K/V only for tokens the target kept (seq.num_computed_tokens)."""
        c = self.counters
        c.rounds += 1
        c.evaluated += min(emitted, num_drafts)
        c.accepted += accepted
        c.emitted += emitted
        if num_drafts == self.k:
            c.full_rounds += 1
            c.full_round_tokens += emitted
        keep = min(seq.num_draft_computed, seq.num_computed_tokens)
        if keep < self.cache.seq_lens.get(seq.seq_id, 0):
            self.cache.truncate(seq.seq_id, keep)
        seq.num_draft_computed = keep

    def free(self, seq: Sequence) -> None:
        self.cache.free(seq.seq_id)
        seq.num_draft_computed = 0
