"""A request inside the engine: its tokens, how many of them are in the KV cache, its sampler,
its timestamps; and the request checks done at the door (``check_request``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from ..config import SamplingParams
from ..sampling import Sampler
from .metrics import RequestMetrics
from .outputs import CompletionOutput, Logprob, RequestOutput  # noqa: F401 - re-exported


class SequenceStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One request. ``token_ids`` is prompt + output; the first ``num_computed_tokens`` of them
    have K/V in the cache. The step that computes the last token samples the next one, so a
    decode is simply a sequence with one uncomputed token, and a preempted sequence (computed
    count reset to 0) is recomputed as one long prefill of prompt + output."""

    seq_id: int
    prompt_ids: list[int]
    params: SamplingParams
    sampler: Sampler
    arrival_s: float
    token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None
    token_times_s: list[float] = field(default_factory=list)   # when each sampled token came out
    finish_s: float | None = None
    num_preemptions: int = 0
    num_cached_tokens: int = 0      # prompt tokens found in the prefix cache at first admission
    num_prefill_chunks: int = 0     # forward passes that computed part of the prompt (or a recompute)
    error: str | None = None        # why it finished with finish_reason "error"
    # the request it belongs to (n samples share one) and its sample index
    request_id: int = -1
    index: int = 0
    # what a step changes below is rebound, never mutated in place, so a failed step's rollback
    # (transaction.py restores __dict__) restores it
    stop_token: int | None = None   # the stop token that ended it (not in token_ids: never in the cache)
    stop_reason: int | str | None = None
    text: str = ""                  # decoded output text so far (cut at a stop string)
    prefix_offset: int = 0          # incremental detokenization window (outputs.detokenize)
    read_offset: int = 0
    emitted_chars: int = 0          # text and tokens already handed out in a RequestOutput
    emitted_tokens: int = 0
    cumulative_logprob: float = 0.0
    logprobs: tuple = ()            # one {token: Logprob} per output token, when params.logprobs is set
    # prompt_logprobs: one {token: Logprob} per prompt token after the first, computed so far (sample 0
    # of a request with params.prompt_logprobs set; entry j-1 is prompt token j's, from position j-1's logits)
    prompt_logprobs: tuple = ()
    first_scheduled_s: float | None = None   # when a step first took it (queue time ends)
    num_draft_computed: int = 0     # of token_ids, how many the draft model's KV cache holds (spec_decode.py)

    def __post_init__(self):
        if not self.token_ids:
            self.token_ids = list(self.prompt_ids)
        if self.request_id < 0:
            self.request_id = self.seq_id
        self.read_offset = len(self.prompt_ids)
        self.prefix_offset = max(len(self.prompt_ids) - 5, 0)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_ids):]

    @property
    def collects_prompt_logprobs(self) -> bool:
        """True while this sequence still has prompt logprobs to compute: its forward passes need the
        logits of every row (all_logits), and its cached prefix may not skip a position not yet done."""
        return (self.params.prompt_logprobs is not None and self.index == 0
                and len(self.prompt_logprobs) < len(self.prompt_ids) - 1)

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def metrics(self) -> RequestMetrics:
        return RequestMetrics(arrival_s=self.arrival_s, token_times_s=tuple(self.token_times_s),
                              finish_s=self.finish_s, prompt_len=len(self.prompt_ids),
                              num_output_tokens=len(self.token_times_s), num_preemptions=self.num_preemptions,
                              num_cached_tokens=self.num_cached_tokens, first_scheduled_s=self.first_scheduled_s)


def max_cache_tokens(prompt_len: int, max_tokens: int, max_seq_len: int) -> int:
    """The most tokens a request ever holds in the KV cache: every token but the last sampled one."""
    return min(prompt_len + max_tokens - 1, max_seq_len)


def check_params(params: SamplingParams, vocab_size: int) -> None:
    """SamplingParams checks itself at construction; check again at the door, since a frozen
    dataclass can still be mutated through object.__setattr__ or a look-alike passed in."""
    if not isinstance(params, SamplingParams):
        raise ValueError(f"params must be SamplingParams, got {type(params).__name__}")
    try:
        SamplingParams(**{f: getattr(params, f) for f in SamplingParams.__dataclass_fields__})
    except (TypeError, ValueError) as e:
        raise ValueError(str(e)) from None
    bad = [s for s in params.stop_token_ids if not (isinstance(s, (int, np.integer)) and 0 <= s < vocab_size)]
    if bad:
        raise ValueError(f"stop_token_ids {bad} are not token ids of a vocab of {vocab_size}")
    if params.logprobs is not None and params.logprobs > vocab_size:
        raise ValueError(f"logprobs={params.logprobs} is more than the vocab's {vocab_size} tokens")
    if params.prompt_logprobs is not None and params.prompt_logprobs > vocab_size:
        raise ValueError(f"prompt_logprobs={params.prompt_logprobs} is more than the vocab's {vocab_size} tokens")


def check_prompt_ids(prompt_ids, vocab_size: int, max_seq_len: int) -> list[int]:
    """The prompt as a list of ints, or ValueError naming what is wrong with it."""
    try:
        ids = np.asarray(prompt_ids)
    except (TypeError, ValueError) as e:
        raise ValueError(f"prompt must be a string or a sequence of token ids: {e}") from None
    if ids.ndim != 1:
        raise ValueError(f"prompt token ids must be one flat sequence, got shape {ids.shape}")
    if ids.size == 0:
        raise ValueError("empty prompt: a request needs at least one token")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"prompt token ids must be integers, got dtype {ids.dtype}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"prompt token ids must be in [0, {vocab_size}), got [{ids.min()}, {ids.max()}]")
    if ids.size > max_seq_len:
        raise ValueError(f"prompt is {ids.size} tokens, longer than the model's context of {max_seq_len}")
    return [int(t) for t in ids]
