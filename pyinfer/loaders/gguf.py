"""GGUF checkpoints (llama.cpp's format) through the ``gguf`` package's GGUFReader.

    read_gguf(path) -> GGUFCheckpoint(weights, metadata, notes)
    load_gguf(path) -> ModelWeights

Tensor names are llama.cpp's (gguf-py constants.TENSOR_NAMES): token_embd, output_norm, output
(absent: tied to token_embd), blk.{i}.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
ffn_gate, ffn_down, ffn_up}. Linear weights stored as Q8_0 / Q4_0 stay quantized (int8-g32 /
int4-g32-a8, the same bits); F32/F16/BF16 become float32; K-quants are dequantized to float32 and
listed in ``notes``. A tensor of another type, or a name not in this table, is refused by name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..quant import QTensor
from ..weights import LayerWeights, ModelWeights
from ..arena import pack_weights
from . import gguf_meta

MAGIC = b"GGUF"
LAYER_NAMES = {"attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
               "wo": "attn_output", "ffn_norm": "ffn_norm", "w1": "ffn_gate", "w2": "ffn_down",
               "w3": "ffn_up"}
LINEAR = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
NO_WEIGHTS = ()          # tensors known to carry no weights (none so far for the supported archs)


@dataclass
class GGUFCheckpoint:
    weights: ModelWeights
    metadata: dict
    notes: list[str] = field(default_factory=list)    # what the load did beyond copying (dequantized ...)

    @property
    def quantized(self) -> bool:
        """True when any weight was kept in a GGUF quantized type."""
        w = self.weights
        return isinstance(w.output, QTensor) or any(
            isinstance(getattr(lw, n), QTensor) for lw in w.layers for n in LINEAR)


def is_gguf(path: str | os.PathLike) -> bool:
    """True when the file starts with the GGUF magic."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == MAGIC


def _reader(path: str):
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ValueError(f"{path} is a GGUF file; reading it needs the gguf package "
                         "(pip install 'pyinfer[hf]')") from None
    try:
        return GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise ValueError(f"{path} is not a readable GGUF file: {e}") from None


def read_gguf(path: str | os.PathLike) -> GGUFCheckpoint:
    """The model in a GGUF file (needs the ``gguf`` package: pip install 'pyinfer[hf]')."""
    path = os.fspath(path)
    reader = _reader(path)
    from . import gguf_tensors                           # imports gguf: only when a GGUF is read
    from .gguf_tensors import DEQUANTIZED, KEPT_QUANT, QT
    meta = gguf_meta.metadata(reader)
    tensors = {t.name: t for t in reader.tensors}
    arch = gguf_meta.architecture(meta)
    if "token_embd.weight" not in tensors:
        raise ValueError(f"GGUF tensor token_embd.weight is missing from {path}")
    for t in tensors.values():
        gguf_tensors.check_type(t)
    vocab_rows = gguf_tensors.shape_of(tensors["token_embd.weight"])[0]
    tied = "output.weight" not in tensors
    name = str(meta.get("general.name") or os.path.splitext(os.path.basename(path))[0])
    config = gguf_meta.config_from_gguf(meta, vocab_rows, tied, name)
    expected = _expected_names(config)
    unknown = sorted(set(tensors) - set(expected) - set(NO_WEIGHTS))
    if unknown:
        raise ValueError(f"GGUF tensor(s) not modelled by pyinfer for {arch}: {', '.join(unknown[:8])}"
                         + (f" (and {len(unknown) - 8} more)" if len(unknown) > 8 else ""))
    for gname, shape in expected.items():
        if gname not in tensors:
            raise ValueError(f"GGUF tensor {gname} is missing from {path}")
        got = gguf_tensors.shape_of(tensors[gname])
        if got != shape:
            raise ValueError(f"GGUF tensor {gname} has shape {got}, the metadata implies {shape}")
    notes: list[str] = []
    dequantized = [n for n, t in tensors.items() if t.tensor_type in DEQUANTIZED]
    if dequantized:
        kinds = sorted({gguf_tensors.type_name(tensors[n]) for n in dequantized})
        notes.append(f"{len(dequantized)} tensor(s) in {'/'.join(kinds)} dequantized to float32 "
                     f"(K-quants run as float): {', '.join(dequantized[:4])}"
                     + (" ..." if len(dequantized) > 4 else ""))
    kept = sorted({gguf_tensors.type_name(t) for t in tensors.values() if t.tensor_type in KEPT_QUANT})
    if kept:
        notes.append("kept quantized bit for bit: " + ", ".join(
            f"{k} as {KEPT_QUANT[QT[k]]}" for k in kept))

    def linear(gname: str, n_heads: int = 0):
        t = tensors[gname]
        w = gguf_tensors.to_qtensor(t) if t.tensor_type in KEPT_QUANT else gguf_tensors.to_float32(t)
        if n_heads and gguf_meta.ROPE_PAIRS[arch] == "halves":
            w = gguf_tensors.permute_rows(w, n_heads)
        return w

    layers = []
    for i in range(config.n_layers):
        heads = {"wq": config.n_heads, "wk": config.n_kv_heads}
        parts = {}
        for ours, theirs in LAYER_NAMES.items():
            gname = f"blk.{i}.{theirs}.weight"
            parts[ours] = linear(gname, heads.get(ours, 0)) if ours in LINEAR else \
                gguf_tensors.to_float32(tensors[gname])
        layers.append(LayerWeights(**parts))
    emb_t = tensors["token_embd.weight"]
    emb = gguf_tensors.to_float32(emb_t)                 # a row lookup: dequantized exactly, as ggml's get_rows
    if not tied:
        output = linear("output.weight")
    elif emb_t.tensor_type in KEPT_QUANT:                # tied head on a quantized table: the same codes
        output = gguf_tensors.to_qtensor(emb_t)
        config = config.with_(tied_embeddings=False)
    else:
        output = emb
    norm = gguf_tensors.to_float32(tensors["output_norm.weight"])
    weights = pack_weights(ModelWeights(config, emb, layers, norm, output))
    return GGUFCheckpoint(weights, meta, notes)


def _expected_names(config) -> dict[str, tuple[int, ...]]:
    from .common import tensor_shapes
    out = {}
    for flat, shape in tensor_shapes(config).items():
        if flat.startswith("layers."):
            _, i, f = flat.split(".")
            out[f"blk.{i}.{LAYER_NAMES[f]}.weight"] = shape
        else:
            out[{"tok_embeddings": "token_embd.weight", "norm": "output_norm.weight",
                 "output": "output.weight"}[flat]] = shape
    return out


def load_gguf(path: str | os.PathLike) -> ModelWeights:
    return read_gguf(path).weights
