"""Turning logits into the next token: greedy, temperature, top-k, top-p, each request seeded."""
from __future__ import annotations

import numpy as np

from .config import SamplingParams
from .kernels import reference as ref
from .ops import Ops


class Sampler:
    """One per request: its own random generator, so its draws never depend on batch-mates."""

    def __init__(self, params: SamplingParams, ops: Ops | None = None):
        self.params = params
        self.ops = ops if ops is not None else Ops("numpy")
        self.rng = np.random.default_rng(params.seed)

    def sample(self, logits: np.ndarray) -> int:
        """logits: (V,) float32 -> the next token id."""
        p = self.params
        row = np.ascontiguousarray(logits, dtype=np.float32)[None, :]          # (1, V)
        if p.temperature == 0.0:
            out = np.empty(1, np.int64)
            return int(self.ops.argmax(out, row)[0])
        probs = np.empty_like(row)
        self.ops.softmax(probs, row, p.temperature)
        probs = ref.top_p_filter(ref.top_k_filter(probs[0].astype(np.float64), p.top_k), p.top_p)
        cdf = np.cumsum(probs)                                                  # (V,)
        coin = self.rng.random() * cdf[-1]
        return int(min(np.searchsorted(cdf, coin, side="right"), len(cdf) - 1))
