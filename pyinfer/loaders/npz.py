"""pyinfer's own checkpoint format: an uncompressed .npz (np.savez) holding

    config              0-d unicode array: json.dumps(ModelConfig.to_dict())
    tok_embeddings, layers.{i}.{attn_norm,wq,...,w3}, norm, output (untied only)   float32

A quantized model (pyinfer.quant) adds ``quant`` (0-d unicode: the format name) and stores each
linear weight and the output head (always, tied or not) as ``NAME.qweight``, ``NAME.scales`` and,
for zero-point formats, ``NAME.zeros``, in QTensor's layout.

Loading never unpickles (allow_pickle=False) and checks each array's .npy header (shape, dtype)
against the config before reading its data.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import fields

import numpy as np

from ..config import ModelConfig
from ..quant import LINEAR_WEIGHTS, QTensor, get_format
from ..weights import ModelWeights
from .common import assemble, flatten, tensor_shapes

CONFIG_KEY = "config"


QUANT_KEY = "quant"


def _quant_format(weights: ModelWeights):
    fmts = {w.fmt for w in [weights.output, *(getattr(lw, n) for lw in weights.layers for n in LINEAR_WEIGHTS)]
            if isinstance(w, QTensor)}
    if len(fmts) > 1:
        raise ValueError(f"cannot save a model mixing quantization formats {sorted(f.name for f in fmts)}")
    return fmts.pop() if fmts else None


def save_npz(weights: ModelWeights, path: str | os.PathLike) -> None:
    """np.savez writes to ``path`` exactly when it ends in .npz (else it appends .npz)."""
    fmt = _quant_format(weights)
    flat = flatten(weights)
    if fmt is not None:
        flat["output"] = weights.output
    arrays, extra = {}, {}
    for name, a in flat.items():
        if isinstance(a, QTensor):
            arrays[f"{name}.qweight"], arrays[f"{name}.scales"] = a.qweight, a.scales
            if a.zeros is not None:
                arrays[f"{name}.zeros"] = a.zeros
        else:
            arrays[name] = np.ascontiguousarray(a, dtype=np.float32)
    if fmt is not None:
        extra[QUANT_KEY] = np.array(fmt.name)
    np.savez(path, **{CONFIG_KEY: np.array(json.dumps(weights.config.to_dict()))}, **extra, **arrays)


def _qtensor_shapes(fmt, shape: tuple[int, int]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Stored arrays of a QTensor standing for a float weight of ``shape``."""
    n, k = shape
    g = fmt.group_size
    k_pad = -(-k // g) * g if g else k
    out = {"qweight": ((n, k_pad // 2), np.dtype(np.uint8)) if fmt.weight_bits == 4 else
           ((n, k_pad), np.dtype(np.int8)),
           "scales": (((n, k_pad // g) if g else (n,)), np.dtype(np.float32))}
    if fmt.zero_point:
        out["zeros"] = ((n, k_pad // g), np.dtype(np.uint8))
    return out


def _config_from_json(text: str, path: str) -> ModelConfig:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: config entry is not valid JSON ({e})") from None
    known = {f.name for f in fields(ModelConfig)}
    if not isinstance(d, dict) or set(d) - known:
        extra = sorted(set(d) - known) if isinstance(d, dict) else d
        raise ValueError(f"{path}: config has unknown field(s) {extra}")
    try:
        return ModelConfig(**d)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: config is invalid: {e}") from None


def _npy_header(zf: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    with zf.open(member) as f:
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"npz member {member}: .npy format version {version} is not supported")
        shape, _, dtype = readers[version](f)
    return shape, dtype


def load_npz(path: str | os.PathLike) -> ModelWeights:
    path = os.fspath(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not an npz (zip) file") from None
    with zf, np.load(path, allow_pickle=False) as npz:
        if CONFIG_KEY not in npz.files:
            raise ValueError(f"{path} has no {CONFIG_KEY!r} entry")
        config_arr = npz[CONFIG_KEY]
        if config_arr.dtype.kind != "U" or config_arr.ndim != 0:
            raise ValueError(f"{path}: {CONFIG_KEY!r} entry is not a JSON string")
        config = _config_from_json(str(config_arr), path)
        fmt = get_format(str(npz[QUANT_KEY])) if QUANT_KEY in npz.files else None
        tensors = {}
        shapes = tensor_shapes(config)
        if fmt is not None:
            shapes["output"] = (config.vocab_size, config.dim)
        for name, shape in shapes.items():
            if fmt is not None and len(shape) == 2 and name != "tok_embeddings":
                parts = {}
                for part, (want_shape, want_dtype) in _qtensor_shapes(fmt, shape).items():
                    member = f"{name}.{part}"
                    if member not in npz.files:
                        raise ValueError(f"tensor {member} is missing from {path}")
                    got_shape, dtype = _npy_header(zf, member + ".npy")
                    if got_shape != want_shape or dtype != want_dtype:
                        raise ValueError(f"tensor {member} in {path} is {dtype} {got_shape}, "
                                         f"format {fmt.name} expects {want_dtype} {want_shape}")
                    parts[part] = npz[member]
                tensors[name] = QTensor(fmt, shape, parts["qweight"], parts["scales"], parts.get("zeros"))
                continue
            if name not in npz.files:
                raise ValueError(f"tensor {name} is missing from {path}")
            got_shape, dtype = _npy_header(zf, name + ".npy")
            if got_shape != shape or dtype != np.float32:
                raise ValueError(f"tensor {name} in {path} is {dtype} {got_shape}, config "
                                 f"expects float32 {shape}")
            tensors[name] = npz[name]
    weights = assemble(config, tensors, path)
    if fmt is not None:
        weights.output = tensors["output"]
    return weights
