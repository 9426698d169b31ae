"""The fused decode step: every layer of a batch of one-token sequences in one op call.

``decode_step`` here is its reference, composed from kernels/reference.py exactly as
pyinfer.model.Model.forward runs a decode-only batch; a backend may implement it natively
(the C backend: csrc/fused.c) to remove the per-op Python round trips. ``DecodePlan`` is what the
op takes instead of a dozen weight arguments: the model's weights plus, for native kernels, a flat
int64 table of their buffers' addresses and shapes (layout in csrc/fused.c), built once per model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pyinfer.analysis.cost import Cost, CostCounter
from pyinfer.config import ModelConfig

from . import reference as ref

KINDS = {"float32": 0, "matmul_w8a16": 1, "matmul_w8a8": 2, "matmul_w4a16": 3, "matmul_w4a8": 4}
LAYER_LINEARS = ("wq", "wk", "wv", "wo", "w1", "w3", "w2")      # the order csrc/fused.c reads them in


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


@dataclass(frozen=True, eq=False)
class DecodePlan:
    config: ModelConfig
    weights: object                 # pyinfer.weights.ModelWeights (float32 or quantized linears)
    table: np.ndarray               # (2 + 8 + n_layers * 58,) int64, see csrc/fused.c
    config_table: np.ndarray        # (7,) int64: dim, n_layers, n_heads, n_kv_heads, head_dim, hidden_dim, vocab
    inv_freq: np.ndarray = field(repr=False, default=None)   # (head_dim/2,) float32 RoPE table (scaled or not)
    keep: tuple = field(repr=False, default=())   # contiguous copies the addresses point into


def fused_supported(config: ModelConfig) -> str | None:
    """None when the fused step computes ``config`` exactly, else what it lacks (the model then runs
    op by op): it has no q/k/v bias, no q/k norm and no sliding window; RoPE scaling it has (a table)."""
    lacks = [name for name, on in (("qkv_bias", config.qkv_bias), ("qk_norm", config.qk_norm),
                                   ("sliding_window", config.sliding_window > 0)) if on]
    return ", ".join(lacks) or None


def make_decode_plan(weights) -> DecodePlan:
    """The plan of a model's weights (every array C-contiguous, copied once where it is not)."""
    from pyinfer.rope import rope_inv_freq
    if fused_supported(weights.config):
        raise ValueError(f"the fused decode step does not compute {fused_supported(weights.config)}")
    keep = []

    def buf(a, dtype):
        if a is None:
            return 0
        if not isinstance(a, np.ndarray) or a.dtype != dtype:
            raise ValueError(f"decode plan: expected a {np.dtype(dtype)} numpy array, got "
                             f"{type(a).__name__} {getattr(a, 'dtype', '')}")
        a = np.ascontiguousarray(a)
        keep.append(a)
        return _address(a)

    def linear(w) -> list[int]:
        if hasattr(w, "fmt"):
            f = w.fmt
            qdtype = np.int8 if f.weight_bits == 8 else np.uint8
            return [KINDS[f.kernel], buf(w.qweight, qdtype), buf(w.scales, np.float32),
                    buf(w.zeros, np.uint8), f.group_size, w.shape[0], w.k_pad, w.shape[1]]
        return [0, buf(w, np.float32), 0, 0, 0, w.shape[0], w.shape[1], w.shape[1]]

    c = weights.config
    table = [buf(weights.tok_embeddings, np.float32), buf(weights.norm, np.float32), *linear(weights.output)]
    for lw in weights.layers:
        table += [buf(lw.attn_norm, np.float32), buf(lw.ffn_norm, np.float32)]
        for name in LAYER_LINEARS:
            table += linear(getattr(lw, name))
    config_table = np.array([c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.hidden_dim, c.vocab_size],
                            np.int64)
    inv_freq = rope_inv_freq(c)
    inv_freq.flags.writeable = False
    return DecodePlan(c, weights, np.array(table, np.int64), config_table, inv_freq, tuple(keep))


def _linear(ops, out, x, w):
    if hasattr(w, "fmt"):
        return w.matmul(ops, out, x)
    return ops.matmul(out, x, w)


def _compose(ops, logits, tokens, positions, slot_mapping, block_tables, context_lens, k_cache, v_cache, plan):
    """The decode step written against ``ops`` (reference functions, or counting ones for the cost)."""
    c, w = plan.config, plan.weights
    B, D, H, KVH, hd = len(tokens), c.dim, c.n_heads, c.n_kv_heads, c.head_dim
    scale = 1.0 / np.sqrt(hd)
    x, h, o = (np.empty((B, D), np.float32) for _ in range(3))          # residual, normed, projection out
    q, att = np.empty((B, H * hd), np.float32), np.empty((B, H, hd), np.float32)
    k, v = (np.empty((B, KVH * hd), np.float32) for _ in range(2))
    gate, up = (np.empty((B, c.hidden_dim), np.float32) for _ in range(2))
    ops.embedding(x, tokens, w.tok_embeddings)
    for layer, lw in enumerate(w.layers):
        ops.rmsnorm(h, x, lw.attn_norm, c.norm_eps)
        _linear(ops, q, h, lw.wq)
        _linear(ops, k, h, lw.wk)
        _linear(ops, v, h, lw.wv)
        ops.rope(q, q, positions, plan.inv_freq)
        ops.rope(k, k, positions, plan.inv_freq)
        ops.kv_cache_write(k_cache[layer], v_cache[layer], k.reshape(B, KVH, hd), v.reshape(B, KVH, hd), slot_mapping)
        ops.paged_decode_attention(att, q.reshape(B, H, hd), k_cache[layer], v_cache[layer], block_tables,
                                   context_lens, scale)
        _linear(ops, o, att.reshape(B, H * hd), lw.wo)
        ops.add(x, x, o)
        ops.rmsnorm(h, x, lw.ffn_norm, c.norm_eps)
        _linear(ops, gate, h, lw.w1)
        _linear(ops, up, h, lw.w3)
        ops.silu_mul(gate, gate, up)
        _linear(ops, o, gate, lw.w2)
        ops.add(x, x, o)
    ops.rmsnorm(h, x, w.norm, c.norm_eps)
    _linear(ops, logits, h, w.output)
    return logits


class _Namespace:
    def __init__(self, fns, arrays):
        self.__dict__.update(fns)
        self.arrays = arrays


def _reference_ops():
    from pyinfer.ops import REGISTRY, NumpyArrays
    return _Namespace({name: spec.reference for name, spec in REGISTRY.items() if name != "decode_step"}, NumpyArrays)


def decode_step(logits, tokens, positions, slot_mapping, block_tables, context_lens, k_cache, v_cache, plan):
    """Every layer of a decode step for B sequences of one new token each.

    logits: (B, vocab) float32 out; tokens, positions, slot_mapping: (B,) int; block_tables:
    (B, max_blocks) int; context_lens: (B,) int (this token included); k_cache, v_cache:
    (n_layers, num_blocks, block_size, n_kv_heads, head_dim) float32, written at slot_mapping;
    plan: DecodePlan of the model's weights."""
    return _compose(_reference_ops(), logits, tokens, positions, slot_mapping, block_tables, context_lens,
                    k_cache, v_cache, plan)


def decode_step_cost(logits, tokens, positions, slot_mapping, block_tables, context_lens, k_cache, v_cache,
                     plan) -> Cost:
    """The sum of the composed ops' costs (the fused kernel moves no fewer bytes than they count)."""
    from pyinfer.ops import REGISTRY, NumpyArrays
    counter = CostCounter()

    def counting(name, cost):
        def call(*args):
            counter.add(name, cost(*args))
            return args[0]
        return call

    ops = _Namespace({n: counting(n, s.cost) for n, s in REGISTRY.items() if n != "decode_step"}, NumpyArrays)
    _compose(ops, logits, tokens, positions, slot_mapping, block_tables, context_lens, k_cache, v_cache, plan)
    return counter.total()
