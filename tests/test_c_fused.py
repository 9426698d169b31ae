"""The C fused decode step (csrc/fused.c) against its reference composed of reference ops, for float32
and every quantized kind of linear; and the model using it: logits equal the op-by-op path, and
stories260K's greedy text is llama2.c's with backend c."""
from __future__ import annotations

import numpy as np
import pytest

from pyinfer.api import load
from pyinfer.config import ModelConfig, SamplingParams
from pyinfer.kernels import fused_reference as fref
from pyinfer.kernels.c_fused import make_decode_step
from pyinfer.model import Model
from pyinfer.ops import Ops
from pyinfer.quant import quantize_weights
from pyinfer.weights import random_weights
from c_support import isa  # noqa: F401 - fixture
from conftest import poisoned

# hidden_dim 96 is not a multiple of 64 or 128: the fused step pads activations as QTensor.matmul does
SMALL = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=300,
                    max_seq_len=300, name="small-gqa")


def fused_c_ops() -> Ops:
    """Ops("c") with the fused step native, whether or not the registry lists decode_step yet."""
    ops = Ops("c")
    if "decode_step" not in ops.native:
        from pyinfer import _C
        ops.decode_step = make_decode_step(_C.ffi, _C.lib)
        ops.native = (*ops.native, "decode_step")
    return ops


@pytest.fixture(scope="module")
def weights():
    return random_weights(SMALL, seed=5)


@pytest.mark.parametrize("fmt", [None, "int8", "int8-g32", "int4-g32", "int4-g64-zp", "int4-g128-a8",
                                 "int4-g32-zp-a8"])
def test_decode_step_matches_composed_reference(weights, isa, rng, fmt):
    w = quantize_weights(weights, fmt) if fmt else weights
    plan = fref.make_decode_plan(w)
    B, bs, nb = 3, 4, 40
    L, KVH, hd = SMALL.n_layers, SMALL.n_kv_heads, SMALL.head_dim
    cache = rng.standard_normal((2, L, nb, bs, KVH, hd)).astype(np.float32)
    context_lens = np.array([1, 5, 33])
    tables = rng.permutation(nb)[:B * 9].reshape(B, 9).astype(np.int32)
    positions = context_lens - 1
    slots = tables[np.arange(B), positions // bs].astype(np.int64) * bs + positions % bs
    tokens = rng.integers(0, SMALL.vocab_size, B)
    args = (tokens, positions, slots, tables, context_lens)
    got_cache, want_cache = cache.copy(), cache.copy()
    from pyinfer import _C
    got = make_decode_step(_C.ffi, _C.lib)(poisoned((B, SMALL.vocab_size)), *args, got_cache[0], got_cache[1], plan)
    if fmt and w.layers[0].wq.fmt.act_int8:          # W4A8 and W8A8 (int8-gG) quantize activations
        # int8 activations: a float difference of one ulp anywhere may flip a later rint(x / s) by one
        # step, which moves the outputs by ~1%. Bit-for-bit kernels are checked one by one in
        # test_c_quant; here the fused step must equal the same C kernels composed op by op.
        from pyinfer.ops import NumpyArrays
        c_ops = fref._Namespace(Ops("c").__dict__, NumpyArrays)
        want = fref._compose(c_ops, poisoned((B, SMALL.vocab_size)), *args, want_cache[0], want_cache[1], plan)
    else:
        want = fref.decode_step(poisoned((B, SMALL.vocab_size)), *args, want_cache[0], want_cache[1], plan)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(got_cache, want_cache, rtol=1e-4, atol=1e-5)     # this step's K/V written


def test_decode_step_refuses_bad_metadata(weights):
    plan = fref.make_decode_plan(weights)
    step = fused_c_ops().decode_step
    cache = np.zeros((2, SMALL.n_layers, 4, 4, SMALL.n_kv_heads, SMALL.head_dim), np.float32)
    ok = dict(tokens=np.array([3]), positions=np.array([0]), slot_mapping=np.array([0]),
              block_tables=np.array([[0]]), context_lens=np.array([1]))
    for name, bad, match in [("tokens", np.array([300]), r"tokens\[0\]=300 is outside"),
                             ("slot_mapping", np.array([16]), r"slot_mapping\[0\]=16 is outside"),
                             ("context_lens", np.array([5]), r"context_lens\[0\]=5 exceeds"),
                             ("block_tables", np.array([[4]]), r"block id 4 outside")]:
        args = {**ok, name: bad}
        with pytest.raises(ValueError, match=match):
            step(poisoned((1, SMALL.vocab_size)), *args.values(), cache[0], cache[1], plan)
    with pytest.raises(ValueError, match="k_cache has shape"):
        step(poisoned((1, SMALL.vocab_size)), *ok.values(), cache[0][:1], cache[1][:1], plan)


@pytest.mark.parametrize("fmt", [None, "int8-g32", "int4-g32-a8"])
def test_model_with_fused_step_equals_op_by_op(weights, rng, fmt):
    w = quantize_weights(weights, fmt) if fmt else weights
    fused, plain = Model(w, fused_c_ops()), Model(w, Ops("c"))
    assert fused.decode_plan is not None
    prompts = [rng.integers(0, 300, n) for n in (1, 9, 20)]
    logits = []
    for m in (fused, plain):
        cache = m.new_cache(num_blocks=30, block_size=4)
        out = [m.forward(cache.prepare([0, 1, 2], prompts), cache)]
        for step in range(4):
            out.append(m.forward(cache.prepare([0, 1, 2], [np.array([step + 7])] * 3), cache))
        logits.append(np.array(out))
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-4, atol=1e-4 * np.abs(logits[1]).max())


def test_stories260k_greedy_text_with_backend_c(stories260k):
    gen = load(str(stories260k["model"]), tokenizer=str(stories260k["tokenizer"]), backend="c")
    gen.model = Model(gen.model.weights, fused_c_ops())
    assert gen.model.decode_plan is not None
    text = gen.generate("Once upon a time", steps=256, params=SamplingParams(temperature=0.0)).text
    assert text.rstrip() == stories260k["greedy"].read_text().rstrip()


def test_decode_step_holds_no_model_alive_after_it_is_gone():
    """The fused step caches each plan's C views: only while the plan (the model) lives."""
    import gc
    import weakref

    from pyinfer.config import get_preset
    from pyinfer.model import Model
    from pyinfer.ops import Ops
    from pyinfer.weights import random_weights

    model = Model(random_weights(get_preset("toy"), seed=0), Ops("c"))
    cache = model.new_cache(block_size=16)
    model.forward(cache.prepare([0], [np.array([1])]), cache)
    assert model.decode_plan is not None
    plan, kv = weakref.ref(model.decode_plan), weakref.ref(cache.k)
    del model, cache
    gc.collect()
    assert plan() is None and kv() is None
