"""GGUF metadata -> ModelConfig, with every key that changes the math modelled or refused by name.

Keys are llama.cpp's (gguf-py constants.Keys.LLM / Attention / Rope), prefixed by the architecture in
``general.architecture``. ``general.*`` (names, licences, file type) and ``tokenizer.*`` (read by
pyinfer.tokenization.gguf_vocab) carry no model math; any other key must be in the table of its
architecture with a value we model, else the load is refused naming it.
"""
from __future__ import annotations

import numpy as np

from ..config import ModelConfig, RopeScaling

# Architectures and how their q/k rows are ordered in GGUF: llama.cpp's converter permutes llama's
# (and Mistral's, which it writes as "llama") HF q/k back to Meta's adjacent pairs (LlamaModel.permute;
# rope type NORM); qwen2 / qwen3 are NEOX-rope and keep HF's rotate-half rows (Qwen2Model does not
# permute), which the loader permutes to pyinfer's adjacent pairs.
ROPE_PAIRS = {"llama": "adjacent", "qwen2": "halves", "qwen3": "halves"}
# per-layer tensors beyond llama's nine, by architecture (llama.cpp's names)
ARCH_EXTRAS = {"llama": {}, "qwen2": {"bq": "attn_q.bias", "bk": "attn_k.bias", "bv": "attn_v.bias"},
               "qwen3": {"q_norm": "attn_q_norm.weight", "k_norm": "attn_k_norm.weight"}}

# key suffix (after "{arch}.") -> what it is; "required" keys must be present.
REQUIRED = ("context_length", "embedding_length", "block_count", "feed_forward_length",
            "attention.head_count", "attention.layer_norm_rms_epsilon")
OPTIONAL = ("attention.head_count_kv", "rope.freq_base", "rope.dimension_count", "attention.key_length",
            "attention.value_length", "vocab_size", "rope.scaling.type", "rope.scaling.factor",
            "expert_count", "expert_used_count")
# Not in the table, so refused by name: attention.sliding_window (llama.cpp applies no window for these
# architectures' graphs, transformers would: ambiguous, so refused), rope.scaling.* beyond linear,
# logit softcapping, expert counts > 0, ...
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
    if scaling not in ("none", "linear"):
        raise ValueError(f"GGUF key {arch}.rope.scaling.type = {scaling!r} is not modelled (refused)")
    factor = meta.get(f"{arch}.rope.scaling.factor")
    if scaling == "none" and factor not in (None, 0, 1, 0.0, 1.0):
        raise ValueError(f"GGUF key {arch}.rope.scaling.factor = {factor} without a scaling type (refused)")
    for key in ("expert_count", "expert_used_count"):
        if meta.get(f"{arch}.{key}", 0):
            raise ValueError(f"GGUF key {arch}.{key} = {meta[f'{arch}.{key}']}: mixture-of-experts "
                             "models are not supported")


def config_from_gguf(meta: dict, vocab_rows: int, tied: bool, name: str,
                     rope_scaling: RopeScaling | None = None) -> ModelConfig:
    """ModelConfig of a checked GGUF; ``vocab_rows`` is token_embd's row count; ``rope_scaling`` the
    llama3 scaling a rope_freqs tensor was matched to (loaders.gguf_rope)."""
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
    if get("rope.scaling.type", "none") == "linear":
        if rope_scaling is not None:
            raise ValueError(f"GGUF has both {arch}.rope.scaling.type = linear and a rope_freqs tensor (refused)")
        rope_scaling = RopeScaling("linear", float(get("rope.scaling.factor", 1.0)))
    extras = ARCH_EXTRAS[arch]
    try:
        return ModelConfig(
            dim=dim, n_layers=int(get("block_count")), n_heads=heads,
            n_kv_heads=int(get("attention.head_count_kv", heads)), hidden_dim=int(get("feed_forward_length")),
            vocab_size=vocab_rows, max_seq_len=int(get("context_length")), head_dim=head_dim,
            rope_theta=float(get("rope.freq_base", 10000.0)),
            norm_eps=float(np.float32(get("attention.layer_norm_rms_epsilon"))),
            tied_embeddings=tied, name=name, rope_scaling=rope_scaling,
            qkv_bias="bq" in extras, qk_norm="q_norm" in extras)
    except ValueError as e:
        raise ValueError(f"GGUF metadata is invalid: {e}") from None


LLAMA3_CANDIDATES = ((1.0, 4.0, 8192),)     # (low_freq_factor, high_freq_factor, original context) as
                                            # Llama 3.1 / 3.2 ship them (their config.json rope_scaling)


def llama3_factors(head_dim: int, theta: float, factor: float, low: float, high: float, old: int) -> np.ndarray:
    """The rope_freqs tensor llama.cpp's converter writes for llama3 scaling (LlamaModel
    generate_extra_tensors): per frequency 1, factor, or the smooth blend's reciprocal."""
    freqs = 1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for freq in freqs.astype(np.float64):
        wavelen = 2 * np.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def rope_scaling_from_freqs(freqs: np.ndarray, head_dim: int, theta: float) -> RopeScaling:
    """The llama3 RopeScaling whose converter output equals the file's rope_freqs tensor, or a
    ValueError naming the tensor (other per-frequency factors are not modelled)."""
    freqs = np.asarray(freqs, dtype=np.float32).reshape(-1)
    if freqs.shape != (head_dim // 2,) or not np.all(np.isfinite(freqs)) or freqs.max() <= 0:
        raise ValueError(f"GGUF tensor rope_freqs.weight has shape {freqs.shape}; expected ({head_dim // 2},) "
                         "finite factors")
    factor = float(freqs.max())
    for low, high, old in LLAMA3_CANDIDATES:
        if np.allclose(llama3_factors(head_dim, theta, factor, low, high, old), freqs, rtol=1e-6, atol=0):
            return RopeScaling("llama3", factor, low, high, old)
    raise ValueError("GGUF tensor rope_freqs.weight holds per-frequency RoPE factors that are not llama3 "
                     f"scaling with (low, high, original context) in {LLAMA3_CANDIDATES}: not modelled (refused)")


def _short(value) -> str:
    if isinstance(value, list) and len(value) > 4:
        return f"[{', '.join(map(repr, value[:4]))}, ... ({len(value)} items)]"
    return repr(value)
