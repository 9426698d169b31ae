"""Tiny random Hugging Face checkpoints built with transformers at test time (nothing binary is
committed), and transformers' float32 forward as the oracle for them.

transformers' default init gives near-flat logits (std 0.02 weights): greedy decoding would then
hinge on rounding. The builders rescale embeddings, the head, norms and biases so the largest logit
stands well clear of the next and each architecture's extra weights (biases, q/k norms) matter."""
from __future__ import annotations

import inspect
import json
import os

import numpy as np

VOCAB = 96
SEQ = 520           # tokens compared position by position (>= 500)
MAX_POS = 1024


def _classes(arch):
    import transformers as T
    return {"llama": (T.LlamaConfig, T.LlamaForCausalLM), "mistral": (T.MistralConfig, T.MistralForCausalLM),
            "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM), "qwen3": (T.Qwen3Config, T.Qwen3ForCausalLM)}[arch]


def build(directory: str, arch: str, *, seed: int, dtype: str = "float32", layout: int = 5,
          shard_bytes: int | None = None, **config) -> str:
    """Save a random ``arch`` model with ``config`` overrides to ``directory`` (``dtype`` on disk,
    ``layout`` 4 rewrites config.json the way transformers 4 wrote it); returns the directory."""
    import torch
    torch.manual_seed(seed)
    cfg_cls, model_cls = _classes(arch)
    base = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=MAX_POS, rms_norm_eps=1e-5)
    model = model_cls(cfg_cls(**{**base, **config})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.5)
            elif "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif p.ndim == 2:
                p.normal_(0.0, 1.0 / p.shape[1] ** 0.5)
        model.model.embed_tokens.weight.mul_(3.0)
        if not model.config.tie_word_embeddings:
            model.lm_head.weight.mul_(3.0)
        else:   # a tied head scores the input token's own row highest: louder blocks, or greedy repeats it
            for name, p in model.named_parameters():
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    p.mul_(4.0)
    model = model.to(getattr(torch, dtype))
    kwargs = {"max_shard_size": shard_bytes} if shard_bytes else {}
    model.save_pretrained(directory, **kwargs)
    if layout == 4:
        to_transformers4_layout(os.path.join(directory, "config.json"))
    return directory


def to_transformers4_layout(path: str) -> None:
    """rope_parameters {rope_theta, rope_type, ...} -> top-level rope_theta + rope_scaling (or null),
    torch_dtype for dtype: config.json as transformers 4.x saved it."""
    with open(path) as f:
        hf = json.load(f)
    rope = dict(hf.pop("rope_parameters"))
    hf["rope_theta"] = rope.pop("rope_theta")
    hf["rope_scaling"] = None if rope.get("rope_type") == "default" else rope
    if "dtype" in hf:
        hf["torch_dtype"] = hf.pop("dtype")
    hf.pop("layer_types", None)
    hf["transformers_version"] = "4.46.0"
    with open(path, "w") as f:
        json.dump(hf, f, indent=2)


def oracle(directory: str, ids: np.ndarray, new_tokens: int = 0):
    """transformers' float32 logits (T, vocab) for ``ids`` and, when asked, its greedy continuation."""
    import torch
    import transformers as T
    model = T.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    x = torch.from_numpy(np.asarray(ids, np.int64))[None]
    with torch.no_grad():
        # argmax of transformers' own forward, one token at a time on its KV cache (generate() would
        # also apply the config's logits processors, e.g. EOS suppression)
        greedy, out = [], model(x, use_cache=True)
        logits = out.logits[0].numpy()
        key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"  # 5.x, 4.x
        for _ in range(new_tokens):
            greedy.append(int(out.logits[0, -1].argmax()))
            out = model(torch.tensor([[greedy[-1]]]), use_cache=True, **{key: getattr(out, key)})
    return logits, greedy


def pyinfer_logits(model, ids: np.ndarray, block_size: int = 16) -> np.ndarray:
    """pyinfer's logits (T, vocab) at every position of ``ids``, one prefill on the paged cache."""
    cache = model.new_cache(num_blocks=-(-len(ids) // block_size) + 1, block_size=block_size)
    batch = cache.prepare([0], [np.asarray(ids, np.int64)])
    return model.forward(batch, cache, all_logits=True)


def pyinfer_greedy(model, ids: np.ndarray, new_tokens: int, *, chunk: int = 96, block_size: int = 8) -> list[int]:
    """Greedy continuation through the engine: chunked prefill of ``chunk`` tokens a step, then
    paged decode on blocks of ``block_size``."""
    from pyinfer.config import SamplingParams
    from pyinfer.engine.config import EngineConfig
    from pyinfer.engine.llm import LLM
    llm = LLM(model, config=EngineConfig(max_num_seqs=2, max_num_batched_tokens=chunk, block_size=block_size))
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)   # no stop: compare every token
    return llm.generate([list(map(int, ids))], params)[0].output_ids


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| over the largest |want| (the issue's measure)."""
    return float(np.abs(got - want).max() / np.abs(want).max())
