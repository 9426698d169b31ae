"""The serving loop: requests arrive at any time (``add_request``), each ``step`` runs one forward
pass over whatever the scheduler picked and returns the requests that finished in it.

    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=16))
    rid = engine.add_request("Once upon a time", SamplingParams(temperature=0.8, seed=1))
    while engine.has_unfinished():
        for out in engine.step():
            print(out.request_id, out.text)
"""
from __future__ import annotations

import time
from typing import Callable

from ..config import SamplingParams
from ..model import Model
from ..sampling import NonFiniteLogitsError, Sampler
from ..tokenization import with_stop_ids
from ..tokenizer import check_tokenizer_matches
from .config import EngineConfig
from .model_runner import ModelRunner, batch_invariant_model, make_cache
from .scheduler import Scheduler
from .sequence import (RequestOutput, Sequence, check_params, check_prompt_ids,
                       max_cache_tokens)
from .transaction import StepTransaction


class Engine:
    def __init__(self, model: Model, tokenizer=None, config: EngineConfig | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.config = config or EngineConfig()
        self.model = batch_invariant_model(model) if self.config.batch_invariant else model
        if tokenizer is not None:
            check_tokenizer_matches(tokenizer, model.config.vocab_size)
        self.tokenizer = tokenizer
        self.clock = clock
        c = model.config
        bytes_per_token = 2 * c.n_layers * c.kv_dim * 4
        num_blocks = self.config.resolve_num_blocks(c.max_seq_len, bytes_per_token)
        self.cache = make_cache(self.model, self.config.block_size, num_blocks, self.config.enable_prefix_caching)
        self.scheduler = Scheduler(self.cache, self.config.max_num_seqs, self.config.max_num_batched_tokens)
        self.runner = ModelRunner(self.model, self.cache)
        self._next_id = 0
        self.num_steps = 0

    # ---- requests in ---------------------------------------------------------------------

    def add_request(self, prompt, params: SamplingParams | None = None, arrival_s: float | None = None) -> int:
        """Queue a request; returns its id. ``prompt`` is text (encoded with the engine's tokenizer,
        BOS first) or a sequence of token ids. A request the engine could never serve raises
        ValueError here, naming the problem, and leaves the engine as it was."""
        c = self.model.config
        if isinstance(prompt, (str, bytes)):
            if len(prompt) == 0:
                raise ValueError("empty prompt: a request needs at least one token")
            if self.tokenizer is None:
                raise ValueError("a text prompt needs a tokenizer; give the Engine one or pass token ids")
            prompt = self.tokenizer.encode(prompt, bos=True)
        prompt_ids = check_prompt_ids(prompt, c.vocab_size, c.max_seq_len)
        params = with_stop_ids(SamplingParams() if params is None else params, self.tokenizer)
        check_params(params, c.vocab_size)
        need = max_cache_tokens(len(prompt_ids), params.max_tokens, c.max_seq_len)
        pool = self.cache.num_blocks * self.cache.block_size
        if need > pool:
            raise ValueError(
                f"request needs up to {need} tokens of KV cache (prompt {len(prompt_ids)} + max_tokens "
                f"{params.max_tokens}, capped by the context {c.max_seq_len}) but the pool holds {pool}; "
                "lower max_tokens or give the engine more blocks")
        seq = Sequence(seq_id=self._next_id, prompt_ids=prompt_ids, params=params,
                       sampler=Sampler(params, self.model.ops),
                       arrival_s=self.clock() if arrival_s is None else float(arrival_s))
        self._next_id += 1
        self.scheduler.add(seq)
        return seq.seq_id

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def abort(self, request_id: int) -> bool:
        """Drop an unfinished request (its blocks go back to the pool); False if it is not here."""
        return self.scheduler.abort(request_id)

    # ---- one step ----------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Schedule, run one forward pass, sample; the requests that finished in this step.

        A transaction: if anything raises inside (a kernel error, MemoryError, KeyboardInterrupt),
        the engine is put back as it was before the step and the exception reaches the caller; the
        next step() continues correctly. A request whose own logits are not finite is finished
        with finish_reason "error" (and the message in ``error``) while the others go on."""
        txn = StepTransaction(self)
        try:
            finished = self._step(txn)
        except BaseException:
            txn.rollback()
            raise
        txn.commit()
        return finished

    def _step(self, txn: StepTransaction) -> list[RequestOutput]:
        batch = self.scheduler.schedule()
        if not batch.seqs:
            if self.scheduler.has_unfinished():
                raise RuntimeError("scheduler found nothing to run although requests are waiting; "
                                   "this is a bug in the scheduler's block accounting")
            return []
        logits = self.runner.run(batch)                                   # (B, vocab)
        self.num_steps += 1
        now = self.clock()
        max_seq_len = self.model.config.max_seq_len
        finished = []
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_tokens)):
            seq.num_computed_tokens += n
            if seq.num_computed_tokens < seq.num_tokens:
                continue                                                  # a prompt chunk, more to come
            if not seq.sampler.is_greedy:
                txn.save_rng(seq)
            try:
                token = seq.sampler.sample(logits[i], where=f"engine step {self.num_steps}, request {seq.seq_id}")
            except NonFiniteLogitsError as e:                             # this request's own data: it alone ends
                seq.finish_reason, seq.error = "error", str(e)
            else:
                seq.token_times_s.append(now)
                if token in seq.params.stop_token_ids:
                    seq.finish_reason = "stop"
                else:
                    seq.token_ids.append(token)
                    if len(seq.token_ids) - len(seq.prompt_ids) >= seq.params.max_tokens:
                        seq.finish_reason = "length"
                    elif seq.num_tokens > max_seq_len:
                        seq.finish_reason = "context"
            if seq.finish_reason is not None:
                seq.finish_s = now
                self.scheduler.finish(seq)
                finished.append(self._output(seq))
        return finished

    def run_until_done(self) -> list[RequestOutput]:
        outputs = []
        while self.has_unfinished():
            outputs.extend(self.step())
        return outputs

    def _output(self, seq: Sequence) -> RequestOutput:
        text = None
        if self.tokenizer is not None:
            stream = self.tokenizer.stream(prev_token=seq.prompt_ids[-1])
            text = "".join(stream.feed(t) for t in seq.output_ids) + stream.flush()
        return RequestOutput(request_id=seq.seq_id, prompt_ids=list(seq.prompt_ids), output_ids=seq.output_ids,
                             finish_reason=seq.finish_reason, metrics=seq.metrics(), text=text, error=seq.error)

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
        }
