"""Autoregressive generation for one prompt, counted as llama2.c's run.c counts it.

``steps`` is the number of forward positions (run.c's -n): the returned tokens are the ``steps``
tokens that follow BOS, the prompt's own tokens included, unless a stop token comes first.
The prompt is prefilled in one forward pass; decode then runs one token per step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .analysis.cost import CostCounter
from .config import SamplingParams
from .kv_cache import OneSequenceDecode
from .model import Model
from .ops import Ops
from .sampling import Sampler
from .tokenization import with_stop_ids


@dataclass
class GenerationResult:
    prompt_ids: list[int]           # BOS + the prompt's tokens
    output_ids: list[int]           # tokens after BOS that were emitted: prompt tail + generated
    n_generated: int                # tokens sampled by the model
    stop_reason: str                # "steps" or "stop token <id>"
    ttft_s: float                   # start of prefill to the first sampled token
    decode_time_s: float            # time of the decode steps after the first token
    kv_blocks_in_use: int           # at the end of the run, before the cache is freed
    kv_bytes_in_use: int
    step_q_lens: list[int] = field(default_factory=list)   # tokens per forward pass, for replay

    @property
    def decode_tokens_per_s(self) -> float:
        n = self.n_generated - 1
        return n / self.decode_time_s if n > 0 and self.decode_time_s > 0 else float("nan")


# SamplingParams this one-sequence loop does not model, with their "off" values: refused, not ignored.
_ONE_SEQUENCE_OFF = (("n", 1), ("stop", ()), ("logprobs", None), ("prompt_logprobs", None),
                     ("include_stop_str_in_output", False))


def generate(model: Model, prompt_ids: list[int], steps: int, params: SamplingParams,
             on_token: Callable[[int, int], None] | None = None, block_size: int = 16) -> GenerationResult:
    """Run one sequence. ``on_token(prev_id, id)`` is called for each emitted token, in order
    (prompt tokens after BOS first), so a caller can stream text as it comes."""
    params = with_stop_ids(params, None)           # unset: llama2.c's 1/2 (callers with a tokenizer fill it)
    unmodelled = [name for name, off in _ONE_SEQUENCE_OFF if getattr(params, name) != off]
    if unmodelled:
        raise ValueError(f"generate() runs one sequence and returns only its tokens: SamplingParams "
                         f"{', '.join(unmodelled)} need pyinfer.LLM (the engine)")
    history = params.min_tokens > 0 or Sampler(params).has_penalties   # the sampler reads the tokens so far
    ctx = model.config.max_seq_len
    if not prompt_ids:
        raise ValueError("the prompt encodes to no tokens; it needs at least BOS")
    if len(prompt_ids) > ctx:
        raise ValueError(f"prompt is {len(prompt_ids)} tokens, longer than the model's context of {ctx}")
    if steps <= 0 or steps > ctx:
        steps = ctx                                   # run.c's rule: 0 or too many means the context
    sampler = Sampler(params, model.ops)
    cache = model.new_cache(block_size=block_size)
    out: list[int] = []

    def emit(prev: int, token: int) -> None:
        out.append(token)
        if on_token:
            on_token(prev, token)

    n_prefill = min(len(prompt_ids), steps)
    t0 = time.perf_counter()
    logits = model.forward(cache.prepare([0], [np.asarray(prompt_ids[:n_prefill])]), cache)[0]
    q_lens = [n_prefill]                              # tokens of each forward pass
    n_generated, stop_reason, decode_time_s = 0, "steps", 0.0
    if n_prefill < len(prompt_ids):                   # the steps end inside the prompt (run.c prints it)
        ttft_s = time.perf_counter() - t0
        for i in range(1, n_prefill + 1):
            emit(prompt_ids[i - 1], prompt_ids[i])
    else:
        generated: list[int] = []                     # this sequence's sampled tokens (penalties, min_tokens)
        token = sampler.sample(logits, prompt_ids=prompt_ids, output_ids=generated) if history \
            else sampler.sample(logits)
        ttft_s = time.perf_counter() - t0
        for i in range(1, n_prefill):
            emit(prompt_ids[i - 1], prompt_ids[i])
        prev, n_forwarded = prompt_ids[-1], n_prefill
        steps_of = OneSequenceDecode(cache, 0)
        t1 = time.perf_counter()
        while True:
            if token in params.stop_token_ids:
                stop_reason = f"stop token {token}"
                break
            emit(prev, token)
            n_generated += 1
            if history:
                generated.append(token)
            if n_forwarded >= steps:
                break
            logits = model.forward(steps_of.step(token), cache)[0]
            q_lens.append(1)
            n_forwarded += 1
            prev, token = token, (sampler.sample(logits, prompt_ids=prompt_ids, output_ids=generated) if history
                                  else sampler.sample(logits))
        decode_time_s = time.perf_counter() - t1
    res = GenerationResult(list(prompt_ids), out, n_generated, stop_reason, ttft_s, decode_time_s,
                           cache.blocks_in_use(), cache.bytes_in_use(), q_lens)
    cache.free(0)
    return res


def count_costs(model: Model, result: GenerationResult, block_size: int = 16) -> CostCounter:
    """Replay a finished run's forward passes with counting-only ops: the FLOPs and bytes of every
    op call, by phase (the prefill pass, then decode), without disturbing the run's timing."""
    counter = CostCounter()
    # Costs depend only on shapes: replay on the host weights through the numpy registry, whatever
    # backend (GPU tensors, fused C steps) ran, so every op call is counted the same way.
    dry = Model(model.host_weights, Ops("numpy", counter=counter, execute=False))
    cache = dry.new_cache(block_size=block_size)
    tokens = result.prompt_ids + result.output_ids[len(result.prompt_ids) - 1:]
    pos = 0
    for i, n in enumerate(result.step_q_lens):
        counter.phase = "prefill" if i == 0 else "decode"
        dry.forward(cache.prepare([0], [np.asarray(tokens[pos:pos + n])]), cache)
        pos += n
    return counter
