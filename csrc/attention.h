/* Internal interface between attention.c (the flash core) and paged_attention.c. */
#ifndef PYINFER_ATTENTION_H
#define PYINFER_ATTENTION_H
#include <stdint.h>

/* K and V of one KV head: token s at k + s * stride (contiguous), or through a block table at
 * k + (block_table[s / block_size] * block_size + s % block_size) * stride. */
typedef struct {
    const float *k, *v;
    int64_t stride;
    const int64_t *block_table;
    int64_t block_size;
} kv_source_t;

/* out, q: (T, H, hd); src_heads: (KVH,) sources of S keys each; causal, queries the last T positions;
 * window > 0: each query sees only its last `window` positions (0: all) */
void flash_attention(float *out, const float *q, int64_t T, int64_t S, int64_t H, int64_t KVH, int64_t hd,
                     float scale, const kv_source_t *src_heads, int parallel, int64_t window);


/* decode attention without argument checks (paged_attention.c); the fused step calls it directly.
 * 0, or -1 when its scratch could not be allocated (out is then NaN). */
int paged_decode_core(float *out, const float *q, const float *k_cache, const float *v_cache,
                      const int64_t *block_tables, const int64_t *context_lens, int64_t B, int64_t max_blocks,
                      int64_t block_size, int64_t H, int64_t KVH, int64_t hd, float scale, int threads,
                      int64_t window);
#endif
