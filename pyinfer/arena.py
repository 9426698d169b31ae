"""One buffer for a model's weights, in the order a decode step reads them.

A decode step streams every weight once. Held as separate numpy arrays, each small matrix is its own
allocation on 4 KiB pages: from DRAM, every matrix starts a new stream the hardware prefetcher must
find again, and every page costs a TLB walk whose page-table entries are themselves cold. Packed into
one buffer (2 MiB-aligned, so the kernel can back it with huge pages; numpy asks for them on large
allocations), the step reads one ascending stream: measured on this CPU, 1 thread, stories110M with
the caches flushed before each step, 1.03-1.2x faster decode in int8 and int4 (benchmarks/cpu_e2e.py).

pack_weights is applied where weights are made (random_weights, the checkpoint loaders,
quantize_weights); the packed arrays are views, so a model's arrays keep the buffer alive. Packing
copies: while it runs, the model is in memory twice.
"""
from __future__ import annotations

from dataclasses import fields, replace

import numpy as np

from .quant import QTensor
from .weights import LayerWeights, ModelWeights

STEP_ORDER = ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w3", "w2")   # csrc/fused.c's order
ALIGN = 64                      # bytes: each array starts on a cache line
HUGE_PAGE = 2 << 20


def _parts(w) -> list[np.ndarray]:
    if isinstance(w, QTensor):
        return [a for a in (w.qweight, w.scales, w.zeros) if a is not None]
    return [w]


def step_arrays(w: ModelWeights) -> list[np.ndarray]:
    """The arrays a decode step reads, in its order: each layer's norms and linear weights (a
    quantized weight's codes, scales and zero points), the final norm, the output head."""
    out = []
    for lw in w.layers:
        for name in STEP_ORDER:
            out += _parts(getattr(lw, name))
    return out + _parts(w.norm) + _parts(w.output)


def pack_weights(w: ModelWeights) -> ModelWeights:
    """The same weights, every array a decode step reads copied into one 2 MiB-aligned buffer in step
    order (the embedding table stays apart unless the head is tied to it: a step reads one row)."""
    arrays = step_arrays(w)
    if len({id(a) for a in arrays}) != len(arrays):       # one array used twice: leave it as it is
        return w
    size = sum(-(-a.nbytes // ALIGN) * ALIGN for a in arrays)
    buf = np.empty(size + HUGE_PAGE, np.uint8)                                  # (bytes,)
    offset = -buf.ctypes.data % HUGE_PAGE
    view = {}
    for a in arrays:
        v = buf[offset:offset + a.nbytes].view(a.dtype).reshape(a.shape)
        v[...] = a
        view[id(a)] = v
        offset += -(-a.nbytes // ALIGN) * ALIGN

    def moved(x):
        if x is None or (not isinstance(x, QTensor) and id(x) not in view):   # optional extras stay apart
            return x
        if isinstance(x, QTensor):
            return replace(x, qweight=view[id(x.qweight)], scales=view[id(x.scales)],
                           zeros=None if x.zeros is None else view[id(x.zeros)])
        return view[id(x)]

    layers = [LayerWeights(**{f.name: moved(getattr(lw, f.name)) for f in fields(LayerWeights)}) for lw in w.layers]
    output = moved(w.output)
    emb = output if w.output is w.tok_embeddings else w.tok_embeddings
    return ModelWeights(w.config, emb, layers, moved(w.norm), output)
