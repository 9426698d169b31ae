"""Helpers shared by the checkpoint loaders: flat tensor names, size checks, config from a header.

Flat names (used by the npz format, the v2 reader's raw tensors, and error messages):
    tok_embeddings, layers.{i}.{attn_norm,wq,wk,wv,wo,ffn_norm,w1,w2,w3}, norm, output
``output`` exists only when the classifier is not tied to the embedding table.
"""
from __future__ import annotations

import os

import numpy as np

from ..config import ModelConfig
from ..arena import pack_weights
from ..weights import LayerWeights, ModelWeights, layer_shapes

LAYER_FIELDS = ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3")
OPTIONAL_LAYER_FIELDS = ("bq", "bk", "bv", "q_norm", "k_norm")     # present when the config needs them


def tensor_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Flat name -> shape for every tensor a checkpoint of ``config`` stores."""
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings": (config.vocab_size, config.dim)}
    per_layer = layer_shapes(config)
    for i in range(config.n_layers):
        for field in LAYER_FIELDS:
            shapes[f"layers.{i}.{field}"] = per_layer[field]
    shapes["norm"] = (config.dim,)
    if not config.tied_embeddings:
        shapes["output"] = (config.vocab_size, config.dim)
    return shapes


def flatten(weights: ModelWeights, extras: bool = False) -> dict[str, np.ndarray]:
    """Flat name -> array (the arrays themselves, not copies). A format that stores only the plain
    Llama decoder (extras=False) refuses a config with more (rope scaling, biases, q/k norms, window)."""
    c = weights.config
    if not extras and not c.is_plain_llama:
        raise ValueError(f"config {c.name} has rope_scaling={c.rope_scaling}, qkv_bias={c.qkv_bias}, "
                         f"qk_norm={c.qk_norm}, sliding_window={c.sliding_window}: this format stores only "
                         "a plain Llama decoder; save it as 'hf'")
    flat = {"tok_embeddings": weights.tok_embeddings}
    for i, layer in enumerate(weights.layers):
        for field in LAYER_FIELDS + (OPTIONAL_LAYER_FIELDS if extras else ()):
            if getattr(layer, field) is not None:
                flat[f"layers.{i}.{field}"] = getattr(layer, field)
    flat["norm"] = weights.norm
    if not weights.config.tied_embeddings:
        flat["output"] = weights.output
    return flat


def assemble(config: ModelConfig, tensors: dict[str, np.ndarray], source: str = "") -> ModelWeights:
    """ModelWeights from flat names; a missing tensor is a ValueError naming it."""
    where = f" in {source}" if source else ""

    def get(name):
        try:
            return tensors[name]
        except KeyError:
            raise ValueError(f"tensor {name} is missing{where}") from None

    layers = [LayerWeights(**{f: get(f"layers.{i}.{f}") for f in LAYER_FIELDS},
                           **{f: tensors[f"layers.{i}.{f}"] for f in OPTIONAL_LAYER_FIELDS
                              if f"layers.{i}.{f}" in tensors})
              for i in range(config.n_layers)]
    emb = get("tok_embeddings")
    output = emb if config.tied_embeddings else get("output")
    return pack_weights(ModelWeights(config, emb, layers, get("norm"), output))


def check_finite_weights(weights: ModelWeights, source: str = "") -> None:
    """ValueError naming the first tensor holding NaN or inf (a quantized one: its scales). A loader
    refuses such a checkpoint unless asked not to (allow_nonfinite=True, for inspecting it): NaN
    would otherwise flow silently into every logit it reaches (docs/numerics.md)."""
    flat = flatten(weights, extras=True)             # every tensor, biases and q/k norms included
    flat.setdefault("output", weights.output)
    for name, a in flat.items():
        arr = getattr(a, "scales", a)                      # a QTensor's float part
        if not np.isfinite(arr).all():
            nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
            raise ValueError(f"tensor {name}{' in ' + source if source else ''} holds {nan} NaN and {inf} "
                             f"infinite value(s); pass allow_nonfinite=True to load it anyway (for inspection)")


def config_from_header(path: str | os.PathLike, **fields) -> ModelConfig:
    """ModelConfig from header fields; an implausible one is a ValueError naming file and field."""
    fields.setdefault("name", os.path.splitext(os.path.basename(os.fspath(path)))[0] or "custom")
    try:
        return ModelConfig(**fields)
    except ValueError as e:
        raise ValueError(f"checkpoint {os.fspath(path)} has an invalid header: {e}") from None


def check_file_size(path: str | os.PathLike, expected: int) -> None:
    """The byte count implied by the header must equal the file size exactly."""
    actual = os.path.getsize(path)
    if actual < expected:
        raise ValueError(f"checkpoint {os.fspath(path)} is truncated: header implies {expected} "
                         f"bytes, file has {actual}")
    if actual > expected:
        raise ValueError(f"checkpoint {os.fspath(path)} has {actual - expected} trailing bytes: "
                         f"header implies {expected} bytes, file has {actual}")


def read_exact(f, dtype: str, shape: tuple[int, ...], path: str | os.PathLike) -> np.ndarray:
    """Read ``prod(shape)`` items of little-endian ``dtype`` at the file's position, as an owned
    native-endian array of ``shape``."""
    count = int(np.prod(shape))
    arr = np.fromfile(f, dtype=np.dtype(dtype), count=count)
    if arr.size != count:   # only if the file changed after its size was checked
        raise ValueError(f"checkpoint {os.fspath(path)} ended early while reading")
    return arr.astype(arr.dtype.newbyteorder("="), copy=False).reshape(shape)
