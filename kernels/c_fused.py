"""The C backend's fused decode step (csrc/fused.c): one call runs every layer of a decode batch."""
from __future__ import annotations

import weakref

from . import c_checks as chk


def make_decode_step(ffi, lib):
    buf = ffi.from_buffer
    F, I64 = "float[]", "int64_t[]"
    # each plan's C views, made once (a model calls with the same plan every step; from_buffer per call
    # was a third of the wrapper's time), held only as long as the plan itself lives
    views_of = weakref.WeakKeyDictionary()      # plan -> (table, config, rope_freq, eps, cache dims, freq)

    def plan_views(plan):
        views = views_of.get(plan)
        if views is None:
            c = plan.config
            freq = plan.inv_freq                        # (hd/2,) float32, scaled RoPE included
            views = views_of[plan] = (buf(I64, plan.table), buf(I64, plan.config_table), buf(F, freq),
                                      float(c.norm_eps), (c.n_layers, c.n_kv_heads, c.head_dim), freq)
        return views

    def decode_step(logits, tokens, positions, slot_mapping, block_tables, context_lens, k_cache, v_cache, plan):
        """logits: (B, vocab) f32 out; tokens, positions, slot_mapping, context_lens: (B,) int;
        block_tables: (B, max_blocks) int; k_cache, v_cache: (L, num_blocks, block_size, KVH, hd) f32;
        plan: kernels.fused_reference.DecodePlan."""
        c = plan.config
        tokens = chk.index("tokens", tokens, 1)
        B = tokens.shape[0]
        positions = chk.index("positions", positions, 1)
        slots = chk.index("slot_mapping", slot_mapping, 1)
        lens = chk.index("context_lens", context_lens, 1)
        tables = chk.index("block_tables", block_tables, 2)
        if not (positions.shape[0] == slots.shape[0] == lens.shape[0] == B):    # the messages, when not
            for name, a in (("positions", positions), ("slot_mapping", slots), ("context_lens", lens)):
                chk.shape(name, a, (B,))
        if tables.shape[0] != B:
            raise ValueError(f"block_tables has {tables.shape[0]} rows for {B} sequences")
        chk.f32("logits", logits, 2, writable=True)
        if logits.shape != (B, c.vocab_size):
            chk.shape("logits", logits, (B, c.vocab_size))
        chk.f32("k_cache", k_cache, 5, writable=True)
        chk.f32("v_cache", v_cache, 5, writable=True)
        table, config, freq, eps, dims, _ = plan_views(plan)
        L, nb, bs, KVH, hd = k_cache.shape
        if (L, KVH, hd) != dims:
            raise ValueError(f"k_cache has shape {k_cache.shape}, the model has {c.n_layers} layers, "
                             f"{c.n_kv_heads} KV heads of {c.head_dim}")
        if v_cache.shape != k_cache.shape:
            chk.shape("v_cache", v_cache, k_cache.shape)
        bad = lib.decode_step_f32(buf(F, logits), buf(I64, tokens), buf(I64, positions), buf(I64, slots),
                                  buf(I64, tables), buf(I64, lens), B, tables.shape[1], buf(F, k_cache),
                                  buf(F, v_cache), nb, bs, config, eps, freq, table, len(plan.table))
        if bad == -1:
            raise ValueError("decode plan does not match the model config")
        if bad == -2:
            raise MemoryError("decode_step: out of memory for activations")
        if bad:
            b = bad - 1
            if not 0 <= tokens[b] < c.vocab_size:
                raise ValueError(f"tokens[{b}]={int(tokens[b])} is outside [0, {c.vocab_size})")
            if not 0 <= slots[b] < nb * bs:
                raise ValueError(f"slot_mapping[{b}]={int(slots[b])} is outside [0, {nb * bs})")
            raise ValueError(chk.explain_paged(tables, lens, nb, bs))
        return logits

    return decode_step
