/* Causal grouped-query attention, FlashAttention style, computed transposed so that every softmax
 * step is a vector over query rows: for one KV head, a block of query rows (Bt tokens x the group's
 * heads, Mp rows) walks the visible keys in tiles of BK:
 *   S^T (BK, Mp) = K_tile Q^T         (GEMM microkernel: K packed in MR-key panels)
 *   online softmax down each column   (running max m, sum l; masked keys get p = 0)
 *   O^T (hd, Mp) = O^T * corr + V^T P^T  (microkernel again: V packed in MR-dim panels)
 * The T x S score matrix never exists, only a (BK, Mp) tile per thread. Queries are the last T of
 * S positions (bottom-right aligned causal mask); with window > 0, the query at position p sees only
 * keys p - window + 1 .. p (a sliding window: tiles wholly before it are skipped, the others masked
 * below as above). The same core serves contiguous K/V
 * (attention_prefill) and paged K/V read through a block table (paged_attention.c). */
#include "common.h"
#include "gemm_micro.h"
#include "vecmath.h"
#include "attention.h"

#define BK 128            /* keys per tile */
#define ROWS 64           /* query rows (token, head) per block, at most */

/* Where key s of one KV head lives: contiguous rows of stride `stride`, or a paged cache. */
INLINE const float *kv_row(const kv_source_t *src, const float *base, int64_t s) {
    if (!src->block_table) return base + s * src->stride;
    int64_t blk = src->block_table[s / src->block_size];
    return base + (blk * src->block_size + s % src->block_size) * src->stride;
}

/* kp (S_pad / MR, hd, MR): key panels; vp (hd_pad / MR, S_pad, MR): value panels; zero padded. Only the
 * padding is cleared and no index is divided in the inner loops: a short query block (a decode's
 * verification rows) costs about the pack, which the old full memset and per-element `d / MR` made
 * ~10x the attention itself (stories110M, 16 sequences of 1 row at context 120: 9.2 ms a call). */
static void pack_kv(float *kp, float *vp, const kv_source_t *src, int64_t S, int64_t S_pad, int64_t hd,
                    int64_t hd_pad, int MR) {
    int64_t s_full = S / MR * MR;                                  /* the panel holding key S on: padding */
    memset(kp + s_full * hd, 0, (size_t)((S_pad - s_full) * hd) * sizeof(float));
    for (int64_t dp = 0; dp < hd_pad; dp += MR)                   /* keys S.. of every value panel */
        memset(vp + dp * S_pad + S * MR, 0, (size_t)((S_pad - S) * MR) * sizeof(float));
    for (int64_t s = 0; s < S; s++) {
        const float *kr = kv_row(src, src->k, s), *vr = kv_row(src, src->v, s);
        float *kpanel = kp + (s / MR) * hd * MR + s % MR, *vrow = vp + s * MR;
        for (int64_t d = 0; d < hd; d++) kpanel[d * MR] = kr[d];
        for (int64_t dp = 0; dp < hd_pad; dp += MR)
            for (int64_t i = 0; i < MR; i++) vrow[dp * S_pad + i] = dp + i < hd ? vr[dp + i] : 0.0f;
    }
}

typedef struct {
    int64_t T, S, H, hd, hd_pad, group, S_pad, window;
    float scale;
    const float *kp, *vp;
    micro_fn micro;
    int MR, NR;
} flash_args_t;

/* Rows r < M of the block are (token t0 + r / group, head kvh * group + r % group); rows up to Mp pad.
 * scratch: qt (hd, Mp), st (BK, Mp), ot (hd_pad, Mp), m, l, lim, first (Mp,) */
INLINE void flash_block(float *out, const float *q, const flash_args_t *A, int64_t kvh, int64_t t0, int64_t nt,
                        float *scratch) {
    int64_t hd = A->hd, hd_pad = A->hd_pad, group = A->group, H = A->H, MR = A->MR, NR = A->NR;
    int64_t M = nt * group, Mp = cdiv(M, NR) * NR;
    float *qt = scratch, *st = qt + hd * Mp, *ot = st + BK * Mp, *m = ot + hd_pad * Mp, *l = m + Mp, *lim = l + Mp;
    float *first = lim + Mp;                                          /* first key row r may see */
    int64_t W = A->window;
    for (int64_t r = 0; r < Mp; r++) {
        int64_t tok = t0 + r / group;
        const float *src = q + (tok * H + kvh * group + r % group) * hd;
        for (int64_t d = 0; d < hd; d++) qt[d * Mp + r] = r < M ? src[d] * A->scale : 0.0f;
        m[r] = -INFINITY;
        l[r] = 0.0f;
        lim[r] = r < M ? (float)(A->S - A->T + tok + 1) : 0.0f;      /* keys row r may see */
        first[r] = W > 0 ? (float)MAX(0, A->S - A->T + tok + 1 - W) : 0.0f;
    }
    memset(ot, 0, (size_t)(hd_pad * Mp) * sizeof(float));
    int64_t s_end = A->S - A->T + t0 + nt, lim_min = A->S - A->T + t0 + 1;   /* every real row sees lim_min keys */
    int64_t first_min = W > 0 ? MAX(0, lim_min - W) : 0;              /* keys before it: no row sees them */
    int64_t first_max = W > 0 ? MAX(0, s_end - W) : 0;                /* keys from it on: every row's window */
    for (int64_t s0 = first_min / BK * BK; s0 < s_end; s0 += BK) {
        int64_t nk = MIN(BK, s_end - s0), nk_pad = cdiv(nk, MR) * MR;
        for (int64_t kb = 0; kb < nk_pad; kb += MR)                   /* S^T = K Q^T */
            for (int64_t c0 = 0; c0 < Mp; c0 += NR)
                A->micro(st + kb * Mp + c0, Mp, 0, A->kp + (s0 + kb) * hd, MR, qt + c0, Mp, hd);
        if (s0 + nk_pad <= lim_min && s0 >= first_max) {              /* no key of this tile is masked */
            for (int64_t r0 = 0; r0 < Mp; r0 += 16) {
                v16f m_old = v16f_load(m + r0), mx = m_old;
                for (int64_t j = 0; j < nk_pad; j++) mx = v16f_max(mx, v16f_load(st + j * Mp + r0));
                v16f corr = v16f_exp(m_old - mx), sum = v16f_splat(0.0f);
                for (int64_t j = 0; j < nk_pad; j++) {
                    v16f p = v16f_exp(v16f_load(st + j * Mp + r0) - mx);
                    v16f_store(st + j * Mp + r0, p);
                    sum += p;
                }
                v16f_store(l + r0, v16f_load(l + r0) * corr + sum);
                v16f_store(m + r0, mx);
                for (int64_t d = 0; d < hd_pad; d++) v16f_store(ot + d * Mp + r0, v16f_load(ot + d * Mp + r0) * corr);
            }
        } else
        for (int64_t r0 = 0; r0 < Mp; r0 += 16) {                     /* online softmax, 16 rows at a time */
            v16f limv = v16f_load(lim + r0), firstv = v16f_load(first + r0), m_old = v16f_load(m + r0), mx = m_old;
            for (int64_t j = 0; j < nk; j++) {
                v16f sj = v16f_splat((float)(s0 + j));
                v16f sv = v16f_select((sj < limv) & (sj >= firstv), v16f_load(st + j * Mp + r0),
                                      v16f_splat(-INFINITY));
                mx = v16f_max(mx, sv);
            }
            v16f m_safe = v16f_select(mx == v16f_splat(-INFINITY), v16f_splat(0.0f), mx);
            v16f corr = v16f_exp(m_old - m_safe), sum = v16f_splat(0.0f);
            for (int64_t j = 0; j < nk_pad; j++) {
                v16f sj = v16f_splat((float)(s0 + j));
                v16i vis = (sj < limv) & (sj >= firstv);
                v16f p = v16f_select(vis, v16f_exp(v16f_load(st + j * Mp + r0) - m_safe), v16f_splat(0.0f));
                v16f_store(st + j * Mp + r0, p);
                sum += p;
            }
            v16f_store(l + r0, v16f_load(l + r0) * corr + sum);
            v16f_store(m + r0, mx);
            for (int64_t d = 0; d < hd_pad; d++) v16f_store(ot + d * Mp + r0, v16f_load(ot + d * Mp + r0) * corr);
        }
        for (int64_t db = 0; db < hd_pad; db += MR)                   /* O^T += V^T P^T */
            for (int64_t c0 = 0; c0 < Mp; c0 += NR)
                A->micro(ot + db * Mp + c0, Mp, 1, A->vp + db * A->S_pad + s0 * MR, MR, st + c0, Mp, nk_pad);
    }
    for (int64_t r = 0; r < M; r++) {
        float *dst = out + ((t0 + r / group) * H + kvh * group + r % group) * hd;
        float inv = 1.0f / l[r];
        for (int64_t d = 0; d < hd; d++) dst[d] = ot[d * Mp + r] * inv;
    }
}

#if PYINFER_X86
TARGET_AVX512 static void flash_block_avx512(float *out, const float *q, const flash_args_t *A, int64_t kvh,
                                             int64_t t0, int64_t nt, float *scratch) {
    flash_block(out, q, A, kvh, t0, nt, scratch);
}
TARGET_AVX2 static void flash_block_avx2(float *out, const float *q, const flash_args_t *A, int64_t kvh,
                                         int64_t t0, int64_t nt, float *scratch) {
    flash_block(out, q, A, kvh, t0, nt, scratch);
}
#endif
static void flash_block_scalar(float *out, const float *q, const flash_args_t *A, int64_t kvh, int64_t t0,
                               int64_t nt, float *scratch) {
    flash_block(out, q, A, kvh, t0, nt, scratch);
}

static void flash_block_isa(int isa, float *out, const float *q, const flash_args_t *A, int64_t kvh, int64_t t0,
                            int64_t nt, float *scratch) {
#if PYINFER_X86
    if (isa >= ISA_AVX512) flash_block_avx512(out, q, A, kvh, t0, nt, scratch);
    else if (isa >= ISA_AVX2) flash_block_avx2(out, q, A, kvh, t0, nt, scratch);
    else
#endif
        flash_block_scalar(out, q, A, kvh, t0, nt, scratch);
    (void)isa;
}

void flash_attention(float *out, const float *q, int64_t T, int64_t S, int64_t H, int64_t KVH, int64_t hd,
                     float scale, const kv_source_t *src_heads, int parallel, int64_t window) {
    if (T <= 0 || H <= 0 || hd <= 0) return;
    int isa = pyinfer_isa(), MR, NR;
    micro_fn micro = pick_micro(isa, &MR, &NR);
    int64_t group = H / KVH, S_pad = cdiv(S, BK) * BK + BK, hd_pad = cdiv(hd, MR) * MR;
    int64_t nt = MAX(1, ROWS / group), n_blocks = cdiv(T, nt), Mp = cdiv(nt * group, NR) * NR;
    int64_t scratch_len = hd * Mp + BK * Mp + hd_pad * Mp + 4 * Mp;
    int threads = parallel && T * S * hd * group >= PAR_MIN_WORK ? pyinfer_num_threads() : 1;
    if (threads > 1 && KVH >= 2 * threads) {
        /* KV heads across threads, each packing its own head's K / V: with one query block per 64 rows
         * the loop below gives a 128-token prompt two blocks of unequal (causal) work per head and a
         * serial pack between them (stories110M, 2 threads: no faster than 1). Same blocks, same sums. */
#pragma omp parallel num_threads(threads)
        {
            float *tkp = malloc((size_t)(S_pad * hd) * sizeof(float));
            float *tvp = malloc((size_t)(hd_pad * S_pad) * sizeof(float));
            float *scratch = malloc((size_t)scratch_len * sizeof(float));
            flash_args_t a = {T, S, H, hd, hd_pad, group, S_pad, MAX(0, window), scale, tkp, tvp, micro, MR, NR};
#pragma omp for schedule(dynamic, 1)
            for (int64_t kvh = 0; kvh < KVH; kvh++) {
                if (!tkp || !tvp || !scratch) continue;
                pack_kv(tkp, tvp, src_heads + kvh, S, S_pad, hd, hd_pad, MR);
                for (int64_t ib = n_blocks - 1; ib >= 0; ib--) {
                    int64_t t0 = ib * nt, cnt = MIN(nt, T - t0);
                    flash_block_isa(isa, out, q, &a, kvh, t0, cnt, scratch);
                }
            }
            free(tkp);
            free(tvp);
            free(scratch);
        }
        return;
    }
    float *kp = malloc((size_t)(S_pad * hd) * sizeof(float));
    float *vp = malloc((size_t)(hd_pad * S_pad) * sizeof(float));
    if (!kp || !vp) goto done;
    flash_args_t args = {T, S, H, hd, hd_pad, group, S_pad, MAX(0, window), scale, kp, vp, micro, MR, NR};
    for (int64_t kvh = 0; kvh < KVH; kvh++) {
        pack_kv(kp, vp, src_heads + kvh, S, S_pad, hd, hd_pad, MR);
#pragma omp parallel num_threads(pyinfer_num_threads()) if (parallel && n_blocks > 1 && T * S * hd * group >= PAR_MIN_WORK)
        {
            float *scratch = malloc((size_t)scratch_len * sizeof(float));
#pragma omp for schedule(dynamic, 1)
            for (int64_t ib = n_blocks - 1; ib >= 0; ib--) {      /* longest (latest) blocks first */
                if (!scratch) continue;
                int64_t t0 = ib * nt, cnt = MIN(nt, T - t0);
                flash_block_isa(isa, out, q, &args, kvh, t0, cnt, scratch);
            }
            free(scratch);
        }
    }
done:
    free(kp);
    free(vp);
}

void attention_prefill_f32(float *out, const float *q, const float *k, const float *v, int64_t T,
                           int64_t S, int64_t H, int64_t KVH, int64_t head_dim, float scale, int64_t window) {
    if (T <= 0 || S < T || KVH <= 0 || H % KVH) return;
    kv_source_t *heads = malloc((size_t)KVH * sizeof *heads);
    if (!heads) return;
    for (int64_t h = 0; h < KVH; h++)
        heads[h] = (kv_source_t){k + h * head_dim, v + h * head_dim, KVH * head_dim, NULL, 1};
    flash_attention(out, q, T, S, H, KVH, head_dim, scale, heads, 1, window);
    free(heads);
}
