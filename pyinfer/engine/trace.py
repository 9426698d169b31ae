"""Synthetic serving traces and their replay against an Engine in real time.

A trace is a list of requests with arrival times drawn from a Poisson process (exponential gaps
at ``rate_per_s`` requests per second; ``inf`` puts every arrival at 0), prompt and output
lengths drawn from the given distributions, prompt tokens uniform over the vocabulary (BOS first),
everything from one seed. Output lengths are exact: stop tokens are disabled, as serving
benchmarks usually do (vLLM's ``ignore_eos``), so every request emits ``max_tokens`` tokens
unless it reaches the model's context first.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..config import SamplingParams
from .engine import Engine
from .sequence import RequestOutput

BOS_ID, FIRST_ORDINARY_ID = 1, 3


@dataclass(frozen=True)
class LengthDist:
    """``N`` or ``fixed:N``, ``uniform:LO:HI`` (inclusive), ``normal:MEAN:STD``, ``exp:MEAN``;
    samples are rounded and clipped to at least 1 (a normal or exponential tail's draws below 1)."""
    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> "LengthDist":
        parts = str(spec).split(":")
        try:
            kind, nums = ("fixed", [float(parts[0])]) if len(parts) == 1 else (parts[0], [float(x) for x in parts[1:]])
        except ValueError:
            raise ValueError(f"bad length distribution {spec!r}: numbers expected") from None
        want = {"fixed": 1, "uniform": 2, "normal": 2, "exp": 1}
        if kind not in want or len(nums) != want[kind]:
            raise ValueError(f"bad length distribution {spec!r}; use N, fixed:N, uniform:LO:HI, "
                             "normal:MEAN:STD or exp:MEAN")
        if not all(math.isfinite(x) for x in nums):
            raise ValueError(f"bad length distribution {spec!r}: finite numbers expected")
        if kind in ("fixed", "uniform") and not all(x == int(x) for x in nums):
            raise ValueError(f"bad length distribution {spec!r}: lengths are whole numbers")
        d = cls(kind, *nums)
        if d.a < 1 or (kind == "uniform" and d.b < d.a) or d.b < 0:
            raise ValueError(f"bad length distribution {spec!r}: lengths (and a mean) must be >= 1 and LO <= HI")
        return d

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            x = np.full(n, self.a)
        elif self.kind == "uniform":
            x = rng.integers(int(self.a), int(self.b) + 1, n)
        elif self.kind == "normal":
            x = rng.normal(self.a, self.b, n)
        else:
            x = rng.exponential(self.a, n)
        return np.maximum(np.rint(x), 1).astype(np.int64)

    def __str__(self) -> str:
        nums = [self.a] if self.kind in ("fixed", "exp") else [self.a, self.b]
        return ":".join([self.kind] + [f"{v:g}" for v in nums])


@dataclass(frozen=True)
class TraceRequest:
    arrival_s: float            # seconds after the trace starts
    prompt_ids: tuple[int, ...]
    max_tokens: int


def synthetic_trace(num_requests: int, rate_per_s: float, prompt_len: LengthDist, output_len: LengthDist,
                    vocab_size: int, max_seq_len: int, seed: int) -> list[TraceRequest]:
    if num_requests < 1:
        raise ValueError(f"num_requests={num_requests} must be >= 1")
    if not rate_per_s > 0:
        raise ValueError(f"rate={rate_per_s} requests/s must be > 0 (inf: all at once)")
    rng = np.random.default_rng(seed)
    gaps = np.zeros(num_requests) if math.isinf(rate_per_s) else rng.exponential(1.0 / rate_per_s, num_requests)
    arrivals = np.concatenate([[0.0], np.cumsum(gaps[1:])])                         # (n,)
    p_lens = prompt_len.sample(rng, num_requests)
    if p_lens.max() > max_seq_len:
        raise ValueError(f"prompt length {prompt_len} drew {int((p_lens > max_seq_len).sum())} of {num_requests} "
                         f"prompts longer than the model's context of {max_seq_len} (up to {int(p_lens.max())}); "
                         "lower it (a prompt is never cut)")
    o_lens = output_len.sample(rng, num_requests)
    out = []
    for t, p, o in zip(arrivals, p_lens, o_lens):
        ids = (BOS_ID,) + tuple(int(x) for x in rng.integers(FIRST_ORDINARY_ID, vocab_size, int(p) - 1))
        out.append(TraceRequest(float(t), ids, int(o)))
    return out


def replay(engine: Engine, trace: list[TraceRequest], params: SamplingParams,
           on_progress: Callable[[int, int], None] | None = None) -> list[RequestOutput]:
    """Feed the trace to the engine at its arrival times (wall clock) and step until all finish.
    A request's arrival time is the trace's, not when the loop got round to adding it, so time
    spent waiting for a step to end counts in its TTFT. Request i gets seed params.seed + i."""
    clock = engine.clock
    base = replace(params, stop_token_ids=(), ignore_eos=True)
    start = clock()
    outputs: dict[int, RequestOutput] = {}
    ids: list[int] = []
    i = 0
    while i < len(trace) or engine.has_unfinished():
        now = clock() - start
        while i < len(trace) and trace[i].arrival_s <= now:
            r = trace[i]
            seed = None if params.seed is None else params.seed + i
            ids.append(engine.add_request(list(r.prompt_ids), replace(base, max_tokens=r.max_tokens, seed=seed),
                                          arrival_s=start + r.arrival_s))
            i += 1
        if engine.has_unfinished():
            finished = [o for o in engine.step() if o.finished]
            for out in finished:
                outputs[out.request_id] = out
            if on_progress and finished:
                on_progress(len(outputs), len(trace))
        elif i < len(trace):
            time.sleep(max(0.0, trace[i].arrival_s - (clock() - start)))
    return [outputs[j] for j in ids]


def progress_bar(done: int, total: int, width: int = 30) -> None:
    """A one-line progress bar on stderr."""
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} requests")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()
