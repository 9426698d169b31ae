"""GGUF files of llama, qwen2 (q/k/v bias) and qwen3 (per-head q/k RMSNorm) written here as llama.cpp's
convert_hf_to_gguf.py writes them (its tensor names; llama's q/k permuted to adjacent pairs, the NEOX
architectures' left in rotate-half order) from tiny random transformers models: pyinfer's logits
equal transformers' float32 forward; llama3 rope scaling stored as a rope_freqs tensor is matched."""
from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pyinfer.loaders import read_gguf  # noqa: E402
from pyinfer.loaders.gguf_meta import llama3_factors  # noqa: E402
from pyinfer.loaders.hf import permute_from_hf  # noqa: E402
from pyinfer.model import Model  # noqa: E402
from pyinfer.ops import Ops  # noqa: E402

HF_TO_GGUF = {"input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
              "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
              "self_attn.o_proj.weight": "attn_output.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
              "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
              "mlp.down_proj.weight": "ffn_down.weight", "self_attn.q_proj.bias": "attn_q.bias",
              "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias",
              "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight"}
SHAPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=160, max_position_embeddings=128, rms_norm_eps=1e-6,
             rope_theta=10000.0, tie_word_embeddings=False)


def hf_model(arch: str, seed: int, **extra):
    torch.manual_seed(seed)
    cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
           "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
           "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM)}[arch]
    config = cls[0](**SHAPE, **extra)
    model = cls[1](config).float().eval()
    with torch.no_grad():                       # scaled so logits are far from flat (greedy is decisive)
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.normal_(0.0, 1.0 / np.sqrt(p.shape[1]) * (3.0 if "embed" in name or "lm_head" in name else 1.0))
            elif "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.1)
    return model


def write_like_llama_cpp(path, model, arch: str, head_dim: int | None = None, rope_freqs=None) -> None:
    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(SHAPE["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    if head_dim:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    for name, t in model.state_dict().items():
        arr = t.detach().numpy().astype(np.float32)
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        elif name == "lm_head.weight":
            gname = "output.weight"
        else:
            _, _, i, rest = name.split(".", 3)
            gname = f"blk.{i}.{HF_TO_GGUF[rest]}"
            if arch == "llama" and rest == "self_attn.q_proj.weight":    # LlamaModel.permute
                arr = permute_from_hf(arr, c.num_attention_heads)
            elif arch == "llama" and rest == "self_attn.k_proj.weight":
                arr = permute_from_hf(arr, c.num_key_value_heads)
        w.add_tensor(gname, np.ascontiguousarray(arr))
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", rope_freqs)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def check_logits(path, model, tokens, backends=("numpy", "c")) -> None:
    with torch.no_grad():
        ref = model(torch.tensor([tokens])).logits[0].numpy()               # (T, V)
    weights = read_gguf(path).weights
    for backend in backends:
        m = Model(weights, Ops(backend))
        cache = m.new_cache(block_size=8)
        got = np.asarray(m.forward(cache.prepare([0], [np.asarray(tokens)]), cache, all_logits=True))
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max(), backend
        assert (got.argmax(-1) == ref.argmax(-1)).all()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_gguf_archs_match_transformers(tmp_path, rng, seed, arch):
    extra = {"head_dim": 24} if arch == "qwen3" else {}
    model = hf_model(arch, seed, **extra)
    path = tmp_path / f"{arch}.gguf"
    write_like_llama_cpp(path, model, arch, head_dim=extra.get("head_dim"))
    config = read_gguf(path).weights.config
    assert (config.qkv_bias, config.qk_norm) == (arch == "qwen2", arch == "qwen3")
    tokens = [int(t) for t in rng.integers(0, SHAPE["vocab_size"], 40)]
    check_logits(path, model, tokens)


def test_llama3_rope_freqs_are_matched(tmp_path, rng, seed):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}
    model = hf_model("llama", seed, rope_scaling=scaling)
    head_dim = SHAPE["hidden_size"] // SHAPE["num_attention_heads"]
    freqs = llama3_factors(head_dim, SHAPE["rope_theta"], 8.0, 1.0, 4.0, 32)
    assert 1.0 < freqs.max() and freqs.min() == 1.0           # the three bands are all present
    from pyinfer.loaders import gguf_meta
    candidates = gguf_meta.LLAMA3_CANDIDATES
    gguf_meta.LLAMA3_CANDIDATES = ((1.0, 4.0, 32),)            # this tiny model's original context
    try:
        write_like_llama_cpp(tmp_path / "l3.gguf", model, "llama", rope_freqs=freqs)
        assert read_gguf(tmp_path / "l3.gguf").weights.config.rope_scaling.factor == 8.0
        check_logits(tmp_path / "l3.gguf", model, [int(t) for t in rng.integers(0, 160, 100)], ("numpy",))
    finally:
        gguf_meta.LLAMA3_CANDIDATES = candidates
    with pytest.raises(ValueError, match="rope_freqs.weight holds per-frequency RoPE factors"):
        read_gguf(tmp_path / "l3.gguf")                         # (1, 4, 32) is not a shipped setting
