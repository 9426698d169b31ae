/* Attention over the paged KV cache, read through block tables.
 *
 * paged_prefill_attention: varlen causal attention (prefill, chunked prefill, any mix): each
 * sequence runs the flash core of attention.c over its cached context.
 * paged_decode_attention: one query token per sequence, Flash-Decoding: the context of each
 * sequence is cut into partitions of a fixed number of keys, shared among threads; each keeps its
 * own running max m, sum l and output per head, and they are combined by log-sum-exp. Memory-bound:
 * K and V are streamed once, straight from the cache blocks (no packing), all heads of a GQA group
 * sharing each load, register-blocked (qk_tile, pv_tile), the next chunk's rows prefetched beside the
 * current one's loads (its blocks are anywhere in the pool); benchmarks/bench_decode_attention.py.
 * Heads smaller than a vector (hd < 16) take paged_decode_small.h's path, keys along the lanes. */
#include "common.h"
#include "vecmath.h"
#include "attention.h"
#include "paged_decode_small.h"     /* decode_args_t, PART_KEYS, HEAD_TILE, decode_small (hd < 16) */
#include "paged_decode_tiles.h"     /* KCH, chunk_rows, qk_heads, pv_heads (hd >= 16) */

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
                                    int64_t KVH, int64_t head_dim, float scale, int64_t window) {
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
                        scale, heads, 1, window);
    }
    free(heads);
    return 0;
}

/* ---- decode ----
 * Work item = (sequence, partition of PART_KEYS consecutive keys), all heads: each chunk of KCH keys
 * (rows of KVH * hd floats, found through the block table, so a chunk may span blocks) is read once,
 * KV head after KV head, for the whole GQA group of that head. The partition size does not depend
 * on the thread count, so neither does the result (bitwise). The chunk kernels are in
 * paged_decode_tiles.h. */

/* keys [lo, hi) of one sequence for all H heads. qs: (H, hd) scaled queries. Writes o (H, hd)
 * unnormalised, m and l (H,). p: (H, KCH), corr: (H,) scratch. tile: heads per K / V load, as many
 * accumulators as the instruction set's registers hold; narrow: 8-float vectors (AVX2, SSE). */
INLINE void decode_part(float *o, float *m, float *l, const float *qs, const decode_args_t *a, int64_t lo,
                        int64_t hi, float *p, float *corr, const int tile, const int narrow) {
    if (a->hd < 16) {
        if (a->hd == 8) decode_small(o, m, l, qs, a, lo, hi, p, 8);
        else decode_small(o, m, l, qs, a, lo, hi, p, 0);
        return;
    }
    int64_t H = a->H, KVH = a->KVH, hd = a->hd, group = H / KVH, row = KVH * hd;
    for (int64_t h = 0; h < H; h++) {
        m[h] = -INFINITY;
        l[h] = 0.0f;
    }
    memset(o, 0, (size_t)(H * hd) * sizeof(float));
    const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    int64_t off[KCH], next[KCH];
    v16f acc[HEAD_TILE * KCH], sc[HEAD_TILE];      /* 8 KiB of partial dot products; scores of a tile */
    chunk_rows(next, lo, hi, a->table, a->bs, row);
    for (int64_t c0 = lo; c0 < hi; c0 += KCH) {
        int64_t n = MIN(KCH, hi - c0);
        v16i valid = lane < (v16i){0} + (int32_t)n;
        memcpy(off, next, sizeof off);
        const int64_t *pf = NULL;                  /* the next chunk's rows (blocks no prefetcher can guess), */
        if (c0 + KCH < hi) {                       /* prefetched line for line beside this chunk's loads */
            chunk_rows(next, c0 + KCH, hi, a->table, a->bs, row);
            pf = next;
        }
        for (int64_t kvh = 0; kvh < KVH; kvh++) {
            const float *kb = a->k + kvh * hd, *vb = a->v + kvh * hd;
            for (int64_t g0 = 0; g0 < group; g0 += tile) {
                int64_t nh = MIN(tile, group - g0);
                qk_heads(sc, acc, qs + (kvh * group + g0) * hd, kb, off, hd, nh, narrow, g0 ? NULL : pf);
                for (int64_t t = 0; t < nh; t++) {
                    int64_t g = g0 + t, h = kvh * group + g;
                    v16f s = v16f_select(valid, sc[t], v16f_splat(-INFINITY));
                    float mx = MAX(m[h], v16f_hmax_tree(s));
                    v16f e = v16f_select(valid, v16f_exp(s - mx), v16f_splat(0.0f));
                    corr[g] = expf(m[h] - mx);              /* 0 on the first chunk (m = -inf) */
                    l[h] = l[h] * corr[g] + v16f_hsum(e);
                    m[h] = mx;
                    v16f_store(p + g * KCH, e);
                }
            }
            pv_heads(o + kvh * group * hd, p, corr, vb, off, hd, group, tile, narrow, pf);
        }
    }
}

#if PYINFER_X86
TARGET_AVX512 static void decode_part_avx512(float *o, float *m, float *l, const float *qs, const decode_args_t *a,
                                             int64_t lo, int64_t hi, float *p, float *corr) {
    decode_part(o, m, l, qs, a, lo, hi, p, corr, 8, 0);
}
TARGET_AVX2 static void decode_part_avx2(float *o, float *m, float *l, const float *qs, const decode_args_t *a,
                                         int64_t lo, int64_t hi, float *p, float *corr) {
    decode_part(o, m, l, qs, a, lo, hi, p, corr, 8, 1);
}
#endif
static void decode_part_scalar(float *o, float *m, float *l, const float *qs, const decode_args_t *a, int64_t lo,
                               int64_t hi, float *p, float *corr) {
    decode_part(o, m, l, qs, a, lo, hi, p, corr, 4, 1);
}

/* out[b, h] = the partitions' partials of sequence b combined by log-sum-exp; part: (H * (hd + 2)) each
 * (o (H, hd), m (H,), l (H,)), n_parts of them from `first` */
static void combine(float *dst, const float *partial, int64_t first, int64_t n_parts, int64_t h, int64_t H,
                    int64_t hd) {
    int64_t part = H * (hd + 2);
    float mx = -INFINITY, L = 0.0f;
    for (int64_t i = first; i < first + n_parts; i++) mx = MAX(mx, partial[i * part + H * hd + h]);
    for (int64_t d = 0; d < hd; d++) dst[d] = 0.0f;
    for (int64_t i = first; i < first + n_parts; i++) {
        const float *base = partial + i * part;
        float w = expf(base[H * hd + h] - mx);
        L += base[H * hd + H + h] * w;
        for (int64_t d = 0; d < hd; d++) dst[d] += base[h * hd + d] * w;
    }
    float inv = 1.0f / L;
    for (int64_t d = 0; d < hd; d++) dst[d] *= inv;
}

#define ALIGN_FLOATS(n) (((n) + 15) & ~(int64_t)15)      /* whole 64-byte lines */

typedef struct {
    float *out, *partial;
    const float *q, *k, *v;
    const int64_t *block_tables, *context_lens, *item_seq, *seq_first;
    int64_t B, max_blocks, bs, H, KVH, hd, part, window;
    float scale;
    int isa;
} decode_job_t;

/* work item it of the job; qs (H, hd), p, corr: this thread's scratch; *last_b: the sequence qs holds */
static void decode_item(const decode_job_t *j, int64_t it, float *qs, float *p, float *corr, int64_t *last_b) {
    int64_t b = j->item_seq[it], H = j->H, hd = j->hd;
    if (b != *last_b) {
        for (int64_t i = 0; i < H * hd; i++) qs[i] = j->q[b * H * hd + i] * j->scale;
        *last_b = b;
    }
    int64_t ctx = j->context_lens[b], start = j->window > 0 ? MAX(0, ctx - j->window) : 0;   /* keys it sees */
    int64_t lo = start + (it - j->seq_first[b]) * PART_KEYS, hi = MIN(ctx, lo + PART_KEYS);
    decode_args_t a = {j->k, j->v, j->block_tables + b * j->max_blocks, j->bs, H, j->KVH, hd};
    float *o = j->partial + it * j->part, *m = o + H * hd, *l = m + H;
#if PYINFER_X86
    if (j->isa >= ISA_AVX512) decode_part_avx512(o, m, l, qs, &a, lo, hi, p, corr);
    else if (j->isa >= ISA_AVX2) decode_part_avx2(o, m, l, qs, &a, lo, hi, p, corr);
    else
#endif
        decode_part_scalar(o, m, l, qs, &a, lo, hi, p, corr);
}

static void decode_combine(const decode_job_t *j, int64_t bh) {
    int64_t b = bh / j->H, first = j->seq_first[b], n = j->seq_first[b + 1] - first, hd = j->hd;
    if (n == 1) {           /* one partition: o / l (what combine gives, its weight being exp(0) = 1) */
        const float *base = j->partial + first * j->part;
        int64_t h = bh % j->H;
        float inv = 1.0f / base[j->H * hd + j->H + h];
        for (int64_t d = 0; d < hd; d++) j->out[bh * hd + d] = base[h * hd + d] * inv;
        return;
    }
    combine(j->out + bh * hd, j->partial, first, n, bh % j->H, j->H, hd);
}

#define STACK_FLOATS 4096   /* scratch of small calls (stories260K: ~700 floats) lives on the stack */

int paged_decode_core(float *out, const float *q, const float *k_cache, const float *v_cache,
                      const int64_t *block_tables, const int64_t *context_lens, int64_t B, int64_t max_blocks,
                      int64_t block_size, int64_t H, int64_t KVH, int64_t hd, float scale, int threads,
                      int64_t window) {
    int64_t items = 0, total_ctx = 0;
    window = MAX(0, window);
#define SEEN(b) (window > 0 ? MIN(context_lens[b], window) : context_lens[b])   /* keys sequence b attends */
    for (int64_t b = 0; b < B; b++) {
        items += cdiv(SEEN(b), PART_KEYS);
        total_ctx += SEEN(b);
    }
    if (total_ctx * KVH * hd * (H / KVH + 1) < 4 * PAR_MIN_WORK || items < 2) threads = 1;   /* too little work */
    threads = MAX(1, threads);
    /* one block: item_seq (items,) int64 | seq_first (B + 1,) int64 | partials (items, H * (hd + 2)) |
     * per thread: qs (H, hd), p (p_floats,), corr (H,) */
    int64_t p_floats = hd < 16 ? MAX(H * KCH, (H / KVH) * PART_KEYS) : H * KCH;   /* p, or decode_small's */
    int64_t part = H * (hd + 2), scratch = ALIGN_FLOATS(H * hd) + ALIGN_FLOATS(p_floats) + ALIGN_FLOATS(H);
    int64_t index_floats = ALIGN_FLOATS(2 * (items + B + 1));
    int64_t n_floats = index_floats + ALIGN_FLOATS(items * part) + threads * scratch;
    float stack_mem[STACK_FLOATS] __attribute__((aligned(64)));
    float *mem = n_floats <= STACK_FLOATS ? stack_mem : aligned_alloc(64, (size_t)n_floats * sizeof(float));
    if (!mem) {
        for (int64_t i = 0; i < B * H * hd; i++) out[i] = NAN;
        return -1;
    }
    int64_t *item_seq = (int64_t *)mem, *seq_first = item_seq + items;
    float *partial = mem + index_floats, *thread_mem = partial + ALIGN_FLOATS(items * part);
    seq_first[0] = 0;
    for (int64_t b = 0; b < B; b++) {
        seq_first[b + 1] = seq_first[b] + cdiv(SEEN(b), PART_KEYS);
        for (int64_t it = seq_first[b]; it < seq_first[b + 1]; it++) item_seq[it] = b;
    }
    decode_job_t job = {out, partial, q, k_cache, v_cache, block_tables, context_lens, item_seq, seq_first,
                        B, max_blocks, block_size, H, KVH, hd, part, window, scale, pyinfer_isa()};
#undef SEEN
    if (threads == 1) {     /* no parallel region to enter: per-token calls of small models are ~1 us */
        float *qs = thread_mem, *p = qs + ALIGN_FLOATS(H * hd), *corr = p + ALIGN_FLOATS(p_floats);
        int64_t last_b = -1;
        for (int64_t it = 0; it < items; it++) decode_item(&job, it, qs, p, corr, &last_b);
        for (int64_t bh = 0; bh < B * H; bh++) decode_combine(&job, bh);
    } else {
#pragma omp parallel num_threads(threads)
        {
            float *qs = thread_mem + omp_tid() * scratch, *p = qs + ALIGN_FLOATS(H * hd),
                  *corr = p + ALIGN_FLOATS(p_floats);
            int64_t last_b = -1;
#pragma omp for schedule(dynamic, 1)
            for (int64_t it = 0; it < items; it++) decode_item(&job, it, qs, p, corr, &last_b);
#pragma omp for schedule(static)
            for (int64_t bh = 0; bh < B * H; bh++) decode_combine(&job, bh);
        }
    }
    if (mem != stack_mem) free(mem);
    return 0;
}

/* whether [a, a + na) and [b, b + nb) (floats) share a byte */
static int overlaps(const float *a, int64_t na, const float *b, int64_t nb) {
    uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
    return na > 0 && nb > 0 && a0 < b0 + (uintptr_t)nb * sizeof(float) && b0 < a0 + (uintptr_t)na * sizeof(float);
}

/* 0; 1 + the first sequence whose metadata is out of range; -1: no memory for the scratch (out is NaN);
 * -2: out overlaps q or a cache (nothing written) */
int64_t paged_decode_attention_f32(float *out, const float *q, const float *k_cache, const float *v_cache,
                                   const int64_t *block_tables, const int64_t *context_lens, int64_t B,
                                   int64_t max_blocks, int64_t num_blocks, int64_t block_size, int64_t H,
                                   int64_t KVH, int64_t head_dim, float scale, int64_t window) {
    int64_t bad = check_tables(block_tables, context_lens, NULL, B, max_blocks, num_blocks, block_size, 0, 1);
    if (bad || B <= 0 || KVH <= 0 || H % KVH || head_dim <= 0) return bad;
    int64_t n_out = B * H * head_dim, n_cache = num_blocks * block_size * KVH * head_dim;
    if (overlaps(out, n_out, q, n_out) || overlaps(out, n_out, k_cache, n_cache) || overlaps(out, n_out, v_cache, n_cache))
        return -2;
    return paged_decode_core(out, q, k_cache, v_cache, block_tables, context_lens, B, max_blocks, block_size, H,
                             KVH, head_dim, scale, pyinfer_num_threads(), window);
}
