/* Int8 weight matmuls: out (T, N) = x (T, K) @ W.T with W stored int8 (formats in pyinfer/quant.py).
 *
 * W8A16 (per-channel scales s (N,)): out[t, n] = s[n] * sum_k x[t, k] q[n, k] with x kept float-exact:
 *   x is cut into three base-256 digit planes (quant_act.c), and each plane's dot product with the
 *   weights runs on VNNI as sum (q + 128) c - 128 sum c (vpdpbusd multiplies u8 by s8; q ^ 0x80 is
 *   q + 128 as an unsigned byte). Three vpdpbusd per 64 weights: far below the memory wall.
 * W8A8 (per-group scales s (N, K/G), activations to int8 per group at run time):
 *   out[t, n] = sum_g xs[t, g] s[n, g] sum_{k in g} xq[t, k] q[n, k], the integer dots on VNNI with the
 *   same offset trick; the -128 sum xq correction is folded into each accumulator's starting value.
 *   Without VNNI (AVX2) the integer dots run on vpmaddubsw below A8_DEQUANT_GEMM_MIN_T tokens; from
 *   there the float32 GEMM on dequantized weights and activations is faster (gemm_a8_dequant). */
#include "common.h"
#include "amx.h"

/* ---------------- W8A16 ---------------- */

/* the weight side is q ^ 0x80; per token: digit planes (3, K), e, plane sums (3,) */
typedef struct {
    int8_t *c;          /* (3, K) */
    int64_t sums[3];
    int e;
} digits_t;

#if PYINFER_X86
/* four horizontal sums at once: lane i < 4 of the result is the sum of the lanes of v[i] */
TARGET_AVX512 static inline __m128i hsum4_epi32(__m512i a, __m512i b, __m512i c, __m512i d) {
    __m512i ab = _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, 0x44), _mm512_shuffle_i32x4(a, b, 0xEE));
    __m512i cd = _mm512_add_epi32(_mm512_shuffle_i32x4(c, d, 0x44), _mm512_shuffle_i32x4(c, d, 0xEE));
    __m512i t = _mm512_add_epi32(_mm512_shuffle_i32x4(ab, cd, 0x88), _mm512_shuffle_i32x4(ab, cd, 0xDD));
    t = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, (_MM_PERM_ENUM)0x4E));
    t = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, (_MM_PERM_ENUM)0xB1));
    return _mm512_castsi512_si128(_mm512_permutexvar_epi32(_mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                                            12, 8, 4, 0), t));
}

/* R (1 or 4) rows from q (row stride K): tot[r][p] = sum_k (q[r, k] + 128) c_p[k], p = 0, 1, 2.
 * 64 weights per step: one load of each digit plane serves R rows; int32 lanes stay exact within
 * chunks of 8192 (each lane sums <= 512 products of <= 255 * 128), then go to int64. */
TARGET_AVX512 static inline __attribute__((always_inline)) void w8a16_dots(int64_t tot[4][3], const int8_t *q,
                                                                        const int8_t *c, int64_t K, int R) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    int64_t ahead = pf_ahead(4 * K);
    for (int r = 0; r < R; r++) tot[r][0] = tot[r][1] = tot[r][2] = 0;
    for (int64_t k0 = 0; k0 < K; k0 += 8192) {
        int64_t k1 = MIN(K, k0 + 8192);
        __m512i acc[4][3];
        for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = acc[r][2] = _mm512_setzero_si512();
        for (int64_t k = k0; k < k1; k += 64) {
            __mmask64 m = k + 64 <= k1 ? ~(__mmask64)0 : (((__mmask64)1 << (k1 - k)) - 1);
            __m512i d0 = _mm512_maskz_loadu_epi8(m, c + k), d1 = _mm512_maskz_loadu_epi8(m, c + K + k);
            __m512i d2 = _mm512_maskz_loadu_epi8(m, c + 2 * K + k);
            for (int r = 0; r < R; r++) {
                const int8_t *p = q + r * K + k;
                if (R == 4) __builtin_prefetch(p + ahead, 0, 3);    /* the same columns of a pass ahead */
                else PREFETCH(p);
                __m512i w = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, p), flip);   /* masked-out: 0x80 */
                acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], w, d0);     /* ... times a zero digit */
                acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], w, d1);
                acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], w, d2);
            }
        }
        if (R == 4) {
            for (int p = 0; p < 3; p++) {
                int32_t s[4];
                _mm_storeu_si128((__m128i *)s, hsum4_epi32(acc[0][p], acc[1][p], acc[2][p], acc[3][p]));
                for (int r = 0; r < 4; r++) tot[r][p] += s[r];
            }
        } else {
            for (int p = 0; p < 3; p++) tot[0][p] += _mm512_reduce_add_epi32(acc[0][p]);
        }
    }
}

TARGET_AVX512 static void w8a16_rows_avx512(float *out, const digits_t *dg, const int8_t *qw, const float *scales,
                                            int64_t T, int64_t n_lo, int64_t n_hi, int64_t N, int64_t K) {
    for (int64_t n = n_lo; n < n_hi;) {
        int R = n + 3 < n_hi ? 4 : 1;
        for (int64_t t = 0; t < T; t++) {
            const digits_t *d = dg + t;
            if (d->e == INT32_MIN) continue;                 /* non-finite x: done in float below */
            int64_t tot[4][3];
            if (R == 4) w8a16_dots(tot, qw + n * K, d->c, K, 4);
            else w8a16_dots(tot, qw + n * K, d->c, K, 1);
            double p2 = ldexp(1.0, -d->e);                   /* exact: e is within +-160 */
            for (int r = 0; r < R; r++) {
                double dot = (double)(tot[r][0] - 128 * d->sums[0]) + 256.0 * (double)(tot[r][1] - 128 * d->sums[1]) +
                             65536.0 * (double)(tot[r][2] - 128 * d->sums[2]);
                out[t * N + n + r] = (float)(dot * p2) * scales[n + r];
            }
        }
        n += R;
    }
}

TARGET_AVX2 static void w8a16_rows_avx2(float *out, const float *x, const int8_t *qw, const float *scales,
                                        int64_t T, int64_t n_lo, int64_t n_hi, int64_t N, int64_t K) {
    int64_t K8 = K & ~(int64_t)7;
    for (int64_t n = n_lo; n < n_hi; n++) {
        const int8_t *q = qw + n * K;
        for (int64_t t = 0; t < T; t++) {
            const float *xt = x + t * K;
            __m256 acc = _mm256_setzero_ps();
            for (int64_t k = 0; k < K8; k += 8) {
                __m256 w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + k))));
                acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(xt + k), acc);
            }
            float lanes[8], s = 0.0f;
            _mm256_storeu_ps(lanes, acc);
            for (int j = 0; j < 8; j++) s += lanes[j];
            for (int64_t k = K8; k < K; k++) s += xt[k] * (float)q[k];
            out[t * N + n] = s * scales[n];
        }
    }
}
#endif

static float w8a16_dot_float(const float *x, const int8_t *q, int64_t K) {
    float acc[8] = {0};
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
        for (int j = 0; j < 8; j++) acc[j] += x[k + j] * (float)q[k + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; k < K; k++) s += x[k] * (float)q[k];
    return s;
}

void matmul_w8a16(float *out, const float *x, const int8_t *qweight, const float *scales,
                  int64_t T, int64_t N, int64_t K) {
    if (T <= 0 || N <= 0) return;
    int isa = pyinfer_isa();
    /* prefill from 4 tokens: AMX on 24-bit fixed-point activations (measured at 2048x768: T=4 254 vs
     * 314 us, T=8 208 vs 573 us for the row kernels / dequantizing GEMM) */
    if (T >= AMX_A16_MIN_T && isa >= ISA_AMX && K > 0 && amx_gemm_a16(out, x, qweight, scales, NULL, T, N, K, 0, 8))
        return;
    if (T >= DEQUANT_GEMM_MIN_T && K > 0) {
        gemm_dequant(out, x, qweight, scales, NULL, T, N, K, 0, 8);
        return;
    }
    digits_t *dg = NULL;
    int8_t *planes = NULL;
#if PYINFER_X86
    if (isa >= ISA_AVX512 && K > 0) {
        dg = malloc((size_t)T * sizeof *dg);
        planes = malloc((size_t)(3 * T * K));
        if (!dg || !planes) { free(dg); free(planes); dg = NULL; planes = NULL; }
        for (int64_t t = 0; dg && t < T; t++) {
            digits_t *d = dg + t;
            d->c = planes + 3 * t * K;
            d->e = split_row_digits(d->c, d->c + K, d->c + 2 * K, x + t * K, K);
            for (int j = 0; j < 3; j++) {
                int64_t s = 0;
                for (int64_t k = 0; k < K; k++) s += d->c[j * K + k];
                d->sums[j] = s;
            }
        }
    }
#endif
#pragma omp parallel num_threads(pyinfer_num_threads()) if (T * N * K >= 8 * PAR_MIN_WORK)
    {
        int64_t lo, hi;
        thread_range(N, 16, omp_tid(), omp_nt(), &lo, &hi);
#if PYINFER_X86
        if (dg) {
            w8a16_rows_avx512(out, dg, qweight, scales, T, lo, hi, N, K);
            for (int64_t t = 0; t < T; t++)          /* rows the digit split could not hold */
                if (dg[t].e == INT32_MIN)
                    for (int64_t n = lo; n < hi; n++)
                        out[t * N + n] = w8a16_dot_float(x + t * K, qweight + n * K, K) * scales[n];
        } else if (isa >= ISA_AVX2) {
            w8a16_rows_avx2(out, x, qweight, scales, T, lo, hi, N, K);
        } else
#endif
        {
            for (int64_t n = lo; n < hi; n++)
                for (int64_t t = 0; t < T; t++)
                    out[t * N + n] = w8a16_dot_float(x + t * K, qweight + n * K, K) * scales[n];
        }
    }
    free(dg);
    free(planes);
}

/* ---------------- W8A8 ---------------- */

/* Per token: xq (K,), xs (K/G,), and for VNNI the starting value of each scale block's accumulator:
 * init (n_blocks, 16) = -128 * (sum of the 4 xq bytes each int32 lane multiplies). A scale block is
 * one 64-byte chunk holding two groups when G = 32, else one group of G/64 chunks. */
typedef struct {
    int8_t *xq;
    float *xs;
    int32_t *init;
} act8_t;

static int64_t w8a8_blocks(int64_t K, int64_t G) { return G == 32 ? cdiv(K, 64) : K / G; }

static void w8a8_init(int32_t *init, const int8_t *xq, int64_t K, int64_t G) {
    int64_t nb = w8a8_blocks(K, G), per = G == 32 ? 1 : G / 64;      /* 64-byte chunks per block */
    memset(init, 0, (size_t)(nb * 16) * sizeof(int32_t));
    for (int64_t k0 = 0; k0 < K; k0 += 64) {
        int32_t *dst = init + (k0 / 64 / per) * 16;
        for (int64_t k = k0; k < MIN(K, k0 + 64); k++) dst[(k - k0) >> 2] -= 128 * xq[k];
    }
}

#if PYINFER_X86
/* G = 32, R (1 or 4) rows from q (row stride K): out[r] = sum over 64-byte chunks (two groups) of
 * the integer dots scaled per lane half by ws[r, g] xs[g]. One load of the activation chunk, its
 * accumulator start (init) and scale pair serves the R rows; the rows a pass ahead are prefetched. */
TARGET_AVX512 INLINE void w8a8_g32_rows(float *out, const act8_t *a, const int8_t *q, const float *ws, int64_t K,
                                        int64_t ng, int R) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i pair = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    int64_t ahead = pf_ahead(4 * K);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t c = 0; c < cdiv(K, 64); c++) {
        int two = 2 * c + 1 < ng;                               /* else a last chunk of one group */
        __mmask64 m = two ? ~(__mmask64)0 : 0xFFFFFFFFull;
        __mmask8 m2 = two ? 3 : 1;
        __m512i xv = _mm512_maskz_loadu_epi8(m, a->xq + 64 * c), init = _mm512_loadu_si512(a->init + 16 * c);
        __m512 xs = _mm512_permutexvar_ps(pair, _mm512_castps128_ps512(_mm_maskz_loadu_ps(m2, a->xs + 2 * c)));
        for (int r = 0; r < R; r++) {
            const int8_t *p = q + r * K + 64 * c;
            if (R == 4) __builtin_prefetch(p + ahead, 0, 3);
            else PREFETCH(p);
            __m512i d = _mm512_dpbusd_epi32(init, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, p), flip), xv);
            __m512 sv = _mm512_permutexvar_ps(pair, _mm512_castps128_ps512(_mm_maskz_loadu_ps(m2, ws + r * ng + 2 * c)));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(sv, xs), acc[r]);
        }
    }
    if (R == 4) _mm_storeu_ps(out, hsum4_ps(acc[0], acc[1], acc[2], acc[3]));
    else out[0] = _mm512_reduce_add_ps(acc[0]);
}

TARGET_AVX512 static void w8a8_rows_avx512(float *out, const act8_t *act, const int8_t *qw, const float *scales,
                                           int64_t T, int64_t n_lo, int64_t n_hi, int64_t N, int64_t K, int64_t G) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    int64_t ng = K / G;
    if (G == 32) {
        for (int64_t n = n_lo; n < n_hi;) {
            int R = n + 3 < n_hi ? 4 : 1;
            for (int64_t t = 0; t < T; t++) {
                float s[4];
                if (R == 4) w8a8_g32_rows(s, act + t, qw + n * K, scales + n * ng, K, ng, 4);
                else w8a8_g32_rows(s, act + t, qw + n * K, scales + n * ng, K, ng, 1);
                for (int r = 0; r < R; r++) out[t * N + n + r] = s[r];
            }
            n += R;
        }
        return;
    }
    for (int64_t n = n_lo; n < n_hi; n++) {
        const int8_t *q = qw + n * K;
        const float *ws = scales + n * ng;
        for (int64_t t = 0; t < T; t++) {
            const act8_t *a = act + t;
            __m512 f0 = _mm512_setzero_ps(), f1 = f0;
            for (int64_t g = 0; g < ng; g++) {
                __m512i acc = _mm512_loadu_si512(a->init + g * 16);
                for (int64_t k = g * G; k < (g + 1) * G; k += 64) {
                    PREFETCH(q + k);
                    acc = _mm512_dpbusd_epi32(acc, _mm512_xor_si512(_mm512_loadu_si512(q + k), flip),
                                              _mm512_loadu_si512(a->xq + k));
                }
                __m512 sv = _mm512_set1_ps(ws[g] * a->xs[g]);
                if (g & 1) f1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), sv, f1);
                else f0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), sv, f0);
            }
            out[t * N + n] = _mm512_reduce_add_ps(_mm512_add_ps(f0, f1));
        }
    }
}

/* AVX2 has no VNNI: llama.cpp's sign trick, |xq| (u8) times q with xq's sign, on vpmaddubsw. */
TARGET_AVX2 static void w8a8_rows_avx2(float *out, const act8_t *act, const int8_t *qw, const float *scales,
                                       int64_t T, int64_t n_lo, int64_t n_hi, int64_t N, int64_t K, int64_t G) {
    const __m256i ones = _mm256_set1_epi16(1);
    int64_t ng = K / G;
    for (int64_t n = n_lo; n < n_hi; n++) {
        const int8_t *q = qw + n * K;
        for (int64_t t = 0; t < T; t++) {
            const act8_t *a = act + t;
            __m256 f = _mm256_setzero_ps();
            for (int64_t g = 0; g < ng; g++) {
                __m256i acc = _mm256_setzero_si256();
                for (int64_t k = g * G; k < (g + 1) * G; k += 32) {
                    __m256i xv = _mm256_loadu_si256((const __m256i *)(a->xq + k));
                    __m256i wv = _mm256_loadu_si256((const __m256i *)(q + k));
                    __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(xv), _mm256_sign_epi8(wv, xv));
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
                }
                f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(scales[n * ng + g] * a->xs[g]), f);
            }
            float lanes[8], s = 0.0f;
            _mm256_storeu_ps(lanes, f);
            for (int j = 0; j < 8; j++) s += lanes[j];
            out[t * N + n] = s;
        }
    }
}
#endif

static void w8a8_rows_scalar(float *out, const act8_t *act, const int8_t *qw, const float *scales,
                             int64_t T, int64_t n_lo, int64_t n_hi, int64_t N, int64_t K, int64_t G) {
    int64_t ng = K / G;
    for (int64_t n = n_lo; n < n_hi; n++) {
        const int8_t *q = qw + n * K;
        for (int64_t t = 0; t < T; t++) {
            float s = 0.0f;
            for (int64_t g = 0; g < ng; g++) {
                int32_t dot = 0;
                for (int64_t k = g * G; k < (g + 1) * G; k++) dot += (int32_t)act[t].xq[k] * (int32_t)q[k];
                s += (float)dot * (scales[n * ng + g] * act[t].xs[g]);
            }
            out[t * N + n] = s;
        }
    }
}

/* the AMX path (amx.c): declared in common.h for matmul_q4.c too */
int amx_int8(float *out, const float *x, const void *w, const float *scales, const uint8_t *zeros,
             int64_t T, int64_t N, int64_t K, int64_t G, int weight_bits) {
    return amx_gemm_a8(out, x, w, scales, zeros, T, N, K, G, weight_bits);
}

void matmul_w8a8(float *out, const float *x, const int8_t *qweight, const float *scales,
                 int64_t T, int64_t N, int64_t K, int64_t G) {
    if (T <= 0 || N <= 0 || G <= 0 || K % G) return;
    int isa = pyinfer_isa();
    if (T >= AMX_MIN_T && isa >= ISA_AMX && G % 32 == 0 && amx_int8(out, x, qweight, scales, NULL, T, N, K, G, 8))
        return;
    int simd = PYINFER_X86 && G % 32 == 0 && isa >= ISA_AVX2;
    int vnni = simd && isa >= ISA_AVX512 && (G == 32 || G % 64 == 0);
    if (!vnni && T >= A8_DEQUANT_GEMM_MIN_T && gemm_a8_dequant(out, x, qweight, scales, NULL, T, N, K, G, 8)) return;
    int64_t nb = w8a8_blocks(K, G);
    act8_t *act = malloc((size_t)T * sizeof *act);
    int8_t *xq = malloc((size_t)(T * K) + 1);
    float *xs = malloc((size_t)(T * (K / G)) * sizeof(float) + 1);
    int32_t *init = vnni ? malloc((size_t)(T * nb * 16) * sizeof(int32_t) + 1) : NULL;
    if (!act || !xq || !xs || (vnni && !init)) goto done;
    for (int64_t t = 0; t < T; t++) {
        act[t] = (act8_t){xq + t * K, xs + t * (K / G), vnni ? init + t * nb * 16 : NULL};
        quantize_row_i8(act[t].xq, act[t].xs, x + t * K, K, G);
        if (vnni) w8a8_init(act[t].init, act[t].xq, K, G);
    }
#pragma omp parallel num_threads(pyinfer_num_threads()) if (T * N * K >= 8 * PAR_MIN_WORK)
    {
        int64_t lo, hi;
        thread_range(N, 16, omp_tid(), omp_nt(), &lo, &hi);
#if PYINFER_X86
        if (vnni) w8a8_rows_avx512(out, act, qweight, scales, T, lo, hi, N, K, G);
        else if (simd) w8a8_rows_avx2(out, act, qweight, scales, T, lo, hi, N, K, G);
        else
#endif
            w8a8_rows_scalar(out, act, qweight, scales, T, lo, hi, N, K, G);
    }
done:
    free(act); free(xq); free(xs); free(init);
}
