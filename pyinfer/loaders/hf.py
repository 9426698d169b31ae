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
import warnings

import numpy as np

from ..config import ModelConfig
from ..weights import ModelWeights
from .common import assemble, flatten, tensor_shapes
from .safetensors_io import SafetensorsFile, save_safetensors

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
REQUIRED_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                   "vocab_size", "max_position_embeddings", "rms_norm_eps")
# our flat layer-field name -> HF name inside model.layers.{i}.
HF_LAYER_NAMES = {
    "attn_norm": "input_layernorm.weight", "wq": "self_attn.q_proj.weight",
    "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight",
    "wo": "self_attn.o_proj.weight", "ffn_norm": "post_attention_layernorm.weight",
    "w1": "mlp.gate_proj.weight", "w2": "mlp.down_proj.weight", "w3": "mlp.up_proj.weight",
}


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


def config_from_hf(hf: dict, name: str = "custom") -> ModelConfig:
    """ModelConfig from a parsed config.json; a missing or bad field is a ValueError naming it."""
    missing = [k for k in REQUIRED_FIELDS if k not in hf]
    if missing:
        raise ValueError(f"config.json is missing required field(s): {', '.join(missing)}")
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag):
            raise ValueError(f"config.json sets {flag}=true; biases are not supported")
    if hf.get("rope_scaling"):
        warnings.warn(f"config.json rope_scaling {hf['rope_scaling']!r} is ignored (not modelled)",
                      stacklevel=3)
    heads = hf["num_attention_heads"]
    try:
        return ModelConfig(
            dim=hf["hidden_size"], hidden_dim=hf["intermediate_size"],
            n_layers=hf["num_hidden_layers"], n_heads=heads,
            n_kv_heads=hf.get("num_key_value_heads") or heads, vocab_size=hf["vocab_size"],
            max_seq_len=hf["max_position_embeddings"], head_dim=hf.get("head_dim") or 0,
            rope_theta=float(hf.get("rope_theta", 10000.0)), norm_eps=float(hf["rms_norm_eps"]),
            tied_embeddings=bool(hf.get("tie_word_embeddings", False)), name=name)
    except ValueError as e:
        raise ValueError(f"config.json is invalid: {e}") from None


def config_to_hf(config: ModelConfig) -> dict:
    c = config
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": c.dim, "intermediate_size": c.hidden_dim, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim, "vocab_size": c.vocab_size,
        "max_position_embeddings": c.max_seq_len,
        "rope_theta": c.rope_theta, "rms_norm_eps": c.norm_eps,
        "tie_word_embeddings": c.tied_embeddings, "torch_dtype": "float32",
    }


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


def load_hf(path: str | os.PathLike) -> ModelWeights:
    """A HF Llama checkpoint (a directory, or its config.json / a .safetensors / the index in it)
    as float32 ModelWeights with wq / wk permuted back to adjacent-pair RoPE order."""
    directory = _checkpoint_dir(path)
    config_path = os.path.join(directory, "config.json")
    if not os.path.exists(config_path):
        raise ValueError(f"{directory} has no config.json")
    with open(config_path) as f:
        config = config_from_hf(json.load(f), name=os.path.basename(os.path.normpath(directory)))
    shard_of = _shard_map(directory)
    files: dict[str, SafetensorsFile] = {}
    expected = tensor_shapes(config)
    # Check every tensor's presence, shape and dtype (headers only) before reading any data.
    for flat, shape in expected.items():
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
        if flat.endswith(".wq"):
            arr = permute_from_hf(arr, config.n_heads)
        elif flat.endswith(".wk"):
            arr = permute_from_hf(arr, config.n_kv_heads)
        tensors[flat] = np.ascontiguousarray(arr)
    return assemble(config, tensors, directory)


def save_hf(weights: ModelWeights, directory: str | os.PathLike,
            shard_max_bytes: int | None = None) -> None:
    """Write config.json and float32 safetensors with HF names and rotate-half wq / wk.
    With shard_max_bytes, tensors are packed in order into model-0000k-of-0000n.safetensors files
    of at most that many data bytes each (a larger tensor gets a shard of its own) plus an index."""
    if shard_max_bytes is not None and shard_max_bytes < 1:
        raise ValueError(f"shard_max_bytes={shard_max_bytes} must be >= 1")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    config = weights.config
    tensors = {}
    for flat, arr in flatten(weights).items():
        if flat.endswith(".wq"):
            arr = permute_to_hf(arr, config.n_heads)
        elif flat.endswith(".wk"):
            arr = permute_to_hf(arr, config.n_kv_heads)
        tensors[hf_name(flat)] = np.ascontiguousarray(arr, dtype=np.float32)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config_to_hf(config), f, indent=2)
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
