"""The full next-token distribution a request samples from, and drawing from it.

``sampling_probs`` applies exactly the Sampler's transformations (pyinfer/sampling.py): softmax at
the temperature, then top-k, then top-p, renormalised; temperature 0 is a one-hot on the first
argmax. Speculative decoding needs these whole vectors for the draft (q) and the target (p).
"""
from __future__ import annotations

import numpy as np

from ..config import SamplingParams
from ..kernels import reference as ref
from ..ops import Ops
from ..sampling import check_logits_max, is_greedy


def sampling_probs(logits: np.ndarray, params: SamplingParams, ops: Ops, where: str = "") -> np.ndarray:
    """logits: (V,) -> (V,) float64 probabilities summing to 1; NonFiniteLogitsError (naming
    ``where``) when the logits have no finite maximum."""
    row = np.ascontiguousarray(logits, dtype=np.float32)[None, :]               # (1, V)
    if is_greedy(params.temperature):
        idx = np.empty(1, np.int64)
        ops.argmax(idx, row)
        check_logits_max(row[0, idx[0]], row, where)
        probs = np.zeros(row.shape[1], np.float64)
        probs[idx[0]] = 1.0
        return probs
    check_logits_max(row.max(), row, where)
    soft = np.empty_like(row)
    ops.softmax(soft, row, params.temperature)
    probs = ref.top_p_filter(ref.top_k_filter(soft[0].astype(np.float64), params.top_k), params.top_p)
    return probs / probs.sum()


def sample_from(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One draw from a (V,) non-negative vector (normalised or not), as the Sampler draws."""
    cdf = np.cumsum(probs)                                                        # (V,)
    coin = rng.random() * cdf[-1]
    return int(min(np.searchsorted(cdf, coin, side="right"), len(cdf) - 1))
