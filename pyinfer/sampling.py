"""Turning logits into the next token: greedy, temperature, top-k, top-p, each request seeded.

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


class Sampler:
    """One per request: its own random generator, so its draws never depend on batch-mates."""

    def __init__(self, params: SamplingParams, ops: Ops | None = None):
        self.params = params
        self.ops = ops if ops is not None else Ops("numpy")
        self.rng = np.random.default_rng(params.seed)
        self.is_greedy = is_greedy(params.temperature)

    def sample(self, logits: np.ndarray, where: str = "") -> int:
        """logits: (V,) float32 -> the next token id. ``where`` (e.g. "step 7, request 3") goes
        into the NonFiniteLogitsError raised for logits without a finite maximum."""
        p = self.params
        row = np.ascontiguousarray(logits, dtype=np.float32)[None, :]          # (1, V)
        if self.is_greedy:
            out = np.empty(1, np.int64)
            token = int(self.ops.argmax(out, row)[0])
            check_logits_max(row[0, token], row, where)
            return token
        check_logits_max(row.max(), row, where)
        probs = np.empty_like(row)
        self.ops.softmax(probs, row, p.temperature)
        probs = ref.top_p_filter(ref.top_k_filter(probs[0].astype(np.float64), p.top_k), p.top_p)
        cdf = np.cumsum(probs)                                                  # (V,)
        coin = self.rng.random() * cdf[-1]
        return int(min(np.searchsorted(cdf, coin, side="right"), len(cdf) - 1))
