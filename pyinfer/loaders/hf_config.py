"""Hugging Face config.json -> ModelConfig, for the architectures modelled exactly; anything else
refused by name.

Every key of a config is in one of three places: read into ModelConfig (MODELLED), known to leave
the logits alone (HARMLESS: ids, dtype, bookkeeping, generation defaults), or refused. A key in
neither list is refused, so a math-changing key we have never seen cannot slip through.

Both layouts are read: transformers 4 writes top-level ``rope_theta`` / ``rope_scaling``;
transformers 5 writes ``rope_parameters`` {rope_theta, rope_type, ...}.
"""
from __future__ import annotations

import math
import re

from ..config import ModelConfig, RopeScaling

# model_type -> the class name transformers writes in "architectures"
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}

# Keys that change nothing a forward pass computes, for every architecture above.
HARMLESS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path",
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
    "use_cache", "initializer_range", "attention_dropout", "output_attentions", "output_hidden_states",
    "return_dict", "id2label", "label2id", "tokenizer_class", "chunk_size_feed_forward", "problem_type",
    "is_decoder", "is_encoder_decoder", "add_cross_attention", "tf_legacy_loss", "use_bfloat16",
    "torchscript", "prefix", "task_specific_params", "finetuning_task", "cross_attention_hidden_size",
    "tie_encoder_decoder", "pruned_heads", "_attn_implementation_autoset",
    # pretraining_tp > 1 only splits llama's matmuls into slices in transformers 4 (same sums)
    "pretraining_tp",
    # nanotron exports (SmolLM): transformers never reads it
    "is_llama_config",
    # generation defaults (sampling settings, not logits)
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
    "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens",
})
COMMON_MODELLED = frozenset({
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps",
    "rope_theta", "rope_scaling", "rope_parameters", "tie_word_embeddings", "hidden_act",
    "partial_rotary_factor",
})
# Per architecture: the keys it may carry beyond COMMON_MODELLED (each checked in config_from_hf).
ARCH_KEYS = {
    "llama": {"attention_bias", "mlp_bias", "rope_interleaved"},
    "mistral": {"sliding_window"},
    "qwen2": {"sliding_window", "use_sliding_window", "max_window_layers", "layer_types"},
    "qwen3": {"attention_bias", "sliding_window", "use_sliding_window", "max_window_layers", "layer_types"},
}
# ModelConfig field -> the config.json key it is read from (errors name the key the user can see)
HF_KEY_OF = {"dim": "hidden_size", "hidden_dim": "intermediate_size", "n_layers": "num_hidden_layers",
             "n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads",
             "max_seq_len": "max_position_embeddings", "norm_eps": "rms_norm_eps"}
REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "vocab_size", "max_position_embeddings", "rms_norm_eps")
ROPE_KEYS = {"rope_type", "type", "rope_theta", "factor", "low_freq_factor", "high_freq_factor",
             "original_max_position_embeddings", "partial_rotary_factor"}


def _int(hf: dict, key: str, default=None):
    v = hf.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"config.json {key}={v!r} must be an integer")
    return v


def _float(d: dict, key: str, where: str = "config.json"):
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{where} {key}={v!r} must be a finite number")
    return float(v)


def _bool(hf: dict, key: str, default: bool = False) -> bool:
    v = hf.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ValueError(f"config.json {key}={v!r} must be true or false")
    return v


def architecture_of(hf) -> str:
    """The model_type, checked against "architectures"; anything not modelled is refused by name."""
    if not isinstance(hf, dict):
        raise ValueError(f"config.json must be a JSON object, got {type(hf).__name__} {hf!r:.40}")
    model_type = hf.get("model_type")
    archs = hf.get("architectures")
    if archs is not None and (not isinstance(archs, list) or not all(isinstance(a, str) for a in archs)):
        raise ValueError(f"config.json architectures={archs!r} must be a list of names")
    if model_type is None and archs:       # very old configs name only the class
        model_type = next((t for t, cls in ARCHITECTURES.items() if cls in archs), archs[0])
    if not isinstance(model_type, str):
        raise ValueError(f"config.json has no model_type (got {model_type!r}); cannot tell the architecture")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"architecture {model_type} is not supported "
                         f"(supported: {', '.join(ARCHITECTURES)})")
    for a in archs or ():
        if a != ARCHITECTURES[model_type]:
            raise ValueError(f"architecture {a} is not supported (model_type {model_type} is "
                             f"supported as {ARCHITECTURES[model_type]})")
    return model_type


def _rope(hf: dict, max_pos: int) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from either layout; unknown rope types and keys refused by name."""
    params = hf.get("rope_parameters")
    legacy = hf.get("rope_scaling")
    if params is not None and legacy is not None:
        raise ValueError("config.json has both rope_parameters and rope_scaling; cannot tell which applies")
    rope = params if params is not None else legacy
    rope = {} if rope is None else rope
    name = "rope_parameters" if params is not None else "rope_scaling"
    if not isinstance(rope, dict):
        raise ValueError(f"config.json {name}={rope!r} must be an object")
    unknown = sorted(set(rope) - ROPE_KEYS)
    if unknown:
        raise ValueError(f"config.json {name} has key(s) {', '.join(unknown)} that are not modelled "
                         f"(per-layer RoPE parameters are not supported)")
    theta = 10000.0
    if "rope_theta" in hf:
        theta = _float(hf, "rope_theta")
    if "rope_theta" in rope:
        inner = _float(rope, "rope_theta", f"config.json {name}")
        if "rope_theta" in hf and inner != theta:
            raise ValueError(f"config.json rope_theta={theta} disagrees with {name} rope_theta={inner}")
        theta = inner
    for d, where in ((hf, "config.json"), (rope, f"config.json {name}")):
        if d.get("partial_rotary_factor") not in (None, 1, 1.0):
            raise ValueError(f"{where} partial_rotary_factor={d['partial_rotary_factor']!r} is not "
                             "supported (RoPE on the whole head only)")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if "rope_type" in rope and "type" in rope and rope["type"] != rope["rope_type"]:
        raise ValueError(f"config.json {name} type={rope['type']!r} disagrees with rope_type={rope['rope_type']!r}")
    if rope_type == "default":
        extra = sorted(set(rope) & {"factor", "low_freq_factor", "high_freq_factor"})
        if extra:
            raise ValueError(f"config.json {name} rope_type default with {', '.join(extra)}: not modelled")
        return theta, None
    if rope_type == "linear":
        return theta, RopeScaling("linear", factor=_float(rope, "factor", f"config.json {name}"))
    if rope_type == "llama3":
        old = rope.get("original_max_position_embeddings", max_pos)
        if isinstance(old, bool) or not isinstance(old, int):
            raise ValueError(f"config.json {name} original_max_position_embeddings={old!r} must be an integer")
        return theta, RopeScaling("llama3", *(_float(rope, k, f"config.json {name}") for k in
                                             ("factor", "low_freq_factor", "high_freq_factor")), old)
    raise ValueError(f"rope_type {rope_type!r} is not supported (supported: default, linear, llama3)")


def _sliding_window(hf: dict, arch: str, max_pos: int) -> int:
    """Mistral: sliding_window on every layer (null: none; one no shorter than the context masks
    nothing, so it is dropped and the fused decode step stays usable). Qwen2/3: only when
    use_sliding_window, which is refused (it applies per layer from max_window_layers)."""
    if arch == "mistral":
        window = _int(hf, "sliding_window", 0) or 0
        if window < 0:
            raise ValueError(f"config.json sliding_window={window} must be >= 1 (or null)")
        return 0 if window >= max_pos else window
    if arch in ("qwen2", "qwen3"):
        if _bool(hf, "use_sliding_window"):
            raise ValueError(f"config.json use_sliding_window=true is not supported for {arch} "
                             "(per-layer sliding windows)")
        layer_types = hf.get("layer_types")
        if layer_types is not None:
            if not isinstance(layer_types, list) or any(t != "full_attention" for t in layer_types):
                raise ValueError(f"config.json layer_types={layer_types!r}: only full_attention is supported")
        _int(hf, "sliding_window")          # read only when use_sliding_window; type-checked
        _int(hf, "max_window_layers")
    return 0


def config_from_hf(hf, name: str = "custom") -> ModelConfig:
    """ModelConfig from a parsed config.json; anything not modelled is a ValueError naming it."""
    arch = architecture_of(hf)
    unknown = sorted(set(hf) - HARMLESS - COMMON_MODELLED - ARCH_KEYS[arch])
    if "quantization_config" in unknown:
        raise ValueError("config.json has quantization_config: pre-quantized checkpoints are not supported")
    if unknown:
        raise ValueError(f"config.json key(s) {', '.join(unknown)} are not modelled for {arch}; "
                         "refusing rather than running a different model")
    missing = [k for k in REQUIRED if hf.get(k) is None]
    if missing:
        raise ValueError(f"config.json is missing required field(s): {', '.join(missing)}")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"config.json hidden_act={act!r} is not supported (only silu)")
    if _bool(hf, "rope_interleaved"):   # nanotron's flag (SmolLM writes false); transformers ignores it
        raise ValueError("config.json rope_interleaved=true: transformers would ignore it and run rotate-half "
                         "RoPE, so which one the weights want is unclear; refusing")
    if _bool(hf, "mlp_bias"):
        raise ValueError("config.json mlp_bias=true is not supported (biases on the MLP projections)")
    if _bool(hf, "attention_bias"):      # llama and qwen3: q, k, v and o_proj all get a bias
        raise ValueError(f"config.json attention_bias=true is not supported for {arch} "
                         "(it puts a bias on o_proj)")
    heads = _int(hf, "num_attention_heads")
    max_pos = _int(hf, "max_position_embeddings")
    theta, scaling = _rope(hf, max_pos)
    eps = _float(hf, "rms_norm_eps")
    tied = _bool(hf, "tie_word_embeddings", False)
    try:
        return ModelConfig(
            dim=_int(hf, "hidden_size"), hidden_dim=_int(hf, "intermediate_size"),
            n_layers=_int(hf, "num_hidden_layers"), n_heads=heads,
            n_kv_heads=_int(hf, "num_key_value_heads", heads), vocab_size=_int(hf, "vocab_size"),
            max_seq_len=max_pos, head_dim=_int(hf, "head_dim", 0),
            rope_theta=theta, norm_eps=eps, tied_embeddings=tied, name=name, rope_scaling=scaling,
            qkv_bias=arch == "qwen2", qk_norm=arch == "qwen3", sliding_window=_sliding_window(hf, arch, max_pos))
    except ValueError as e:
        message = re.sub(r"\b(" + "|".join(HF_KEY_OF) + r")\b", lambda m: HF_KEY_OF[m.group(1)], str(e))
        raise ValueError(f"config.json is invalid: {message}") from None


def config_to_hf(config: ModelConfig) -> dict:
    """config.json (transformers 4 layout) for a config; the architecture follows its features."""
    c = config
    if c.qkv_bias and c.qk_norm or c.sliding_window and (c.qkv_bias or c.qk_norm):
        raise ValueError(f"config {c.name} mixes qkv_bias, qk_norm and sliding_window: no HF architecture has that")
    arch = "qwen2" if c.qkv_bias else "qwen3" if c.qk_norm else "mistral" if c.sliding_window else "llama"
    hf = {
        "architectures": [ARCHITECTURES[arch]], "model_type": arch, "hidden_act": "silu",
        "hidden_size": c.dim, "intermediate_size": c.hidden_dim, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim, "vocab_size": c.vocab_size,
        "max_position_embeddings": c.max_seq_len,
        "rope_theta": c.rope_theta, "rms_norm_eps": c.norm_eps,
        "tie_word_embeddings": c.tied_embeddings, "torch_dtype": "float32",
    }
    if c.rope_scaling is not None:
        s = c.rope_scaling
        hf["rope_scaling"] = ({"rope_type": "linear", "factor": s.factor} if s.rope_type == "linear" else
                              {"rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
                               "high_freq_factor": s.high_freq_factor,
                               "original_max_position_embeddings": s.original_max_position_embeddings})
    if arch == "mistral":
        hf["sliding_window"] = c.sliding_window
    return hf
