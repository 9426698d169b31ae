/* Attention over the paged KV cache, read through block tables.
 *
 * paged_prefill_attention: varlen causal attention (prefill, chunked prefill, any mix): each
 * sequence runs the flash core of attention.c over its cached context.
 * paged_decode_attention: one query token per sequence, Flash-Decoding: the context of each
 * (sequence, KV head) is split over threads; each split keeps its own running max m, sum l and
 * output, and the splits are combined by log-sum-exp. Memory-bound: K and V are streamed once,
 * straight from the cache blocks (no packing), all heads of a GQA group sharing each load. */
#include "common.h"
#include "vecmath.h"
#include "attention.h"

#define CHUNK 32           /* keys scored at a time */
#define MIN_SPLIT 256      /* keys per split, at least */

/* 0 when every index a sequence uses is in range, else 1 + the first bad sequence */
static int64_t check_tables(const int64_t *block_tables, const int64_t *context_lens, const int64_t *cu,
                            int64_t B, int64_t max_blocks, int64_t num_blocks, int64_t block_size, int64_t T_total,
                            int64_t min_ctx) {
    for (int64_t b = 0; b < B; b++) {
        int64_t ctx = context_lens[b], q_len = 1;
        if (cu) {
            if (cu[b] < 0 || cu[b + 1] < cu[b] || cu[b + 1] > T_total) return b + 1;
            q_len = cu[b + 1] - cu[b];
            if (q_len == 0) continue;
        }
        if (ctx < MAX(min_ctx, q_len) || ctx > max_blocks * block_size) return b + 1;
        for (int64_t i = 0; i < cdiv(ctx, block_size); i++)
            if (block_tables[b * max_blocks + i] < 0 || block_tables[b * max_blocks + i] >= num_blocks) return b + 1;
    }
    return 0;
}

int64_t paged_prefill_attention_f32(float *out, const float *q, const float *k_cache, const float *v_cache,
                                    const int64_t *block_tables, const int64_t *cu_seqlens_q,
                                    const int64_t *context_lens, int64_t B, int64_t max_blocks,
                                    int64_t num_blocks, int64_t block_size, int64_t T_total, int64_t H,
                                    int64_t KVH, int64_t head_dim, float scale) {
    int64_t bad = check_tables(block_tables, context_lens, cu_seqlens_q, B, max_blocks, num_blocks, block_size,
                               T_total, 1);
    if (bad || KVH <= 0 || H % KVH) return bad;
    kv_source_t *heads = malloc((size_t)KVH * sizeof *heads);
    if (!heads) return 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t lo = cu_seqlens_q[b], T = cu_seqlens_q[b + 1] - lo;
        if (T == 0) continue;
        for (int64_t h = 0; h < KVH; h++)
            heads[h] = (kv_source_t){k_cache + h * head_dim, v_cache + h * head_dim, KVH * head_dim,
                                     block_tables + b * max_blocks, block_size};
        flash_attention(out + lo * H * head_dim, q + lo * H * head_dim, T, context_lens[b], H, KVH, head_dim,
                        scale, heads, 1);
    }
    free(heads);
    return 0;
}

/* ---- decode ---- */

INLINE float dot_hd(const float *a, const float *b, int64_t hd) {
    v16f acc = v16f_splat(0.0f);
    int64_t d = 0;
    for (; d + 16 <= hd; d += 16) acc += v16f_load(a + d) * v16f_load(b + d);
    float s = v16f_hsum(acc);
    for (; d < hd; d++) s += a[d] * b[d];
    return s;
}

/* keys [s_lo, s_hi) of one KV head for its `group` query heads qh (group, hd), already scaled.
 * Writes o (group, hd) unnormalised, m and l (group,). sc: (group, CHUNK) scratch. Walks the block
 * table one block at a time: inside a block the keys are rows of stride `stride`. */
INLINE void decode_split(float *o, float *m, float *l, const float *qh, const kv_source_t *src, int64_t s_lo,
                         int64_t s_hi, int64_t group, int64_t hd, float *sc) {
    for (int64_t g = 0; g < group; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
    }
    memset(o, 0, (size_t)(group * hd) * sizeof(float));
    int64_t bs = src->block_size, stride = src->stride;
    for (int64_t c0 = s_lo; c0 < s_hi;) {
        int64_t in_block = c0 % bs, n = MIN(MIN(CHUNK, s_hi - c0), bs - in_block);
        int64_t row0 = (src->block_table[c0 / bs] * bs + in_block) * stride;
        const float *kb = src->k + row0, *vb = src->v + row0;        /* n consecutive rows of this block */
        for (int64_t j = 0; j < n; j++)
            for (int64_t g = 0; g < group; g++) sc[g * CHUNK + j] = dot_hd(qh + g * hd, kb + j * stride, hd);
        for (int64_t g = 0; g < group; g++) {
            float *row = sc + g * CHUNK, mx = m[g];
            for (int64_t j = 0; j < n; j++) mx = row[j] > mx ? row[j] : mx;
            float corr = expf(m[g] - mx), sum = 0.0f;
            if (n >= 16) {
                for (int64_t j0 = 0; j0 < CHUNK; j0 += 16) {        /* CHUNK is a multiple of 16 */
                    v16f p = v16f_exp(v16f_load(row + j0) - v16f_splat(mx));
                    for (int i = 0; i < 16; i++) p[i] = j0 + i < n ? p[i] : 0.0f;
                    v16f_store(row + j0, p);
                    sum += v16f_hsum(p);
                }
            } else {
                for (int64_t j = 0; j < n; j++) {
                    row[j] = expf(row[j] - mx);
                    sum += row[j];
                }
            }
            l[g] = l[g] * corr + sum;
            m[g] = mx;
            if (corr != 1.0f)
                for (int64_t d = 0; d < hd; d++) o[g * hd + d] *= corr;
        }
        for (int64_t g = 0; g < group; g++) {            /* o[g] += sum_j p_j v_j, held in registers */
            float *og = o + g * hd;
            const float *pg = sc + g * CHUNK;
            int64_t d = 0;
            for (; d + 16 <= hd; d += 16) {
                v16f acc = v16f_load(og + d);
                for (int64_t j = 0; j < n; j++) acc += v16f_splat(pg[j]) * v16f_load(vb + j * stride + d);
                v16f_store(og + d, acc);
            }
            for (; d < hd; d++) {
                float acc = og[d];
                for (int64_t j = 0; j < n; j++) acc += pg[j] * vb[j * stride + d];
                og[d] = acc;
            }
        }
        c0 += n;
    }
}

#if PYINFER_X86
TARGET_AVX512 static void decode_split_avx512(float *o, float *m, float *l, const float *qh, const kv_source_t *src,
                                              int64_t lo, int64_t hi, int64_t group, int64_t hd, float *sc) {
    decode_split(o, m, l, qh, src, lo, hi, group, hd, sc);
}
TARGET_AVX2 static void decode_split_avx2(float *o, float *m, float *l, const float *qh, const kv_source_t *src,
                                          int64_t lo, int64_t hi, int64_t group, int64_t hd, float *sc) {
    decode_split(o, m, l, qh, src, lo, hi, group, hd, sc);
}
#endif
static void decode_split_scalar(float *o, float *m, float *l, const float *qh, const kv_source_t *src,
                                int64_t lo, int64_t hi, int64_t group, int64_t hd, float *sc) {
    decode_split(o, m, l, qh, src, lo, hi, group, hd, sc);
}

void paged_decode_core(float *out, const float *q, const float *k_cache, const float *v_cache,
                       const int64_t *block_tables, const int64_t *context_lens, int64_t B, int64_t max_blocks,
                       int64_t block_size, int64_t H, int64_t KVH, int64_t hd, float scale, int threads) {
    int64_t group = H / KVH, max_ctx = 0;
    for (int64_t b = 0; b < B; b++) max_ctx = MAX(max_ctx, context_lens[b]);
    int64_t splits = 1, pairs = B * KVH, total_ctx = 0;
    for (int64_t b = 0; b < B; b++) total_ctx += context_lens[b];
    if (total_ctx * KVH * hd * (group + 1) < 4 * PAR_MIN_WORK) threads = 1;   /* too little work to share */
    if (threads > 1 && pairs < 2 * threads) splits = MAX(1, MIN(cdiv(2 * threads, pairs), max_ctx / MIN_SPLIT));
    int64_t items = pairs * splits, part = group * (hd + 2);
    float *partial = malloc((size_t)(items * part) * sizeof(float));     /* (items, group, hd + 2) */
    if (!partial) return;
    int isa = pyinfer_isa();
#pragma omp parallel if (threads > 1 && items > 1)
    {
        float *qh = malloc((size_t)(group * (hd + CHUNK)) * sizeof(float));   /* scaled q, then scores */
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            if (!qh) continue;
            int64_t b = it / (KVH * splits), kvh = (it / splits) % KVH, sp = it % splits;
            int64_t ctx = context_lens[b], per = cdiv(ctx, splits);
            int64_t lo = MIN(ctx, sp * per), hi = MIN(ctx, lo + per);
            float *o = partial + it * part, *m = o + group * hd, *l = m + group;
            for (int64_t i = 0; i < group * hd; i++) qh[i] = q[(b * H + kvh * group) * hd + i] * scale;
            kv_source_t src = {k_cache + kvh * hd, v_cache + kvh * hd, KVH * hd, block_tables + b * max_blocks, block_size};
#if PYINFER_X86
            if (isa >= ISA_AVX512) decode_split_avx512(o, m, l, qh, &src, lo, hi, group, hd, qh + group * hd);
            else if (isa >= ISA_AVX2) decode_split_avx2(o, m, l, qh, &src, lo, hi, group, hd, qh + group * hd);
            else
#endif
                decode_split_scalar(o, m, l, qh, &src, lo, hi, group, hd, qh + group * hd);
        }
        free(qh);
    }
    (void)isa;
    for (int64_t pair = 0; pair < pairs; pair++) {      /* log-sum-exp combine of the splits */
        int64_t b = pair / KVH, kvh = pair % KVH;
        for (int64_t g = 0; g < group; g++) {
            float mx = -INFINITY, L = 0.0f;
            for (int64_t sp = 0; sp < splits; sp++) {
                float mi = partial[(pair * splits + sp) * part + group * hd + g];
                mx = mi > mx ? mi : mx;
            }
            float *dst = out + (b * H + kvh * group + g) * hd;
            for (int64_t d = 0; d < hd; d++) dst[d] = 0.0f;
            for (int64_t sp = 0; sp < splits; sp++) {
                const float *base = partial + (pair * splits + sp) * part;
                float mi = base[group * hd + g], li = base[group * hd + group + g];
                if (li == 0.0f) continue;                          /* an empty split */
                float w = expf(mi - mx);
                L += li * w;
                for (int64_t d = 0; d < hd; d++) dst[d] += base[g * hd + d] * w;
            }
            float inv = 1.0f / L;
            for (int64_t d = 0; d < hd; d++) dst[d] *= inv;
        }
    }
    free(partial);
}

int64_t paged_decode_attention_f32(float *out, const float *q, const float *k_cache, const float *v_cache,
                                   const int64_t *block_tables, const int64_t *context_lens, int64_t B,
                                   int64_t max_blocks, int64_t num_blocks, int64_t block_size, int64_t H,
                                   int64_t KVH, int64_t head_dim, float scale) {
    int64_t bad = check_tables(block_tables, context_lens, NULL, B, max_blocks, num_blocks, block_size, 0, 1);
    if (bad || B <= 0 || KVH <= 0 || H % KVH || head_dim <= 0) return bad;
    paged_decode_core(out, q, k_cache, v_cache, block_tables, context_lens, B, max_blocks, block_size, H, KVH,
                      head_dim, scale, pyinfer_num_threads());
    return 0;
}
