"""Cost of each op from its arguments' shapes and dtypes: FLOPs and the fewest bytes it must move.

Each function takes exactly the op's arguments. Bytes count each input read once and each output
written once; weights, activations and KV cache are kept apart. FLOP conventions (per element):
rmsnorm 4 (square, add, scale, weight), rope 3 (6 per pair), silu_mul 5 (exp, add, div, mul, mul),
add 1, softmax 4; attention 4 * head_dim per (query, key, head) pair: 2 for QK^T, 2 for PV.
Transcendentals count as one FLOP. Integer index arrays count as activation bytes.
"""
from __future__ import annotations

import numpy as np

from .analysis.cost import Cost


def _causal_pairs(q_len: int, kv_len: int, window: int = 0) -> int:
    """(query, key) pairs of bottom-right-aligned causal attention: query i sees kv_len - q_len + i + 1 keys
    (at most ``window`` of them when window > 0)."""
    full = q_len * (kv_len - q_len) + q_len * (q_len + 1) // 2
    if window <= 0:
        return full
    first = kv_len - q_len + 1                                      # keys the first query sees
    i = np.arange(q_len, dtype=np.int64)
    return int(full - np.maximum(0, first + i - window).sum())


def embedding(out, tokens, table):
    return Cost(0, out.size * table.itemsize, tokens.nbytes + out.nbytes, 0)


def rmsnorm(out, x, weight, eps):
    return Cost(4 * x.size, weight.nbytes, x.nbytes + out.nbytes, 0)


def rope(out, x, positions, inv_freq):
    return Cost(3 * x.size, 0, x.nbytes + out.nbytes + positions.nbytes + inv_freq.nbytes, 0)


def matmul(out, x, w):
    T, K = x.shape
    N = w.shape[0]
    return Cost(2 * T * N * K, w.nbytes, x.nbytes + out.nbytes, 0)


def silu_mul(out, gate, up):
    return Cost(5 * out.size, 0, gate.nbytes + up.nbytes + out.nbytes, 0)


def add(out, x, y):
    return Cost(out.size, 0, x.nbytes + y.nbytes + out.nbytes, 0)


def bias_add(out, x, bias):
    return Cost(out.size, bias.nbytes, x.nbytes + out.nbytes, 0)


def kv_cache_write(k_cache, v_cache, k, v, slot_mapping):
    written = slot_mapping.size * k_cache.shape[2] * k_cache.shape[3] * (k_cache.itemsize + v_cache.itemsize)
    return Cost(0, 0, k.nbytes + v.nbytes + slot_mapping.nbytes, written)


def attention_prefill(out, q, k, v, scale, window=0):
    T, H, hd = q.shape
    return Cost(4 * hd * H * _causal_pairs(T, k.shape[0], window), 0, q.nbytes + out.nbytes, k.nbytes + v.nbytes)


def _paged_kv_bytes(k_cache, v_cache, context_lens) -> int:
    per_token = k_cache.shape[2] * k_cache.shape[3] * (k_cache.itemsize + v_cache.itemsize)
    return int(np.sum(context_lens, dtype=np.int64)) * per_token


def paged_prefill_attention(out, q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale, window=0):
    _, H, hd = q.shape
    q_lens = np.diff(np.asarray(cu_seqlens_q, dtype=np.int64))
    pairs = sum(_causal_pairs(int(t), int(s), window) for t, s in zip(q_lens, context_lens))
    meta = block_tables.nbytes + cu_seqlens_q.nbytes + context_lens.nbytes
    read = np.asarray(context_lens, dtype=np.int64)                 # keys some query of b sees
    if window > 0:
        read = np.minimum(read, q_lens + window - 1)
    return Cost(4 * hd * H * pairs, 0, q.nbytes + out.nbytes + meta, _paged_kv_bytes(k_cache, v_cache, read))


def paged_decode_attention(out, q, k_cache, v_cache, block_tables, context_lens, scale, window=0):
    _, H, hd = q.shape
    lens = np.asarray(context_lens, dtype=np.int64)
    pairs = int(np.sum(np.minimum(lens, window) if window > 0 else lens, dtype=np.int64))
    meta = block_tables.nbytes + context_lens.nbytes
    read = np.minimum(lens, window) if window > 0 else lens
    return Cost(4 * hd * H * pairs, 0, q.nbytes + out.nbytes + meta, _paged_kv_bytes(k_cache, v_cache, read))


def argmax(out, logits):
    return Cost(logits.size, 0, logits.nbytes + out.nbytes, 0)


def softmax(out, logits, temperature):
    return Cost(4 * logits.size, 0, logits.nbytes + out.nbytes, 0)


def _qmatmul(out, x, *weight_arrays) -> Cost:
    """Quantized matmul: 2*T*N*K multiply-adds (integer or float); weight bytes are the packed
    weights plus scales (and zero points) as stored."""
    T, K = x.shape
    N = out.shape[1]
    w_bytes = sum(a.nbytes for a in weight_arrays if isinstance(a, np.ndarray))
    return Cost(2 * T * N * K, w_bytes, x.nbytes + out.nbytes, 0)


def matmul_w8a16(out, x, qweight, scales):
    return _qmatmul(out, x, qweight, scales)


def matmul_w8a8(out, x, qweight, scales, group_size):
    return _qmatmul(out, x, qweight, scales)


def matmul_w4a16(out, x, qweight, scales, zeros, group_size):
    return _qmatmul(out, x, qweight, scales, zeros)


def matmul_w4a8(out, x, qweight, scales, zeros, group_size):
    return _qmatmul(out, x, qweight, scales, zeros)
