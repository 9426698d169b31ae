"""pyinfer's own checkpoint format: an uncompressed .npz (np.savez) holding

    config              0-d unicode array: json.dumps(ModelConfig.to_dict())
    tok_embeddings, layers.{i}.{attn_norm,wq,...,w3}, norm, output (untied only)   float32

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
from ..weights import ModelWeights
from .common import assemble, flatten, tensor_shapes

CONFIG_KEY = "config"


def save_npz(weights: ModelWeights, path: str | os.PathLike) -> None:
    """np.savez writes to ``path`` exactly when it ends in .npz (else it appends .npz)."""
    arrays = {name: np.ascontiguousarray(a, dtype=np.float32)
              for name, a in flatten(weights).items()}
    np.savez(path, **{CONFIG_KEY: np.array(json.dumps(weights.config.to_dict()))}, **arrays)


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
        tensors = {}
        for name, shape in tensor_shapes(config).items():
            if name not in npz.files:
                raise ValueError(f"tensor {name} is missing from {path}")
            got_shape, dtype = _npy_header(zf, name + ".npy")
            if got_shape != shape or dtype != np.float32:
                raise ValueError(f"tensor {name} in {path} is {dtype} {got_shape}, config "
                                 f"expects float32 {shape}")
            tensors[name] = npz[name]
    return assemble(config, tensors, path)
