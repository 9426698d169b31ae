/* Activation preparation for the integer matmuls.
 *
 * quantize_row_i8: dynamic symmetric int8 per group of G, bit-exact with kernels/reference.py
 * quantize_act (s = max|x| / 127 in float32, q = rint(x / s), half to even); a group holding inf or
 * NaN gets s = NaN and q = 0, so every output it reaches is NaN, as the reference's (docs/numerics.md).
 * split_row_digits: float activations for the "A16" kernels as 24-bit fixed point per row, cut into
 * three balanced base-256 digits, so VNNI's u8 x s8 dot products give float-exact sums:
 *   x ~= 2^-e (c0 + 2^8 c1 + 2^16 c2),  c0, c1 in [-128, 127], c2 in [-65, 65]. */
#include "common.h"

#if PYINFER_X86
TARGET_AVX512 static void quantize_group_avx512(int8_t *xq, float *xs, const float *x, int64_t G) {
    __m512 m = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t k = 0; k < G; k += 16) {
        __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + k));
        bad |= _mm512_cmp_ps_mask(a, _mm512_set1_ps(3.4028235e38f), _CMP_NLE_UQ);   /* inf or NaN */
        m = _mm512_max_ps(m, a);
    }
    if (bad) {                                    /* the reference's row is NaN: s = NaN, q = 0 */
        *xs = NAN;
        memset(xq, 0, (size_t)G);
        return;
    }
    float s = _mm512_reduce_max_ps(m) / 127.0f;
    *xs = s;
    __m512 safe = _mm512_set1_ps(s == 0.0f ? 1.0f : s);
    for (int64_t k = 0; k < G; k += 16) {
        __m512i q = _mm512_cvtps_epi32(_mm512_div_ps(_mm512_loadu_ps(x + k), safe));   /* nearest even */
        _mm_storeu_si128((__m128i *)(xq + k), _mm512_cvtsepi32_epi8(q));
    }
}
#endif

#if PYINFER_X86
/* the same on AVX2, G % 8 == 0 (cvtps_epi32 rounds half to even as nearbyintf; packs saturate as the
 * scalar clamp): the scalar loop was 18% of a W8A8 GEMM's time at T = 32 on an AVX2-only CPU */
TARGET_AVX2 static void quantize_group_avx2(int8_t *xq, float *xs, const float *x, int64_t G) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), big = _mm256_set1_ps(3.4028235e38f);
    __m256 m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    for (int64_t k = 0; k < G; k += 8) {
        __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + k), absmask);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, big, _CMP_NLE_UQ));   /* inf or NaN */
        m = _mm256_max_ps(m, a);
    }
    if (_mm256_movemask_ps(bad)) {                /* the reference's row is NaN: s = NaN, q = 0 */
        *xs = NAN;
        memset(xq, 0, (size_t)G);
        return;
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    float s = _mm_cvtss_f32(h) / 127.0f;
    *xs = s;
    __m256 safe = _mm256_set1_ps(s == 0.0f ? 1.0f : s);
    for (int64_t k = 0; k < G; k += 8) {
        __m256i q = _mm256_cvtps_epi32(_mm256_div_ps(_mm256_loadu_ps(x + k), safe));        /* nearest even */
        __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        _mm_storel_epi64((__m128i *)(xq + k), _mm_packs_epi16(w, w));
    }
}
#endif

static void quantize_group_scalar(int8_t *xq, float *xs, const float *x, int64_t G) {
    float m = 0.0f;
    for (int64_t k = 0; k < G; k++) {
        float a = fabsf(x[k]);
        m = a > m || a != a ? a : m;              /* a NaN sticks */
    }
    if (!(m <= 3.4028235e38f)) {                  /* inf or NaN: the reference's row is NaN (s = NaN, q = 0) */
        *xs = NAN;
        memset(xq, 0, (size_t)G);
        return;
    }
    float s = m / 127.0f;
    *xs = s;
    float safe = s == 0.0f ? 1.0f : s;
    for (int64_t k = 0; k < G; k++) {
        float r = nearbyintf(x[k] / safe);
        xq[k] = (int8_t)(r > 127.0f ? 127 : r < -128.0f ? -128 : (int)r);
    }
}

void quantize_row_i8(int8_t *xq, float *xs, const float *x, int64_t K, int64_t G) {
    int isa = pyinfer_isa();
    for (int64_t g = 0; g < K / G; g++) {
#if PYINFER_X86
        if (isa >= ISA_AVX512 && G % 16 == 0) quantize_group_avx512(xq + g * G, xs + g, x + g * G, G);
        else if (isa >= ISA_AVX2 && G % 8 == 0) quantize_group_avx2(xq + g * G, xs + g, x + g * G, G);
        else
#endif
            quantize_group_scalar(xq + g * G, xs + g, x + g * G, G);
    }
    (void)isa;
}

void quantize_act_i8(int8_t *xq, float *xs, const float *x, int64_t T, int64_t K, int64_t G) {
    if (G <= 0 || K % G) return;
    for (int64_t t = 0; t < T; t++) quantize_row_i8(xq + t * K, xs + t * (K / G), x + t * K, K, G);
}

#if PYINFER_X86
/* c_j = the balanced base-256 digits of round(x * 2^e), 16 at a time */
TARGET_AVX512 static void split_avx512(int8_t *c0, int8_t *c1, int8_t *c2, const float *x, int64_t K, float scale) {
    const __m512i b128 = _mm512_set1_epi32(128), b255 = _mm512_set1_epi32(255);
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512i xi = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), _mm512_set1_ps(scale)));
        __m512i d0 = _mm512_sub_epi32(_mm512_and_si512(_mm512_add_epi32(xi, b128), b255), b128);
        __m512i r = _mm512_srai_epi32(_mm512_sub_epi32(xi, d0), 8);
        __m512i d1 = _mm512_sub_epi32(_mm512_and_si512(_mm512_add_epi32(r, b128), b255), b128);
        __m512i d2 = _mm512_srai_epi32(_mm512_sub_epi32(r, d1), 8);
        _mm_storeu_si128((__m128i *)(c0 + k), _mm512_cvtepi32_epi8(d0));
        _mm_storeu_si128((__m128i *)(c1 + k), _mm512_cvtepi32_epi8(d1));
        _mm_storeu_si128((__m128i *)(c2 + k), _mm512_cvtepi32_epi8(d2));
    }
    for (; k < K; k++) {
        int32_t xi = (int32_t)nearbyintf(x[k] * scale);
        int32_t d0 = ((xi + 128) & 255) - 128, r = (xi - d0) / 256, d1 = ((r + 128) & 255) - 128;
        c0[k] = (int8_t)d0;
        c1[k] = (int8_t)d1;
        c2[k] = (int8_t)((r - d1) / 256);
    }
}
#endif

#if PYINFER_X86
/* max |x|, or inf when x holds inf or NaN */
TARGET_AVX512 static float absmax_avx512(const float *x, int64_t K) {
    __m512 m = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t k = 0; k < K; k += 16) {
        __mmask16 in = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
        __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(in, x + k));
        bad |= _mm512_cmp_ps_mask(a, _mm512_set1_ps(3.4e38f), _CMP_NLE_UQ);   /* > 3.4e38 or NaN */
        m = _mm512_max_ps(m, a);
    }
    return bad ? INFINITY : _mm512_reduce_max_ps(m);
}
#endif

/* Returns e, or INT32_MIN when x holds inf or NaN (the caller then computes in float). */
int split_row_digits(int8_t *c0, int8_t *c1, int8_t *c2, const float *x, int64_t K) {
    float m = 0.0f;
#if PYINFER_X86
    if (pyinfer_isa() >= ISA_AVX512) m = absmax_avx512(x, K);
    else
#endif
        for (int64_t k = 0; k < K; k++) {
            float a = fabsf(x[k]);
            m = a > m || a != a ? a : m;              /* a NaN sticks */
        }
    if (!(m <= 3.4e38f)) return INT32_MIN;
    int ex = 0;
    if (m > 0.0f) frexpf(m, &ex);                 /* m = f 2^ex, f in [0.5, 1) */
    int e = 22 - ex;                              /* |x| 2^e < 2^22 */
#if PYINFER_X86
    if (e <= 126 && pyinfer_isa() >= ISA_AVX512) {   /* 2^e is a normal float: x * 2^e is exact */
        split_avx512(c0, c1, c2, x, K, ldexpf(1.0f, e));
        return e;
    }
#endif
    for (int64_t k = 0; k < K; k++) {
        int32_t xi = (int32_t)lrintf(ldexpf(x[k], e));
        int32_t d0 = ((xi + 128) & 255) - 128;
        int32_t r = (xi - d0) / 256;
        int32_t d1 = ((r + 128) & 255) - 128;
        int32_t d2 = (r - d1) / 256;
        c0[k] = (int8_t)d0;
        c1[k] = (int8_t)d1;
        c2[k] = (int8_t)d2;
    }
    return e;
}
