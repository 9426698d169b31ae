"""Readers and writers for llama2.c checkpoints (little-endian, float32 unless noted).

legacy (version 0, run.c): 7 int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
    vocab_size, seq_len), a negative vocab_size meaning an unshared classifier; then
    tok_embeddings, per-field stacks over layers (attn_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3),
    final norm, freq_cis_real and freq_cis_imag (seq_len * head_size/2 each, skipped on read),
    output if unshared.
v1 (export.py version1_export): u32 magic "ak42", i32 version, 7 int32 params, u8
    shared_classifier, zeros to 256 bytes; then all attn_norm, all ffn_norm, norm, tok_embeddings,
    all wq, wk, wv, wo, w1, w2, w3, output if unshared.
v2 (version2_export, Q8_0): as v1 plus an int32 group_size at byte 37 (unaligned); float32
    norms first, then tok_embeddings, wq..w3 stacks, output if unshared, each as int8 values
    (numel) followed by float32 scales (numel / group_size) of consecutive groups.

None of the formats stores head_dim (always dim / n_heads), rope_theta (10000) or norm_eps (1e-5):
the writers refuse a config that differs, since llama2.c would silently run it wrong.
Every reader checks the header against ModelConfig and the file size before reading any tensor;
the arrays returned are owned (read with np.fromfile; no memmap is kept).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from ..config import ModelConfig
from ..weights import ModelWeights, layer_shapes
from .common import (LAYER_FIELDS, assemble, check_file_size, config_from_header, flatten,
                     read_exact)
from .q80 import dequantize_q80, quantize_q80

MAGIC = 0x616B3432          # "ak42" as a little-endian uint32
HEADER_BYTES = 256          # v1 / v2 header, zero padded
LEGACY_HEADER = struct.Struct("<7i")
V1_HEADER = struct.Struct("<Ii7iB")       # magic, version, 7 params, shared_classifier: 37 bytes
V2_GROUP = struct.Struct("<i")            # group_size right after, at byte 37
NORM_NAMES = ("attn_norm", "ffn_norm")


def detect_format(path: str | os.PathLike) -> str:
    """'v1' or 'v2' when the file starts with the ak42 magic, else 'legacy'."""
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) == 8 and struct.unpack("<I", head[:4])[0] == MAGIC:
        version = struct.unpack("<i", head[4:])[0]
        if version not in (1, 2):
            raise ValueError(f"checkpoint {os.fspath(path)}: llama2.c version {version} is not "
                             "supported (known: 0 legacy, 1, 2)")
        return f"v{version}"
    return "legacy"


# ---- file layouts: (flat name, shape, stored as "f32" | "q80" | "skip") in file order --------

def _stacked(config: ModelConfig, fields, kind: str) -> list:
    shapes = layer_shapes(config)
    return [(f"layers.{i}.{f}", shapes[f], kind) for f in fields for i in range(config.n_layers)]


def _layout(config: ModelConfig, version: int) -> list[tuple[str, tuple[int, ...], str]]:
    c = config
    emb = (c.vocab_size, c.dim)
    out = [] if c.tied_embeddings else [("output", emb)]
    if version == 0:
        freq = (c.max_seq_len, c.head_dim // 2)
        return ([("tok_embeddings", emb, "f32")] + _stacked(c, LAYER_FIELDS, "f32")
                + [("norm", (c.dim,), "f32"), ("freq_cis_real", freq, "skip"),
                   ("freq_cis_imag", freq, "skip")] + [(n, s, "f32") for n, s in out])
    kind = "f32" if version == 1 else "q80"
    linears = [f for f in LAYER_FIELDS if f not in NORM_NAMES]
    return (_stacked(c, NORM_NAMES, "f32") + [("norm", (c.dim,), "f32")]
            + [("tok_embeddings", emb, kind)] + _stacked(c, linears, kind)
            + [(n, s, kind) for n, s in out])


def _nbytes(layout, group_size: int = 1) -> int:
    total = 0
    for _, shape, kind in layout:
        numel = int(np.prod(shape))
        total += numel + 4 * (numel // group_size) if kind == "q80" else 4 * numel
    return total


# ---- headers ------------------------------------------------------------------------------------

def _read_header(path, version: int) -> tuple[ModelConfig, int]:
    """(config, group_size) from the header, validated; group_size is 0 except for v2."""
    size = os.path.getsize(path)
    need = LEGACY_HEADER.size if version == 0 else HEADER_BYTES
    if size < need:
        raise ValueError(f"checkpoint {os.fspath(path)} is truncated: header implies at least "
                         f"{need} bytes, file has {size}")
    with open(path, "rb") as f:
        raw = f.read(need)
    if version == 0:
        dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = LEGACY_HEADER.unpack(raw)
        shared, group_size = vocab > 0, 0
        vocab = abs(vocab)
    else:
        magic, got_version, dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len, shared = \
            V1_HEADER.unpack_from(raw)
        if (magic, got_version) != (MAGIC, version):
            raise ValueError(f"checkpoint {os.fspath(path)} is not llama2.c v{version}: magic "
                             f"{magic:#x}, version {got_version}")
        if shared not in (0, 1):
            raise ValueError(f"checkpoint {os.fspath(path)}: shared_classifier byte is {shared}, "
                             "expected 0 or 1")
        group_size = V2_GROUP.unpack_from(raw, V1_HEADER.size)[0] if version == 2 else 0
    config = config_from_header(path, dim=dim, hidden_dim=hidden, n_layers=n_layers,
                                n_heads=n_heads, n_kv_heads=n_kv, vocab_size=vocab,
                                max_seq_len=seq_len, tied_embeddings=bool(shared))
    if version == 2 and not (group_size >= 1 and config.dim % group_size == 0):
        raise ValueError(f"checkpoint {os.fspath(path)}: group_size={group_size} must be >= 1 "
                         f"and divide dim={config.dim}")
    return config, group_size


def _check_writable(config: ModelConfig) -> None:
    if config.dim % config.n_heads or config.head_dim != config.dim // config.n_heads:
        raise ValueError(f"llama2.c formats need head_dim == dim / n_heads; config "
                         f"{config.name} has head_dim={config.head_dim}, dim={config.dim}, "
                         f"n_heads={config.n_heads}")
    if config.rope_theta != 10000.0 or config.norm_eps != 1e-5:
        raise ValueError(f"llama2.c formats assume rope_theta=10000 and norm_eps=1e-5; config "
                         f"{config.name} has rope_theta={config.rope_theta}, "
                         f"norm_eps={config.norm_eps}")


def _header_v1(config: ModelConfig, version: int, group_size: int = 0) -> bytes:
    c = config
    raw = V1_HEADER.pack(MAGIC, version, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                         c.vocab_size, c.max_seq_len, int(c.tied_embeddings))
    if version == 2:
        raw += V2_GROUP.pack(group_size)
    return raw + b"\0" * (HEADER_BYTES - len(raw))


# ---- Q8_0 (the arithmetic is in q80.py) ----------------------------------------------------

@dataclass
class Q80Checkpoint:
    """A v2 checkpoint as stored: float32 norms and Q8_0 linear weights (flat names)."""
    config: ModelConfig
    group_size: int
    # "layers.{i}.attn_norm", "layers.{i}.ffn_norm", "norm" -> float32 (dim,)
    norms: dict[str, np.ndarray]
    # "tok_embeddings", "layers.{i}.wq" ... "w3", "output" (untied only) ->
    #   (q: int8, shaped like the weight, e.g. (q_dim, dim); scales: float32 (numel // group_size,))
    quantized: dict[str, tuple[np.ndarray, np.ndarray]]

    def dequantize(self) -> ModelWeights:
        tensors = dict(self.norms)
        for name, (q, scales) in self.quantized.items():
            tensors[name] = dequantize_q80(q, scales, self.group_size)
        return assemble(self.config, tensors)


# ---- readers --------------------------------------------------------------------------------

def _read_tensors(path, version: int):
    config, group_size = _read_header(path, version)
    layout = _layout(config, version)
    start = LEGACY_HEADER.size if version == 0 else HEADER_BYTES
    check_file_size(path, start + _nbytes(layout, group_size or 1))
    tensors: dict = {}
    with open(path, "rb") as f:
        f.seek(start)
        for name, shape, kind in layout:
            if kind == "skip":
                f.seek(4 * int(np.prod(shape)), os.SEEK_CUR)
            elif kind == "f32":
                tensors[name] = read_exact(f, "<f4", shape, path)
            else:
                q = read_exact(f, "i1", shape, path)
                tensors[name] = (q, read_exact(f, "<f4", (q.size // group_size,), path))
    return config, group_size, tensors


def read_legacy(path: str | os.PathLike) -> ModelWeights:
    config, _, tensors = _read_tensors(path, 0)
    return assemble(config, tensors, os.fspath(path))


def read_v1(path: str | os.PathLike) -> ModelWeights:
    config, _, tensors = _read_tensors(path, 1)
    return assemble(config, tensors, os.fspath(path))


def read_v2_q80(path: str | os.PathLike) -> Q80Checkpoint:
    config, group_size, tensors = _read_tensors(path, 2)
    norms = {k: v for k, v in tensors.items() if not isinstance(v, tuple)}
    quantized = {k: v for k, v in tensors.items() if isinstance(v, tuple)}
    return Q80Checkpoint(config, group_size, norms, quantized)


def read_v2(path: str | os.PathLike) -> ModelWeights:
    """A v2 checkpoint dequantized to float32."""
    return read_v2_q80(path).dequantize()


def read_llama2c(path: str | os.PathLike) -> ModelWeights:
    """Any llama2.c checkpoint, the version told by its magic."""
    return {"legacy": read_legacy, "v1": read_v1, "v2": read_v2}[detect_format(path)](path)


# ---- writers --------------------------------------------------------------------------------

def _freq_cis(config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """export.py precompute_freqs_cis(head_size, 2 * seq_len)[:seq_len]:
    cos, sin, each (seq_len, head_size / 2)."""
    hs = config.head_dim
    freqs = 1.0 / (10000.0 ** (np.arange(0, hs, 2, dtype=np.float32)[: hs // 2] / np.float32(hs)))
    angles = np.outer(np.arange(config.max_seq_len, dtype=np.float32), freqs.astype(np.float32))
    angles = angles.astype(np.float64)      # float32 angles, correctly rounded cos / sin
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _write(weights: ModelWeights, path, version: int, group_size: int = 0) -> None:
    config = weights.config
    _check_writable(config)
    flat = flatten(weights)
    if version == 0:
        flat["freq_cis_real"], flat["freq_cis_imag"] = _freq_cis(config)
        vocab = config.vocab_size if config.tied_embeddings else -config.vocab_size
        c = config
        header = LEGACY_HEADER.pack(c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                                    vocab, c.max_seq_len)
    else:
        header = _header_v1(config, version, group_size)
    with open(path, "wb") as f:
        f.write(header)
        for name, _, kind in _layout(config, version):
            if kind == "q80":
                q, scales = quantize_q80(flat[name], group_size)
                q.tofile(f)
                scales.astype("<f4", copy=False).tofile(f)
            else:
                np.asarray(flat[name]).astype("<f4", copy=False).tofile(f)


def write_legacy(weights: ModelWeights, path: str | os.PathLike) -> None:
    _write(weights, path, 0)


def write_v1(weights: ModelWeights, path: str | os.PathLike) -> None:
    _write(weights, path, 1)


def write_v2(weights: ModelWeights, path: str | os.PathLike, group_size: int = 64) -> int:
    """Q8_0 export; group_size is halved until it divides dim (as export.py).
    Returns the group size used."""
    if group_size < 1:
        raise ValueError(f"group_size={group_size} must be >= 1")
    while weights.config.dim % group_size:
        group_size //= 2
    _write(weights, path, 2, group_size)
    return group_size
