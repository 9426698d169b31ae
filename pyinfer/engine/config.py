"""The serving engine's knobs, frozen and checked at construction."""
from __future__ import annotations

from dataclasses import asdict, dataclass

DEFAULT_KV_CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class EngineConfig:
    """How many sequences and tokens one step may carry, and how big the KV pool is.

    max_num_seqs            sequences running at once (the batch cap)
    max_num_batched_tokens  tokens one forward pass may carry: decodes (1 each) plus prefill chunks
    block_size              KV cache block size in tokens
    num_blocks              KV pool size in blocks; 0: room for max_num_seqs full-context sequences,
                            capped at kv_cache_bytes (but never below one full-context sequence)
    kv_cache_bytes          the cap used when num_blocks is 0
    enable_prefix_caching   share cached full blocks between sequences with a common prefix
    batch_invariant         make each token's logits bit-identical whatever it is batched with
                            (engine/batch_invariant.py; costs speed, off by default)
    num_speculative_tokens  draft tokens a decoding sequence verifies per step (speculative decoding,
                            engine/spec_decode.py); needs the Engine's draft_model; 0: off
    """

    max_num_seqs: int = 32
    max_num_batched_tokens: int = 512
    block_size: int = 16
    num_blocks: int = 0
    kv_cache_bytes: int = DEFAULT_KV_CACHE_BYTES
    enable_prefix_caching: bool = True
    batch_invariant: bool = False
    num_speculative_tokens: int = 0

    def __post_init__(self):
        for name, lo, hi in (("max_num_seqs", 1, 1 << 16), ("max_num_batched_tokens", 1, 1 << 24),
                             ("block_size", 1, 256), ("num_blocks", 0, 1 << 24), ("kv_cache_bytes", 1, 1 << 50),
                             ("num_speculative_tokens", 0, 64)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ValueError(f"EngineConfig.{name}={value!r} must be an int in [{lo}, {hi}]")

    def resolve_num_blocks(self, max_seq_len: int, bytes_per_token: int) -> int:
        """The pool size in blocks this config asks for, given the model's context and KV bytes."""
        if self.num_blocks:
            return self.num_blocks
        per_seq = -(-max_seq_len // self.block_size)
        by_bytes = self.kv_cache_bytes // (self.block_size * bytes_per_token)
        return max(per_seq, min(self.max_num_seqs * per_seq, by_bytes))

    def to_dict(self) -> dict:
        return asdict(self)
