/* Int4 weight matmuls: qweight (N, K/2) uint8, two weights per byte; within each group of G weights of
 * a row, byte j holds element j (low nibble) and j + G/2 (high nibble); w = (u - z) s[n, g], z = 8
 * (symmetric, Q4_0's code) or zeros[n, g].
 *
 * SIMD: a block of B bytes unpacks to 2B nibbles in the order [low nibbles | high nibbles]; the
 * activation is permuted once per call into that order (nibble_order), so the unpacked weights feed
 * vpdpbusd (u8 nibbles x s8 activations) with no shuffles. AVX-512: one 32-byte block per zmm (two
 * groups when G = 32, lanes [A A A A B B B B A A A A B B B B] x 4 bytes).
 * W4A8: activations int8 per group (quantize_row_i8), as llama.cpp's Q4_0 x Q8_0.
 * W4A16: float activations as three base-256 digit planes (quant_act.c), float-exact sums. */
#include "common.h"
#include "amx.h"

/* x (K,) -> xp (2B * ceil(K/2 / B),) in unpacked-nibble order, zero where no weight lands.
 * B (bytes per SIMD block) is 16 or 32; byte jb of a row sits at (jb / B) * 2B + jb % B (low nibble)
 * and B further on (high nibble). */
static void nibble_order(int8_t *xp, const int8_t *x, int64_t K, int64_t G, int64_t B) {
    int64_t half = G / 2, nbytes = K / 2;
    memset(xp + (nbytes / B) * 2 * B, 0, (size_t)(2 * B));              /* a partial last block */
    for (int64_t jb = 0; jb < nbytes;) {                                /* runs inside a block and a group */
        int64_t g = jb / half, j = jb - g * half, run = MIN(B - jb % B, half - j);
        int64_t dst = (jb / B) * 2 * B + jb % B;
        memcpy(xp + dst, x + g * G + j, (size_t)run);
        memcpy(xp + dst + B, x + g * G + half + j, (size_t)run);
        jb += run;
    }
}

/* Per token, prepared once per call. */
typedef struct {
    int8_t *xq;         /* (K,) int8 activations (W4A8) or NULL */
    float *xs;          /* (K/G,) their scales */
    int8_t *xp[3];      /* permuted activations: W4A8 uses xp[0]; W4A16 the three digit planes */
    int32_t *init;      /* accumulator start values (symmetric only), see below */
    double *gsum;       /* (K/G,) sum of the activation integers per group (zero-point correction) */
    float *zc;          /* (K/G,) gsum times the activation scale (xs for W4A8, 1 for W4A16) */
    int e;              /* W4A16: x = 2^-e * integer; INT32_MIN: not finite, use float */
} act4_t;

static int64_t blocks32(int64_t K) { return cdiv(K / 2, 32); }

#if PYINFER_X86
TARGET_AVX512 static inline __m512i unpack32_avx512(const uint8_t *p, int64_t nbytes) {
    __m256i v = nbytes >= 32 ? _mm256_loadu_si256((const __m256i *)p)
                             : _mm256_maskz_loadu_epi8((1u << nbytes) - 1, p);
    __m512i w = _mm512_broadcast_i64x4(v);
    w = _mm512_mask_srli_epi16(w, 0xFFFF0000u, w, 4);
    return _mm512_and_si512(w, _mm512_set1_epi8(0x0F));
}

/* the scales of block p's two groups (G = 32) spread over the lanes: [A A A A B B B B] x 2 */
TARGET_AVX512 static inline __m512 pair_scales(const float *ws, const float *xs, int64_t g, int two) {
    const __m512i pat = _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
    __m128 s;
    if (two) {                                        /* both groups exist: plain 8-byte loads */
        s = _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(ws + g)));
        if (xs) s = _mm_mul_ps(s, _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(xs + g))));
    } else {
        s = _mm_maskz_loadu_ps(1, ws + g);
        if (xs) s = _mm_mul_ps(s, _mm_maskz_loadu_ps(1, xs + g));
    }
    return _mm512_permutexvar_ps(pat, _mm512_castps128_ps512(s));
}

/* sum over the row of lane scales x the integer dot of each 32-byte block: the W4A8 inner loop.
 * init: per scale block start values (NULL: zero). xs: activation scales per group. */
TARGET_AVX512 static inline float w4a8_row_avx512(const uint8_t *q, const int8_t *xp, const int32_t *init,
                                                  const float *ws, const float *xs, int64_t K, int64_t G) {
    int64_t ng = K / G, row_bytes = K / 2;
    __m512 f0 = _mm512_setzero_ps(), f1 = f0;
    if (G == 32) {
        int64_t full = row_bytes / 32;                 /* blocks of two whole groups */
        int64_t p = 0;
        for (; p + 2 <= full; p += 2) {
            PREFETCH(q + 32 * p);
            __m512i a0 = init ? _mm512_loadu_si512(init + p * 16) : _mm512_setzero_si512();
            __m512i a1 = init ? _mm512_loadu_si512(init + p * 16 + 16) : _mm512_setzero_si512();
            a0 = _mm512_dpbusd_epi32(a0, unpack32_avx512(q + 32 * p, 32), _mm512_loadu_si512(xp + 64 * p));
            a1 = _mm512_dpbusd_epi32(a1, unpack32_avx512(q + 32 * p + 32, 32), _mm512_loadu_si512(xp + 64 * p + 64));
            f0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a0), pair_scales(ws, xs, 2 * p, 1), f0);
            f1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a1), pair_scales(ws, xs, 2 * p + 2, 1), f1);
        }
        for (; 32 * p < row_bytes; p++) {              /* an odd block, and a half block at the end */
            int64_t nbytes = MIN(32, row_bytes - 32 * p);
            __m512i a = init ? _mm512_loadu_si512(init + p * 16) : _mm512_setzero_si512();
            a = _mm512_dpbusd_epi32(a, unpack32_avx512(q + 32 * p, nbytes), _mm512_loadu_si512(xp + 64 * p));
            f0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), pair_scales(ws, xs, 2 * p, 2 * p + 1 < ng), f0);
        }
    } else {
        int64_t per = G / 64;
        for (int64_t g = 0; g < ng; g++) {
            __m512i a = init ? _mm512_loadu_si512(init + g * 16) : _mm512_setzero_si512();
            for (int64_t i = g * per; i < (g + 1) * per; i++) {
                if (!(i & 1)) PREFETCH(q + 32 * i);
                a = _mm512_dpbusd_epi32(a, unpack32_avx512(q + 32 * i, 32), _mm512_loadu_si512(xp + 64 * i));
            }
            __m512 sv = _mm512_set1_ps(xs ? ws[g] * xs[g] : ws[g]);
            if (g & 1) f1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), sv, f1);
            else f0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), sv, f0);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(f0, f1));
}

/* sum_g ws[g] z[g] c[g]: the zero-point term, 16 groups at a time */
TARGET_AVX512 static inline float zp_term_avx512(const float *ws, const uint8_t *z, const float *c, int64_t ng) {
    __m512 acc = _mm512_setzero_ps();
    int64_t g = 0;
    for (; g + 16 <= ng; g += 16) {
        __m512 zf = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(z + g))));
        acc = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_loadu_ps(ws + g), zf), _mm512_loadu_ps(c + g), acc);
    }
    float s = _mm512_reduce_add_ps(acc);
    for (; g < ng; g++) s += ws[g] * (float)z[g] * c[g];
    return s;
}

TARGET_AVX512 static void w4a8_rows_avx512(float *out, const act4_t *act, const uint8_t *qw, const float *scales,
                                           const uint8_t *zeros, int64_t T, int64_t n_lo, int64_t n_hi,
                                           int64_t N, int64_t K, int64_t G) {
    int64_t ng = K / G, row_bytes = K / 2;
    for (int64_t n = n_lo; n < n_hi; n++) {
        const uint8_t *q = qw + n * row_bytes;
        const float *ws = scales + n * ng;
        for (int64_t t = 0; t < T; t++) {
            const act4_t *a = act + t;
            float s = w4a8_row_avx512(q, a->xp[0], zeros ? NULL : a->init, ws, a->xs, K, G);
            if (zeros) s -= zp_term_avx512(ws, zeros + n * ng, a->zc, ng);
            out[t * N + n] = s;
        }
    }
}

TARGET_AVX512 static void w4a16_rows_avx512(float *out, const act4_t *act, const uint8_t *qw, const float *scales,
                                            const uint8_t *zeros, int64_t T, int64_t n_lo, int64_t n_hi,
                                            int64_t N, int64_t K, int64_t G) {
    int64_t ng = K / G, nb = blocks32(K), row_bytes = K / 2;
    for (int64_t n = n_lo; n < n_hi; n++) {
        const uint8_t *q = qw + n * row_bytes;
        const float *ws = scales + n * ng;
        for (int64_t t = 0; t < T; t++) {
            const act4_t *a = act + t;
            if (a->e == INT32_MIN) continue;
            __m512 f0 = _mm512_setzero_ps(), f1 = f0;
            for (int64_t p = 0; p < nb; p++) {
                if (!(p & 1)) PREFETCH(q + 32 * p);
                __m512i u = unpack32_avx512(q + 32 * p, MIN(32, row_bytes - 32 * p));
                __m512i a0 = zeros ? _mm512_setzero_si512() : _mm512_loadu_si512(a->init + p * 16);
                a0 = _mm512_dpbusd_epi32(a0, u, _mm512_loadu_si512(a->xp[0] + 64 * p));
                __m512i a1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_loadu_si512(a->xp[1] + 64 * p));
                __m512i a2 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_loadu_si512(a->xp[2] + 64 * p));
                __m512i comb = _mm512_add_epi32(a0, _mm512_add_epi32(_mm512_slli_epi32(a1, 8), _mm512_slli_epi32(a2, 16)));
                __m512 sv = G == 32 ? pair_scales(ws, NULL, 2 * p, 2 * p + 1 < ng) : _mm512_set1_ps(ws[(64 * p) / G]);
                if (p & 1) f1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(comb), sv, f1);
                else f0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(comb), sv, f0);
            }
            float s = _mm512_reduce_add_ps(_mm512_add_ps(f0, f1));
            if (zeros) s -= zp_term_avx512(ws, zeros + n * ng, a->zc, ng);
            out[t * N + n] = ldexpf(s, -a->e);
        }
    }
}

TARGET_AVX2 static void w4a8_rows_avx2(float *out, const act4_t *act, const uint8_t *qw, const float *scales,
                                       const uint8_t *zeros, int64_t T, int64_t n_lo, int64_t n_hi,
                                       int64_t N, int64_t K, int64_t G) {
    const __m256i ones = _mm256_set1_epi16(1), low = _mm256_set1_epi8(0x0F);
    int64_t ng = K / G, row_bytes = K / 2;
    for (int64_t n = n_lo; n < n_hi; n++) {
        const uint8_t *q = qw + n * row_bytes;
        const float *ws = scales + n * ng;
        for (int64_t t = 0; t < T; t++) {
            const act4_t *a = act + t;
            __m256 f = _mm256_setzero_ps();
            float corr = 0.0f;
            for (int64_t g = 0; g < ng; g++) {
                __m256i acc = _mm256_setzero_si256();
                for (int64_t j = g * G / 2; j < (g + 1) * G / 2; j += 16) {
                    __m128i v = _mm_loadu_si128((const __m128i *)(q + j));
                    __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), low);
                    __m256i p = _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(a->xp[0] + 2 * j)));
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
                }
                float sc = ws[g] * a->xs[g];
                f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(sc), f);
                corr += sc * (float)((double)(zeros ? zeros[n * ng + g] : 8) * a->gsum[g]);
            }
            float lanes[8], s = 0.0f;
            _mm256_storeu_ps(lanes, f);
            for (int i = 0; i < 8; i++) s += lanes[i];
            out[t * N + n] = s - corr;
        }
    }
}
#endif

/* plain C, integer math exactly as the reference */
static void w4a8_rows_scalar(float *out, const act4_t *act, const uint8_t *qw, const float *scales,
                             const uint8_t *zeros, int64_t T, int64_t n_lo, int64_t n_hi, int64_t N,
                             int64_t K, int64_t G) {
    int64_t ng = K / G, half = G / 2;
    for (int64_t n = n_lo; n < n_hi; n++) {
        const uint8_t *q = qw + n * (K / 2);
        for (int64_t t = 0; t < T; t++) {
            const int8_t *xq = act[t].xq;
            float s = 0.0f;
            for (int64_t g = 0; g < ng; g++) {
                int32_t z = zeros ? zeros[n * ng + g] : 8, dot = 0;
                const uint8_t *b = q + g * half;
                for (int64_t j = 0; j < half; j++) {
                    dot += xq[g * G + j] * ((int32_t)(b[j] & 15) - z);
                    dot += xq[g * G + half + j] * ((int32_t)(b[j] >> 4) - z);
                }
                s += (float)dot * (scales[n * ng + g] * act[t].xs[g]);
            }
            out[t * N + n] = s;
        }
    }
}

INLINE void w4a16_rows_body(float *out, const float *x, const uint8_t *qw, const float *scales,
                            const uint8_t *zeros, int64_t T, int64_t n_lo, int64_t n_hi, int64_t N,
                            int64_t K, int64_t G) {
    int64_t ng = K / G, half = G / 2;
    for (int64_t n = n_lo; n < n_hi; n++) {
        const uint8_t *q = qw + n * (K / 2);
        for (int64_t t = 0; t < T; t++) {
            const float *xt = x + t * K;
            float s = 0.0f;
            for (int64_t g = 0; g < ng; g++) {
                float z = zeros ? (float)zeros[n * ng + g] : 8.0f, sc = scales[n * ng + g], acc = 0.0f;
                const uint8_t *b = q + g * half;
                for (int64_t j = 0; j < half; j++)
                    acc += xt[g * G + j] * (((float)(b[j] & 15) - z) * sc) +
                           xt[g * G + half + j] * (((float)(b[j] >> 4) - z) * sc);
                s += acc;
            }
            out[t * N + n] = s;
        }
    }
}
#if PYINFER_X86
TARGET_AVX2 static void w4a16_rows_avx2(float *out, const float *x, const uint8_t *qw, const float *scales,
                                        const uint8_t *zeros, int64_t T, int64_t lo, int64_t hi, int64_t N,
                                        int64_t K, int64_t G) {
    w4a16_rows_body(out, x, qw, scales, zeros, T, lo, hi, N, K, G);
}
#endif
static void w4a16_rows_scalar(float *out, const float *x, const uint8_t *qw, const float *scales,
                              const uint8_t *zeros, int64_t T, int64_t lo, int64_t hi, int64_t N,
                              int64_t K, int64_t G) {
    w4a16_rows_body(out, x, qw, scales, zeros, T, lo, hi, N, K, G);
}

/* ---------------- preparation and dispatch ---------------- */

/* Accumulator start values for the symmetric code (z = 8): init (ceil(nb / per), 16) where lane i of
 * scale block sb starts at -8 * the sum of the integers lane i multiplies in its blocks; the integer at
 * a permuted position is p0 + 256 p1 + 65536 p2 (p1, p2 NULL for int8 activations). */
static void lane_init(int32_t *init, const int8_t *p0, const int8_t *p1, const int8_t *p2, int64_t nb, int64_t per) {
    memset(init, 0, (size_t)(cdiv(nb, per) * 16) * sizeof(int32_t));
    for (int64_t blk = 0; blk < nb; blk++) {
        int32_t *dst = init + (blk / per) * 16;
        for (int64_t lane = 0; lane < 16; lane++) {
            int64_t i = 64 * blk + 4 * lane;
            int32_t s = p0[i] + p0[i + 1] + p0[i + 2] + p0[i + 3];
            if (p1) s += 256 * (p1[i] + p1[i + 1] + p1[i + 2] + p1[i + 3]) +
                         65536 * (p2[i] + p2[i + 1] + p2[i + 2] + p2[i + 3]);
            dst[lane] -= 8 * s;
        }
    }
}

static void matmul_w4(float *out, const float *x, const uint8_t *qw, const float *scales, const uint8_t *zeros,
                      int64_t T, int64_t N, int64_t K, int64_t G, int a8) {
    if (T <= 0 || N <= 0 || G <= 0 || G % 2 || K % G) return;
    int isa = pyinfer_isa();
    if (a8 && T >= AMX_MIN_T && isa >= ISA_AMX && G % 32 == 0 && amx_int8(out, x, qw, scales, zeros, T, N, K, G, 4))
        return;
    if (!a8 && T >= AMX_A16_MIN_T && isa >= ISA_AMX && amx_gemm_a16(out, x, qw, scales, zeros, T, N, K, G, 4))
        return;
    if (!a8 && T >= DEQUANT_GEMM_MIN_T) {
        gemm_dequant(out, x, qw, scales, zeros, T, N, K, G, 4);
        return;
    }
    int avx512 = PYINFER_X86 && isa >= ISA_AVX512 && (G == 32 || G % 64 == 0);
    int avx2 = PYINFER_X86 && !avx512 && isa >= ISA_AVX2 && G % 32 == 0;
    int prep = a8 || avx512;                      /* W4A16 without AVX-512 reads x as it is */
    int64_t nb = blocks32(K), B = avx512 ? 32 : 16, xp_len = 2 * B * cdiv(K / 2, B) + 64;
    int64_t per = a8 && G != 32 ? G / 64 : 1, ng = K / G;
    act4_t *act = calloc((size_t)T, sizeof *act);
    int8_t *bytes = malloc((size_t)(T * (K + 3 * xp_len)) + 1);      /* per token: xq (K,), xp (3, xp_len) */
    int8_t *digits = malloc((size_t)(3 * K) + 1);                     /* one token's digit planes (3, K) */
    float *xs = malloc((size_t)(T * ng) * sizeof(float) + 1);
    int32_t *init = malloc((size_t)(T * (nb + 1) * 16) * sizeof(int32_t));
    double *gsum = malloc((size_t)(T * ng) * sizeof(double) + 1);
    float *zc = malloc((size_t)(T * ng) * sizeof(float) + 1);
    if (!act || !bytes || !digits || !xs || !init || !gsum || !zc) goto done;
    for (int64_t t = 0; t < T && prep; t++) {
        act4_t *a = act + t;
        int8_t *base = bytes + t * (K + 3 * xp_len);
        a->xq = base;
        a->xs = xs + t * ng;
        a->gsum = gsum + t * ng;
        a->zc = zc + t * ng;
        a->init = init + t * (nb + 1) * 16;
        for (int j = 0; j < 3; j++) a->xp[j] = base + K + j * xp_len;
        const int8_t *planes[3] = {a->xq, NULL, NULL};
        if (a8) {
            quantize_row_i8(a->xq, a->xs, x + t * K, K, G);
            nibble_order(a->xp[0], a->xq, K, G, B);
        } else {
            a->e = split_row_digits(digits, digits + K, digits + 2 * K, x + t * K, K);
            if (a->e == INT32_MIN) continue;
            for (int j = 0; j < 3; j++) nibble_order(a->xp[j], digits + j * K, K, G, B);
            for (int j = 0; j < 3; j++) planes[j] = digits + j * K;
        }
        if (zeros || !avx512)                       /* sum of each group's activation integers */
            for (int64_t g = 0; g < ng; g++) {
                int64_t s = 0;
                for (int64_t k = g * G; k < (g + 1) * G; k++)
                    s += planes[0][k] + (planes[1] ? 256 * planes[1][k] + 65536 * planes[2][k] : 0);
                a->gsum[g] = (double)s;
                a->zc[g] = (float)s * (a8 ? a->xs[g] : 1.0f);
            }
        if (avx512 && !zeros)
            lane_init(a->init, a->xp[0], a8 ? NULL : a->xp[1], a8 ? NULL : a->xp[2], nb, per);
    }
#pragma omp parallel if (T * N * K >= 8 * PAR_MIN_WORK)
    {
        int64_t lo, hi;
        thread_range(N, 16, omp_tid(), omp_nt(), &lo, &hi);
#if PYINFER_X86
        if (avx512 && a8) w4a8_rows_avx512(out, act, qw, scales, zeros, T, lo, hi, N, K, G);
        else if (avx512) {
            w4a16_rows_avx512(out, act, qw, scales, zeros, T, lo, hi, N, K, G);
            for (int64_t t = 0; t < T; t++)
                if (act[t].e == INT32_MIN) w4a16_rows_scalar(out + t * N, x + t * K, qw, scales, zeros, 1, lo, hi, N, K, G);
        } else if (avx2 && a8) w4a8_rows_avx2(out, act, qw, scales, zeros, T, lo, hi, N, K, G);
        else if (avx2) w4a16_rows_avx2(out, x, qw, scales, zeros, T, lo, hi, N, K, G);
        else
#endif
        if (a8) w4a8_rows_scalar(out, act, qw, scales, zeros, T, lo, hi, N, K, G);
        else w4a16_rows_scalar(out, x, qw, scales, zeros, T, lo, hi, N, K, G);
    }
done:
    free(act); free(bytes); free(digits); free(xs); free(init); free(gsum); free(zc);
}

void matmul_w4a16(float *out, const float *x, const uint8_t *qweight, const float *scales,
                  const uint8_t *zeros, int64_t T, int64_t N, int64_t K, int64_t G) {
    matmul_w4(out, x, qweight, scales, zeros, T, N, K, G, 0);
}

void matmul_w4a8(float *out, const float *x, const uint8_t *qweight, const float *scales,
                 const uint8_t *zeros, int64_t T, int64_t N, int64_t K, int64_t G) {
    matmul_w4(out, x, qweight, scales, zeros, T, N, K, G, 1);
}
