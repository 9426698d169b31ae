"""Hugging Face Llama checkpoints: config.json + model.safetensors, or shards + an index.

HF stores q_proj / k_proj rows per head in rotate-half order: convert_llama_weights_to_hf.py
applies, to Meta / llama2.c weights (adjacent-pair RoPE),
    permute(w, n_heads) = w.view(n_heads, head_dim // 2, 2, in).transpose(1, 2).reshape(out, in)
so HF row (h, j, i) = our row (h, i, j): within a head, HF row j*half + i is our row 2i + j.
Loading inverts that per head (k with n_kv_heads), saving applies it, so our adjacent-pair RoPE
computes exactly what HF's rotate-half RoPE computes, up to that fixed order of q/k features
inside each head (which leaves q.k dot products, hence attention, unchanged).
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..config import ModelConfig
from ..weights import ModelWeights, extra_layer_shapes
from .common import assemble, flatten, tensor_shapes
from .hf_config import config_from_hf, config_to_hf
from .safetensors_io import SafetensorsFile, save_safetensors

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# our flat layer-field name -> HF name inside model.layers.{i}.
HF_LAYER_NAMES = {
    "attn_norm": "input_layernorm.weight", "wq": "self_attn.q_proj.weight",
    "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight",
    "wo": "self_attn.o_proj.weight", "ffn_norm": "post_attention_layernorm.weight",
    "w1": "mlp.gate_proj.weight", "w2": "mlp.down_proj.weight", "w3": "mlp.up_proj.weight",
    "bq": "self_attn.q_proj.bias", "bk": "self_attn.k_proj.bias", "bv": "self_attn.v_proj.bias",
    "q_norm": "self_attn.q_norm.weight", "k_norm": "self_attn.k_norm.weight",
}
# Tensors some checkpoints carry that hold no weights (buffers saved by old transformers versions):
# names ending in these are ignored; any other name the config does not explain is refused.
WEIGHTLESS_SUFFIXES = ("rotary_emb.inv_freq",)
# Flat fields in rotate-half order per head in HF files, and the head count their rows span.
_ROPE_PERMUTED = {"wq": "n_heads", "wk": "n_kv_heads", "bq": "n_heads", "bk": "n_kv_heads",
                  "q_norm": None, "k_norm": None}


def hf_name(flat_name: str) -> str:
    """Our flat name -> HF tensor name."""
    if flat_name.startswith("layers."):
        _, i, field = flat_name.split(".")
        return f"model.layers.{i}.{HF_LAYER_NAMES[field]}"
    return {"tok_embeddings": "model.embed_tokens.weight", "norm": "model.norm.weight",
            "output": "lm_head.weight"}[flat_name]


def permute_to_hf(w: np.ndarray, n_heads: int) -> np.ndarray:
    """(n_heads * head_dim, in): adjacent-pair rows -> rotate-half rows (HF's permute)."""
    out, cols = w.shape
    return w.reshape(n_heads, out // n_heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(out, cols)


def permute_from_hf(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of permute_to_hf: rotate-half rows -> adjacent-pair rows, per head."""
    out, cols = w.shape
    return w.reshape(n_heads, 2, out // n_heads // 2, cols).transpose(0, 2, 1, 3).reshape(out, cols)


def _permute(flat: str, arr: np.ndarray, config: ModelConfig, to_hf: bool) -> np.ndarray:
    """Apply (to_hf) or undo HF's per-head rotate-half row order to a q/k weight, bias or norm."""
    field = flat.rsplit(".", 1)[-1]
    if field not in _ROPE_PERMUTED:
        return arr
    heads = 1 if _ROPE_PERMUTED[field] is None else getattr(config, _ROPE_PERMUTED[field])
    f = permute_to_hf if to_hf else permute_from_hf
    return f(arr if arr.ndim == 2 else arr.reshape(-1, 1), heads).reshape(arr.shape)


def expected_tensors(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Flat name -> shape of every tensor a HF checkpoint of ``config`` holds."""
    shapes = tensor_shapes(config)
    for i in range(config.n_layers):
        for field, shape in extra_layer_shapes(config).items():
            shapes[f"layers.{i}.{field}"] = shape
    return shapes


def _checkpoint_dir(path: str | os.PathLike) -> str:
    """The directory holding config.json, given it or a file inside it."""
    path = os.fspath(path)
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def _shard_map(directory: str) -> dict[str, str]:
    """HF tensor name -> safetensors file path."""
    index_path = os.path.join(directory, INDEX_FILE)
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index_path} has no weight_map object")
        for name, file in weight_map.items():
            if not isinstance(file, str) or os.path.basename(file) != file:
                raise ValueError(f"{index_path}: tensor {name} maps to {file!r}, not a file name")
        return {name: os.path.join(directory, file) for name, file in weight_map.items()}
    single = os.path.join(directory, SINGLE_FILE)
    if not os.path.exists(single):
        raise ValueError(f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE}")
    return {name: single for name in SafetensorsFile(single).names}


def read_config(path: str | os.PathLike) -> ModelConfig:
    """The ModelConfig of a HF checkpoint directory (or a file in it); no weights are read."""
    directory = _checkpoint_dir(path)
    config_path = os.path.join(directory, "config.json")
    if not os.path.exists(config_path):
        raise ValueError(f"{directory} has no config.json (not a Hugging Face checkpoint directory)")
    try:
        with open(config_path, encoding="utf-8") as f:
            hf = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{config_path} is not valid JSON: {e}") from None
    try:
        return config_from_hf(hf, name=os.path.basename(os.path.normpath(directory)))
    except ValueError as e:
        raise ValueError(f"{config_path}: {e}") from None


def load_hf(path: str | os.PathLike) -> ModelWeights:
    """A HF checkpoint (a directory, or its config.json / a .safetensors / the index in it) of an
    architecture in hf_config.ARCHITECTURES as float32 ModelWeights, q/k rows (weights, biases,
    norms) permuted back to adjacent-pair RoPE order. A tensor the config does not explain is an error."""
    directory = _checkpoint_dir(path)
    config = read_config(directory)
    shard_of = _shard_map(directory)
    files: dict[str, SafetensorsFile] = {}
    expected = expected_tensors(config)
    by_hf = {hf_name(flat): flat for flat in expected}
    tied_head = config.tied_embeddings and "lm_head.weight" in shard_of
    unknown = sorted(n for n in shard_of if n not in by_hf and not n.endswith(WEIGHTLESS_SUFFIXES)
                     and not (tied_head and n == "lm_head.weight"))
    if unknown:
        more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise ValueError(f"{directory} has tensor(s) the config does not explain: "
                         f"{', '.join(unknown[:5])}{more}")
    # Check every tensor's presence, shape and dtype (headers only) before reading any data.
    checks = dict(expected)
    if tied_head:
        checks["output"] = (config.vocab_size, config.dim)
    for flat, shape in checks.items():
        name = hf_name(flat)
        if name not in shard_of:
            raise ValueError(f"tensor {name} is missing from {directory}")
        if shard_of[name] not in files:
            files[shard_of[name]] = SafetensorsFile(shard_of[name])
        file = files[shard_of[name]]
        if name not in file:
            raise ValueError(f"tensor {name} is missing from {file.path} (named in the index)")
        info = file.tensors[name]
        if info.shape != shape:
            raise ValueError(f"tensor {name} has shape {info.shape}, config expects {shape}")
        if info.dtype not in ("F32", "F16", "BF16"):
            raise ValueError(f"tensor {name} has dtype {info.dtype}; expected a float dtype")
    tensors = {}
    for flat in expected:
        name = hf_name(flat)
        arr = files[shard_of[name]].get(name).astype(np.float32, copy=False)
        tensors[flat] = np.ascontiguousarray(_permute(flat, arr, config, to_hf=False))
    if tied_head:    # transformers ties the head to the embedding; a different stored head is refused
        head = files[shard_of["lm_head.weight"]].get("lm_head.weight").astype(np.float32, copy=False)
        if not np.array_equal(head, tensors["tok_embeddings"]):
            raise ValueError(f"{directory}: tie_word_embeddings=true but lm_head.weight differs from "
                             "model.embed_tokens.weight")
    return assemble(config, tensors, directory)


def save_hf(weights: ModelWeights, directory: str | os.PathLike,
            shard_max_bytes: int | None = None) -> None:
    """Write config.json and float32 safetensors with HF names and rotate-half q/k rows.
    With shard_max_bytes, tensors are packed in order into model-0000k-of-0000n.safetensors files
    of at most that many data bytes each (a larger tensor gets a shard of its own) plus an index."""
    if shard_max_bytes is not None and shard_max_bytes < 1:
        raise ValueError(f"shard_max_bytes={shard_max_bytes} must be >= 1")
    directory = os.fspath(directory)
    config = weights.config
    hf_config = config_to_hf(config)
    os.makedirs(directory, exist_ok=True)
    tensors = {}
    for flat, arr in flatten(weights, extras=True).items():
        tensors[hf_name(flat)] = np.ascontiguousarray(_permute(flat, arr, config, to_hf=True), dtype=np.float32)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    if shard_max_bytes is None:
        if os.path.exists(os.path.join(directory, INDEX_FILE)):   # a stale index would win on load
            os.remove(os.path.join(directory, INDEX_FILE))
        save_safetensors(os.path.join(directory, SINGLE_FILE), tensors, {"format": "pt"})
        return
    shards: list[dict[str, np.ndarray]] = [{}]
    for name, arr in tensors.items():
        used = sum(a.nbytes for a in shards[-1].values())
        if shards[-1] and used + arr.nbytes > shard_max_bytes:
            shards.append({})
        shards[-1][name] = arr
    weight_map = {}
    for k, shard in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_safetensors(os.path.join(directory, file), shard, {"format": "pt"})
        weight_map.update({name: file for name in shard})
    index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())},
             "weight_map": weight_map}
    with open(os.path.join(directory, INDEX_FILE), "w") as f:
        json.dump(index, f, indent=2)
