/* The paged decode attention path for heads smaller than one vector (included by paged_attention.c
 * only: its bodies are inlined into that file's per-instruction-set decode functions). */
#ifndef PYINFER_PAGED_DECODE_SMALL_H
#define PYINFER_PAGED_DECODE_SMALL_H
#include <float.h>
#include "common.h"
#include "vecmath.h"

#define PART_KEYS 256       /* keys per work item (a partition of a sequence's context) */
#define HEAD_TILE 8         /* query heads sharing each K / V load, at most */

typedef struct {
    const float *k, *v;         /* caches (num_blocks, block_size, KVH, hd) */
    const int64_t *table;       /* this sequence's block table */
    int64_t bs, H, KVH, hd;
} decode_args_t;

/* ---- small heads (hd < 16: stories260K has 8) ----
 * Vectors across head_dim would be mostly empty, so the scores are computed with keys along the
 * vector lanes: SKL keys a step, their K rows transposed in registers into hd column vectors shared
 * by every head of the GQA group. A partition (<= PART_KEYS keys) is small, so it takes two passes:
 * all its scores and their exact max, then one exp per score and p @ V with V rows as they lie
 * (an accumulator of hd floats per head). No running rescale; the partitions are merged by
 * log-sum-exp as on the large-head path (fixed partitions: the same result at any thread count). */

#define SKL 8               /* keys per step of the score pass: one v8f */

/* off[i] = offset in floats of the cache row of key lo + i, i < hi - lo; the last row repeats up to n_pad */
INLINE void part_rows(int64_t *off, int64_t lo, int64_t hi, int64_t n_pad, const int64_t *table, int64_t bs,
                      int64_t row) {
    int64_t blk = lo / bs, r = lo % bs, i = 0;
    for (; i < hi - lo; i++) {
        off[i] = (table[blk] * bs + r) * row;
        if (++r == bs) {
            r = 0;
            blk++;
        }
    }
    for (; i < n_pad; i++) off[i] = off[hi - lo - 1];
}

/* col[d] lane j = base[off[j] + d] for d < hd (HD: hd when known at compile time, else 0) */
INLINE void gather_cols(v8f *col, const float *base, const int64_t *off, int64_t hd, const int64_t HD) {
    if (HD == 8) {                      /* 8 row loads and a transpose */
        for (int j = 0; j < SKL; j++) col[j] = v8f_load(base + off[j]);
        v8f_transpose8(col);
        return;
    }
    for (int64_t d = 0; d < hd; d++)
        for (int j = 0; j < SKL; j++) col[d][j] = base[off[j] + d];
}

/* o (hd,) = p (n,) @ V rows at vb + off[i] (HD as above); p and off padded to a whole step with p = 0 */
INLINE void pv_rows(float *o, const float *p, const float *vb, const int64_t *off, int64_t n, int64_t hd,
                    const int64_t HD) {
    if (HD == 8) {                      /* 4 accumulators: FMA latency, not one chain */
        v8f acc[4] = {v8f_splat(0.0f), v8f_splat(0.0f), v8f_splat(0.0f), v8f_splat(0.0f)};
        for (int64_t i = 0; i < n; i += SKL) {
            v8f pv = v8f_load(p + i);
            for (int k = 0; k < SKL; k++)         /* lane k of pv broadcast: one vpermps */
                acc[k & 3] += __builtin_shuffle(pv, (v8i){k, k, k, k, k, k, k, k}) * v8f_load(vb + off[i + k]);
        }
        v8f_store(o, (acc[0] + acc[1]) + (acc[2] + acc[3]));
        return;
    }
    for (int64_t d = 0; d < hd; d++) o[d] = 0.0f;
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < hd; d++) o[d] += p[i] * vb[off[i] + d];
}

/* decode_part for hd < 16 (HD = hd or 0 when not a compile-time constant). sc: scratch of
 * group * PART_KEYS floats (the scores, then the probabilities, of each head of a group). */
INLINE void decode_small(float *o, float *m, float *l, const float *qs, const decode_args_t *a, int64_t lo,
                         int64_t hi, float *sc, const int64_t HD) {
    int64_t H = a->H, KVH = a->KVH, hd = HD ? HD : a->hd, group = H / KVH, row = KVH * hd, n = hi - lo;
    int64_t steps = cdiv(n, SKL);
    int64_t off[PART_KEYS + SKL];
    part_rows(off, lo, hi, steps * SKL, a->table, a->bs, row);
    const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int64_t kvh = 0; kvh < KVH; kvh++) {
        const float *kb = a->k + kvh * hd, *vb = a->v + kvh * hd, *q = qs + kvh * group * hd;
        v8f mx[HEAD_TILE];
        for (int64_t g0 = 0; g0 < group; g0 += HEAD_TILE) {     /* scores, HEAD_TILE heads per K load */
            int64_t nh = MIN(HEAD_TILE, group - g0);
            for (int64_t t = 0; t < nh; t++) mx[t] = v8f_splat(-FLT_MAX);
            for (int64_t i = 0; i < steps; i++) {
                v8f col[16];
                gather_cols(col, kb, off + i * SKL, hd, HD);
                v8i valid = lane < (v8i){0} + (int32_t)(n - i * SKL);
                for (int64_t t = 0; t < nh; t++) {
                    const float *qt = q + (g0 + t) * hd;
                    v8f s = v8f_splat(qt[0]) * col[0];
                    for (int64_t d = 1; d < hd; d++) s += v8f_splat(qt[d]) * col[d];
                    v8f_store(sc + (g0 + t) * PART_KEYS + i * SKL, s);
                    mx[t] = v8f_max(mx[t], v8f_select(valid, s, v8f_splat(-FLT_MAX)));
                }
            }
            for (int64_t t = 0; t < nh; t++) m[kvh * group + g0 + t] = v8f_hmax(mx[t]);
        }
        for (int64_t t = 0; t < group; t++) {                   /* p = exp(s - max), its sum, p @ V */
            int64_t h = kvh * group + t;
            float *st = sc + t * PART_KEYS;
            v8f mh = v8f_splat(m[h]), sum = v8f_splat(0.0f);
            for (int64_t i = 0; i < steps; i++) {
                v8i valid = lane < (v8i){0} + (int32_t)(n - i * SKL);
                v8f e = v8f_select(valid, v8f_exp(v8f_load(st + i * SKL) - mh), v8f_splat(0.0f));
                v8f_store(st + i * SKL, e);
                sum += e;
            }
            l[h] = v8f_hsum(sum);
            pv_rows(o + h * hd, st, vb, off, n, hd, HD);
        }
    }
}
#endif
