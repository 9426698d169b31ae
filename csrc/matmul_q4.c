/* Int4 weight matmuls: qweight (N, K/2) uint8, two weights per byte; within each group of G weights of
 * a row, byte j holds element j (low nibble) and j + G/2 (high nibble); w = (u - z) s[n, g], z = 8
 * (symmetric, Q4_0's code) or zeros[n, g].
 *
 * SIMD: a block of B bytes unpacks to 2B nibbles in the order [low nibbles | high nibbles]; the
 * activation is permuted once per call into that order (nibble_order), so the unpacked weights feed
 * vpdpbusd (u8 nibbles x s8 activations) with no shuffles. AVX-512 (dig64_rows): 64-byte blocks, four
 * rows per pass sharing the activation loads, one convert and one FMA by per-lane group scales per block.
 * W4A8: activations int8 per group (quantize_row_i8), as llama.cpp's Q4_0 x Q8_0; below AVX-512, from
 * A8_DEQUANT_GEMM_MIN_T tokens, the float32 GEMM on dequantized weights and activations (gemm_a8_dequant).
 * W4A16: float activations as three base-256 digit planes (quant_act.c), float-exact sums; the AVX2 and
 * scalar bodies compute in float. (A vpermps 16-entry table lookup of nibbles -> floats was measured
 * at ~0.75x the speed of the digit planes: 8 permutes + 7 shifts per 128 weights on ports 0/5.) */
#include "common.h"
#include "amx.h"

/* x (K,) -> xp (2B * ceil(K/2 / B) + 2B,) in unpacked-nibble order, zero where no weight lands.
 * B (bytes per SIMD block) is 16 or 64; byte jb of a row sits at (jb / B) * 2B + jb % B (low nibble)
 * and B further on (high nibble). */
static void nibble_order(int8_t *xp, const int8_t *x, int64_t K, int64_t G, int64_t B) {
    int64_t half = G / 2, nbytes = K / 2;
    memset(xp + (nbytes / B) * 2 * B, 0, (size_t)(2 * B));              /* a partial last block */
    if (half % 16 == 0) {                          /* runs are whole 16-byte pieces: fixed-size copies */
        for (int64_t jb = 0; jb < nbytes; jb += 16) {
            int64_t g = jb / half, j = jb - g * half, dst = (jb / B) * 2 * B + jb % B;
            memcpy(xp + dst, x + g * G + j, 16);
            memcpy(xp + dst + B, x + g * G + half + j, 16);
        }
        return;
    }
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
    int8_t *xq;         /* (K,) int8 activations (W4A8) */
    float *xs;          /* (K/G,) their scales */
    int8_t *xp[3];      /* permuted activations: W4A8 uses xp[0]; W4A16 the three digit planes */
    int32_t *init;      /* (nb64, 16) accumulator start values (symmetric only, AVX-512), lane_init64 */
    double *gsum;       /* (K/G,) sum of the activation integers per group (W4A8 AVX2 / zero points) */
    float *zc;          /* (K/G,) gsum times the activation scale (xs for W4A8, 1 for W4A16) */
    int e;              /* W4A16: x = 2^-e * integer; INT32_MIN: not finite, use float */
} act4_t;

#if PYINFER_X86
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

/* The integer kernel on 64-byte blocks (AVX-512 VNNI): lane i of a block covers bytes 4i..4i+3, their low
 * nibbles in one vector and high nibbles in another; both belong to the same group, so both vpdpbusd
 * feed one accumulator, converted and scaled once per block. Activations in nibble_order with B = 64:
 * NPL = 1 int8 plane (W4A8) or 3 base-256 digit planes (W4A16, float-exact up to 24-bit fixed point).
 * The symmetric code's -8 sum x starts each accumulator (init); R rows share each activation load. */
typedef struct {
    const int32_t *pat; /* (nb64, 16) lane -> group g0[blk] + pat, or NULL: G % 128 == 0 (one group per block) */
    const int32_t *g0;  /* (nb64,) the group of each block's first byte */
} lanes_t;

/* R (1 or 4) rows from q (row stride rb bytes): out[r] = sum over blocks of lane scales x integer dots.
 * Lane scales: ws (times xs for int8 activations) of the group each lane belongs to. */
TARGET_AVX512 INLINE void dig64_rows(float *out, const uint8_t *q, int64_t rb, const float *ws, const act4_t *a,
                                     const lanes_t *ln, int64_t ng, int SYM, int R, int NPL, int PAT) {
    const __m512i low = _mm512_set1_epi8(0x0F);
    int64_t nb = cdiv(rb, 64), full = rb / 64, ahead = pf_ahead(4 * rb);
    const char *ws_ahead = (const char *)(ws + (ahead / rb) * ng);     /* the scales of the rows prefetched */
    int64_t ws_lines = R == 4 ? cdiv(4 * ng * (int64_t)sizeof(float), 64) : 0;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t blk = 0; blk < nb; blk++) {
        for (int64_t l = blk; l < ws_lines; l += nb) __builtin_prefetch(ws_ahead + 64 * l, 0, 3);
        __m512i xl[3], xh[3];
        for (int p = 0; p < NPL; p++) {
            xl[p] = _mm512_loadu_si512(a->xp[p] + 128 * blk);
            xh[p] = _mm512_loadu_si512(a->xp[p] + 128 * blk + 64);
        }
        __m512i init = SYM ? _mm512_loadu_si512(a->init + 16 * blk) : _mm512_setzero_si512();
        __mmask64 m = blk < full ? ~(__mmask64)0 : (((__mmask64)1 << (rb - 64 * blk)) - 1);
        int64_t g0 = ln->g0[blk];
        __mmask16 gm = (__mmask16)((1u << MIN(16, ng - g0)) - 1);
        __m512i pat = PAT ? _mm512_loadu_si512(ln->pat + 16 * blk) : _mm512_setzero_si512();
        __m512 xsv = NPL == 1 ? (PAT ? _mm512_maskz_loadu_ps(gm, a->xs + g0) : _mm512_set1_ps(a->xs[g0]))
                              : _mm512_set1_ps(1.0f);
        for (int r = 0; r < R; r++) {
            const uint8_t *p = q + r * rb + 64 * blk;
            if (R == 4) __builtin_prefetch(p + ahead, 0, 3);    /* the same block of a pass ahead */
            else PREFETCH(p);
            __m512i d = _mm512_maskz_loadu_epi8(m, p);
            __m512i lo = _mm512_and_si512(d, low), hi = _mm512_and_si512(_mm512_srli_epi16(d, 4), low);
            __m512i a0 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(init, lo, xl[0]), hi, xh[0]);
            if (NPL == 3) {
                __m512i z = _mm512_setzero_si512();
                __m512i a1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, lo, xl[1]), hi, xh[1]);
                __m512i a2 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, lo, xl[2]), hi, xh[2]);
                a0 = _mm512_add_epi32(a0, _mm512_add_epi32(_mm512_slli_epi32(a1, 8), _mm512_slli_epi32(a2, 16)));
            }
            __m512 sv = PAT ? _mm512_maskz_loadu_ps(gm, ws + r * ng + g0) : _mm512_set1_ps(ws[r * ng + g0]);
            if (NPL == 1) sv = _mm512_mul_ps(sv, xsv);
            if (PAT) sv = _mm512_permutexvar_ps(pat, sv);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a0), sv, acc[r]);
        }
    }
    if (R == 1) {
        out[0] = _mm512_reduce_add_ps(acc[0]);
        return;
    }
    _mm_storeu_ps(out, hsum4_ps(acc[0], acc[1], acc[2], acc[3]));
}

#define DIG64_PAT(R, NPL, SYM) (ln->pat ? dig64_rows(s, q, rb, ws, a, ln, ng, SYM, R, NPL, 1) \
                                        : dig64_rows(s, q, rb, ws, a, ln, ng, SYM, R, NPL, 0))
#define DIG64_CALL(R, NPL) (zeros ? DIG64_PAT(R, NPL, 0) : DIG64_PAT(R, NPL, 1))

/* rows [n_lo, n_hi) of every token; a8: int8 activations, else digit planes (out scaled by 2^-e) */
TARGET_AVX512 static void dig64_rows_avx512(float *out, const act4_t *act, const lanes_t *ln, const uint8_t *qw,
                                            const float *scales, const uint8_t *zeros, int64_t T, int64_t n_lo,
                                            int64_t n_hi, int64_t N, int64_t K, int64_t G, int a8) {
    int64_t ng = K / G, rb = K / 2;
    for (int64_t n = n_lo; n < n_hi;) {
        int R = n + 3 < n_hi ? 4 : 1;
        const uint8_t *q = qw + n * rb;
        const float *ws = scales + n * ng;
        for (int64_t t = 0; t < T; t++) {
            const act4_t *a = act + t;
            float s[4];
            if (!a8 && a->e == INT32_MIN) continue;          /* non-finite x: the caller computes in float */
            if (a8 && R == 4) DIG64_CALL(4, 1);
            else if (a8) DIG64_CALL(1, 1);
            else if (R == 4) DIG64_CALL(4, 3);
            else DIG64_CALL(1, 3);
            float p2 = a8 ? 1.0f : (a->e >= -126 && a->e <= 126) ? ldexpf(1.0f, -a->e) : 0.0f;   /* 2^-e exact */
            for (int r = 0; r < R; r++) {
                if (zeros) s[r] -= zp_term_avx512(ws + r * ng, zeros + (n + r) * ng, a->zc, ng);
                out[t * N + n + r] = p2 != 0.0f ? s[r] * p2 : ldexpf(s[r], -a->e);
            }
        }
        n += R;
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

/* lanes of the 64-byte blocks: g0 (nb64,) the group of each block's first byte; pat (nb64, 16) each lane's
 * group minus g0 (G % 128 != 0 only; a dword never straddles groups as G % 8 == 0) */
static void lane_tables(int32_t *g0, int32_t *pat, int64_t K, int64_t G) {
    int64_t half = G / 2, rb = K / 2, nb = cdiv(rb, 64);
    for (int64_t blk = 0; blk < nb; blk++) {
        g0[blk] = (int32_t)(64 * blk / half);
        if (!pat) continue;
        if (64 % half == 0 && blk > 0 && 64 * blk + 63 < rb)      /* G = 8..64: every full block alike */
            memcpy(pat + 16 * blk, pat, 16 * sizeof(int32_t));
        else
            for (int i = 0; i < 16; i++)
                pat[16 * blk + i] = (int32_t)(MIN(64 * blk + 4 * i, rb - 1) / half - g0[blk]);
    }
}

#if PYINFER_X86
/* Accumulator start values for the symmetric code (z = 8), 64-byte blocks: init (nb64, 16), lane i of
 * block blk starts at -8 * the sum of the activation integers it multiplies (4 low-, 4 high-nibble
 * positions); the integer at a permuted position is p0 + 256 p1 + 65536 p2 (p1, p2 NULL for int8). */
TARGET_AVX512 static void lane_init64(int32_t *init, const int8_t *p0, const int8_t *p1, const int8_t *p2, int64_t nb) {
    const __m512i ones = _mm512_set1_epi8(1), z = _mm512_setzero_si512();
    const int8_t *pl[3] = {p0, p1, p2};
    for (int64_t blk = 0; blk < nb; blk++) {
        __m512i s = z;
        for (int j = 0; j < (p1 ? 3 : 1); j++) {
            __m512i d = _mm512_dpbusd_epi32(z, ones, _mm512_loadu_si512(pl[j] + 128 * blk));
            d = _mm512_dpbusd_epi32(d, ones, _mm512_loadu_si512(pl[j] + 128 * blk + 64));
            s = _mm512_add_epi32(s, _mm512_slli_epi32(d, 8 * j));
        }
        _mm512_storeu_si512(init + 16 * blk, _mm512_mullo_epi32(s, _mm512_set1_epi32(-8)));
    }
}
#endif

static void matmul_w4a8_gemv(float *out, const float *x, const uint8_t *qw, const float *scales,
                             const uint8_t *zeros, int64_t T, int64_t N, int64_t K, int64_t G, int isa) {
    int avx512 = PYINFER_X86 && isa >= ISA_AVX512 && G % 8 == 0;
    int avx2 = PYINFER_X86 && !avx512 && isa >= ISA_AVX2 && G % 32 == 0;
    int64_t B = avx512 ? 64 : 16, xp_len = 2 * B * cdiv(K / 2, B) + 2 * B, nb = cdiv(K / 2, 64), ng = K / G;
    act4_t *act = calloc((size_t)T, sizeof *act);
    int8_t *bytes = malloc((size_t)(T * (K + xp_len)) + 1);          /* per token: xq (K,), xp (xp_len,) */
    float *xs = malloc((size_t)(T * ng) * sizeof(float) + 1);
    int32_t *init = malloc((size_t)(T * nb * 16 + 2 * nb + 16 * nb) * sizeof(int32_t));  /* + g0, pat */
    double *gsum = malloc((size_t)(T * ng) * sizeof(double) + 1);
    float *zc = malloc((size_t)(T * ng) * sizeof(float) + 1);
    if (!act || !bytes || !xs || !init || !gsum || !zc) goto done;
    lanes_t ln = {G % 128 ? init + T * nb * 16 + 2 * nb : NULL, init + T * nb * 16};
    if (avx512) lane_tables((int32_t *)ln.g0, (int32_t *)ln.pat, K, G);
    for (int64_t t = 0; t < T; t++) {
        act4_t *a = act + t;
        a->xq = bytes + t * (K + xp_len);
        a->xp[0] = a->xq + K;
        a->xs = xs + t * ng;
        a->gsum = gsum + t * ng;
        a->zc = zc + t * ng;
        a->init = init + t * nb * 16;
        quantize_row_i8(a->xq, a->xs, x + t * K, K, G);
        nibble_order(a->xp[0], a->xq, K, G, B);
        if (zeros || !avx512)                       /* sum of each group's activation integers */
            for (int64_t g = 0; g < ng; g++) {
                int64_t s = 0;
                for (int64_t k = g * G; k < (g + 1) * G; k++) s += a->xq[k];
                a->gsum[g] = (double)s;
                a->zc[g] = (float)s * a->xs[g];
            }
#if PYINFER_X86
        if (avx512 && !zeros) lane_init64(a->init, a->xp[0], NULL, NULL, nb);
#endif
    }
#pragma omp parallel num_threads(pyinfer_num_threads()) if (T * N * K >= 8 * PAR_MIN_WORK)
    {
        int64_t lo, hi;
        thread_range(N, 16, omp_tid(), omp_nt(), &lo, &hi);
#if PYINFER_X86
        if (avx512) dig64_rows_avx512(out, act, &ln, qw, scales, zeros, T, lo, hi, N, K, G, 1);
        else if (avx2) w4a8_rows_avx2(out, act, qw, scales, zeros, T, lo, hi, N, K, G);
        else
#endif
            w4a8_rows_scalar(out, act, qw, scales, zeros, T, lo, hi, N, K, G);
    }
done:
    free(act); free(bytes); free(xs); free(init); free(gsum); free(zc);
}

#if PYINFER_X86
/* W4A16 with AVX-512 on three digit planes (dig64_rows) */
static void w4a16_digits(float *out, const float *x, const uint8_t *qw, const float *scales,
                         const uint8_t *zeros, int64_t T, int64_t N, int64_t K, int64_t G) {
    int64_t xp_len = 128 * cdiv(K / 2, 64) + 128, nb = cdiv(K / 2, 64), ng = K / G;
    act4_t *act = calloc((size_t)T, sizeof *act);
    int8_t *bytes = malloc((size_t)(T * 3 * xp_len + 3 * K));       /* per token: xp (3, xp_len); digits (3, K) */
    int32_t *init = malloc((size_t)(T * nb * 16 + 2 * nb + 16 * nb) * sizeof(int32_t));
    float *zc = malloc((size_t)(T * ng) * sizeof(float) + 1);
    if (!act || !bytes || !init || !zc) goto done;
    lanes_t ln = {G % 128 ? init + T * nb * 16 + 2 * nb : NULL, init + T * nb * 16};
    lane_tables((int32_t *)ln.g0, (int32_t *)ln.pat, K, G);
    int8_t *digits = bytes + T * 3 * xp_len;
    for (int64_t t = 0; t < T; t++) {
        act4_t *a = act + t;
        for (int j = 0; j < 3; j++) a->xp[j] = bytes + (3 * t + j) * xp_len;
        a->zc = zc + t * ng;
        a->init = init + t * nb * 16;
        a->e = split_row_digits(digits, digits + K, digits + 2 * K, x + t * K, K);
        if (a->e == INT32_MIN) continue;
        for (int j = 0; j < 3; j++) nibble_order(a->xp[j], digits + j * K, K, G, 64);
        if (zeros)
            for (int64_t g = 0; g < ng; g++) {
                int64_t s = 0;
                for (int64_t k = g * G; k < (g + 1) * G; k++) s += digits[k] + 256 * digits[K + k] + 65536 * digits[2 * K + k];
                a->zc[g] = (float)s;
            }
        else lane_init64(a->init, a->xp[0], a->xp[1], a->xp[2], nb);
    }
#pragma omp parallel num_threads(pyinfer_num_threads()) if (T * N * K >= 8 * PAR_MIN_WORK)
    {
        int64_t lo, hi;
        thread_range(N, 16, omp_tid(), omp_nt(), &lo, &hi);
        dig64_rows_avx512(out, act, &ln, qw, scales, zeros, T, lo, hi, N, K, G, 0);
        for (int64_t t = 0; t < T; t++)
            if (act[t].e == INT32_MIN) w4a16_rows_scalar(out + t * N, x + t * K, qw, scales, zeros, 1, lo, hi, N, K, G);
    }
done:
    free(act); free(bytes); free(init); free(zc);
}
#endif

static void matmul_w4a16_gemv(float *out, const float *x, const uint8_t *qw, const float *scales,
                              const uint8_t *zeros, int64_t T, int64_t N, int64_t K, int64_t G, int isa) {
#if PYINFER_X86
    if (isa >= ISA_AVX512 && G % 8 == 0) {
        w4a16_digits(out, x, qw, scales, zeros, T, N, K, G);
        return;
    }
#endif
#pragma omp parallel num_threads(pyinfer_num_threads()) if (T * N * K >= 8 * PAR_MIN_WORK)
    {
        int64_t lo, hi;
        thread_range(N, 16, omp_tid(), omp_nt(), &lo, &hi);
#if PYINFER_X86
        if (isa >= ISA_AVX2) w4a16_rows_avx2(out, x, qw, scales, zeros, T, lo, hi, N, K, G);
        else
#endif
            w4a16_rows_scalar(out, x, qw, scales, zeros, T, lo, hi, N, K, G);
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
    if (a8 && T >= A8_DEQUANT_GEMM_MIN_T && isa < ISA_AVX512 &&
        gemm_a8_dequant(out, x, qw, scales, zeros, T, N, K, G, 4))
        return;
    if (!a8 && T >= DEQUANT_GEMM_MIN_T) {
        gemm_dequant(out, x, qw, scales, zeros, T, N, K, G, 4);
        return;
    }
    if (a8) matmul_w4a8_gemv(out, x, qw, scales, zeros, T, N, K, G, isa);
    else matmul_w4a16_gemv(out, x, qw, scales, zeros, T, N, K, G, isa);
}

void matmul_w4a16(float *out, const float *x, const uint8_t *qweight, const float *scales,
                  const uint8_t *zeros, int64_t T, int64_t N, int64_t K, int64_t G) {
    matmul_w4(out, x, qweight, scales, zeros, T, N, K, G, 0);
}

void matmul_w4a8(float *out, const float *x, const uint8_t *qweight, const float *scales,
                 const uint8_t *zeros, int64_t T, int64_t N, int64_t K, int64_t G) {
    matmul_w4(out, x, qweight, scales, zeros, T, N, K, G, 1);
}
