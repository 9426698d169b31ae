"""The serving loop: requests arrive at any time (``add_request``), each ``step`` runs one forward
pass over whatever the scheduler picked and returns a RequestOutput for every request that advanced
in it (its new tokens and text delta; ``finished`` on the last one), so a caller streams or filters.

    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=16))
    rid = engine.add_request("Once upon a time", SamplingParams(temperature=0.8, seed=1))
    while engine.has_unfinished():
        for out in engine.step():
            print(out.request_id, out.outputs[0].delta_text, end="")

A request with SamplingParams.n > 1 runs as n sequences (sample i seeded with seed + i, as vLLM's
parallel sampling) reported together in one RequestOutput.

SamplingParams.prompt_logprobs=N (vLLM's): RequestOutput.prompt_logprobs is [None, then one
{token: Logprob} per later prompt token: the token itself (with its rank) and the N most likely],
from the raw logits of the position before it. Sample 0 computes them: while it has positions left,
its forward passes ask the model for every row's logits (all_logits; the other rows of that batch are
computed too and dropped) and its cached prefix stops at the first position not done, so every value
is computed, in whatever chunks the prefill takes. A batch without such a sequence costs nothing extra.
"""

from __future__ import annotations

import time
from typing import Callable

from ..config import SamplingParams
from ..model import Model
import numpy as np

from ..sampling import NonFiniteLogitsError, Sampler, check_logits_max, log_softmax, top_logprobs
from ..tokenization import stop_ids_of, with_stop_ids
from ..tokenizer import check_tokenizer_matches
from .config import EngineConfig
from .model_runner import ModelRunner, batch_invariant_model, make_cache
from .outputs import Logprob, RequestOutput, completion_output, detokenize, find_stop_string
from .scheduler import Scheduler
from .sequence import Sequence, check_params, check_prompt_ids, max_cache_tokens
from .spec_decode import Speculator
from .transaction import StepTransaction


class Engine:
    def __init__(self, model: Model, tokenizer=None, config: EngineConfig | None = None,
                 clock: Callable[[], float] = time.perf_counter, seed: int | None = None,
                 max_model_len: int | None = None, draft_model: Model | None = None):
        """``seed``: seeds the generator that requests without their own SamplingParams.seed draw
        theirs from (vLLM's LLM(seed=)); None: fresh entropy. ``max_model_len``: a context shorter
        than the model's (prompt + output tokens per sequence); None: the model's. ``draft_model``:
        speculative decoding's proposer (same vocabulary; config.num_speculative_tokens > 0)."""
        self.config = config or EngineConfig()
        self.model = batch_invariant_model(model) if self.config.batch_invariant else model
        if tokenizer is not None:
            check_tokenizer_matches(tokenizer, model.config.vocab_size)
        self.tokenizer = tokenizer
        self.clock = clock
        c = model.config
        self.max_seq_len = c.max_seq_len
        if max_model_len is not None:
            if isinstance(max_model_len, bool) or not isinstance(max_model_len, int) or \
                    not 1 <= max_model_len <= c.max_seq_len:
                raise ValueError(f"max_model_len={max_model_len!r} must be an int in [1, {c.max_seq_len}] "
                                 f"(the model's context)")
            self.max_seq_len = max_model_len
        bytes_per_token = 2 * c.n_layers * c.kv_dim * 4
        num_blocks = self.config.resolve_num_blocks(self.max_seq_len, bytes_per_token)
        self.cache = make_cache(self.model, self.config.block_size, num_blocks, self.config.enable_prefix_caching)
        self.speculator = self._speculator(draft_model, num_blocks)
        self.scheduler = Scheduler(self.cache, self.config.max_num_seqs, self.config.max_num_batched_tokens,
                                   lookahead=self.speculator.lookahead if self.speculator else None)
        self.runner = ModelRunner(self.model, self.cache)
        self._next_id = 0
        self.num_steps = 0
        self.rng = np.random.default_rng(seed)
        self.eos_ids = frozenset(stop_ids_of(tokenizer))
        self.special_ids = self.eos_ids | {i for i in (getattr(tokenizer, "bos_id", None),
                                                       getattr(tokenizer, "eos_id", None)) if i is not None}
        self.requests: dict[int, tuple[str | None, list[Sequence]]] = {}   # request id -> (prompt text, samples)

    def _speculator(self, draft: Model | None, num_blocks: int) -> Speculator | None:
        k, c = self.config.num_speculative_tokens, self.model.config
        if draft is None and k == 0:
            return None
        if draft is None or k == 0:
            raise ValueError("speculative decoding needs both a draft_model and EngineConfig.num_speculative_tokens"
                             f" > 0; got draft_model={'a model' if draft is not None else None}, "
                             f"num_speculative_tokens={k}")
        if not isinstance(draft, Model):
            raise ValueError(f"draft_model must be a pyinfer Model, got {type(draft).__name__}")
        if draft.config.vocab_size != c.vocab_size:
            raise ValueError(f"draft_model's vocab of {draft.config.vocab_size} differs from the model's {c.vocab_size}")
        if draft.config.max_seq_len < self.max_seq_len:
            raise ValueError(f"draft_model's context of {draft.config.max_seq_len} is shorter than the engine's "
                             f"{self.max_seq_len}; pass a max_model_len it covers")
        if self.config.batch_invariant:
            draft = batch_invariant_model(draft)
        return Speculator(draft, k, self.max_seq_len, self.config.block_size, num_blocks,
                          self.config.enable_prefix_caching)

    # ---- requests in ---------------------------------------------------------------------

    def add_request(self, prompt, params: SamplingParams | None = None, arrival_s: float | None = None) -> int:
        """Queue a request; returns its id. ``prompt`` is text (encoded with the engine's tokenizer,
        BOS first) or a sequence of token ids. A request the engine could never serve raises
        ValueError here, naming the problem, and leaves the engine as it was."""
        c = self.model.config
        text = getattr(prompt, "text", None)          # token ids that came from a text (LLM.chat)
        if isinstance(prompt, (str, bytes)):
            if len(prompt) == 0:
                raise ValueError("empty prompt: a request needs at least one token")
            if self.tokenizer is None:
                raise ValueError("a text prompt needs a tokenizer; give the Engine one or pass token ids")
            text = prompt if isinstance(prompt, str) else None
            prompt = self.tokenizer.encode(prompt, bos=True)
        prompt_ids = check_prompt_ids(prompt, c.vocab_size, self.max_seq_len)
        params = with_stop_ids(SamplingParams() if params is None else params, self.tokenizer)
        check_params(params, c.vocab_size)
        need = max_cache_tokens(len(prompt_ids), params.max_tokens, self.max_seq_len)
        pool = self.cache.num_blocks * self.cache.block_size
        if need > pool:
            raise ValueError(
                f"request needs up to {need} tokens of KV cache (prompt {len(prompt_ids)} + max_tokens "
                f"{params.max_tokens}, capped by the context {self.max_seq_len}) but the pool holds {pool}; "
                "lower max_tokens or give the engine more blocks")
        if params.logprobs is not None and params.logprobs > c.vocab_size:
            raise ValueError(f"logprobs={params.logprobs} is more than the vocab's {c.vocab_size} tokens")
        arrival = self.clock() if arrival_s is None else float(arrival_s)
        request_id = self._next_id
        seqs = []
        for i in range(params.n):
            if params.seed is not None:
                rng = np.random.default_rng(params.seed + i)            # vLLM's child seeds: seed + index
            else:
                rng = np.random.default_rng(int(self.rng.integers(1 << 63)))
            seqs.append(Sequence(seq_id=self._next_id, prompt_ids=list(prompt_ids), params=params,
                                 sampler=Sampler(params, self.model.ops, rng), arrival_s=arrival,
                                 request_id=request_id, index=i))
            self._next_id += 1
        for seq in seqs:
            self.scheduler.add(seq)
        self.requests[request_id] = (text, seqs)
        return request_id

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def abort(self, request_id: int) -> RequestOutput | None:
        """Drop an unfinished request, every sample of it (their blocks go back to the pool): its
        final RequestOutput, the unfinished samples with finish_reason "abort"; None if it is not here."""
        if request_id not in self.requests:
            return None
        sch, seqs = self.scheduler, self.requests[request_id][1]
        queues, fields = (list(sch.waiting), list(sch.running)), [(s, s.__dict__.copy()) for s in seqs]
        caches = self._caches()
        for cache in caches:                     # a transaction, as a step is: a failure changes nothing
            cache.begin()
        try:
            for seq in seqs:
                if sch.abort(seq.seq_id):
                    seq.finish_s = self.clock()
                    if self.speculator:
                        self.speculator.free(seq)
        except BaseException:
            for cache in caches:
                cache.rollback()
            sch.waiting, sch.running = queues
            for seq, saved in fields:
                seq.__dict__.clear()
                seq.__dict__.update(saved)
            raise
        for cache in caches:
            cache.commit()
        out = self._output(request_id)
        del self.requests[request_id]
        return out

    def num_unfinished_requests(self) -> int:
        return len(self.requests)

    def _caches(self) -> list:
        """The KV caches a step changes: the model's, and the draft's when speculating."""
        return [self.cache, self.speculator.cache] if self.speculator else [self.cache]

    # ---- one step ----------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Schedule, run one forward pass, sample; a RequestOutput for each request that advanced.

        A transaction: if anything raises inside (a kernel error, MemoryError, KeyboardInterrupt),
        the engine is put back as it was before the step and the exception reaches the caller; the
        next step() continues correctly. A request whose own logits are not finite is finished
        with finish_reason "error" (and the message in ``error``) while the others go on."""
        txn = StepTransaction(self)
        try:
            outputs = self._step(txn)
        except BaseException:
            txn.rollback()
            raise
        txn.commit()
        for out in outputs:
            if out.finished:
                self.requests.pop(out.request_id, None)
        return outputs

    def _step(self, txn: StepTransaction) -> list[RequestOutput]:
        batch = self.scheduler.schedule()
        if not batch.seqs:
            if self.scheduler.has_unfinished():
                raise RuntimeError("scheduler found nothing to run although requests are waiting; "
                                   "this is a bug in the scheduler's block accounting")
            return []
        start = self.clock()
        for seq in batch.seqs:
            if seq.first_scheduled_s is None:
                seq.first_scheduled_s = start
        drafts = {}                                                       # seq_id -> Proposal
        if self.speculator:
            for seq in batch.preempted:
                self.speculator.free(seq)
            batch, drafts = self.speculator.propose(batch, txn.save_rng)
        # logits rows each sequence needs: every new one (prompt logprobs), its k_i + 1 (verification) or its last
        want = [n if seq.collects_prompt_logprobs else 1 + len(drafts[seq.seq_id].tokens) if seq.seq_id in drafts
                else 1 for seq, n in zip(batch.seqs, batch.num_tokens)]
        logits = self.runner.run(batch, rows_per_seq=want,
                                 drafts={sid: p.tokens for sid, p in drafts.items()})   # (sum(want), vocab)
        cu = np.concatenate([[0], np.cumsum(want)])                       # (B + 1,) logits rows of each sequence
        self.num_steps += 1
        now = self.clock()
        advanced: dict[int, None] = {}                                    # request ids, in batch order
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_tokens)):
            rows = logits[cu[i]:cu[i + 1]]                                # (want[i], vocab)
            if seq.collects_prompt_logprobs:
                self._prompt_logprobs(seq, rows)
            if seq.seq_id in drafts:
                self._verify(seq, rows, drafts[seq.seq_id], txn, now)
            else:
                seq.num_computed_tokens += n
                if seq.finish_reason is None:
                    if seq.num_computed_tokens < seq.num_tokens:
                        continue                                          # a prompt chunk, more to come
                    self._sample(seq, rows[-1], txn, now)
            if seq.finish_reason is not None:
                seq.finish_s = now
                self.scheduler.finish(seq)
                if self.speculator:
                    self.speculator.free(seq)
            advanced[seq.request_id] = None
        return [self._output(rid) for rid in advanced]

    def _verify(self, seq: Sequence, rows, prop, txn: StepTransaction, now: float) -> None:
        """A speculating decode: the target's rows (k_i + 1, V) for its pending token and k_i drafts decide
        which drafts it keeps (spec_decode.py); the tokens come out through the same stop rules as one
        sampled token does, and the cache keeps K/V only for the kept ones."""
        before, k_i = seq.num_computed_tokens, len(prop.tokens)
        emitted = accepted = 0
        if seq.sampler.is_greedy:               # the engine's own sampler row by row: exactly the plain output
            for j in range(k_i + 1):            # row j: the target's logits after the pending token and j drafts
                token = self._sample(seq, rows[j], txn, now)
                if token is None:
                    break
                emitted += 1
                kept = j < k_i and token == prop.tokens[j]
                accepted += kept
                if not kept or seq.finish_reason is not None:
                    break
        else:
            tokens, accepted, error = self.speculator.verify_sampled(seq, rows, prop, self.model.ops, txn.save_rng)
            for token in tokens:
                self._accept(seq, token, None, now)
                emitted += 1
                if seq.finish_reason is not None:
                    break
            if error is not None and seq.finish_reason is None:
                seq.finish_reason, seq.error = "error", error
        seq.num_computed_tokens = before + 1 + accepted          # the pending token and the kept drafts
        if seq.finish_reason is None:
            self.cache.truncate(seq.seq_id, seq.num_computed_tokens)
        self.speculator.settle(seq, k_i, accepted, emitted)

    def _sample(self, seq: Sequence, row, txn: StepTransaction, now: float) -> int | None:
        """Sample seq's next token from its logits row (V,) and apply the stop rules to it; the token,
        or None when the row had no finite maximum (seq then finishes with "error")."""
        p = seq.params
        if not seq.sampler.is_greedy:
            txn.save_rng(seq)
        history = seq.sampler.has_penalties or p.min_tokens > 0
        try:
            token = seq.sampler.sample(row, where=f"engine step {self.num_steps}, request {seq.request_id}",
                                       prompt_ids=seq.prompt_ids if history else (),
                                       output_ids=seq.output_ids if history else ())
        except NonFiniteLogitsError as e:                                 # this request's own data: it alone ends
            seq.finish_reason, seq.error = "error", str(e)
            return None
        self._accept(seq, token, row, now)
        return token

    def _accept(self, seq: Sequence, token: int, row, now: float) -> None:
        """seq's next token is ``token`` (sampled from logits ``row`` (V,); None where logprobs are not
        asked for): record it, or end seq on a stop token, max_tokens, the context or a stop string."""
        p = seq.params
        seq.token_times_s.append(now)
        if p.logprobs is not None:
            lp = log_softmax(np.asarray(row))
            entry = {t: Logprob(v, r, self._piece(t)) for t, v, r in top_logprobs(lp, token, p.logprobs)}
            seq.logprobs = seq.logprobs + (entry,)
            seq.cumulative_logprob = seq.cumulative_logprob + float(lp[token])
        if token in p.stop_token_ids:
            seq.finish_reason, seq.stop_token = "stop", token
            seq.stop_reason = None if token in self.eos_ids else token
        else:
            seq.token_ids.append(token)
            if len(seq.token_ids) - len(seq.prompt_ids) >= p.max_tokens or seq.num_tokens > self.max_seq_len:
                seq.finish_reason = "length"
        if self.tokenizer is not None:
            before = len(seq.text)
            detokenize(seq, self.tokenizer, self.special_ids, final=seq.finish_reason is not None)
            if p.stop and seq.stop_token is None and len(seq.output_ids) >= p.min_tokens:
                find_stop_string(seq, len(seq.text) - before)

    def _prompt_logprobs(self, seq: Sequence, rows) -> None:
        """Extend seq.prompt_logprobs from this step's logits rows (n, V) of positions
        num_computed_tokens.. : position p's row gives prompt token p + 1's entry. Rebinds the
        tuple (the step's rollback restores it). Non-finite logits end the sequence with "error"."""
        start, done, prompt = seq.num_computed_tokens, len(seq.prompt_logprobs), seq.prompt_ids
        if start > done:
            raise RuntimeError(f"request {seq.request_id}: prompt logprobs are known up to token {done} but its "
                               f"forward starts at position {start}; this is a bug in the prefix-cache cap")
        num = seq.params.prompt_logprobs
        new = []
        for p in range(done, min(start + len(rows), len(prompt) - 1)):
            row = np.asarray(rows[p - start])                             # (V,) logits at position p
            try:
                check_logits_max(row.max(), row, f"engine step {self.num_steps}, request {seq.request_id}, "
                                                 f"prompt position {p}")
            except NonFiniteLogitsError as e:
                seq.finish_reason, seq.error = "error", str(e)
                break
            lp = log_softmax(row)
            new.append({t: Logprob(v, r, self._piece(t)) for t, v, r in top_logprobs(lp, prompt[p + 1], num)})
        seq.prompt_logprobs = seq.prompt_logprobs + tuple(new)

    def _piece(self, token: int) -> str | None:
        if self.tokenizer is None:
            return None
        return self.tokenizer.decode([token])

    def run_until_done(self) -> list[RequestOutput]:
        """Step until every request has finished; the final output of each, in finishing order."""
        outputs = []
        while self.has_unfinished():
            outputs.extend(o for o in self.step() if o.finished)
        return outputs

    def _output(self, request_id: int) -> RequestOutput:
        text, seqs = self.requests[request_id]
        outs = [completion_output(s, s.index) for s in seqs]
        first = seqs[0]
        prompt_logprobs = None                                            # asked for and complete, else None
        if first.params.prompt_logprobs is not None and len(first.prompt_logprobs) == len(first.prompt_ids) - 1:
            prompt_logprobs = [None, *first.prompt_logprobs]
        return RequestOutput(request_id=request_id, prompt=text, prompt_token_ids=list(first.prompt_ids),
                             outputs=outs, finished=all(s.finish_reason is not None for s in seqs),
                             metrics=outs[0].metrics, prompt_logprobs=prompt_logprobs)

    # ---- reporting ---------------------------------------------------------------------------

    def stats(self) -> dict:
        s, m = self.scheduler, self.cache.manager
        return {
            "steps": self.num_steps,
            "preemptions": s.num_preemptions,
            "cut_prefill_chunks": s.num_cut_prefills,
            "prefix_cache_hit_rate": s.prefix_hit_tokens / s.prefix_query_tokens if s.prefix_query_tokens else 0.0,
            "prefix_hit_tokens": s.prefix_hit_tokens,
            "prefix_query_tokens": s.prefix_query_tokens,
            "num_blocks": self.cache.num_blocks,
            "block_size": self.cache.block_size,
            "peak_blocks_in_use": self.cache.peak_blocks_in_use,
            "blocks_allocated": m.num_allocated,
            "cached_blocks": m.num_cached,
            "evicted_blocks": m.num_evicted,
            "speculative": self.speculator.counters.to_dict() if self.speculator else None,
        }
