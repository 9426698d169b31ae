/* Int8 GEMMs on AMX (Sapphire Rapids and later): the prefill paths of the quantized matmuls.
 *
 * The weights are the A operand: a 16-row A tile is 16 weight rows x KB bytes loaded straight from the
 * row-major int8 weight (W8, when no padding is needed) or from a scratch panel of u - z unpacked once
 * per 32-row panel (W4; ragged K or N). The activations are the B operand, packed once per call into
 * AMX's B layout per block of 16 tokens: (K_pad / 4, 16 tokens, 4 bytes), so a B tile (KB/4 rows of
 * 64 bytes) is contiguous. A C tile is (16 weight rows, 16 tokens) int32.
 *
 *   A8 (W8A8, W4A8): activations int8 per group (quantize_row_i8, as the reference); per group g
 *     out[t, n] += ws[n, g] xs[t, g] C_g[n, t]. Two weight tiles (32 rows) x two token tiles; group g's
 *     int32 tiles are stored and scaled by the vector units while AMX computes group g + 1.
 *     (On this machine a tdpbssd costs the same ~35 ns at 32 or 64 bytes of K, so G = 32 halves the rate.)
 *   A16 (W8A16 per channel, W4A16 per group): activations float as three base-256 digit planes of a
 *     24-bit fixed point per row (split_row_digits: x = 2^-e (c0 + 256 c1 + 65536 c2)): three tdpbssd per
 *     chunk, one per plane; C0 + 256 C1 + 65536 C2 is the exact integer dot product of a group (per
 *     channel: of the whole row, combined in double once per tile). Rows of x holding inf or NaN are
 *     computed in float (dequantizing each weight).
 * Tile numbers are immediates, so each variant names its tiles: see the amx_configure calls. */
#include "common.h"
#include "amx.h"

#if PYINFER_X86
typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config_t;

/* n_c C tiles (16 x 64 B), then n_a A tiles (16 x KB B), then n_b B tiles (KB/4 x 64 B) */
TARGET_AMX static void amx_configure(int n_c, int n_a, int n_b, int KB) {
    tile_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    int i = 0;
    for (; i < n_c; i++) { cfg.rows[i] = 16; cfg.colsb[i] = 64; }
    for (; i < n_c + n_a; i++) { cfg.rows[i] = 16; cfg.colsb[i] = (uint16_t)KB; }
    for (; i < n_c + n_a + n_b; i++) { cfg.rows[i] = (uint8_t)(KB / 4); cfg.colsb[i] = 64; }
    _tile_loadconfig(&cfg);
}

/* what one call multiplies */
typedef struct {
    float *out;             /* (T, N) */
    const void *w;          /* int8 (N, K) or int4 nibbles (N, K/2) */
    const float *scales;    /* (N, ng); per channel ng = 1 */
    const uint8_t *zeros;   /* (N, ng) or NULL (z = 8); int4 only */
    const int8_t *xb;       /* (planes, TB, K_pad / 4, 16, 4) packed activations */
    const float *xsT;       /* A8: (TB, ng, 16) activation scales, zero past T */
    const double *inv;      /* A16: (TB * 16,) 2^-e per token */
    int64_t T, N, K, G, ng, K_pad, TB;
    int KB, bits, planes;   /* planes: 1 (A8) or 3 (A16) */
} amx_job_t;

/* one row of int4 nibbles (K/2,) -> u - z (K,) int8; G % 32 == 0 */
TARGET_AMX static void unpack_int4_row(int8_t *dst, const uint8_t *q, const uint8_t *z, int64_t K, int64_t G) {
    const __m128i low = _mm_set1_epi8(0x0F);
    int64_t half = G / 2;
    for (int64_t g = 0; g < K / G; g++) {
        __m128i zv = _mm_set1_epi8((char)(z ? z[g] : 8));
        for (int64_t i = 0; i < half; i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(q + g * half + i));
            _mm_storeu_si128((__m128i *)(dst + g * G + i), _mm_sub_epi8(_mm_and_si128(v, low), zv));
            _mm_storeu_si128((__m128i *)(dst + g * G + half + i),
                             _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), low), zv));
        }
    }
}

/* weight rows [n0, n0 + 32) as int8 A rows, zero past N and K: the weight itself when it can be read
 * in place, else scratch (32, K_pad). Sets *lda. wsT (ng, 32): their scales, zero past N. */
TARGET_AMX static const int8_t *prep_panel(const amx_job_t *j, int8_t *scratch, float *wsT, int64_t n0, int64_t *lda) {
    for (int r = 0; r < 32; r++)
        for (int64_t g = 0; g < j->ng; g++) wsT[g * 32 + r] = n0 + r < j->N ? j->scales[(n0 + r) * j->ng + g] : 0.0f;
    if (j->bits == 8 && n0 + 32 <= j->N && j->K == j->K_pad) {
        *lda = j->K;
        return (const int8_t *)j->w + n0 * j->K;
    }
    *lda = j->K_pad;
    for (int r = 0; r < 32; r++) {
        int64_t n = n0 + r;
        int8_t *dst = scratch + r * j->K_pad;
        if (n >= j->N) {
            memset(dst, 0, (size_t)j->K_pad);
        } else if (j->bits == 8) {
            memcpy(dst, (const int8_t *)j->w + n * j->K, (size_t)j->K);
            memset(dst + j->K, 0, (size_t)(j->K_pad - j->K));
        } else {
            unpack_int4_row(dst, (const uint8_t *)j->w + n * (j->K / 2), j->zeros ? j->zeros + n * j->ng : NULL,
                            j->K, j->G);
        }
    }
    return scratch;
}

/* facc (rows, cols) [weight row][token] -> out rows t0.., columns n0.., clipped; times inv[t] if given */
static void write_block(const amx_job_t *j, const float *facc, int rows, int cols, int64_t n0, int64_t t0) {
    for (int c = 0; c < cols && t0 + c < j->T; c++) {
        float *o = j->out + (t0 + c) * j->N;
        for (int r = 0; r < rows && n0 + r < j->N; r++)
            o[n0 + r] = j->inv ? (float)((double)facc[r * cols + c] * j->inv[t0 + c]) : facc[r * cols + c];
    }
}

/* the next panel's weight bytes, fetched into L2 a share at a time while this panel computes (the
 * weights stream from memory once per call: AMX tile loads would otherwise wait on each line) */
typedef struct {
    const char *base;           /* NULL: nothing to fetch */
    int64_t row_bytes, lines_per_row, lines;
} prefetch_t;

static inline void prefetch_share(const prefetch_t *pf, int64_t i, int64_t n) {
    if (!pf->base) return;
    for (int64_t l = i * pf->lines / n; l < (i + 1) * pf->lines / n; l++)
        __builtin_prefetch(pf->base + (l / pf->lines_per_row) * pf->row_bytes + (l % pf->lines_per_row) * 64, 0, 2);
}

/* ---- A8: 32 weight rows x 32 tokens per step: C tiles 0-3 (weight tile i, token tile j at 2i + j),
 * A tiles 4-5, B tiles 6-7. One group's int32 tiles are stored, then scaled by the vector units while
 * AMX computes the next group (AMX runs its instructions in order, so the C tiles are not doubled). ---- */

/* facc (32, 32) [weight row][token] += C_g * ws[:, g] * xs[g, :]; token tile 1 only when pair */
TARGET_AMX static inline void a8_scale(float *facc, const int32_t *cb, const float *wsg, const float *xs0,
                                       const float *xs1, int pair) {
    __m512 x0 = _mm512_loadu_ps(xs0), x1 = _mm512_loadu_ps(xs1);
    for (int i = 0; i < 2; i++)
        for (int r = 0; r < 16; r++) {
            __m512 w = _mm512_set1_ps(wsg[16 * i + r]);
            float *f = facc + (16 * i + r) * 32;
            __m512 v0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cb + (2 * i) * 256 + 16 * r)), w);
            _mm512_store_ps(f, _mm512_fmadd_ps(v0, x0, _mm512_load_ps(f)));
            if (!pair) continue;
            __m512 v1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cb + (2 * i + 1) * 256 + 16 * r)), w);
            _mm512_store_ps(f + 16, _mm512_fmadd_ps(v1, x1, _mm512_load_ps(f + 16)));
        }
}

TARGET_AMX static void a8_panel(const amx_job_t *j, const int8_t *a, int64_t lda, const float *wsT, int64_t n0,
                                float *facc, int32_t *cb, const prefetch_t *pf) {
    int KB = j->KB;
    int64_t per = j->G / KB, ng = j->ng, tile_bytes = j->K_pad * 16;
    for (int64_t tb = 0; tb < j->TB; tb += 2) {                /* TB is even: xb, xsT padded */
        const int8_t *b0 = j->xb + tb * tile_bytes, *b1 = b0 + tile_bytes;
        const float *xs0 = j->xsT + tb * ng * 16, *xs1 = xs0 + ng * 16;
        int pair = (tb + 1) * 16 < j->T;
        memset(facc, 0, 32 * 32 * sizeof(float));
        for (int64_t g = 0; g < ng; g++) {
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            for (int64_t c = g * per; c < (g + 1) * per; c++) {
                _tile_loadd(4, a + c * KB, lda);
                _tile_loadd(5, a + 16 * lda + c * KB, lda);
                _tile_loadd(6, b0 + c * KB * 16, 64);
                _tile_dpbssd(0, 4, 6);
                _tile_dpbssd(2, 5, 6);
                if (pair) {                                     /* else token tile tb + 1 is padding: C1, C3 stay 0 */
                    _tile_loadd(7, b1 + c * KB * 16, 64);
                    _tile_dpbssd(1, 4, 7);
                    _tile_dpbssd(3, 5, 7);
                }
            }
            prefetch_share(pf, (tb / 2) * ng + g, (j->TB / 2) * ng);
            if (g > 0) a8_scale(facc, cb, wsT + (g - 1) * 32, xs0 + (g - 1) * 16, xs1 + (g - 1) * 16, pair);
            _tile_stored(0, cb, 64);
            _tile_stored(2, cb + 512, 64);
            if (pair) { _tile_stored(1, cb + 256, 64); _tile_stored(3, cb + 768, 64); }
        }
        a8_scale(facc, cb, wsT + (ng - 1) * 32, xs0 + (ng - 1) * 16, xs1 + (ng - 1) * 16, pair);
        write_block(j, facc, 32, 32, n0, tb * 16);
    }
}

/* ---- A16: 16 weight rows x 16 tokens x 3 digit planes: C tiles 0-2, A tile 3, B tiles 4-6 ---- */

#define A16_CHUNKS(c_lo, c_hi)                                                   \
    for (int64_t c = (c_lo); c < (c_hi); c++) {                                  \
        _tile_loadd(3, a + c * KB, lda);                                         \
        _tile_loadd(4, b0 + c * KB * 16, 64);                                    \
        _tile_loadd(5, b1 + c * KB * 16, 64);                                    \
        _tile_loadd(6, b2 + c * KB * 16, 64);                                    \
        _tile_dpbssd(0, 3, 4);                                                   \
        _tile_dpbssd(1, 3, 5);                                                   \
        _tile_dpbssd(2, 3, 6);                                                   \
    }

/* facc (16, 16) += (C0 + 256 C1 + 65536 C2) * ws[:, g] */
TARGET_AMX static inline void a16_scale(float *facc, const int32_t *cb, const float *wsg) {
    const __m512 f256 = _mm512_set1_ps(256.0f), f65536 = _mm512_set1_ps(65536.0f);
    for (int r = 0; r < 16; r++) {
        __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cb + 256 + 16 * r)), f256,
                                   _mm512_cvtepi32_ps(_mm512_load_si512(cb + 16 * r)));
        v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cb + 512 + 16 * r)), f65536, v);
        _mm512_store_ps(facc + 16 * r, _mm512_fmadd_ps(v, _mm512_set1_ps(wsg[r]), _mm512_load_ps(facc + 16 * r)));
    }
}

/* per group (W4A16); group g - 1 is scaled while AMX computes g */
TARGET_AMX static void a16_group_panel(const amx_job_t *j, const int8_t *a, int64_t lda, const float *ws, int64_t n0,
                                       float *facc, int32_t *cb, const prefetch_t *pf) {
    int KB = j->KB;
    int64_t per = j->G / KB, plane = j->TB * j->K_pad * 16, ng = j->ng;
    for (int64_t tb = 0; tb < j->TB; tb++) {
        const int8_t *b0 = j->xb + tb * j->K_pad * 16, *b1 = b0 + plane, *b2 = b1 + plane;
        memset(facc, 0, 16 * 16 * sizeof(float));
        for (int64_t g = 0; g < ng; g++) {
            _tile_zero(0); _tile_zero(1); _tile_zero(2);
            A16_CHUNKS(g * per, (g + 1) * per)
            prefetch_share(pf, tb * ng + g, j->TB * ng);
            if (g > 0) a16_scale(facc, cb, ws + (g - 1) * 32);
            _tile_stored(0, cb, 64); _tile_stored(1, cb + 256, 64); _tile_stored(2, cb + 512, 64);
        }
        a16_scale(facc, cb, ws + (ng - 1) * 32);
        write_block(j, facc, 16, 16, n0, tb * 16);
    }
}

/* per channel: the whole row in C0..C2, then out = (C0 + 256 C1 + 65536 C2) ws[n] 2^-e in double (W8A16) */
TARGET_AMX static void a16_channel_panel(const amx_job_t *j, const int8_t *a, int64_t lda, const float *ws, int64_t n0,
                                         int32_t *cb, const prefetch_t *pf) {
    int KB = j->KB;
    int64_t plane = j->TB * j->K_pad * 16;
    for (int64_t tb = 0; tb < j->TB; tb++) {
        const int8_t *b0 = j->xb + tb * j->K_pad * 16, *b1 = b0 + plane, *b2 = b1 + plane;
        _tile_zero(0); _tile_zero(1); _tile_zero(2);
        A16_CHUNKS(0, j->K_pad / KB)
        prefetch_share(pf, tb, j->TB);
        _tile_stored(0, cb, 64); _tile_stored(1, cb + 256, 64); _tile_stored(2, cb + 512, 64);
        for (int c = 0; c < 16 && tb * 16 + c < j->T; c++) {
            float *o = j->out + (tb * 16 + c) * j->N;
            double inv = j->inv[tb * 16 + c];
            for (int r = 0; r < 16 && n0 + r < j->N; r++) {
                int i = r * 16 + c;
                double dot = (double)cb[i] + 256.0 * (double)cb[256 + i] + 65536.0 * (double)cb[512 + i];
                o[n0 + r] = (float)(dot * (double)ws[r] * inv);
            }
        }
    }
}

/* one thread's share of the 32-row panels (an orphaned omp for: binds to the caller's parallel region;
 * every thread reaches it, a thread whose buffers are missing does no work and the call reports 0) */
TARGET_AMX static void amx_thread(const amx_job_t *j, int8_t *scratch, float *wsT) {
    float facc[32 * 32] __attribute__((aligned(64)));
    int32_t cbuf[4 * 256] __attribute__((aligned(64)));
    if (j->planes == 1) amx_configure(4, 2, 2, j->KB);
    else amx_configure(3, 1, 3, j->KB);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < cdiv(j->N, 32); p++) {
        if (!scratch || !wsT) continue;
        int64_t lda, n0 = p * 32, row_bytes = j->bits == 8 ? j->K : j->K / 2;
        prefetch_t pf = {NULL, row_bytes, cdiv(row_bytes, 64), 0};
        if (n0 + 32 < j->N) {
            pf.base = (const char *)j->w + (n0 + 32) * row_bytes;
            pf.lines = MIN(32, j->N - n0 - 32) * pf.lines_per_row;
        }
        const prefetch_t none = {NULL, 0, 1, 0};
        const int8_t *a = prep_panel(j, scratch, wsT, n0, &lda);
        if (j->planes == 1) {
            a8_panel(j, a, lda, wsT, n0, facc, cbuf, &pf);
            continue;
        }
        for (int h = 0; h < 2 && n0 + 16 * h < j->N; h++) {
            const prefetch_t *ph = h == 0 ? &pf : &none;
            if (j->G) a16_group_panel(j, a + 16 * h * lda, lda, wsT + 16 * h, n0 + 16 * h, facc, cbuf, ph);
            else a16_channel_panel(j, a + 16 * h * lda, lda, wsT + 16 * h, n0 + 16 * h, cbuf, ph);
        }
    }
    _tile_release();
}

static int amx_run(const amx_job_t *j) {
    int ok = 1;
#pragma omp parallel num_threads(pyinfer_num_threads()) if (j->T * j->N * j->K >= 8 * PAR_MIN_WORK)
    {
        int8_t *scratch = aligned_alloc(64, (size_t)(32 * j->K_pad));
        float *wsT = malloc((size_t)(j->ng * 32) * sizeof(float));
        if (!scratch || !wsT) {
#pragma omp atomic write
            ok = 0;
        }
        amx_thread(j, scratch, wsT);
        free(scratch);
        free(wsT);
    }
    return ok;
}

/* token t's int8 row (K_pad,) -> its column of the packed B layout: xb (TB, K_pad / 4, 16, 4) */
static void pack_token(int8_t *xb, const int8_t *row, int64_t t, int64_t K_pad) {
    int8_t *dst = xb + (t / 16) * K_pad * 16 + (t % 16) * 4;
    for (int64_t k = 0; k < K_pad; k += 4) memcpy(dst + k * 16, row + k, 4);
}

/* the weight (n, k) dequantized as the reference does: for rows of x that are not finite */
static float dequant_one(const amx_job_t *j, int64_t n, int64_t k) {
    if (j->bits == 8) return (float)((const int8_t *)j->w)[n * j->K + k] * j->scales[n];
    int64_t g = k / j->G, i = k - g * j->G, half = j->G / 2;
    uint8_t b = ((const uint8_t *)j->w)[n * (j->K / 2) + g * half + (i < half ? i : i - half)];
    float u = (float)(i < half ? (b & 15) : (b >> 4)), z = j->zeros ? (float)j->zeros[n * j->ng + g] : 8.0f;
    return (u - z) * j->scales[n * j->ng + g];
}

/* x (K,) -> the digit planes of split_row_digits (quant_act.c), same values, in one vector pass for the
 * max and one for the digits; c (3, K_pad). Returns e, or INT32_MIN when x holds inf or NaN. */
TARGET_AMX static int split_digits_avx512(int8_t *c, const float *x, int64_t K, int64_t K_pad) {
    __m512 m = _mm512_setzero_ps();
    __mmask16 bad = 0;
    int64_t k = 0;
    for (; k < K; k += 16) {
        __mmask16 in = K - k >= 16 ? 0xFFFF : (__mmask16)((1u << (K - k)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(in, x + k);
        bad |= _mm512_fpclass_ps_mask(v, 0x99);                /* NaN or infinity */
        m = _mm512_max_ps(m, _mm512_abs_ps(v));
    }
    if (bad) return INT32_MIN;
    float mx = _mm512_reduce_max_ps(m);
    int ex = 0;
    if (mx > 0.0f) frexpf(mx, &ex);
    int e = 22 - ex;
    if (e > 126) return split_row_digits(c, c + K_pad, c + 2 * K_pad, x, K);   /* 2^e not a normal float */
    const __m512 scale = _mm512_set1_ps(ldexpf(1.0f, e));
    const __m512i b128 = _mm512_set1_epi32(128), b255 = _mm512_set1_epi32(255);
    for (k = 0; k < K; k += 16) {
        __mmask16 in = K - k >= 16 ? 0xFFFF : (__mmask16)((1u << (K - k)) - 1);
        __m512i xi = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(in, x + k), scale));
        __m512i d0 = _mm512_sub_epi32(_mm512_and_si512(_mm512_add_epi32(xi, b128), b255), b128);
        __m512i r = _mm512_srai_epi32(_mm512_sub_epi32(xi, d0), 8);
        __m512i d1 = _mm512_sub_epi32(_mm512_and_si512(_mm512_add_epi32(r, b128), b255), b128);
        __m512i d2 = _mm512_srai_epi32(_mm512_sub_epi32(r, d1), 8);
        _mm_mask_storeu_epi8(c + k, in, _mm512_cvtepi32_epi8(d0));
        _mm_mask_storeu_epi8(c + K_pad + k, in, _mm512_cvtepi32_epi8(d1));
        _mm_mask_storeu_epi8(c + 2 * K_pad + k, in, _mm512_cvtepi32_epi8(d2));
    }
    return e;
}

int amx_gemm_a8(float *out, const float *x, const void *w, const float *scales, const uint8_t *zeros,
                int64_t T, int64_t N, int64_t K, int64_t G, int weight_bits) {
    if (pyinfer_isa() < ISA_AMX || G <= 0 || G % 32 || K % G || T <= 0 || N <= 0) return 0;
    amx_job_t j = {out, w, scales, zeros, NULL, NULL, NULL, T, N, K, G, K / G, K, cdiv(T, 32) * 2,
                   G % 64 == 0 ? 64 : 32, weight_bits, 1};                /* TB even: token tiles in pairs */
    int8_t *xb = calloc((size_t)(j.TB * K * 16), 1);
    float *xsT = calloc((size_t)(j.TB * j.ng * 16), sizeof(float));
    int8_t *row = malloc((size_t)K);
    float *xs = malloc((size_t)j.ng * sizeof(float));
    int ran = 0;
    if (xb && xsT && row && xs) {
        for (int64_t t = 0; t < T; t++) {
            quantize_row_i8(row, xs, x + t * K, K, G);
            pack_token(xb, row, t, K);
            for (int64_t g = 0; g < j.ng; g++) xsT[((t / 16) * j.ng + g) * 16 + t % 16] = xs[g];
        }
        j.xb = xb;
        j.xsT = xsT;
        ran = amx_run(&j);
    }
    free(xb); free(xsT); free(row); free(xs);
    return ran;
}

int amx_gemm_a16(float *out, const float *x, const void *w, const float *scales, const uint8_t *zeros,
                 int64_t T, int64_t N, int64_t K, int64_t G, int weight_bits) {
    if (pyinfer_isa() < ISA_AMX || T <= 0 || N <= 0 || K <= 0) return 0;
    if (G ? (G % 32 || K % G || weight_bits != 4) : (weight_bits != 8 || K > 65536)) return 0;  /* int32 C: K <= 2^16 */
    int KB = G ? (G % 64 == 0 ? 64 : 32) : 64;
    amx_job_t j = {out, w, scales, zeros, NULL, NULL, NULL, T, N, K, G, G ? K / G : 1, cdiv(K, KB) * KB,
                   cdiv(T, 16), KB, weight_bits, 3};
    int64_t plane = j.TB * j.K_pad * 16;
    int8_t *xb = calloc((size_t)(3 * plane), 1);
    double *inv = calloc((size_t)(j.TB * 16), sizeof(double));
    int8_t *digits = calloc((size_t)(3 * j.K_pad), 1);                /* (3, K_pad), zero past K */
    int *bad = malloc((size_t)T * sizeof(int));
    int ran = 0;
    if (xb && inv && digits && bad) {
        for (int64_t t = 0; t < T; t++) {
            int e = split_digits_avx512(digits, x + t * K, K, j.K_pad);
            bad[t] = e == INT32_MIN;
            if (bad[t]) continue;                                       /* packed zero; done below */
            inv[t] = ldexp(1.0, -e);
            for (int p = 0; p < 3; p++) pack_token(xb + p * plane, digits + p * j.K_pad, t, j.K_pad);
        }
        j.xb = xb;
        j.inv = inv;
        ran = amx_run(&j);
        for (int64_t t = 0; ran && t < T; t++) {
            if (!bad[t]) continue;
            for (int64_t n = 0; n < N; n++) {
                float s = 0.0f;
                for (int64_t k = 0; k < K; k++) s += x[t * K + k] * dequant_one(&j, n, k);
                out[t * N + n] = s;
            }
        }
    }
    free(xb); free(inv); free(digits); free(bad);
    return ran;
}
#else
int amx_gemm_a8(float *out, const float *x, const void *w, const float *scales, const uint8_t *zeros,
                int64_t T, int64_t N, int64_t K, int64_t G, int weight_bits) {
    return 0;
}
int amx_gemm_a16(float *out, const float *x, const void *w, const float *scales, const uint8_t *zeros,
                 int64_t T, int64_t N, int64_t K, int64_t G, int weight_bits) {
    return 0;
}
#endif
