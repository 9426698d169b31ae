"""Turning logits into the next token as vLLM's sampler does, each request with its own generator:
min_tokens mask, repetition / frequency / presence penalties, then greedy argmax, or temperature,
min_p, top_k, top_p and a draw. Plain requests (no penalty, no min_p, no min_tokens) take the
backend's softmax kernel, greedy ones numpy's argmax (the reference's own rule, on the host logits
every backend's forward returns); the rest runs here in numpy, which is the reference.

Temperatures below ``MIN_TEMPERATURE`` are greedy (as vLLM's sampler treats them): dividing by
them overflows float32 (1e-38 made every backend's softmax pick garbage). Logits whose maximum is
not finite (a NaN anywhere, +inf, or every entry -inf) cannot be sampled from: ``sample`` raises
NonFiniteLogitsError naming where, instead of picking token 0 or the last one. -inf entries
beside a finite maximum are a valid mask."""
from __future__ import annotations

import math

import numpy as np

from .config import SamplingParams
from .kernels import reference as ref
from .ops import Ops

MIN_TEMPERATURE = 1e-5


class NonFiniteLogitsError(ValueError):
    """A logits row with NaN, +inf, or nothing but -inf."""


def is_greedy(temperature: float) -> bool:
    return temperature < MIN_TEMPERATURE


def check_logits_max(value, logits: np.ndarray, where: str) -> None:
    """``value``: the row's maximum as argmax or max found it (NaN wins in both, as numpy's)."""
    if not math.isfinite(value):
        nan, inf = int(np.isnan(logits).sum()), int(np.isinf(logits).sum())
        raise NonFiniteLogitsError(
            f"non-finite logits{' at ' + where if where else ''}: {nan} NaN and {inf} infinite of {logits.size} "
            f"(maximum {value}); the model's weights or inputs hold NaN/inf, or it overflowed")


def apply_penalties(logits: np.ndarray, prompt_ids, output_ids, repetition: float, frequency: float,
                    presence: float) -> np.ndarray:
    """logits: (V,) float32 -> penalised copy, as vLLM's apply_penalties: a token seen in the prompt
    or the output has a positive logit divided by ``repetition`` (a negative one multiplied); then
    each logit loses frequency * (its count in the output) + presence * (1 if it is in the output)."""
    V = logits.shape[0]
    x = logits.astype(np.float32, copy=True)
    out = np.bincount(np.asarray(output_ids, np.int64), minlength=V)[:V] if len(output_ids) else np.zeros(V, np.int64)
    if repetition != 1.0:
        seen = out > 0
        if len(prompt_ids):
            seen |= np.bincount(np.asarray(prompt_ids, np.int64), minlength=V)[:V] > 0
        rp = np.float32(repetition)
        x = np.where(seen, np.where(x > 0, x / rp, x * rp), x).astype(np.float32)
    if frequency or presence:
        x -= (np.float32(frequency) * out + np.float32(presence) * (out > 0)).astype(np.float32)
    return x


def min_p_filter(probs: np.ndarray, min_p: float) -> np.ndarray:
    """probs: (V,) float; zero the tokens below min_p times the largest probability (vLLM's min_p)."""
    if min_p <= 0:
        return probs
    return np.where(probs < min_p * probs.max(), 0.0, probs)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(V,) float32 -> (V,) float32 log-probabilities (the raw logits', as vLLM's raw_logprobs)."""
    x = logits.astype(np.float32)
    m = x.max()
    return (x - m - np.log(np.exp(x - m).sum(dtype=np.float64))).astype(np.float32)


def top_logprobs(logprobs: np.ndarray, token: int, num: int) -> list[tuple[int, float, int]]:
    """(token id, logprob, rank) of the sampled token, then of the ``num`` most likely (-1: all), as
    vLLM returns them: rank 1 is the most likely; the sampled token appears once."""
    rank = int((logprobs > logprobs[token]).sum()) + 1
    out = [(int(token), float(logprobs[token]), rank)]
    num = logprobs.shape[0] if num == -1 else num
    if num > 0:
        order = np.argsort(-logprobs, kind="stable")[:num]
        out += [(int(t), float(logprobs[t]), i + 1) for i, t in enumerate(order) if t != token]
    return out


class Sampler:
    """One per request: its own random generator, so its draws never depend on batch-mates.
    ``rng``: a numpy Generator to draw from (an engine derives one from its seed for a request
    without its own); None: one seeded with params.seed."""

    def __init__(self, params: SamplingParams, ops: Ops | None = None, rng: np.random.Generator | None = None):
        self.params = params
        self.ops = ops if ops is not None else Ops("numpy")
        self.rng = rng if rng is not None else np.random.default_rng(params.seed)
        self.is_greedy = is_greedy(params.temperature)
        self.has_penalties = (params.repetition_penalty != 1.0 or params.frequency_penalty != 0.0
                              or params.presence_penalty != 0.0)

    def sample(self, logits: np.ndarray, where: str = "", prompt_ids=(), output_ids=()) -> int:
        """logits: (V,) float32 -> the next token id. ``prompt_ids`` / ``output_ids``: the request's
        tokens so far (penalties and min_tokens read them). ``where`` (e.g. "step 7, request 3") goes
        into the NonFiniteLogitsError raised for logits without a finite maximum."""
        p = self.params
        row = np.ascontiguousarray(logits, dtype=np.float32)                   # (V,), no copy for host float32
        masked = p.min_tokens > 0 and len(output_ids) < p.min_tokens and p.stop_token_ids
        if self.has_penalties or masked or (p.min_p > 0 and not self.is_greedy):
            return self._sample_reference(row, where, prompt_ids, output_ids, masked)
        if self.is_greedy:
            # numpy's argmax is the reference's rule (first maximum, NaN wins); a kernel call's argument
            # checks cost more than the scan of a small vocabulary (stories260K: 4 vs 0.4 us)
            token = int(row.argmax())
            check_logits_max(row[token], row, where)
            return token
        check_logits_max(row.max(), row, where)
        probs = np.empty((1, row.shape[0]), np.float32)                         # (1, V)
        self.ops.softmax(probs, row[None, :], p.temperature)
        return self._draw(probs[0].astype(np.float64))

    def _draw(self, probs: np.ndarray) -> int:
        """probs: (V,) float64 after softmax -> top_k, top_p, then one uniform draw on the CDF."""
        p = self.params
        probs = ref.top_p_filter(ref.top_k_filter(probs, p.top_k), p.top_p)
        cdf = np.cumsum(probs)                                                  # (V,)
        coin = self.rng.random() * cdf[-1]
        return int(min(np.searchsorted(cdf, coin, side="right"), len(cdf) - 1))

    def _sample_reference(self, row: np.ndarray, where: str, prompt_ids, output_ids, masked) -> int:
        """vLLM's order on a (V,) row: min_tokens mask, penalties, argmax | temperature, min_p, top_k, top_p."""
        p = self.params
        check_logits_max(row.max(), row, where)
        x = row.astype(np.float32, copy=True)
        if masked:
            x[[t for t in p.stop_token_ids if t < x.shape[0]]] = -np.inf
        if self.has_penalties:
            x = apply_penalties(x, prompt_ids, output_ids, p.repetition_penalty, p.frequency_penalty,
                                p.presence_penalty)
        if self.is_greedy:
            token = int(np.argmax(x))
            check_logits_max(x[token], x, where)
            return token
        check_logits_max(x.max(), x, where)
        probs = np.empty((1, x.shape[0]), np.float32)
        ref.softmax(probs, x[None, :], p.temperature)
        return self._draw(min_p_filter(probs[0].astype(np.float64), p.min_p))
