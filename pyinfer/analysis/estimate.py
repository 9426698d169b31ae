"""Analytic accounting: every op call of one forward pass, its FLOPs and bytes, without running it.

The model's op sequence (pyinfer/model.py's ``forward``) is walked here with shape-only stand-in
arrays (``np.broadcast_to`` of one element: the right shape, dtype and ``nbytes``, no memory), and
each op's own cost function (pyinfer/op_costs.py) prices the call. So there is one truth for what an
op costs, and ``count()`` -- the same forward run by a counting-only ``Ops`` -- agrees call by call.

A step is a batch of sequences: sequence b brings ``q_lens[b]`` new tokens on top of ``cached[b]``
tokens already in the KV cache (q_len 1 is decode, more is prefill or a prefill chunk), exactly as
``PagedKVCache.prepare`` lays it out. ``estimate(config, batch, context)`` prices two steps:
prefill (each of ``batch`` sequences brings ``prompt_len`` tokens, default ``context``) and one
decode step (each sequence holds ``context`` tokens and adds one, so attention sees context + 1).

Dtypes: ``dtype`` is the activations' and unquantized weights' (float32, float16, bfloat16);
``quant`` a pyinfer.quant format (int8, int8-g32, int4-g128, ...), "fp8", or None; ``kv_dtype`` the
cache's (default ``dtype``; fp8 and int8 count one byte, their scales are not counted). Only float32
with float32 or float16 KV is what this engine runs; the rest is accounting for other hardware.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import op_costs
from ..config import ROWWISE_MAX_Q, ModelConfig
from ..quant import get_format
from .cost import Cost

# dtype name -> a numpy dtype of the same item size (stand-ins only need itemsize)
ITEM_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.float16,
               "fp8": np.uint8, "int8": np.int8}
# dtype name -> the key of a device's peak FLOP/s table that the op's arithmetic runs at
PEAK_KEYS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "fp8": "fp8", "int8": "int8"}
ACT_DTYPES = ("float32", "float16", "bfloat16")
KV_DTYPES = ("float32", "float16", "bfloat16", "fp8", "int8")


@dataclass(frozen=True)
class OpCost:
    op: str            # ops registry name (matmul, rmsnorm, paged_decode_attention, ...)
    role: str          # what the call does in the model: wq, attention, w1, lm_head, ...
    layer: int         # decoder layer, -1 for the embedding, final norm and output head
    cost: Cost
    compute: str       # peak table key its arithmetic runs at: fp32, fp16, bf16, fp8, int8
    weights: int = 0   # matmuls: weights multiplied (n x k), what a dequantizing kernel converts


@dataclass(frozen=True)
class PhaseCost:
    """One forward step: its op calls in order, as the model makes them."""
    phase: str                 # "prefill" or "decode"
    q_lens: tuple[int, ...]    # new tokens per sequence
    cached: tuple[int, ...]    # tokens already cached per sequence
    ops: tuple[OpCost, ...]
    repeat: int = 1            # the (q_lens, cached) pattern stands for this many copies (uniform batches)

    @property
    def tokens(self) -> int:
        return sum(self.q_lens) * self.repeat

    @property
    def n_seqs(self) -> int:
        return len(self.q_lens) * self.repeat

    @property
    def total(self) -> Cost:
        return sum((o.cost for o in self.ops), Cost())

    @property
    def per_token(self) -> Cost:
        return self.total.scaled(1 / self.tokens)

    @property
    def calls(self) -> tuple[tuple[str, Cost], ...]:
        return tuple((o.op, o.cost) for o in self.ops)

    def per_layer(self) -> list[Cost]:
        """Cost of each decoder layer, in order (the embedding and output head excluded)."""
        n = 1 + max((o.layer for o in self.ops), default=-1)
        out = [Cost()] * n
        for o in self.ops:
            if o.layer >= 0:
                out[o.layer] = out[o.layer] + o.cost
        return out

    def by_role(self) -> dict[str, Cost]:
        out: dict[str, Cost] = {}
        for o in self.ops:
            out[o.role] = out.get(o.role, Cost()) + o.cost
        return out

    def by_op(self) -> dict[str, Cost]:
        out: dict[str, Cost] = {}
        for o in self.ops:
            out[o.op] = out.get(o.op, Cost()) + o.cost
        return out


@dataclass(frozen=True)
class Estimate:
    config: ModelConfig
    batch: int
    context: int
    weights: str               # float32, float16, bfloat16, fp8 or a pyinfer.quant format
    dtype: str                 # activations
    kv_dtype: str
    prefill: PhaseCost
    decode: PhaseCost


def _stand_in(shape, dtype) -> np.ndarray:
    """An array with this shape, dtype and nbytes that owns one element of memory."""
    return np.broadcast_to(np.zeros((), dtype), tuple(int(s) for s in shape))


def _check(config: ModelConfig, q_lens, cached, dtype, kv_dtype, block_size) -> None:
    if dtype not in ACT_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(ACT_DTYPES)}")
    if kv_dtype not in KV_DTYPES:
        raise ValueError(f"kv_dtype {kv_dtype!r} is not one of {', '.join(KV_DTYPES)}")
    if not 1 <= block_size <= 256:
        raise ValueError(f"block_size={block_size} must be in [1, 256]")
    if not q_lens or len(q_lens) != len(cached):
        raise ValueError("a step needs one q_len and one cached length per sequence, at least one sequence")
    for q, c in zip(q_lens, cached):
        if q < 1 or c < 0:
            raise ValueError(f"q_len={q} must be >= 1 and cached={c} >= 0")
        if q + c > config.max_seq_len:
            raise ValueError(f"a sequence of {c} cached + {q} new tokens passes {config.name}'s "
                             f"context of {config.max_seq_len}")


class _Weights:
    """Stand-ins for the weights a format stores, and the peak key their matmuls run at."""

    def __init__(self, weights: str, dtype: str):
        self.weights, self.dtype = weights, dtype
        self.fmt = None
        if weights in ACT_DTYPES or weights == "fp8":
            self.item = ITEM_DTYPES[weights]
            self.compute = PEAK_KEYS["fp8" if weights == "fp8" else dtype]
        else:
            self.fmt = get_format(weights)
            self.compute = "int8" if self.fmt.act_int8 else PEAK_KEYS[dtype]

    def matmul(self, out, x, n: int, k: int) -> Cost:
        """The cost of linear(out (T, n), x (T, k)) with a weight (n, k) stored in this format."""
        if self.fmt is None:
            return op_costs.matmul(out, x, _stand_in((n, k), self.item))
        f = self.fmt
        g = f.group_size
        k_pad = k if g == 0 else -(-k // g) * g
        if k_pad != k:
            x = _stand_in((x.shape[0], k_pad), x.dtype)               # QTensor.matmul pads x
        if f.weight_bits == 8:
            qweight = _stand_in((n, k_pad), np.int8)
            scales = _stand_in((n,) if g == 0 else (n, k_pad // g), np.float32)
            args = (qweight, scales) if g == 0 else (qweight, scales, g)
        else:
            qweight = _stand_in((n, k_pad // 2), np.uint8)
            scales = _stand_in((n, k_pad // g), np.float32)
            zeros = _stand_in((n, k_pad // g), np.uint8) if f.zero_point else None
            args = (qweight, scales, zeros, g)
        return getattr(op_costs, f.kernel)(out, x, *args)


def step_cost(config: ModelConfig, q_lens: Sequence[int], cached: Sequence[int], *, weights: str = "float32",
              dtype: str = "float32", kv_dtype: str | None = None, block_size: int = 16,
              phase: str | None = None) -> PhaseCost:
    """Every op call of one forward over this batch, priced by the ops' cost functions."""
    q_lens, cached = tuple(int(q) for q in q_lens), tuple(int(c) for c in cached)
    kv_dtype = kv_dtype or dtype
    _check(config, q_lens, cached, dtype, kv_dtype, block_size)
    c, w = config, _Weights(weights, dtype)
    act, idx, kv = ITEM_DTYPES[dtype], np.int64, ITEM_DTYPES[kv_dtype]
    pk = PEAK_KEYS[dtype]
    T, B, D, H, KVH, hd, F = sum(q_lens), len(q_lens), c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.hidden_dim
    context_lens = np.array([q + k for q, k in zip(q_lens, cached)], dtype=np.int32)   # (B,)
    max_blocks = int(max(-(-n // block_size) for n in context_lens))
    dec = [b for b in range(B) if q_lens[b] <= ROWWISE_MAX_Q]           # their rows attend as decodes
    pre = [b for b in range(B) if q_lens[b] > ROWWISE_MAX_Q]
    dec_lens = np.array([context_lens[b] - q_lens[b] + 1 + j for b in dec for j in range(q_lens[b])],
                        dtype=np.int32)                                    # (R_dec,) each row's keys
    T_pre = sum(q_lens[b] for b in pre)
    kv_blocks = -(-int(context_lens.sum()) // block_size)                # a pool just big enough
    k_cache = _stand_in((kv_blocks, block_size, KVH, hd), kv)
    S = _stand_in
    ops: list[OpCost] = []

    def add(op, role, layer, cost, compute=pk, weights=0):
        ops.append(OpCost(op, role, layer, cost, compute, weights))

    window = (c.sliding_window,) if c.sliding_window else ()      # as Model.forward passes it
    x, h = S((T, D), act), S((T, D), act)
    add("embedding", "embedding", -1, op_costs.embedding(x, S((T,), idx), S((c.vocab_size, D), act)))
    for layer in range(c.n_layers):
        norm_w = S((D,), act)
        add("rmsnorm", "attn_norm", layer, op_costs.rmsnorm(h, x, norm_w, c.norm_eps))
        q, k = S((T, H * hd), act), S((T, KVH * hd), act)
        for role, out, n in (("wq", q, H * hd), ("wk", k, KVH * hd), ("wv", k, KVH * hd)):
            add(w.fmt.kernel if w.fmt else "matmul", role, layer, w.matmul(out, h, n, D), w.compute, n * D)
        if c.qkv_bias:                              # Qwen2: q/k/v biases
            for role, out in (("bq", q), ("bk", k), ("bv", k)):
                add("bias_add", role, layer, op_costs.bias_add(out, out, S((out.shape[1],), act)))
        if c.qk_norm:                               # Qwen3: per-head RMSNorm of q and k
            for role, rows in (("q_norm", T * H), ("k_norm", T * KVH)):
                xs = S((rows, hd), act)
                add("rmsnorm", role, layer, op_costs.rmsnorm(xs, xs, S((hd,), act), c.norm_eps))
        inv_freq = S((hd // 2,), act)
        add("rope", "rope_q", layer, op_costs.rope(q, q, S((T,), idx), inv_freq))
        add("rope", "rope_k", layer, op_costs.rope(k, k, S((T,), idx), inv_freq))
        k3 = S((T, KVH, hd), act)
        add("kv_cache_write", "kv_write", layer, op_costs.kv_cache_write(k_cache, k_cache, k3, k3, S((T,), idx)))
        if dec:
            out = S((len(dec_lens), H, hd), act)
            add("paged_decode_attention", "attention", layer, op_costs.paged_decode_attention(
                out, out, k_cache, k_cache, S((len(dec_lens), max_blocks), np.int32), dec_lens, 0.0, *window))
        if pre:
            out = S((T_pre, H, hd), act)
            cu = np.zeros(len(pre) + 1, dtype=np.int64)                      # (B_pre + 1,)
            cu[1:] = np.cumsum([q_lens[b] for b in pre])
            add("paged_prefill_attention", "attention", layer, op_costs.paged_prefill_attention(
                out, out, k_cache, k_cache, S((len(pre), max_blocks), np.int32), cu, context_lens[pre], 0.0, *window))
        o = S((T, D), act)
        add(w.fmt.kernel if w.fmt else "matmul", "wo", layer, w.matmul(o, S((T, H * hd), act), D, H * hd), w.compute,
            D * H * hd)
        add("add", "residual", layer, op_costs.add(x, x, o))
        add("rmsnorm", "ffn_norm", layer, op_costs.rmsnorm(h, x, norm_w, c.norm_eps))
        gate = S((T, F), act)
        add(w.fmt.kernel if w.fmt else "matmul", "w1", layer, w.matmul(gate, h, F, D), w.compute, F * D)
        add(w.fmt.kernel if w.fmt else "matmul", "w3", layer, w.matmul(gate, h, F, D), w.compute, F * D)
        add("silu_mul", "silu_mul", layer, op_costs.silu_mul(gate, gate, gate))
        add(w.fmt.kernel if w.fmt else "matmul", "w2", layer, w.matmul(o, gate, D, F), w.compute, D * F)
        add("add", "residual", layer, op_costs.add(x, x, o))
    hl = S((B, D), act)
    add("rmsnorm", "final_norm", -1, op_costs.rmsnorm(hl, hl, S((D,), act), c.norm_eps))
    add(w.fmt.kernel if w.fmt else "matmul", "lm_head", -1, w.matmul(S((B, c.vocab_size), act), hl, c.vocab_size, D),
        w.compute, c.vocab_size * D)
    phase = phase or ("decode" if not pre else "prefill")
    return PhaseCost(phase, q_lens, cached, tuple(ops))


def estimate(config: ModelConfig, batch: int = 1, context: int = 512, quant: str | None = None, *,
             dtype: str = "float32", kv_dtype: str | None = None, block_size: int = 16,
             prompt_len: int | None = None) -> Estimate:
    """Prefill of ``prompt_len`` (default ``context``) tokens for each of ``batch`` sequences, and one
    decode step of the batch with ``context`` tokens cached per sequence, priced op by op."""
    if batch < 1:
        raise ValueError(f"batch={batch} must be >= 1")
    if context < 1:
        raise ValueError(f"context={context} must be >= 1 (tokens cached before the decode step)")
    if context + 1 > config.max_seq_len:
        raise ValueError(f"context={context} plus the decoded token passes {config.name}'s "
                         f"max_seq_len={config.max_seq_len}")
    prompt_len = context if prompt_len is None else prompt_len
    if prompt_len < 1 or prompt_len > config.max_seq_len:
        raise ValueError(f"prompt_len={prompt_len} must be in [1, {config.name}'s max_seq_len={config.max_seq_len}]")
    weights = quant or dtype
    kw = dict(weights=weights, dtype=dtype, kv_dtype=kv_dtype or dtype, block_size=block_size)
    return Estimate(config, batch, context, weights, dtype, kv_dtype or dtype,
                    uniform_step_cost(config, batch, prompt_len, 0, phase="prefill", **kw),
                    uniform_step_cost(config, batch, 1, context, phase="decode", **kw))


def uniform_step_cost(config: ModelConfig, batch: int, q_len: int, cached: int, **kw) -> PhaseCost:
    """``batch`` sequences of ``q_len`` new tokens on ``cached`` each, in closed form: every op's cost is
    affine in the batch (weights once, the rest per sequence), so it is priced at batch 1 and 2 and
    extended; no array or tuple grows with the batch, and any batch answers at once."""
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch={batch!r} must be an integer >= 1")
    batch = int(batch)
    if batch <= 2:
        return step_cost(config, [q_len] * batch, [cached] * batch, **kw)
    one = step_cost(config, [q_len], [cached], **kw)
    two = step_cost(config, [q_len] * 2, [cached] * 2, **kw)
    ops = []
    for a, b in zip(one.ops, two.ops):
        fields = [int(x) + (batch - 1) * (int(y) - int(x)) for x, y in zip(
            (a.cost.flops, a.cost.bytes_weights, a.cost.bytes_activations, a.cost.bytes_kv),
            (b.cost.flops, b.cost.bytes_weights, b.cost.bytes_activations, b.cost.bytes_kv))]
        ops.append(OpCost(a.op, a.role, a.layer, Cost(*fields), a.compute, a.weights))
    return PhaseCost(one.phase, one.q_lens, one.cached, tuple(ops), repeat=batch)


def verify_step_cost(config: ModelConfig, batch: int, k: int, context: int, **kw) -> PhaseCost:
    """Speculative decoding's verification step: each of ``batch`` sequences brings its pending token
    and k draft tokens (k + 1 new tokens) on top of ``context`` cached ones, in closed form."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} draft tokens must be an integer >= 1")
    return uniform_step_cost(config, batch, k + 1, context, phase="prefill", **kw)


def count(config: ModelConfig, q_lens: Sequence[int], cached: Sequence[int], *, quant: str | None = None,
          kv_dtype: str = "float32", block_size: int = 16, backend: str = "numpy") -> list[tuple[str, Cost]]:
    """The counted side: the real Model.forward over this batch with a counting-only Ops (as
    ``generate.count_costs`` replays a run), on stand-in weights so any preset fits in memory.
    Returns the op calls of the last step, in order. float32 activations (what the engine runs)."""
    from ..config import CacheConfig
    from ..kv_cache import PagedKVCache
    from ..model import Model
    from ..ops import Ops
    from .cost import CostCounter

    _check(config, tuple(q_lens), tuple(cached), "float32", kv_dtype, block_size)
    counter = CostCounter(trace=True)
    model = Model(stand_in_weights(config, quant), Ops(backend, counter=counter, execute=False))
    n_blocks = sum(-(-(q + k) // block_size) for q, k in zip(q_lens, cached))
    cache = PagedKVCache(config, CacheConfig(block_size=block_size, num_blocks=n_blocks, dtype=kv_dtype))
    ids = list(range(len(q_lens)))
    filled = [i for i in ids if cached[i] > 0]
    if filled:                                                            # fill without a forward
        cache.prepare(filled, [np.zeros(cached[i], np.int64) for i in filled])
    batch = cache.prepare(ids, [np.zeros(q, np.int64) for q in q_lens])
    model.forward(batch, cache)
    return [(op, cost) for _, op, cost in counter.trace]


def stand_in_weights(config: ModelConfig, quant: str | None = None):
    """ModelWeights of shape-only float32 arrays (and QTensors of shape-only parts when quantized)."""
    from ..quant import QTensor
    from ..weights import LayerWeights, ModelWeights, extra_layer_shapes, layer_shapes

    fmt = get_format(quant) if quant else None

    def linear(shape):
        n, k = shape
        if fmt is None:
            return _stand_in(shape, np.float32)
        g = fmt.group_size
        k_pad = k if g == 0 else -(-k // g) * g
        if fmt.weight_bits == 8:
            return QTensor(fmt, shape, _stand_in((n, k_pad), np.int8),
                           _stand_in((n,) if g == 0 else (n, k_pad // g), np.float32))
        return QTensor(fmt, shape, _stand_in((n, k_pad // 2), np.uint8), _stand_in((n, k_pad // g), np.float32),
                       _stand_in((n, k_pad // g), np.uint8) if fmt.zero_point else None)

    c = config
    shapes = {**layer_shapes(c), **extra_layer_shapes(c)}
    layers = [LayerWeights(**{name: linear(s) if len(s) == 2 else _stand_in(s, np.float32)
                              for name, s in shapes.items()}) for _ in range(c.n_layers)]
    emb = _stand_in((c.vocab_size, c.dim), np.float32)
    out = emb if c.tied_embeddings and fmt is None else (
        linear((c.vocab_size, c.dim)) if fmt else _stand_in((c.vocab_size, c.dim), np.float32))
    return ModelWeights(c, emb, layers, _stand_in((c.dim,), np.float32), out)
