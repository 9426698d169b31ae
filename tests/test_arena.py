"""pack_weights: one buffer in decode-step order, the same values, the tied head still the embedding."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.arena import ALIGN, HUGE_PAGE, pack_weights, step_arrays
from pyinfer.config import ModelConfig, get_preset
from pyinfer.quant import quantize, quantize_weights
from pyinfer.weights import LayerWeights, ModelWeights, layer_shapes, random_weights


def _loose(cfg: ModelConfig, fmt, rng) -> ModelWeights:
    """Weights as separate arrays, made without pack_weights (random_weights and quantize_weights pack):
    what a loader holds before packing."""
    def linear(shape):
        w = rng.standard_normal(shape, dtype=np.float32)
        return quantize(w, fmt) if fmt and len(shape) == 2 else w
    layers = [LayerWeights(**{n: linear(s) for n, s in layer_shapes(cfg).items()}) for _ in range(cfg.n_layers)]
    emb = rng.standard_normal((cfg.vocab_size, cfg.dim), dtype=np.float32)
    out = emb if cfg.tied_embeddings and not fmt else linear((cfg.vocab_size, cfg.dim))
    return ModelWeights(cfg, emb, layers, rng.standard_normal(cfg.dim, dtype=np.float32), out)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("fmt", [None, "int8-g32", "int4-g32-zp"])
def test_pack_keeps_values_and_lays_arrays_out_in_step_order(tied, fmt):
    cfg = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=67, max_seq_len=32,
                      tied_embeddings=tied, name="arena-test")
    loose = _loose(cfg, fmt, np.random.default_rng())
    packed = pack_weights(loose)
    before, after = step_arrays(loose), step_arrays(packed)
    assert len(before) == len(after)
    addresses = [a.ctypes.data for a in after]
    assert addresses == sorted(addresses) and all(x % ALIGN == 0 for x in addresses)
    assert addresses[0] % HUGE_PAGE == 0
    base = after[0].base
    for a, b in zip(before, after):
        assert b.base is base and b.flags.c_contiguous and b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(a, b)
    assert (packed.output is packed.tok_embeddings) == (tied and fmt is None)


def test_made_weights_come_packed():
    w = quantize_weights(random_weights(get_preset("toy"), seed=0), "int4-g32-a8")
    bases = {a.base.ctypes.data if a.base is not None else a.ctypes.data for a in step_arrays(w)}
    assert len(bases) == 1
