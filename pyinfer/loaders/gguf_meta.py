"""GGUF metadata -> ModelConfig, with every key that changes the math modelled or refused by name.

Keys are llama.cpp's (gguf-py constants.Keys.LLM / Attention / Rope), prefixed by the architecture in
``general.architecture``. ``general.*`` (names, licences, file type) and ``tokenizer.*`` (read by
pyinfer.tokenization.gguf_vocab) carry no model math; any other key must be in the table of its
architecture with a value we model, else the load is refused naming it.
"""
from __future__ import annotations

import numpy as np

from ..config import ModelConfig

# Architectures and how their q/k rows are ordered in GGUF: llama.cpp's converter permutes llama's
# HF q/k back to Meta's adjacent pairs (LlamaModel.permute; rope type NORM); NEOX-rope architectures
# keep HF's rotate-half rows, which the loader permutes to pyinfer's adjacent pairs.
ROPE_PAIRS = {"llama": "adjacent"}

# key suffix (after "{arch}.") -> what it is; "required" keys must be present.
REQUIRED = ("context_length", "embedding_length", "block_count", "feed_forward_length",
            "attention.head_count", "attention.layer_norm_rms_epsilon")
OPTIONAL = ("attention.head_count_kv", "rope.freq_base", "rope.dimension_count", "attention.key_length",
            "attention.value_length", "vocab_size", "rope.scaling.type", "expert_count",
            "expert_used_count")
NO_MATH_PREFIXES = ("general.", "tokenizer.", "quantize.")   # quantize.imatrix.*: how it was made


def field_value(field):
    """A reader field as a Python value (str, int, float, bool or list)."""
    value = field.contents()
    return value


def metadata(reader) -> dict:
    """Every key of the file (the reader's GGUF.* header fields left out) -> its value."""
    return {k: field_value(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def architecture(meta: dict) -> str:
    arch = meta.get("general.architecture")
    if arch is None:
        raise ValueError("GGUF file has no general.architecture")
    if arch not in ROPE_PAIRS:
        raise ValueError(f"GGUF architecture {arch!r} is not supported (supported: {', '.join(ROPE_PAIRS)})")
    return arch


def check_keys(meta: dict, arch: str) -> None:
    """Refuse any key that is neither informational nor modelled for ``arch``."""
    known = {f"{arch}.{k}" for k in REQUIRED + OPTIONAL}
    for key in meta:
        if key.startswith(NO_MATH_PREFIXES) or key in known:
            continue
        if key == "split.count" and meta[key] == 1:
            continue
        raise ValueError(f"GGUF key {key} = {_short(meta[key])} is not modelled by pyinfer (refused)")
    missing = [f"{arch}.{k}" for k in REQUIRED if f"{arch}.{k}" not in meta]
    if missing:
        raise ValueError(f"GGUF file is missing required key(s): {', '.join(missing)}")
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling != "none":
        raise ValueError(f"GGUF key {arch}.rope.scaling.type = {scaling!r} is not modelled (refused)")
    for key in ("expert_count", "expert_used_count"):
        if meta.get(f"{arch}.{key}", 0):
            raise ValueError(f"GGUF key {arch}.{key} = {meta[f'{arch}.{key}']}: mixture-of-experts "
                             "models are not supported")


def config_from_gguf(meta: dict, vocab_rows: int, tied: bool, name: str) -> ModelConfig:
    """ModelConfig of a checked GGUF; ``vocab_rows`` is token_embd's row count."""
    arch = architecture(meta)
    check_keys(meta, arch)

    def get(key, default=None):
        return meta.get(f"{arch}.{key}", default)

    dim, heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(get("attention.key_length", 0) or 0) or (dim // heads if dim % heads == 0 else 0)
    if get("attention.value_length") is not None and int(get("attention.value_length")) != head_dim:
        raise ValueError(f"GGUF {arch}.attention.value_length = {get('attention.value_length')} differs "
                         f"from the key length {head_dim}; not supported")
    rope_dims = get("rope.dimension_count")
    if rope_dims is not None and int(rope_dims) != head_dim:
        raise ValueError(f"GGUF {arch}.rope.dimension_count = {rope_dims} rotates part of a head of "
                         f"{head_dim}; partial RoPE is not supported")
    if get("vocab_size") is not None and int(get("vocab_size")) != vocab_rows:
        raise ValueError(f"GGUF {arch}.vocab_size = {get('vocab_size')} but token_embd has {vocab_rows} rows")
    try:
        return ModelConfig(
            dim=dim, n_layers=int(get("block_count")), n_heads=heads,
            n_kv_heads=int(get("attention.head_count_kv", heads)), hidden_dim=int(get("feed_forward_length")),
            vocab_size=vocab_rows, max_seq_len=int(get("context_length")), head_dim=head_dim,
            rope_theta=float(get("rope.freq_base", 10000.0)),
            norm_eps=float(np.float32(get("attention.layer_norm_rms_epsilon"))),
            tied_embeddings=tied, name=name)
    except ValueError as e:
        raise ValueError(f"GGUF metadata is invalid: {e}") from None


def _short(value) -> str:
    if isinstance(value, list) and len(value) > 4:
        return f"[{', '.join(map(repr, value[:4]))}, ... ({len(value)} items)]"
    return repr(value)
