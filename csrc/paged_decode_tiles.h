/* The chunk kernels of paged decode attention for heads of 16 floats or more (included by
 * paged_attention.c only: their bodies are inlined into that file's per-instruction-set decode
 * functions). A chunk is KCH keys whose rows are found through the block table; qk_heads gives the
 * scores of up to HEAD_TILE query heads against it, pv_heads adds their probability-weighted V rows. */
#ifndef PYINFER_PAGED_DECODE_TILES_H
#define PYINFER_PAGED_DECODE_TILES_H
#include "common.h"
#include "vecmath.h"
#include "paged_decode_small.h"     /* HEAD_TILE */

#define KCH 16              /* keys per chunk: one score vector */

/* offsets (in floats) of the rows of keys [c0, c0 + KCH) in the caches; past hi the last row repeats */
INLINE void chunk_rows(int64_t *off, int64_t c0, int64_t hi, const int64_t *table, int64_t bs, int64_t row) {
    for (int j = 0; j < KCH; j++) {
        int64_t s = MIN(c0 + j, hi - 1);
        off[j] = (table[s / bs] * bs + s % bs) * row;
    }
}

/* The KCH rows of a chunk are often exactly 4 KiB apart (KVH * hd = 1024 floats): the same vector
 * column of all of them falls in one L1 set, more lines than its ways. So each K row is read front
 * to back once, into registers, for all the heads of a tile; the score vectors are reduced after. */

/* acc[t * KCH + j] (16 lanes) = lane-wise products q_t * k_j summed over the hd16 columns, for NH query
 * heads t (rows of q, stride hd) and the KCH keys at kbase + off[j]. Register-blocked: JB keys at a
 * time, NH x JB accumulators (16 for NH = 1, 2, 4, 8; up to 28 otherwise), so each q vector is
 * loaded once per JB keys and each K vector once per NH heads (one load per FMA or fewer). */
#define QK_JB(NH) ((NH) >= 8 ? 2 : (NH) >= 4 ? 4 : (NH) >= 2 ? 8 : 16)
INLINE void qk_tile(v16f *acc, const float *q, const float *kbase, const int64_t *off, int64_t hd16, const int NH,
                    const int64_t *pf) {
    const int JB = QK_JB(NH);
    for (int j0 = 0; j0 < KCH; j0 += JB) {
        const float *kp[16];
        for (int jj = 0; jj < JB; jj++) kp[jj] = kbase + off[j0 + jj];
        v16f a[HEAD_TILE * 16 / 2];
        for (int i = 0; i < NH * JB; i++) a[i] = v16f_splat(0.0f);
        for (int64_t d0 = 0; d0 < hd16; d0 += 16) {
            if (pf)
                for (int jj = 0; jj < JB; jj++) __builtin_prefetch(kbase + pf[j0 + jj] + d0, 0, 3);
            v16f kv[16];
            for (int jj = 0; jj < JB; jj++) kv[jj] = v16f_load(kp[jj] + d0);
            for (int t = 0; t < NH; t++) {
                v16f qv = v16f_load(q + t * hd16 + d0);
                for (int jj = 0; jj < JB; jj++) a[t * JB + jj] += qv * kv[jj];
            }
        }
        for (int t = 0; t < NH; t++)
            for (int jj = 0; jj < JB; jj++) acc[t * KCH + j0 + jj] = a[t * JB + jj];
    }
}

/* the same with 8-float vectors, straight to scores: sc[t * KCH + j] = q_t . k_j over all hd columns.
 * JB keys at a time, NH x JB accumulators: one key per pass left a single FMA chain per head, so
 * with one head per K load (no GQA: stories110M) each key waited hd / 8 FMA latencies. (B, H, hd) =
 * (32, 12, 64), contexts 32-144, 12 layers, 1 thread, Zen 3: 9.4 -> 10.8 GB/s with pv_tile8's
 * partial sums; prefetching the next chunk's K rows here measured no change, V rows a loss.) */
#define QK8_JB(NH) ((NH) >= 4 ? 1 : (NH) >= 2 ? 2 : 4)
INLINE void qk_tile8(float *sc, const float *q, const float *kbase, const int64_t *off, int64_t hd, const int NH) {
    const int JB = QK8_JB(NH);
    int64_t hd8 = hd & ~(int64_t)7;
    for (int j0 = 0; j0 < KCH; j0 += JB) {
        const float *kp[4];
        for (int jj = 0; jj < JB; jj++) kp[jj] = kbase + off[j0 + jj];
        v8f a[HEAD_TILE];                          /* NH x JB <= HEAD_TILE */
        for (int i = 0; i < NH * JB; i++) a[i] = (v8f){0};
        for (int64_t d0 = 0; d0 < hd8; d0 += 8) {
            v8f kv[4];
            for (int jj = 0; jj < JB; jj++) kv[jj] = v8f_load(kp[jj] + d0);
            for (int t = 0; t < NH; t++) {
                v8f qv = v8f_load(q + t * hd + d0);
                for (int jj = 0; jj < JB; jj++) a[t * JB + jj] += qv * kv[jj];
            }
        }
        for (int t = 0; t < NH; t++)
            for (int jj = 0; jj < JB; jj++) {
                float x = v8f_hsum(a[t * JB + jj]);
                for (int64_t d = hd8; d < hd; d++) x += q[t * hd + d] * kp[jj][d];
                sc[t * KCH + j0 + jj] = x;
            }
    }
}

/* scores s[t] (lane j = q_t . k_j) for nh <= HEAD_TILE heads; q: (nh, hd) */
INLINE void qk_heads(v16f *s, v16f *acc, const float *q, const float *kbase, const int64_t *off, int64_t hd,
                     int64_t nh, const int narrow, const int64_t *pf) {
    /* nh <= the caller's tile: the cases past it are never taken */
    if (narrow) {
        float *sc = (float *)acc;
        switch (nh) {
        case 1: qk_tile8(sc, q, kbase, off, hd, 1); break;
        case 2: qk_tile8(sc, q, kbase, off, hd, 2); break;
        case 3: qk_tile8(sc, q, kbase, off, hd, 3); break;
        case 4: qk_tile8(sc, q, kbase, off, hd, 4); break;
        case 5: qk_tile8(sc, q, kbase, off, hd, 5); break;
        case 6: qk_tile8(sc, q, kbase, off, hd, 6); break;
        case 7: qk_tile8(sc, q, kbase, off, hd, 7); break;
        default: qk_tile8(sc, q, kbase, off, hd, 8); break;
        }
        for (int64_t t = 0; t < nh; t++) s[t] = v16f_load(sc + t * KCH);
        return;
    }
    int64_t hd16 = hd & ~(int64_t)15;
    if (hd16 == hd) {
        switch (nh) {                  /* a constant NH per call: the accumulators stay in registers */
        case 1: qk_tile(acc, q, kbase, off, hd, 1, pf); break;
        case 2: qk_tile(acc, q, kbase, off, hd, 2, pf); break;
        case 3: qk_tile(acc, q, kbase, off, hd, 3, pf); break;
        case 4: qk_tile(acc, q, kbase, off, hd, 4, pf); break;
        case 5: qk_tile(acc, q, kbase, off, hd, 5, pf); break;
        case 6: qk_tile(acc, q, kbase, off, hd, 6, pf); break;
        case 7: qk_tile(acc, q, kbase, off, hd, 7, pf); break;
        default: qk_tile(acc, q, kbase, off, hd, 8, pf); break;
        }
        for (int64_t t = 0; t < nh; t++) s[t] = v16f_sum16(acc + t * KCH);
        return;
    }
    for (int64_t t = 0; t < nh; t++) {  /* hd not a multiple of 16: one head at a time, then the tail */
        for (int j = 0; j < KCH; j++) {
            v16f a = v16f_splat(0.0f);
            for (int64_t d0 = 0; d0 < hd16; d0 += 16) a += v16f_load(q + t * hd + d0) * v16f_load(kbase + off[j] + d0);
            acc[j] = a;
        }
        s[t] = v16f_sum16(acc);
        for (int j = 0; j < KCH; j++) {
            float x = 0.0f;
            for (int64_t d = hd16; d < hd; d++) x += q[t * hd + d] * kbase[off[j] + d];
            s[t][j] += x;
        }
    }
}

/* columns [d0, hd) of pv_tile, one float at a time: the rest past its last whole vector */
INLINE void pv_tail(float *o, const float *p, const float *corr, const float *vbase, const int64_t *off, int64_t d0,
                    int64_t hd, const int NH) {
    for (int64_t d = d0; d < hd; d++)
        for (int t = 0; t < NH; t++) {
            float a = o[t * hd + d] * corr[t];
            for (int j = 0; j < KCH; j++) a += p[t * KCH + j] * vbase[off[j] + d];
            o[t * hd + d] = a;
        }
}

/* o[t] = o[t] * corr[t] + sum_j p[t][j] v_j for NH heads t; o: (NH, hd) rows of stride hd, p: (NH, KCH),
 * V rows at vbase + off[j]. Register-blocked: DB vectors of columns at a time, NH x DB accumulators
 * (16 for NH = 2, 4, 8; up to 28 otherwise), so each V vector is loaded once for the NH heads and
 * each p[t][j] broadcast once per DB vectors; the rest of hd one vector at a time. */
#define PV_DB(NH) ((NH) >= 8 ? 2 : (NH) >= 4 ? 4 : 8)
INLINE void pv_tile(float *o, const float *p, const float *corr, const float *vbase, const int64_t *off, int64_t hd,
                    const int NH, const int64_t *pf) {
    const int DB = PV_DB(NH);
    int64_t d0 = 0;
    for (; d0 + 16 * DB <= hd; d0 += 16 * DB) {
        v16f acc[HEAD_TILE * 8 / 2];
        for (int t = 0; t < NH; t++)
            for (int db = 0; db < DB; db++) acc[t * DB + db] = v16f_load(o + t * hd + d0 + 16 * db) * corr[t];
        for (int j = 0; j < KCH; j++) {
            const float *vp = vbase + off[j] + d0;
            if (pf)
                for (int db = 0; db < DB; db++) __builtin_prefetch(vbase + pf[j] + d0 + 16 * db, 0, 3);
            v16f v[8];
            for (int db = 0; db < DB; db++) v[db] = v16f_load(vp + 16 * db);
            for (int t = 0; t < NH; t++) {
                v16f pj = v16f_splat(p[t * KCH + j]);
                for (int db = 0; db < DB; db++) acc[t * DB + db] += v[db] * pj;
            }
        }
        for (int t = 0; t < NH; t++)
            for (int db = 0; db < DB; db++) v16f_store(o + t * hd + d0 + 16 * db, acc[t * DB + db]);
    }
    for (; d0 + 16 <= hd; d0 += 16) {
        v16f acc[HEAD_TILE];
        for (int t = 0; t < NH; t++) acc[t] = v16f_load(o + t * hd + d0) * corr[t];
        for (int j = 0; j < KCH; j++) {
            v16f v = v16f_load(vbase + off[j] + d0);
            for (int t = 0; t < NH; t++) acc[t] += v * p[t * KCH + j];   /* broadcast from memory */
        }
        for (int t = 0; t < NH; t++) v16f_store(o + t * hd + d0, acc[t]);
    }
    pv_tail(o, p, corr, vbase, off, d0, hd, NH);
}

/* pv_tile with 8-float vectors */
INLINE void pv_tile8(float *o, const float *p, const float *corr, const float *vbase, const int64_t *off, int64_t hd,
                     const int NH) {
    /* U partial sums per head (keys j, j + U, ...): one chain of KCH dependent FMAs per head was
     * latency-bound for NH = 1 and 2; their sum is fixed by the chunk, not by threads or batch */
    const int U = NH >= 4 ? 1 : NH >= 2 ? 2 : 4;
    int64_t d0 = 0;
    for (; d0 + 8 <= hd; d0 += 8) {
        v8f acc[HEAD_TILE];                        /* NH x U <= HEAD_TILE */
        for (int t = 0; t < NH; t++) {
            acc[t * U] = v8f_load(o + t * hd + d0) * corr[t];
            for (int u = 1; u < U; u++) acc[t * U + u] = (v8f){0};
        }
        for (int j = 0; j < KCH; j += U)
            for (int u = 0; u < U; u++) {

                v8f v = v8f_load(vbase + off[j + u] + d0);
                for (int t = 0; t < NH; t++) acc[t * U + u] += v * p[t * KCH + j + u];
            }
        for (int t = 0; t < NH; t++) {
            v8f sum = acc[t * U];
            for (int u = 1; u < U; u++) sum += acc[t * U + u];
            v8f_store(o + t * hd + d0, sum);
        }
    }
    pv_tail(o, p, corr, vbase, off, d0, hd, NH);
}

INLINE void pv_heads(float *o, const float *p, const float *corr, const float *vbase, const int64_t *off, int64_t hd,
                     int64_t nh, const int tile, const int narrow, const int64_t *pf) {
    for (int64_t t0 = 0; t0 < nh; t0 += tile) {   /* a constant NH per call: accumulators in registers */
        float *ot = o + t0 * hd;
        const float *pt = p + t0 * KCH, *ct = corr + t0;
        if (narrow) {
            switch (MIN(tile, nh - t0)) {
            case 1: pv_tile8(ot, pt, ct, vbase, off, hd, 1); break;
            case 2: pv_tile8(ot, pt, ct, vbase, off, hd, 2); break;
            case 3: pv_tile8(ot, pt, ct, vbase, off, hd, 3); break;
            case 4: pv_tile8(ot, pt, ct, vbase, off, hd, 4); break;
            case 5: pv_tile8(ot, pt, ct, vbase, off, hd, 5); break;
            case 6: pv_tile8(ot, pt, ct, vbase, off, hd, 6); break;
            case 7: pv_tile8(ot, pt, ct, vbase, off, hd, 7); break;
            default: pv_tile8(ot, pt, ct, vbase, off, hd, 8); break;
            }
            continue;
        }
        switch (MIN(tile, nh - t0)) {
        case 1: pv_tile(ot, pt, ct, vbase, off, hd, 1, pf); break;
        case 2: pv_tile(ot, pt, ct, vbase, off, hd, 2, pf); break;
        case 3: pv_tile(ot, pt, ct, vbase, off, hd, 3, pf); break;
        case 4: pv_tile(ot, pt, ct, vbase, off, hd, 4, pf); break;
        case 5: pv_tile(ot, pt, ct, vbase, off, hd, 5, pf); break;
        case 6: pv_tile(ot, pt, ct, vbase, off, hd, 6, pf); break;
        case 7: pv_tile(ot, pt, ct, vbase, off, hd, 7, pf); break;
        default: pv_tile(ot, pt, ct, vbase, off, hd, 8, pf); break;
        }
    }
}

#endif
