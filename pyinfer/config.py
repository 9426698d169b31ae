"""Frozen configuration dataclasses and the named model presets.

Every size here is validated in ``__post_init__`` so a bad header or a typo fails
at construction with a message naming the field, never deep inside a kernel.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

# A checkpoint header beyond these is treated as corrupt rather than trusted:
# the largest public Llama models stay far below them.
MAX_DIM = 1 << 16
MAX_LAYERS = 1 << 10
MAX_VOCAB = 1 << 21
MAX_SEQ_LEN = 1 << 21

# A sequence with at most this many new tokens (a decode, a speculative verification, a short chunk) attends
# row by row through paged_decode_attention, each row over the keys up to its own position: the prefill
# kernel packs the sequence's whole context per KV head first, which for a few rows costs far more than
# the rows (C backend, 16 sequences at context 120, 1 thread: stories110M 3 rows each 8.1 ms as prefill,
# 2.0 ms as 48 decode rows; 8 rows 8.9 vs 5.1 ms; 16 rows 7.3 vs 9.4 ms).
ROWWISE_MAX_Q = 8


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} is outside the plausible range [{lo}, {hi}]")


ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """How RoPE's inverse frequencies are rescaled from plain ``1 / theta^(2i / head_dim)``, as
    transformers' modeling_rope_utils computes them: ``linear`` divides every one by ``factor``;
    ``llama3`` (Llama 3.1 / 3.2) divides the low ones by ``factor`` and blends the middle band.
    pyinfer/rope.py turns a config into the (head_dim / 2,) table every backend's rope op reads."""

    rope_type: str
    factor: float = 1.0
    low_freq_factor: float = 1.0          # llama3 only
    high_freq_factor: float = 4.0         # llama3 only
    original_max_position_embeddings: int = 0   # llama3 only

    def __post_init__(self):
        if self.rope_type not in ("linear", "llama3"):
            raise ValueError(f"rope_type {self.rope_type!r} is not supported (supported: {', '.join(ROPE_TYPES)})")
        for name in ("factor", "low_freq_factor", "high_freq_factor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"rope scaling {name}={v!r} must be a finite number > 0")
        if self.rope_type == "llama3":
            if not self.high_freq_factor > self.low_freq_factor:
                raise ValueError(f"rope scaling high_freq_factor={self.high_freq_factor} must exceed "
                                 f"low_freq_factor={self.low_freq_factor}")
            _check_range("original_max_position_embeddings", self.original_max_position_embeddings, 1, MAX_SEQ_LEN)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Llama-style decoder. Weight layout follows llama2.c: each linear
    weight is (out_features, in_features) row-major and RoPE rotates adjacent pairs."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    vocab_size: int
    max_seq_len: int
    head_dim: int = 0            # 0 means dim // n_heads
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tied_embeddings: bool = True
    name: str = "custom"
    rope_scaling: RopeScaling | None = None   # None: plain RoPE (rope_type "default")
    qkv_bias: bool = False       # q/k/v projections add a bias (Qwen2); o_proj never does
    qk_norm: bool = False        # per-head RMSNorm of q and k before RoPE, weight (head_dim,) (Qwen3)
    sliding_window: int = 0      # > 0: query at position p attends keys p - W + 1 .. p (Mistral); 0: all

    def __post_init__(self):
        if isinstance(self.rope_scaling, dict):      # from JSON (npz); validated by RopeScaling
            try:
                object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))
            except TypeError as e:
                raise ValueError(f"rope_scaling is invalid: {e}") from None
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            raise ValueError(f"rope_scaling must be a RopeScaling or None, got {self.rope_scaling!r}")
        for flag in ("qkv_bias", "qk_norm", "tied_embeddings"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        _check_range("sliding_window", self.sliding_window, 0, MAX_SEQ_LEN)
        _check_range("dim", self.dim, 1, MAX_DIM)
        _check_range("n_layers", self.n_layers, 1, MAX_LAYERS)
        _check_range("n_heads", self.n_heads, 1, self.dim)
        _check_range("n_kv_heads", self.n_kv_heads, 1, self.n_heads)
        _check_range("hidden_dim", self.hidden_dim, 1, 16 * MAX_DIM)
        _check_range("vocab_size", self.vocab_size, 1, MAX_VOCAB)
        _check_range("max_seq_len", self.max_seq_len, 1, MAX_SEQ_LEN)
        if self.head_dim == 0:
            if self.dim % self.n_heads:
                raise ValueError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}")
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        _check_range("head_dim", self.head_dim, 2, 1024)
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads} (GQA groups)")
        for name in ("rope_theta", "norm_eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name}={v!r} must be a finite number > 0")

    @property
    def is_plain_llama(self) -> bool:
        """True when nothing beyond llama2.c's decoder is set (what the llama2.c and npz formats hold)."""
        return (self.rope_scaling is None and not self.qkv_bias and not self.qk_norm
                and self.sliding_window == 0)

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def layer_params(self) -> int:
        attn = self.dim * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.dim
        mlp = 3 * self.dim * self.hidden_dim
        bias = (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        qk_norm = 2 * self.head_dim if self.qk_norm else 0
        return attn + mlp + 2 * self.dim + bias + qk_norm

    def n_params(self) -> int:
        """Total parameter count (the output head counted once when tied)."""
        emb = self.vocab_size * self.dim
        head = 0 if self.tied_embeddings else emb
        return emb + head + self.n_layers * self.layer_params() + self.dim

    def with_(self, **changes) -> "ModelConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CacheConfig:
    """Paged KV cache: ``num_blocks`` blocks of ``block_size`` token slots per layer."""

    block_size: int = 16
    num_blocks: int = 0          # 0: enough for one sequence of max_seq_len tokens
    dtype: str = "float32"

    def __post_init__(self):
        _check_range("block_size", self.block_size, 1, 256)
        _check_range("num_blocks", self.num_blocks, 0, 1 << 24)
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"KV cache dtype {self.dtype!r} is not one of float32, float16")


def _number(owner: str, name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
        raise ValueError(f"{owner}.{name} must be a finite number, got {type(v).__name__} {v!r}")
    return float(v)


def _integer(owner: str, name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{owner}.{name} must be an int, got {type(v).__name__} {v!r}")
    return int(v)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next tokens: vLLM's SamplingParams, its fields, meanings and defaults.

    n outputs per prompt; temperature (0, or below 1e-5, is greedy); top_p in (0, 1]; top_k (0 or -1:
    off); min_p in [0, 1] (tokens below min_p times the top token's probability are dropped); seed (None:
    drawn from the engine's generator, which LLM(seed=) seeds); max_tokens new tokens (16); min_tokens
    before EOS / stop_token_ids may be sampled; stop strings (the text ends before the first one, which
    is not returned); stop_token_ids stop too, besides the tokenizer's EOS ids unless ignore_eos;
    presence_penalty and frequency_penalty in [-2, 2] subtract (count > 0) and count of each token in
    the output so far from its logit; repetition_penalty > 0 divides positive logits (multiplies
    negative ones) of tokens in the prompt or the output; logprobs: the top-N log-probabilities per
    output token beside the sampled one's (-1: all); prompt_logprobs: the same for every prompt token
    after the first (RequestOutput.prompt_logprobs, None first, as vLLM); skip_special_tokens drops
    special tokens from the text.
    The order is vLLM's: min_tokens mask, penalties, [greedy argmax], temperature, min_p, top_k, top_p.
    Logprobs are those of the model's raw logits (vLLM's default logprobs_mode "raw_logprobs")."""

    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | tuple[str, ...] | None = None
    stop_token_ids: tuple[int, ...] | None = None
    ignore_eos: bool = False
    max_tokens: int = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    def __post_init__(self):
        def number(name):
            return _number("SamplingParams", name, getattr(self, name))

        def integer(name):
            return _integer("SamplingParams", name, getattr(self, name))

        def put(name, value):
            object.__setattr__(self, name, value)

        if integer("n") < 1:
            raise ValueError(f"SamplingParams.n={self.n} must be >= 1")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= number(name) <= 2.0:
                raise ValueError(f"SamplingParams.{name}={getattr(self, name)} must be in [-2, 2]")
        if number("repetition_penalty") <= 0:
            raise ValueError(f"SamplingParams.repetition_penalty={self.repetition_penalty} must be > 0")
        if number("temperature") < 0:
            raise ValueError(f"SamplingParams.temperature={self.temperature} must be >= 0 (below 1e-5: greedy)")
        if not 0 < number("top_p") <= 1:
            raise ValueError(f"SamplingParams.top_p={self.top_p} must be in (0, 1]")
        if integer("top_k") < -1:
            raise ValueError(f"SamplingParams.top_k={self.top_k} must be 0 or -1 (off) or >= 1")
        put("top_k", max(int(self.top_k), 0))
        if not 0 <= number("min_p") <= 1:
            raise ValueError(f"SamplingParams.min_p={self.min_p} must be in [0, 1]")
        if self.seed is not None:
            integer("seed")
        if integer("max_tokens") < 1:
            raise ValueError(f"SamplingParams.max_tokens={self.max_tokens} must be >= 1")
        if not 0 <= integer("min_tokens") <= self.max_tokens:
            raise ValueError(f"SamplingParams.min_tokens={self.min_tokens} must be in "
                             f"[0, max_tokens={self.max_tokens}]")
        for name in ("logprobs", "prompt_logprobs"):
            v = getattr(self, name)
            if v is True:
                put(name, 1)
            elif v is not None and integer(name) < -1:
                raise ValueError(f"SamplingParams.{name}={v} must be None, -1 (all) or >= 0")
        for name in ("ignore_eos", "skip_special_tokens", "include_stop_str_in_output"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"SamplingParams.{name} must be a bool, got {getattr(self, name)!r}")
        stop = () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else self.stop
        if not isinstance(stop, (tuple, list)) or not all(isinstance(s, str) and s for s in stop):
            raise ValueError(f"SamplingParams.stop must be a string or a list of non-empty strings, got {self.stop!r}")
        put("stop", tuple(dict.fromkeys(stop)))
        stops = () if self.stop_token_ids is None else self.stop_token_ids
        if isinstance(stops, (str, bytes)) or not isinstance(stops, (tuple, list)) or \
                any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0 for t in stops):
            raise ValueError(f"SamplingParams.stop_token_ids must be a list of token ids (ints >= 0), got {stops!r}")
        put("stop_token_ids", tuple(dict.fromkeys(int(t) for t in stops)))
        if self.n > 1 and self.temperature < 1e-5:
            raise ValueError(f"SamplingParams.n={self.n} needs sampling: greedy (temperature {self.temperature}) "
                             "gives n equal outputs (vLLM refuses it too)")


PRESETS: dict[str, ModelConfig] = {
    # Built-in default: ~3M parameters, random weights, byte-level vocabulary.
    "toy": ModelConfig(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, hidden_dim=688,
                       vocab_size=512, max_seq_len=512, name="toy"),
    # karpathy/tinyllamas shapes (llama2.c's README)
    "stories15M": ModelConfig(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, hidden_dim=768,
                              vocab_size=32000, max_seq_len=256, name="stories15M"),
    "stories110M": ModelConfig(dim=768, n_layers=12, n_heads=12, n_kv_heads=12, hidden_dim=2048,
                               vocab_size=32000, max_seq_len=1024, name="stories110M"),
    # Llama 3.2 1B (config.json on the hub, with its llama3 rope scaling)
    "llama-1b": ModelConfig(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, hidden_dim=8192,
                            vocab_size=128256, max_seq_len=131072, rope_theta=500000.0,
                            tied_embeddings=True, name="llama-1b",
                            rope_scaling=RopeScaling("llama3", 32.0, 1.0, 4.0, 8192)),
    # Llama 2 7B and 70B (the paper's table 1 and their config.json)
    "llama-7b": ModelConfig(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, hidden_dim=11008,
                            vocab_size=32000, max_seq_len=4096, tied_embeddings=False, name="llama-7b"),
    "llama-70b": ModelConfig(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, hidden_dim=28672,
                             vocab_size=32000, max_seq_len=4096, tied_embeddings=False, name="llama-70b"),
    # Published shapes from each model's config.json on the Hugging Face hub (meta-llama/Llama-3.1-8B,
    # meta-llama/Llama-3.1-70B, mistralai/Mistral-7B-v0.1, Qwen/Qwen2.5-7B), with their llama3 rope scaling,
    # Mistral's 4096-token sliding window and Qwen2's q/k/v biases.
    "llama-3.1-8b": ModelConfig(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, hidden_dim=14336,
                                vocab_size=128256, max_seq_len=131072, rope_theta=500000.0,
                                tied_embeddings=False, name="llama-3.1-8b",
                                rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)),
    "llama-3.1-70b": ModelConfig(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, hidden_dim=28672,
                                 vocab_size=128256, max_seq_len=131072, rope_theta=500000.0,
                                 tied_embeddings=False, name="llama-3.1-70b",
                                 rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)),
    "mistral-7b": ModelConfig(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, hidden_dim=14336,
                              vocab_size=32000, max_seq_len=32768, rope_theta=10000.0,
                              tied_embeddings=False, name="mistral-7b", sliding_window=4096),
    "qwen2.5-7b": ModelConfig(dim=3584, n_layers=28, n_heads=28, n_kv_heads=4, hidden_dim=18944,
                              vocab_size=152064, max_seq_len=131072, rope_theta=1000000.0, norm_eps=1e-6,
                              tied_embeddings=False, name="qwen2.5-7b", qkv_bias=True),
}


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
