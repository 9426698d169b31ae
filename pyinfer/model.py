"""The Llama decoder, written only against ``ops``: one forward over a batch of sequences,
any mix of multi-token prefill (or prefill chunks) and one-token decode, on a paged KV cache.

Arrays are allocated and moved through ``ops.arrays`` (numpy for the CPU backends, torch tensors
on the GPU for Triton), so one forward serves every backend."""
from __future__ import annotations

from dataclasses import fields, replace

import numpy as np

from .config import ROWWISE_MAX_Q, CacheConfig
from .kv_cache import BatchMetadata, PagedKVCache
from .ops import Ops
from .rope import rope_inv_freq
from .weights import LayerWeights, ModelWeights


def linear(ops: Ops, out, x, w):
    """out (T, N) = x (T, K) @ w.T for a float32 weight (N, K) or a quant.QTensor standing for one."""
    if hasattr(w, "fmt"):
        return w.matmul(ops, out, x)
    return ops.matmul(out, x, w)


def weights_to_backend(weights: ModelWeights, arrays) -> ModelWeights:
    """The same weights as the backend's arrays (e.g. resident on the GPU); numpy stays as is."""
    if arrays.is_numpy:
        return weights

    def move(w):
        if w is None:
            return None
        if hasattr(w, "fmt"):
            return replace(w, qweight=arrays.from_numpy(w.qweight), scales=arrays.from_numpy(w.scales),
                           zeros=None if w.zeros is None else arrays.from_numpy(w.zeros))
        return arrays.from_numpy(w)

    emb = move(weights.tok_embeddings)
    layers = [LayerWeights(**{f.name: move(getattr(lw, f.name)) for f in fields(LayerWeights)})
              for lw in weights.layers]
    out = emb if weights.output is weights.tok_embeddings else move(weights.output)
    return _unchecked_weights(weights.config, emb, layers, move(weights.norm), out)


def _unchecked_weights(config, emb, layers, norm, output) -> ModelWeights:
    w = object.__new__(ModelWeights)          # shapes were checked on the numpy originals
    w.config, w.tok_embeddings, w.layers, w.norm, w.output = config, emb, layers, norm, output
    return w


def _rowwise(batch: BatchMetadata, seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of sequences ``seqs`` (B_dec,) as independent decode queries: their rows in the batch
    (R,), a block table per row (R, max_blocks) and each row's context length (R,), the keys up to and
    including its own position."""
    cu, q = batch.cu_seqlens_q, batch.q_lens[seqs]                                 # (B + 1,), (B_dec,)
    if (q == 1).all():
        return cu[seqs], batch.block_tables[seqs], batch.context_lens[seqs]
    rows = np.concatenate([np.arange(cu[b], cu[b + 1]) for b in seqs])             # (R,)
    tables = np.repeat(batch.block_tables[seqs], q, axis=0)
    lens = np.repeat(batch.context_lens[seqs].astype(np.int64) - cu[seqs + 1], q) + rows + 1
    return rows, tables, lens.astype(batch.context_lens.dtype)


class Model:
    def __init__(self, weights: ModelWeights, ops: Ops | None = None):
        self.ops = ops if ops is not None else Ops("numpy")
        self.config = weights.config
        self.host_weights = weights                   # numpy originals (shapes for cost accounting)
        self.weights = weights_to_backend(weights, self.ops.arrays)
        self.inv_freq = self.ops.arrays.table(rope_inv_freq(self.config))   # (head_dim/2,) float32 RoPE table
        # A backend with a native fused decode step (one call for every layer) gets its weight plan once,
        # where the fused step computes this model exactly (else every step runs op by op).
        self.decode_plan = None
        if "decode_step" in getattr(self.ops, "native", ()) and self.ops.arrays.is_numpy:
            from .kernels.fused_reference import fused_supported, make_decode_plan
            if fused_supported(self.config) is None:
                self.decode_plan = make_decode_plan(self.weights)

    def new_cache(self, num_blocks: int = 0, block_size: int = 16) -> PagedKVCache:
        cache = PagedKVCache(self.config, CacheConfig(block_size=block_size, num_blocks=num_blocks))
        if not self.ops.arrays.is_numpy:
            cache.k, cache.v = self.ops.arrays.from_numpy(cache.k), self.ops.arrays.from_numpy(cache.v)
        return cache

    def forward(self, batch: BatchMetadata, cache: PagedKVCache, all_logits: bool = False,
                logit_rows: np.ndarray | None = None) -> np.ndarray:
        """Logits (B, vocab) float32 numpy for each sequence's last new token, or (T, vocab) for every one
        (``all_logits``), or (R, vocab) for the token rows ``logit_rows`` (R,) of the batch, in that order
        (the engine asks for a verifying sequence's last k + 1 rows and the others' last one; R may be 0)."""
        c, w, ops, A = self.config, self.weights, self.ops, self.ops.arrays
        T, D, H, KVH, hd = len(batch.tokens), c.dim, c.n_heads, c.n_kv_heads, c.head_dim
        if T == 0:
            raise ValueError("empty batch")
        if logit_rows is not None:
            logit_rows = np.asarray(logit_rows)
            if all_logits or logit_rows.ndim != 1 or (logit_rows.size and (
                    not np.issubdtype(logit_rows.dtype, np.integer) or logit_rows.min() < 0 or logit_rows.max() >= T)):
                raise ValueError(f"logit_rows must be a flat array of row indices in [0, {T}) and exclude all_logits")
            logit_rows = logit_rows.astype(np.int64)
        if logit_rows is None and self.decode_plan is not None and T == len(batch.cu_seqlens_q) - 1 \
                and batch.cu_seqlens_q.tolist() == list(range(T + 1)):         # every sequence decodes one token
            logits = A.empty((T, c.vocab_size))                                 # (B, vocab); ids checked in C
            ops.decode_step(logits, batch.tokens, batch.positions, batch.slot_mapping, batch.block_tables,
                            batch.context_lens, cache.k, cache.v, self.decode_plan)
            return A.to_numpy(logits)
        if batch.tokens.min() < 0 or batch.tokens.max() >= c.vocab_size:
            raise ValueError(f"token ids must be in [0, {c.vocab_size}), got "
                             f"[{batch.tokens.min()}, {batch.tokens.max()}]")
        scale = 1.0 / np.sqrt(hd)
        q_lens = batch.q_lens                                   # (B,)
        if q_lens.min() < 1 or batch.cu_seqlens_q[0] != 0 or batch.cu_seqlens_q[-1] != T:
            raise ValueError(f"cu_seqlens_q {batch.cu_seqlens_q.tolist()} must rise from 0 to the {T} tokens "
                             "by at least 1 per sequence (a sequence without new tokens has no logits)")
        cu = batch.cu_seqlens_q                                 # (B + 1,)
        decode_seqs = np.flatnonzero(q_lens <= ROWWISE_MAX_Q)   # sequences whose rows attend as decodes
        prefill_seqs = np.flatnonzero(q_lens > ROWWISE_MAX_Q)
        decode_rows, dec_tables, dec_lens = _rowwise(batch, decode_seqs)
        if self.decode_plan is not None and not len(prefill_seqs):
            # every row is a decode row (verification rows included): the fused step runs them all, writing
            # every row's K/V before any row attends, each row over the keys up to its own position
            logits = A.empty((T, c.vocab_size))                                 # (T, vocab)
            ops.decode_step(logits, batch.tokens, batch.positions, batch.slot_mapping, dec_tables, dec_lens,
                            cache.k, cache.v, self.decode_plan)
            rows = logit_rows if logit_rows is not None else np.arange(T) if all_logits else cu[1:] - 1
            return A.to_numpy(logits)[rows]
        prefill_rows = np.concatenate([np.arange(cu[b], cu[b + 1]) for b in prefill_seqs]) \
            if len(prefill_seqs) else np.zeros(0, np.int64)
        # step metadata, moved to the backend once per forward
        tokens, positions, slots = (A.from_numpy(a) for a in (batch.tokens, batch.positions, batch.slot_mapping))
        dec = [A.from_numpy(a) for a in (decode_rows, dec_tables, dec_lens)]
        pre = [A.from_numpy(a) for a in (prefill_rows, batch.block_tables[prefill_seqs],
                                         np.concatenate([[0], np.cumsum(q_lens[prefill_seqs])]).astype(np.int64),
                                         batch.context_lens[prefill_seqs])]

        x = A.empty((T, D))                                     # residual stream
        h = A.empty((T, D))                                     # normed input of a block
        q = A.empty((T, H * hd))
        k = A.empty((T, KVH * hd))
        v = A.empty((T, KVH * hd))
        attn = A.empty((T, H, hd))
        qn = A.empty((T, H * hd)) if c.qk_norm else None          # q, k after their per-head RMSNorm
        kn = A.empty((T, KVH * hd)) if c.qk_norm else None
        window = (c.sliding_window,) if c.sliding_window else ()  # attention ops' optional last argument
        o = A.empty((T, D))                                     # attention or MLP output
        gate = A.empty((T, c.hidden_dim))
        up = A.empty((T, c.hidden_dim))

        ops.embedding(x, tokens, w.tok_embeddings)
        for layer, lw in enumerate(w.layers):
            k_cache, v_cache = cache.k[layer], cache.v[layer]  # (num_blocks, block_size, KVH, hd)
            ops.rmsnorm(h, x, lw.attn_norm, c.norm_eps)
            linear(ops, q, h, lw.wq)
            linear(ops, k, h, lw.wk)
            linear(ops, v, h, lw.wv)
            if c.qkv_bias:
                ops.bias_add(q, q, lw.bq)
                ops.bias_add(k, k, lw.bk)
                ops.bias_add(v, v, lw.bv)
            if c.qk_norm:                                          # RMSNorm over each head's hd features
                ops.rmsnorm(qn.reshape(T * H, hd), q.reshape(T * H, hd), lw.q_norm, c.norm_eps)
                ops.rmsnorm(kn.reshape(T * KVH, hd), k.reshape(T * KVH, hd), lw.k_norm, c.norm_eps)
                ops.rope(q, qn, positions, self.inv_freq)
                ops.rope(k, kn, positions, self.inv_freq)
            else:
                ops.rope(q, q, positions, self.inv_freq)
                ops.rope(k, k, positions, self.inv_freq)
            ops.kv_cache_write(k_cache, v_cache, k.reshape(T, KVH, hd), v.reshape(T, KVH, hd), slots)
            q3 = q.reshape(T, H, hd)
            if len(decode_seqs):
                out_dec = A.empty((len(decode_rows), H, hd))
                ops.paged_decode_attention(out_dec, q3[dec[0]], k_cache, v_cache, dec[1], dec[2], scale, *window)
                attn[dec[0]] = out_dec
            if len(prefill_seqs):
                out_pre = A.empty((len(prefill_rows), H, hd))
                ops.paged_prefill_attention(out_pre, q3[pre[0]], k_cache, v_cache, pre[1], pre[2], pre[3], scale,
                                            *window)
                attn[pre[0]] = out_pre
            linear(ops, o, attn.reshape(T, H * hd), lw.wo)
            ops.add(x, x, o)
            ops.rmsnorm(h, x, lw.ffn_norm, c.norm_eps)
            linear(ops, gate, h, lw.w1)
            linear(ops, up, h, lw.w3)
            ops.silu_mul(gate, gate, up)
            linear(ops, o, gate, lw.w2)
            ops.add(x, x, o)

        rows = logit_rows if logit_rows is not None else np.arange(T) if all_logits else \
            batch.cu_seqlens_q[1:] - 1                                       # (R,); by default the last per sequence
        if len(rows) == 0:
            return np.zeros((0, c.vocab_size), np.float32)
        xl = x[A.from_numpy(rows)]                                           # (B or T, D), a copy
        hl = A.empty(xl.shape)
        ops.rmsnorm(hl, xl, w.norm, c.norm_eps)
        logits = A.empty((len(rows), c.vocab_size))                          # (B or T, vocab)
        linear(ops, logits, hl, w.output)
        return A.to_numpy(logits)
