"""Loader mutation fuzzer (issue #12 point 4): bit flips, byte overwrites, truncations and appended
bytes in every supported checkpoint format, and HF configs with wrong types. Every mutated
checkpoint either loads (a flipped weight bit is a different valid float) into weights that are
finite and of the header's shapes, or is refused with a ValueError: never another exception, a
crash or a hang. The seed is printed (PYINFER_SEED replays it); PYINFER_FUZZ_ITERS sets the
mutations per format (default 12; e.g. 500 for a local soak).

A new format is one entry in WRITERS: a function (weights, directory) -> the path to load, and the
file inside it to mutate. GGUF goes here once its loader lands (the GGUF helper's branch):
    "gguf": lambda w, d: (write_gguf(w, d / "m.gguf"), "m.gguf")
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pyinfer.config import ModelConfig
from pyinfer.loaders import load_checkpoint, save_checkpoint
from pyinfer.quant import quantize_weights
from pyinfer.weights import random_weights

CFG = ModelConfig(dim=16, n_layers=2, n_heads=2, n_kv_heads=1, hidden_dim=24, vocab_size=32, max_seq_len=16)
ITERS = int(os.environ.get("PYINFER_FUZZ_ITERS", "12"))


def _write(fmt, name):
    def writer(weights, d: Path):
        path = d / name
        save_checkpoint(weights, path, fmt)
        return path, path
    return writer


def _hf(part):
    def writer(weights, d: Path):
        save_checkpoint(weights, d / "hf", "hf")
        return d / "hf", d / "hf" / part
    return writer


def _npz_quantized(weights, d: Path):
    path = d / "q.npz"
    save_checkpoint(quantize_weights(weights, "int4-g32-zp"), path, "npz")   # noqa: the fmt name is pyinfer.quant's
    return path, path


WRITERS = {                                  # format -> writer(weights, dir) -> (path to load, file to mutate)
    "llama2c-legacy": _write("legacy", "m.bin"),
    "llama2c-v1": _write("v1", "m.bin"),
    "llama2c-v2": _write("v2", "m.bin"),
    "npz": _write("npz", "m.npz"),
    "npz-int4": _npz_quantized,
    "hf-safetensors": _hf("model.safetensors"),
    "hf-config": _hf("config.json"),
}


def mutate(data: bytes, rng) -> tuple[bytes, str]:
    kind = rng.choice(["flip", "flips", "byte", "truncate", "append", "header flip"])
    b = bytearray(data)
    if kind == "flip":
        i = int(rng.integers(len(b)))
        b[i] ^= 1 << int(rng.integers(8))
    elif kind == "flips":
        for i in rng.integers(len(b), size=int(rng.integers(2, 32))):
            b[int(i)] ^= 1 << int(rng.integers(8))
    elif kind == "byte":
        b[int(rng.integers(len(b)))] = int(rng.integers(256))
    elif kind == "truncate":
        b = b[:int(rng.integers(len(b)))]
    elif kind == "append":
        b += bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    else:                                                           # the first 128 bytes: headers
        i = int(rng.integers(min(128, len(b))))
        b[i] ^= 1 << int(rng.integers(8))
    return bytes(b), str(kind)


def check_loaded(weights, path):
    c = weights.config
    assert weights.tok_embeddings.shape == (c.vocab_size, c.dim), path
    assert len(weights.layers) == c.n_layers, path
    for name, a in [("tok_embeddings", weights.tok_embeddings), ("norm", weights.norm)]:
        assert np.isfinite(a).all(), f"{path}: non-finite {name} loaded without allow_nonfinite"


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_mutated_checkpoints_load_or_are_refused(fmt, tmp_path, seed):
    rng = np.random.default_rng(seed)
    clean = tmp_path / "clean"
    clean.mkdir()
    path, target = WRITERS[fmt](random_weights(CFG, seed=int(rng.integers(1 << 30))), clean)
    load_checkpoint(path)                                           # the clean one loads
    original = target.read_bytes()
    outcomes = {}
    for i in range(ITERS):
        data, kind = mutate(original, rng)
        target.write_bytes(data)
        try:
            check_loaded(load_checkpoint(path), path)
            outcome = "loaded"
        except ValueError:
            outcome = "refused"
        outcomes[(kind, outcome)] = outcomes.get((kind, outcome), 0) + 1
    target.write_bytes(original)
    print(f"seed={seed} {fmt}: {outcomes}")


def wrong_values(value):
    """Values of other JSON types than ``value``'s (and the awkward ones of its own)."""
    pool = [None, "16", [16], {"a": 1}, True, 1.5, -1, 0, 10 ** 30, 1e400, float("nan")]
    return [v for v in pool if type(v) is not type(value) or v != value]


HF_FLOAT_FIELDS = {"rms_norm_eps", "rope_theta"}     # D7/D19 for these belong to the h11-models branch


def _hf_config_fields(tmp_path):
    d = tmp_path / "hfc"
    save_checkpoint(random_weights(CFG, seed=0), d, "hf")
    return d, json.loads((d / "config.json").read_text())


def _try_hf_config(d, config, key, value):
    (d / "config.json").write_text(json.dumps({**config, key: value}) if key else json.dumps(value))
    try:
        check_loaded(load_checkpoint(d), d)
    except ValueError:
        pass


def test_hf_configs_with_wrong_types_load_or_are_refused(tmp_path):
    """Every config field but the two float ones, set to each other JSON type."""
    d, config = _hf_config_fields(tmp_path)
    for key, value in config.items():
        if key not in HF_FLOAT_FIELDS:
            for bad in wrong_values(value):
                _try_hf_config(d, config, key, bad)
    shutil.rmtree(d)


def test_hf_config_float_fields_and_non_objects_load_or_are_refused(tmp_path):
    d, config = _hf_config_fields(tmp_path)
    for key in sorted(HF_FLOAT_FIELDS):
        for bad in wrong_values(config[key]):
            _try_hf_config(d, config, key, bad)
    for whole in (None, [], "config", 3):
        _try_hf_config(d, config, None, whole)
