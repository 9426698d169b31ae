"""The Llama decoder, written only against ``ops``: one forward over a batch of sequences,
any mix of multi-token prefill (or prefill chunks) and one-token decode, on a paged KV cache."""
from __future__ import annotations

import numpy as np

from .config import CacheConfig
from .kv_cache import BatchMetadata, PagedKVCache
from .ops import Ops
from .weights import ModelWeights


def linear(ops: Ops, out: np.ndarray, x: np.ndarray, w) -> np.ndarray:
    """out (T, N) = x (T, K) @ w.T for a float32 weight (N, K) or a quant.QTensor standing for one."""
    if isinstance(w, np.ndarray):
        return ops.matmul(out, x, w)
    return w.matmul(ops, out, x)


class Model:
    def __init__(self, weights: ModelWeights, ops: Ops | None = None):
        self.weights = weights
        self.config = weights.config
        self.ops = ops if ops is not None else Ops("numpy")

    def new_cache(self, num_blocks: int = 0, block_size: int = 16) -> PagedKVCache:
        return PagedKVCache(self.config, CacheConfig(block_size=block_size, num_blocks=num_blocks))

    def forward(self, batch: BatchMetadata, cache: PagedKVCache, all_logits: bool = False) -> np.ndarray:
        """Logits (B, vocab) for each sequence's last new token, or (T, vocab) for every new token."""
        c, w, ops = self.config, self.weights, self.ops
        T, D, H, KVH, hd = len(batch.tokens), c.dim, c.n_heads, c.n_kv_heads, c.head_dim
        if T == 0:
            raise ValueError("empty batch")
        if batch.tokens.min() < 0 or batch.tokens.max() >= c.vocab_size:
            raise ValueError(f"token ids must be in [0, {c.vocab_size}), got "
                             f"[{batch.tokens.min()}, {batch.tokens.max()}]")
        scale = 1.0 / np.sqrt(hd)
        q_lens = batch.q_lens                                   # (B,)
        is_decode = q_lens == 1
        decode_seqs = np.flatnonzero(is_decode)                 # sequences with one new token
        prefill_seqs = np.flatnonzero(~is_decode)
        decode_rows = batch.cu_seqlens_q[decode_seqs]           # (B_dec,) their rows in T
        prefill_rows = np.concatenate([np.arange(batch.cu_seqlens_q[b], batch.cu_seqlens_q[b + 1])
                                       for b in prefill_seqs]) if len(prefill_seqs) else np.zeros(0, np.int64)
        prefill_cu = np.concatenate([[0], np.cumsum(q_lens[prefill_seqs])]).astype(np.int64)

        x = np.empty((T, D), np.float32)                        # residual stream
        h = np.empty((T, D), np.float32)                        # normed input of a block
        q = np.empty((T, H * hd), np.float32)
        k = np.empty((T, KVH * hd), np.float32)
        v = np.empty((T, KVH * hd), np.float32)
        attn = np.empty((T, H, hd), np.float32)
        o = np.empty((T, D), np.float32)                        # attention or MLP output
        gate = np.empty((T, c.hidden_dim), np.float32)
        up = np.empty((T, c.hidden_dim), np.float32)

        ops.embedding(x, batch.tokens, w.tok_embeddings)
        for layer, lw in enumerate(w.layers):
            k_cache, v_cache = cache.k[layer], cache.v[layer]  # (num_blocks, block_size, KVH, hd)
            ops.rmsnorm(h, x, lw.attn_norm, c.norm_eps)
            linear(ops, q, h, lw.wq)
            linear(ops, k, h, lw.wk)
            linear(ops, v, h, lw.wv)
            ops.rope(q, q, batch.positions, hd, c.rope_theta)
            ops.rope(k, k, batch.positions, hd, c.rope_theta)
            ops.kv_cache_write(k_cache, v_cache, k.reshape(T, KVH, hd), v.reshape(T, KVH, hd),
                               batch.slot_mapping)
            q3 = q.reshape(T, H, hd)
            if len(decode_seqs):
                out_dec = np.empty((len(decode_seqs), H, hd), np.float32)
                ops.paged_decode_attention(out_dec, q3[decode_rows], k_cache, v_cache,
                                           batch.block_tables[decode_seqs], batch.context_lens[decode_seqs],
                                           scale)
                attn[decode_rows] = out_dec
            if len(prefill_seqs):
                out_pre = np.empty((len(prefill_rows), H, hd), np.float32)
                ops.paged_prefill_attention(out_pre, q3[prefill_rows], k_cache, v_cache,
                                            batch.block_tables[prefill_seqs], prefill_cu,
                                            batch.context_lens[prefill_seqs], scale)
                attn[prefill_rows] = out_pre
            linear(ops, o, attn.reshape(T, H * hd), lw.wo)
            ops.add(x, x, o)
            ops.rmsnorm(h, x, lw.ffn_norm, c.norm_eps)
            linear(ops, gate, h, lw.w1)
            linear(ops, up, h, lw.w3)
            ops.silu_mul(gate, gate, up)
            linear(ops, o, gate, lw.w2)
            ops.add(x, x, o)

        rows = np.arange(T) if all_logits else batch.cu_seqlens_q[1:] - 1    # (B,) last row per sequence
        xl = np.ascontiguousarray(x[rows])
        hl = np.empty_like(xl)
        ops.rmsnorm(hl, xl, w.norm, c.norm_eps)
        logits = np.empty((len(rows), c.vocab_size), np.float32)            # (B or T, vocab)
        linear(ops, logits, hl, w.output)
        return logits
