"""The weights of a Llama decoder, their shape checks, and seeded random weights.

Layout (llama2.c / PyTorch): every linear weight is (out_features, in_features),
row-major float32, so ``y = x @ W.T``. RoPE rotates adjacent pairs (2i, 2i+1);
loaders for formats that use rotate-half (Hugging Face) permute wq/wk on load.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

import numpy as np

from .config import ModelConfig


@dataclass
class LayerWeights:
    attn_norm: np.ndarray   # (dim,)
    wq: np.ndarray          # (n_heads * head_dim, dim)
    wk: np.ndarray          # (n_kv_heads * head_dim, dim)
    wv: np.ndarray          # (n_kv_heads * head_dim, dim)
    wo: np.ndarray          # (dim, n_heads * head_dim)
    ffn_norm: np.ndarray    # (dim,)
    w1: np.ndarray          # (hidden_dim, dim)   gate
    w2: np.ndarray          # (dim, hidden_dim)   down
    w3: np.ndarray          # (hidden_dim, dim)   up
    # Present only when the config says so (None otherwise); rows in adjacent-pair RoPE order like wq/wk.
    bq: np.ndarray | None = None      # (n_heads * head_dim,)     config.qkv_bias
    bk: np.ndarray | None = None      # (n_kv_heads * head_dim,)  config.qkv_bias
    bv: np.ndarray | None = None      # (n_kv_heads * head_dim,)  config.qkv_bias
    q_norm: np.ndarray | None = None  # (head_dim,)               config.qk_norm
    k_norm: np.ndarray | None = None  # (head_dim,)               config.qk_norm


@dataclass
class ModelWeights:
    config: ModelConfig
    tok_embeddings: np.ndarray   # (vocab_size, dim)   linear weights below may be quant.QTensor
    layers: list[LayerWeights]
    norm: np.ndarray             # (dim,)
    output: np.ndarray           # (vocab_size, dim); the same array as tok_embeddings when tied

    def __post_init__(self):
        check_weights(self)

    def nbytes(self) -> int:
        total = self.tok_embeddings.nbytes + self.norm.nbytes
        if self.output is not self.tok_embeddings:
            total += self.output.nbytes
        for layer in self.layers:
            total += sum(getattr(layer, f.name).nbytes for f in fields(LayerWeights)
                         if getattr(layer, f.name) is not None)
        return total


def layer_shapes(c: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shapes of the weights every layer holds (the llama2.c decoder's nine)."""
    return {
        "attn_norm": (c.dim,), "wq": (c.q_dim, c.dim), "wk": (c.kv_dim, c.dim),
        "wv": (c.kv_dim, c.dim), "wo": (c.dim, c.q_dim), "ffn_norm": (c.dim,),
        "w1": (c.hidden_dim, c.dim), "w2": (c.dim, c.hidden_dim), "w3": (c.hidden_dim, c.dim),
    }


def extra_layer_shapes(c: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of the optional per-layer weights ``c`` needs (q/k/v biases, q/k norms); {} for Llama."""
    shapes = {}
    if c.qkv_bias:
        shapes.update(bq=(c.q_dim,), bk=(c.kv_dim,), bv=(c.kv_dim,))
    if c.qk_norm:
        shapes.update(q_norm=(c.head_dim,), k_norm=(c.head_dim,))
    return shapes


def check_weights(w: ModelWeights) -> None:
    """Raise ValueError naming the first tensor whose shape or dtype disagrees with the config."""
    c = w.config

    def check(name, arr, shape):
        if hasattr(arr, "fmt") and len(shape) == 2:        # a quant.QTensor standing for the weight
            if tuple(arr.shape) != shape:
                raise ValueError(f"weight {name} is quantized with shape {arr.shape}, config expects {shape}")
            return
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"weight {name} is {type(arr).__name__}, expected a numpy array")
        if arr.shape != shape:
            raise ValueError(f"weight {name} has shape {arr.shape}, config {c.name} expects {shape}")
        if arr.dtype != np.float32:
            raise ValueError(f"weight {name} has dtype {arr.dtype}, expected float32")

    check("tok_embeddings", w.tok_embeddings, (c.vocab_size, c.dim))
    check("norm", w.norm, (c.dim,))
    check("output", w.output, (c.vocab_size, c.dim))
    if len(w.layers) != c.n_layers:
        raise ValueError(f"{len(w.layers)} layers of weights, config expects n_layers={c.n_layers}")
    for i, layer in enumerate(w.layers):
        for name, shape in layer_shapes(c).items():
            check(f"layers.{i}.{name}", getattr(layer, name), shape)
        extra = extra_layer_shapes(c)
        for name in ("bq", "bk", "bv", "q_norm", "k_norm"):
            arr = getattr(layer, name)
            if name in extra:
                if arr is None:
                    raise ValueError(f"weight layers.{i}.{name} is missing; config {c.name} needs it")
                check(f"layers.{i}.{name}", arr, extra[name])
            elif arr is not None:
                raise ValueError(f"weight layers.{i}.{name} is given but config {c.name} does not use it")


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo, or physical memory where that is absent."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def random_weights(config: ModelConfig, seed: int = 0, max_bytes: int | None = None) -> ModelWeights:
    """Seeded random float32 weights scaled like a trained model (std 1/sqrt(fan_in)).

    Refuses, with a clear error, a config whose float32 weights would not fit in
    ``max_bytes`` (default: half of the memory available now)."""
    need = 4 * config.n_params()
    limit = available_memory_bytes() // 2 if max_bytes is None else max_bytes
    if need > limit:
        raise MemoryError(
            f"random float32 weights for {config.name} need {need / 2**30:.1f} GiB, "
            f"more than the {limit / 2**30:.1f} GiB allowed here; use the shape for analysis only")
    rng = np.random.default_rng(seed)

    def normal(shape, fan_in):
        return (rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(fan_in)))

    def norm_weight():
        return (1.0 + 0.1 * rng.standard_normal(config.dim, dtype=np.float32)).astype(np.float32)

    layers = []
    for _ in range(config.n_layers):
        shapes = layer_shapes(config)
        layer = {name: norm_weight() if len(shape) == 1 else normal(shape, shape[1])
                 for name, shape in shapes.items()}
        for name, shape in extra_layer_shapes(config).items():
            base = 1.0 if name.endswith("norm") else 0.0
            layer[name] = (base + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
        layers.append(LayerWeights(**layer))
    # Embedding rows of norm ~1 keep the tied head's logits O(1): sampling stays varied, not stuck.
    emb = normal((config.vocab_size, config.dim), config.dim)
    output = emb if config.tied_embeddings else normal((config.vocab_size, config.dim), config.dim)
    from .arena import pack_weights      # arena imports this module
    return pack_weights(ModelWeights(config, emb, layers, norm_weight(), output))
