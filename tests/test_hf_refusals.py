"""Hugging Face checkpoints: what is refused, by name (architectures, rope types, activations,
biases, unknown keys and tensors, bad values: issue #12's D7 / D19), and directories accepted
wherever a model is named (--model DIR, load(DIR), LLM(DIR), config_for(DIR): D9)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pyinfer.cli import main
from pyinfer.config import ModelConfig
from pyinfer.fetch import resolve_model_arg
from pyinfer.loaders import load_checkpoint, save_checkpoint
from pyinfer.loaders.hf_config import config_from_hf
from pyinfer.loaders.resolve import config_for
from pyinfer.loaders.safetensors_io import SafetensorsFile, save_safetensors
from pyinfer.rope import plain_inv_freq, rope_inv_freq
from pyinfer.weights import random_weights

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
         "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "hidden_act": "silu",
         "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "float32",
         "bos_token_id": 1, "eos_token_id": [2, 3], "use_cache": True, "initializer_range": 0.02,
         "attention_bias": False, "mlp_bias": False, "pretraining_tp": 1, "rope_scaling": None}


def with_(**changes) -> dict:
    hf = {**LLAMA, **changes}
    return {k: v for k, v in hf.items() if v is not ...}


def test_both_layouts_give_the_same_config():
    t4 = config_from_hf(with_(rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 32.0,
                                                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                                  "original_max_position_embeddings": 8192}))
    t5 = config_from_hf(with_(rope_theta=..., rope_scaling=..., rope_parameters={
        "rope_theta": 500000.0, "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}))
    assert t4 == t5 and t4.rope_theta == 500000.0 and t4.rope_scaling.factor == 32.0
    plain = config_from_hf(with_(rope_theta=..., rope_scaling=...,
                                 rope_parameters={"rope_theta": 250000.0, "rope_type": "default"}))
    assert plain.rope_scaling is None and plain.rope_theta == 250000.0     # default is plain RoPE
    smollm = config_from_hf(with_(is_llama_config=True, rope_interleaved=False))   # nanotron's keys
    assert smollm == config_from_hf(LLAMA)
    old_type_key = config_from_hf(with_(rope_scaling={"type": "linear", "factor": 2.0}))
    assert old_type_key.rope_scaling.rope_type == "linear"


def test_scaled_inv_freq_matches_transformers():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    for rope in ({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                 {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}):
        hf = LlamaConfig(hidden_size=2048, num_attention_heads=32, rope_parameters=dict(rope))
        want = ROPE_INIT_FUNCTIONS[rope["rope_type"]](hf, torch.device("cpu"))[0].numpy()
        ours = rope_inv_freq(config_from_hf(with_(hidden_size=2048, num_attention_heads=32, num_key_value_heads=8,
                                                  rope_theta=..., rope_scaling=..., rope_parameters=rope)))
        np.testing.assert_allclose(ours, want, rtol=1e-6)
        assert not np.allclose(ours, plain_inv_freq(64, rope["rope_theta"]))


@pytest.mark.parametrize("model_type", ["gemma", "gemma2", "phi3", "gpt2", "mixtral", "llama4"])
def test_other_architectures_refused_by_name(model_type):
    with pytest.raises(ValueError, match=f"architecture {model_type} is not supported"):
        config_from_hf(with_(model_type=model_type, architectures=...))


def test_gpt2_config_refused_by_architecture_not_missing_fields():
    gpt2 = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 64, "n_layer": 2,
            "n_head": 2, "vocab_size": 100, "activation_function": "gelu_new"}
    with pytest.raises(ValueError, match="architecture gpt2 is not supported"):
        config_from_hf(gpt2)
    with pytest.raises(ValueError, match="architecture LlamaForSequenceClassification is not supported"):
        config_from_hf(with_(architectures=["LlamaForSequenceClassification"]))


@pytest.mark.parametrize("changes, message", [
    ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
    ({"attention_bias": True}, "attention_bias=true is not supported for llama .*o_proj"),
    ({"mlp_bias": True}, "mlp_bias=true"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_type 'yarn' is not supported"),
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_type 'dynamic' is not supported"),
    ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, "rope_type 'longrope'"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0, "beta_fast": 32}}, "beta_fast"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor=0.5"),
    ({"rope_interleaved": True}, "rope_interleaved=true"),
    ({"quantization_config": {"quant_method": "gptq"}}, "quantization_config"),
    ({"logit_scale": 0.5}, "logit_scale are not modelled for llama"),
    ({"sliding_window": 64}, "sliding_window are not modelled for llama"),
    ({"rope_parameters": {"rope_theta": 1.0}}, "both rope_parameters and rope_scaling"),
])
def test_math_changing_settings_refused_by_name(changes, message):
    hf = with_(**changes)
    if "rope_parameters" in changes:
        hf["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    with pytest.raises(ValueError, match=message):
        config_from_hf(hf)


def test_qwen_and_mistral_settings():
    qwen2 = with_(model_type="qwen2", architectures=["Qwen2ForCausalLM"], attention_bias=..., mlp_bias=...,
                  pretraining_tp=..., use_sliding_window=False, sliding_window=4096, max_window_layers=28)
    assert config_from_hf(qwen2).qkv_bias and config_from_hf(qwen2).sliding_window == 0
    with pytest.raises(ValueError, match="use_sliding_window=true is not supported for qwen2"):
        config_from_hf({**qwen2, "use_sliding_window": True})
    with pytest.raises(ValueError, match="layer_types"):
        config_from_hf({**qwen2, "layer_types": ["full_attention", "sliding_attention"]})
    qwen3 = {**qwen2, "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "head_dim": 16}
    assert config_from_hf(qwen3).qk_norm and not config_from_hf(qwen3).qkv_bias
    with pytest.raises(ValueError, match="attention_bias=true is not supported for qwen3"):
        config_from_hf({**qwen3, "attention_bias": True})
    mistral = with_(model_type="mistral", architectures=["MistralForCausalLM"], attention_bias=...,
                    mlp_bias=..., pretraining_tp=..., sliding_window=4096)
    assert config_from_hf({**mistral, "max_position_embeddings": 8192}).sliding_window == 4096
    assert config_from_hf(mistral).sliding_window == 0        # no shorter than the context: masks nothing
    with pytest.raises(ValueError, match="sliding_window=-3"):
        config_from_hf({**mistral, "sliding_window": -3})
    assert config_from_hf({**mistral, "sliding_window": None}).sliding_window == 0
    with pytest.raises(ValueError, match="attention_bias are not modelled for mistral"):
        config_from_hf({**mistral, "attention_bias": False})


@pytest.mark.parametrize("key", ["rms_norm_eps", "rope_theta", "hidden_size", "num_hidden_layers"])
@pytest.mark.parametrize("value", [None, [1e-5], "1e-5", True, math.inf, -math.inf, math.nan, 0, -1])
def test_bad_values_refused_naming_the_key(key, value):
    """D7 / D19: null, a list, a string, a bool, non-finite or non-positive: a ValueError naming the key."""
    with pytest.raises(ValueError, match=key):
        config_from_hf(with_(**{key: value}))


def test_absent_rope_theta_is_the_default_and_config_not_an_object_is_refused():
    assert config_from_hf(with_(rope_theta=...)).rope_theta == 10000.0
    for bad in (None, [], "llama", 3):
        with pytest.raises(ValueError, match="config.json must be a JSON object"):
            config_from_hf(bad)


def _hf_dir(tmp_path, config=None, **weights_changes):
    cfg = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48, vocab_size=64, max_seq_len=128,
                      tied_embeddings=False)
    d = tmp_path / "hf"
    save_checkpoint(random_weights(cfg, seed=3), d, "hf")
    if config is not None:
        (d / "config.json").write_text(config)
    return d


@pytest.mark.parametrize("text, message", [
    ("null", "must be a JSON object, got NoneType"),
    ('{"model_type": "llama", "rms_norm_eps": [1e-5]}', "missing required field|rms_norm_eps"),
    ("{not json", "is not valid JSON"),
])
def test_bad_config_files_refused_also_through_pyinfer_run(tmp_path, capsys, text, message):
    d = _hf_dir(tmp_path, config=text)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(d)
    code = main(["run", "--model", str(d), "--steps", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "Traceback" not in err
    assert str(d / "config.json") in err


def test_non_finite_config_through_pyinfer_run(tmp_path, capsys):
    hf = json.loads((_hf_dir(tmp_path) / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**hf, "rms_norm_eps": math.inf}))
    code = main(["run", "--model", str(tmp_path / "hf"), "--steps", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "rms_norm_eps=inf must be a finite number" in err


def test_unknown_tensor_refused_weightless_ones_ignored(tmp_path):
    d = _hf_dir(tmp_path)
    f = SafetensorsFile(d / "model.safetensors")
    tensors = {name: f.get(name) for name in f.names}
    base = load_checkpoint(d)
    save_safetensors(d / "model.safetensors", {**tensors, "model.layers.0.self_attn.rotary_emb.inv_freq":
                                               np.ones(4, np.float32)}, {"format": "pt"})
    assert np.array_equal(load_checkpoint(d).layers[0].wq, base.layers[0].wq)
    save_safetensors(d / "model.safetensors", {**tensors, "model.layers.0.self_attn.o_proj.bias":
                                               np.ones(32, np.float32)}, {"format": "pt"})
    with pytest.raises(ValueError, match="does not explain: model.layers.0.self_attn.o_proj.bias"):
        load_checkpoint(d)


def test_tied_config_with_a_stored_head(tmp_path):
    d = _hf_dir(tmp_path)
    hf = json.loads((d / "config.json").read_text())
    f = SafetensorsFile(d / "model.safetensors")
    tensors = {name: f.get(name) for name in f.names}
    (d / "config.json").write_text(json.dumps({**hf, "tie_word_embeddings": True}))
    with pytest.raises(ValueError, match="lm_head.weight differs from model.embed_tokens.weight"):
        load_checkpoint(d)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    save_safetensors(d / "model.safetensors", tensors, {"format": "pt"})
    assert load_checkpoint(d).config.tied_embeddings


def test_directory_resolves_everywhere(tmp_path):
    d = _hf_dir(tmp_path)
    assert resolve_model_arg(str(d)) == (d, None)
    assert config_for(str(d)) == load_checkpoint(d).config
    assert config_for(str(d / "config.json")).dim == 32
    assert config_for("llama-7b").n_layers == 32
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="directory without config.json"):
        resolve_model_arg(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="no such file, fetched model or preset"):
        config_for("no-such-model")


def test_stories260k_as_hf_directory_prints_llama2c_text(tmp_path, capsys, stories260k):
    """D9: `generate --model DIR` (our writer, then transformers' own save_pretrained of it, the
    transformers 5 layout) prints llama2.c's greedy text; load(DIR) and LLM(DIR) take it too."""
    import torch
    import transformers as T
    from pyinfer.api import load
    from pyinfer.config import SamplingParams
    from pyinfer.engine.llm import LLM
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    save_checkpoint(load_checkpoint(stories260k["model"]), ours, "hf")
    T.AutoModelForCausalLM.from_pretrained(ours, dtype=torch.float32).save_pretrained(theirs)
    assert "rope_parameters" in json.loads((theirs / "config.json").read_text())
    want = stories260k["greedy"].read_text().rstrip()
    for d in (ours, theirs):
        code = main(["generate", "--model", str(d), "--tokenizer", str(stories260k["tokenizer"]),
                     "--temperature", "0", "--steps", "256", "--prompt", "Once upon a time"])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert out.rstrip() == want
    gen = load(str(theirs), tokenizer=str(stories260k["tokenizer"]))
    assert gen.generate("Once upon a time", steps=256, params=SamplingParams(temperature=0)).text.rstrip() \
        in want
    llm = LLM(str(theirs), tokenizer=str(stories260k["tokenizer"]))
    out = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=20))[0]
    assert out.text and out.text in want


@pytest.mark.parametrize("field", ["rope_theta", "norm_eps"])
@pytest.mark.parametrize("value", [math.inf, math.nan, 1e400, -1.0, "1e4", None])
def test_model_config_refuses_non_finite_floats(field, value):
    """D19 at the root: any loader (HF, npz) that builds a ModelConfig gets the refusal."""
    with pytest.raises(ValueError, match=field):
        ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=4, hidden_dim=48, vocab_size=64, max_seq_len=16,
                    **{field: value})
