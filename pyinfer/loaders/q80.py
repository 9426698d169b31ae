"""Q8_0 as llama2.c export.py / runq.c: int8 values with one float32 scale per group of
``group_size`` consecutive values (row-major, so a group may span rows when group_size does not
divide a row's length)."""
from __future__ import annotations

import numpy as np


def quantize_q80(w: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """export.py quantize_q80: per group of ``group_size`` consecutive values (row-major),
    scale = max|w| / 127, q = round(w / scale) (half to even, as torch.round).
    Returns (q int8 shaped like w, scales float32 (w.size // group_size,)). An all-zero group
    gets scale 0 and q 0 (export.py would divide 0 by 0 there)."""
    if group_size < 1 or w.size % group_size:
        raise ValueError(f"group_size={group_size} does not divide the tensor's {w.size} values")
    groups = np.asarray(w, dtype=np.float32).reshape(-1, group_size)     # (n_groups, group_size)
    scales = np.abs(groups).max(axis=1) / np.float32(127.0)               # (n_groups,)
    ratio = np.divide(groups, scales[:, None], out=np.zeros_like(groups), where=scales[:, None] > 0)
    q = np.clip(np.round(ratio), -127, 127).astype(np.int8).reshape(w.shape)
    return q, scales.astype(np.float32)


def dequantize_q80(q: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    """float32 w = q * scale of its group (runq.c dequantize), shaped like q."""
    groups = q.reshape(-1, group_size).astype(np.float32)                 # (n_groups, group_size)
    return (groups * scales[:, None]).reshape(q.shape)
