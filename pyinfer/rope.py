"""RoPE's inverse frequencies: the (head_dim / 2,) float32 table every backend's ``rope`` op reads.

Plain RoPE is computed as llama2.c's run.c does (float32 ``1 / theta^(2i / head_dim)``), so the
stories checkpoints keep their exact greedy text. Scaled RoPE follows transformers'
modeling_rope_utils (``_compute_linear_scaling_rope_parameters``, ``_compute_llama3_parameters``),
in float32 as torch computes it there.
"""
from __future__ import annotations

import math

import numpy as np

from .config import ModelConfig, RopeScaling


from .kernels.reference import plain_inv_freq   # noqa: F401  (run.c's float32 1 / theta^(2i / hd))


def scaled_inv_freq(inv_freq: np.ndarray, scaling: RopeScaling) -> np.ndarray:
    """(hd/2,) float32 plain frequencies -> transformers' rescaled ones."""
    f = np.float32(scaling.factor)
    if scaling.rope_type == "linear":
        return (inv_freq / f).astype(np.float32)
    # llama3: wavelengths longer than old_len / low_freq_factor are divided by factor, shorter than
    # old_len / high_freq_factor kept, the band between blended by a smooth factor.
    old_len = np.float32(scaling.original_max_position_embeddings)
    low, high = np.float32(scaling.low_freq_factor), np.float32(scaling.high_freq_factor)
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = np.float32(2 * math.pi) / inv_freq                                         # (hd/2,)
    llama = np.where(wavelen > low_wavelen, inv_freq / f, inv_freq).astype(np.float32)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (np.float32(1) - smooth) * llama / f + smooth * llama
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, llama).astype(np.float32)


def rope_inv_freq(config: ModelConfig) -> np.ndarray:
    """(head_dim / 2,) float32 inverse frequencies of ``config`` (scaled when it says so)."""
    inv_freq = plain_inv_freq(config.head_dim, config.rope_theta)
    if config.rope_scaling is None:
        return inv_freq
    return scaled_inv_freq(inv_freq, config.rope_scaling)
