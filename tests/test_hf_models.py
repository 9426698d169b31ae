"""Hugging Face checkpoints against transformers, the oracle: tiny random models of every supported
architecture, both config layouts, float32 / float16 / bfloat16, single-file and sharded.
float32 logits at every position of a 520-token sequence within 1e-4 of the largest |logit| on the
numpy, C and Numba backends; greedy continuations equal through the engine (chunked prefill, paged
decode on small blocks); Triton under its interpreter on a short sequence."""
from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("TRITON_INTERPRET", "1")      # as tests/test_triton_backend.py: before triton loads

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hf_support import SEQ, VOCAB, build, oracle, pyinfer_greedy, pyinfer_logits, relative_error  # noqa: E402
from pyinfer.loaders import load_checkpoint  # noqa: E402
from pyinfer.model import Model  # noqa: E402
from pyinfer.ops import Ops  # noqa: E402
from pyinfer.weights import ModelWeights  # noqa: E402

LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
# name -> (architecture, build options); positions reach SEQ, far beyond llama3's 64 and Mistral's window
VARIANTS = {
    "llama-t5-headdim": ("llama", dict(head_dim=24, rope_parameters={"rope_type": "default", "rope_theta": 500000.0})),
    "llama3-t4-tied-bf16-sharded": ("llama", dict(layout=4, dtype="bfloat16", shard_bytes=60_000,
                                                  tie_word_embeddings=True, rope_parameters=LLAMA3)),
    "llama-linear-f16": ("llama", dict(dtype="float16", rope_parameters={"rope_type": "linear",
                                                                         "rope_theta": 10000.0, "factor": 4.0})),
    "mistral-t4-window": ("mistral", dict(layout=4, sliding_window=48)),
    "qwen2-tied": ("qwen2", dict(seed=7, tie_word_embeddings=True)),     # (seed: greedy not one token)
    "qwen3-t4": ("qwen3", dict(layout=4, head_dim=32)),
}
GREEDY = 24


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name -> (directory, prompt ids (SEQ,), oracle logits (SEQ, V), oracle greedy continuation)."""
    root = tmp_path_factory.mktemp("hf")
    made = {}
    for i, (name, (arch, opts)) in enumerate(VARIANTS.items()):
        d = build(str(root / name), arch, **{"seed": 100 + i, **opts})
        ids = np.random.default_rng(i).integers(0, VOCAB, SEQ)
        logits, greedy = oracle(d, ids, GREEDY)
        made[name] = (d, ids, logits, greedy)
    return made


@pytest.fixture(scope="module")
def loaded(checkpoints):
    return {name: load_checkpoint(d) for name, (d, *_rest) in checkpoints.items()}


def test_checkpoints_are_what_they_claim(checkpoints, loaded):
    """The variants exercise what they are named for (so the comparisons below can fail)."""
    c = {name: w.config for name, w in loaded.items()}
    assert c["llama-t5-headdim"].head_dim == 24 and c["llama-t5-headdim"].dim == 64
    assert c["llama-t5-headdim"].rope_theta == 500000.0          # read from rope_parameters
    assert c["llama3-t4-tied-bf16-sharded"].rope_scaling.rope_type == "llama3"
    assert c["llama3-t4-tied-bf16-sharded"].tied_embeddings
    assert len([f for f in os.listdir(checkpoints["llama3-t4-tied-bf16-sharded"][0]) if f.endswith(".safetensors")]) > 1
    assert c["llama-linear-f16"].rope_scaling.rope_type == "linear"
    assert c["mistral-t4-window"].sliding_window == 48 < SEQ
    assert c["qwen2-tied"].qkv_bias and c["qwen3-t4"].qk_norm and c["qwen3-t4"].head_dim == 32
    # The C backend's fused decode step runs the RoPE-scaled Llamas (its greedy test goes through it);
    # biases, q/k norms and windows it lacks, so those models decode op by op there.
    fused = {name: Model(w, Ops("c")).decode_plan is not None for name, w in loaded.items()}
    assert fused == {name: not name.startswith(("mistral", "qwen")) for name in fused}
    for name, (_, _, logits, greedy) in checkpoints.items():
        top2 = np.sort(logits, axis=-1)[:, -2:]
        assert np.median(top2[:, 1] - top2[:, 0]) > 1e-2 * np.abs(logits).max(), name   # decisive greedy
        assert len(set(greedy)) > 1, name


@pytest.mark.parametrize("backend", ["numpy", "c", "numba"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_transformers(checkpoints, loaded, name, backend):
    _, ids, want, _ = checkpoints[name]
    got = pyinfer_logits(Model(loaded[name], Ops(backend)), ids)
    err = relative_error(got, want)
    assert err < 1e-4, f"{name} on {backend}: max error {err:.2e} of the largest logit"
    assert np.array_equal(got.argmax(-1), want.argmax(-1)), name


@pytest.mark.parametrize("backend", ["numpy", "c", "numba"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_greedy_through_the_engine_matches_transformers(checkpoints, loaded, name, backend):
    _, ids, _, want = checkpoints[name]
    got = pyinfer_greedy(Model(loaded[name], Ops(backend)), ids, GREEDY)
    assert got == want, f"{name} on {backend}"


@pytest.mark.parametrize("name, feature", [("llama-t5-headdim", "rope_theta"),
                                           ("llama3-t4-tied-bf16-sharded", "rope_scaling"),
                                           ("llama-linear-f16", "rope_scaling"),
                                           ("mistral-t4-window", "sliding_window")])
def test_each_feature_matters_at_these_lengths(checkpoints, loaded, name, feature):
    """Dropping the feature (what pyinfer did before) is far outside the tolerance here."""
    _, ids, want, _ = checkpoints[name]
    w = loaded[name]
    plain = dataclasses.replace(w.config, **{feature: {"rope_scaling": None, "rope_theta": 10000.0}.get(feature, 0)})
    got = pyinfer_logits(Model(ModelWeights(plain, w.tok_embeddings, w.layers, w.norm, w.output)), ids)
    assert relative_error(got, want) > 1e-2


@pytest.mark.parametrize("name", list(VARIANTS))
def test_triton_short_sequence(checkpoints, loaded, name):
    """Triton's kernels (the interpreter in CI) on the first 64 positions (past Mistral's window)."""
    _, ids, want, _ = checkpoints[name]
    got = pyinfer_logits(Model(loaded[name], Ops("triton")), ids[:64])
    assert relative_error(got, want[:64]) < 1e-4
