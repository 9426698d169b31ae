"""A request inside the engine: its tokens, how many of them are in the KV cache, its sampler,
its timestamps; and the request checks done at the door (``check_request``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from ..config import SamplingParams
from ..sampling import Sampler
from .metrics import RequestMetrics


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

    def __post_init__(self):
        if not self.token_ids:
            self.token_ids = list(self.prompt_ids)

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
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def metrics(self) -> RequestMetrics:
        return RequestMetrics(arrival_s=self.arrival_s, token_times_s=tuple(self.token_times_s),
                              finish_s=self.finish_s, prompt_len=len(self.prompt_ids),
                              num_output_tokens=len(self.token_times_s), num_preemptions=self.num_preemptions,
                              num_cached_tokens=self.num_cached_tokens)


@dataclass(frozen=True)
class RequestOutput:
    """A finished request. ``output_ids`` excludes a final stop token (it is in ``finish_reason``)."""
    request_id: int
    prompt_ids: list[int]
    output_ids: list[int]
    finish_reason: str          # "stop" (a stop token), "length" (max_tokens), "context" (model context full),
                                # "error" (its logits were not finite: ``error`` says where)
    metrics: RequestMetrics
    text: str | None = None
    error: str | None = None


def max_cache_tokens(prompt_len: int, max_tokens: int, max_seq_len: int) -> int:
    """The most tokens a request ever holds in the KV cache: every token but the last sampled one."""
    return min(prompt_len + max_tokens - 1, max_seq_len)


def check_params(params: SamplingParams, vocab_size: int) -> None:
    """SamplingParams checks itself at construction; check again at the door, since a frozen
    dataclass can still be mutated through object.__setattr__ or a look-alike passed in."""
    if not isinstance(params, SamplingParams):
        raise ValueError(f"params must be SamplingParams, got {type(params).__name__}")
    t, p, k, n = params.temperature, params.top_p, params.top_k, params.max_tokens
    if not (isinstance(t, (int, float)) and math.isfinite(t) and t >= 0):
        raise ValueError(f"temperature={t!r} must be a finite number >= 0 (0 is greedy)")
    if not (isinstance(p, (int, float)) and 0 < p <= 1):
        raise ValueError(f"top_p={p!r} must be in (0, 1]")
    if not (isinstance(k, (int, np.integer)) and k >= 0):
        raise ValueError(f"top_k={k!r} must be an int >= 0 (0 disables it)")
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"max_tokens={n!r} must be an int >= 1")
    if params.seed is not None and not isinstance(params.seed, (int, np.integer)):
        raise ValueError(f"seed={params.seed!r} must be an int or None")
    bad = [s for s in params.stop_token_ids if not (isinstance(s, (int, np.integer)) and 0 <= s < vocab_size)]
    if bad:
        raise ValueError(f"stop_token_ids {bad} are not token ids of a vocab of {vocab_size}")


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
