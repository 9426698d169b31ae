"""Checkpoint loading and saving: llama2.c (legacy, v1, v2 Q8_0), Hugging Face safetensors, npz,
GGUF (read only).

    load_checkpoint(path) -> ModelWeights          format told by what the path is
    save_checkpoint(weights, path, format)          format in FORMATS
"""
from __future__ import annotations

import os

from ..weights import ModelWeights
from . import llama2c
from .gguf import is_gguf, load_gguf, read_gguf
from .hf import load_hf, save_hf
from .llama2c import (Q80Checkpoint, read_legacy, read_v1, read_v2, read_v2_q80, write_legacy,
                      write_v1, write_v2)
from .npz import load_npz, save_npz
from .q80 import dequantize_q80, quantize_q80
from .safetensors_io import SafetensorsFile, load_safetensors, save_safetensors

FORMATS = ("legacy", "v1", "v2", "hf", "npz")

__all__ = [
    "FORMATS", "detect_format", "load_checkpoint", "save_checkpoint",
    "read_legacy", "read_v1", "read_v2", "read_v2_q80", "Q80Checkpoint", "quantize_q80",
    "dequantize_q80", "write_legacy", "write_v1", "write_v2", "load_hf", "save_hf",
    "load_npz", "save_npz", "is_gguf", "load_gguf", "read_gguf", "SafetensorsFile", "load_safetensors", "save_safetensors",
]


def detect_format(path: str | os.PathLike) -> str:
    """One of FORMATS or 'gguf': a file starting with the GGUF magic is 'gguf'; a directory,
    config.json, *.safetensors or *.index.json is 'hf'; *.npz is 'npz'; any other file is llama2.c,
    'v1' / 'v2' by its magic, else 'legacy'."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    name = os.path.basename(path)
    if is_gguf(path):
        return "gguf"
    if (os.path.isdir(path) or name == "config.json" or name.endswith(".safetensors")
            or name.endswith(".index.json")):
        return "hf"
    if name.endswith(".npz"):
        return "npz"
    return llama2c.detect_format(path)


_LOADERS = {"legacy": read_legacy, "v1": read_v1, "v2": read_v2, "hf": load_hf, "npz": load_npz,
            "gguf": load_gguf}


def load_checkpoint(path: str | os.PathLike) -> ModelWeights:
    """ModelWeights from any supported checkpoint: float32 (v2 is dequantized), except a GGUF's
    Q8_0 / Q4_0 linear weights, which stay QTensors (see loaders.gguf)."""
    return _LOADERS[detect_format(path)](path)


def save_checkpoint(weights: ModelWeights, path: str | os.PathLike, format: str, *,
                    group_size: int = 64, shard_max_bytes: int | None = None) -> None:
    """Write ``weights`` as ``format``. 'hf' writes a directory at ``path``; 'npz' needs a path
    ending in .npz; group_size applies to 'v2' and shard_max_bytes to 'hf'."""
    if format not in FORMATS:
        raise ValueError(f"unknown checkpoint format {format!r}; known: {', '.join(FORMATS)}")
    if format == "npz" and not os.fspath(path).endswith(".npz"):
        raise ValueError(f"npz checkpoint path {os.fspath(path)} must end in .npz")
    if format == "v2":
        write_v2(weights, path, group_size)
    elif format == "hf":
        save_hf(weights, path, shard_max_bytes)
    else:
        {"legacy": write_legacy, "v1": write_v1, "npz": save_npz}[format](weights, path)
