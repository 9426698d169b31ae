/* out (T, N) = x (T, K) @ w.T, w (N, K) float32 row-major (a linear weight, out_features first).
 *
 * Decode (T < GEMM_MIN_T): a streaming GEMV. The weight is read once, front to back, four rows at
 * a time against x held in L1; it is memory-bound, so all that matters is keeping enough loads in
 * flight (8 independent FMA chains) and never touching W twice.
 * Prefill: a packed GEMM. x is packed into MR-row micro-panels ([k][MR]) once; each NR-row panel of
 * W is packed transposed ([k][NR]) by the thread that owns it (AVX-512: 16 x 16 blocks transposed in
 * registers, the next panel prefetched meanwhile); an MR x NR register tile accumulates over KC of K
 * with broadcast-FMA (AVX-512: 8 x 32 in 16 zmm).
 * gemm_dequant (W8A16 / W4A16 prefill) runs on AMX (amx.c) where it can, else this GEMM on weights
 * dequantized while packing (into a row block, then the float32 pack's transposes); gemm_a8_dequant
 * (W8A8 / W4A8 prefill where there is no int8 dot product) the same on int8-quantized activations. */
#include "common.h"
#include "gemm_micro.h"
#include "amx.h"

#define GEMM_MIN_T 9          /* measured: the row-streaming GEMV wins up to 8 tokens (2.4x at 4) */

/* ---------------- GEMV ---------------- */
#if PYINFER_X86
TARGET_AVX512 static void gemv_avx512(float *out, const float *x, const float *w, int64_t T, int64_t n_lo,
                                      int64_t n_hi, int64_t N, int64_t K) {
    int64_t K32 = K & ~(int64_t)31, K16 = K & ~(int64_t)15;
    __mmask16 tail = (__mmask16)((1u << (K - K16)) - 1);
    int64_t n = n_lo;
    for (; n + 4 <= n_hi; n += 4) {
        const float *w0 = w + n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        for (int64_t t = 0; t < T; t++) {
            const float *xt = x + t * K;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            int64_t k = 0;
            for (; k < K32; k += 32) {
                __m512 xa = _mm512_loadu_ps(xt + k), xb = _mm512_loadu_ps(xt + k + 16);
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), xa, a0);
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), xa, a1);
                a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k), xa, a2);
                a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k), xa, a3);
                b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k + 16), xb, b0);
                b1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k + 16), xb, b1);
                b2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k + 16), xb, b2);
                b3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k + 16), xb, b3);
            }
            if (k < K16) {
                __m512 xa = _mm512_loadu_ps(xt + k);
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), xa, a0);
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), xa, a1);
                a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k), xa, a2);
                a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k), xa, a3);
                k += 16;
            }
            if (tail) {
                __m512 xa = _mm512_maskz_loadu_ps(tail, xt + k);
                b0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + k), xa, b0);
                b1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w1 + k), xa, b1);
                b2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w2 + k), xa, b2);
                b3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w3 + k), xa, b3);
            }
            float *o = out + t * N + n;
            o[0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
            o[1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
            o[2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
            o[3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
        }
    }
    for (; n < n_hi; n++) {
        const float *wr = w + n * K;
        for (int64_t t = 0; t < T; t++) {
            const float *xt = x + t * K;
            __m512 a = _mm512_setzero_ps(), b = a;
            int64_t k = 0;
            for (; k < K32; k += 32) {
                a = _mm512_fmadd_ps(_mm512_loadu_ps(wr + k), _mm512_loadu_ps(xt + k), a);
                b = _mm512_fmadd_ps(_mm512_loadu_ps(wr + k + 16), _mm512_loadu_ps(xt + k + 16), b);
            }
            for (; k < K16; k += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(wr + k), _mm512_loadu_ps(xt + k), a);
            if (tail) b = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, wr + k), _mm512_maskz_loadu_ps(tail, xt + k), b);
            out[t * N + n] = _mm512_reduce_add_ps(_mm512_add_ps(a, b));
        }
    }
}

TARGET_AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* s + sum of w[k] x[k] over [k0, K): one out-of-line copy, so the paired and single-token passes of
 * gemv_avx2 round a K tail identically (inlined, the compiler contracted them differently) */
__attribute__((noinline)) static float dot_tail(float s, const float *w, const float *x, int64_t k0, int64_t K) {
    for (int64_t k = k0; k < K; k++) s += w[k] * x[k];
    return s;
}

TARGET_AVX2 static void gemv_avx2(float *out, const float *x, const float *w, int64_t T, int64_t n_lo,
                                  int64_t n_hi, int64_t N, int64_t K) {
    int64_t K8 = K & ~(int64_t)7;
    int64_t n = n_lo;
    for (; n + 4 <= n_hi; n += 4) {
        const float *w0 = w + n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        int64_t t = 0;
        /* two tokens per pass: eight independent FMA chains instead of four (four wait on the FMA latency,
         * ~40% of the FMA rate on Zen 2), each token's sums in the same order as alone (bit-identical) */
        for (; t + 2 <= T; t += 2) {
            const float *xt = x + t * K, *xu = xt + K;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            for (int64_t k = 0; k < K8; k += 8) {
                __m256 xa = _mm256_loadu_ps(xt + k), xb = _mm256_loadu_ps(xu + k);
                __m256 v0 = _mm256_loadu_ps(w0 + k), v1 = _mm256_loadu_ps(w1 + k);
                __m256 v2 = _mm256_loadu_ps(w2 + k), v3 = _mm256_loadu_ps(w3 + k);
                a0 = _mm256_fmadd_ps(v0, xa, a0);
                a1 = _mm256_fmadd_ps(v1, xa, a1);
                a2 = _mm256_fmadd_ps(v2, xa, a2);
                a3 = _mm256_fmadd_ps(v3, xa, a3);
                b0 = _mm256_fmadd_ps(v0, xb, b0);
                b1 = _mm256_fmadd_ps(v1, xb, b1);
                b2 = _mm256_fmadd_ps(v2, xb, b2);
                b3 = _mm256_fmadd_ps(v3, xb, b3);
            }
            float s0 = hsum256(a0), s1 = hsum256(a1), s2 = hsum256(a2), s3 = hsum256(a3);
            float u0 = hsum256(b0), u1 = hsum256(b1), u2 = hsum256(b2), u3 = hsum256(b3);
            if (K8 < K) {
                s0 = dot_tail(s0, w0, xt, K8, K); s1 = dot_tail(s1, w1, xt, K8, K);
                s2 = dot_tail(s2, w2, xt, K8, K); s3 = dot_tail(s3, w3, xt, K8, K);
                u0 = dot_tail(u0, w0, xu, K8, K); u1 = dot_tail(u1, w1, xu, K8, K);
                u2 = dot_tail(u2, w2, xu, K8, K); u3 = dot_tail(u3, w3, xu, K8, K);
            }
            float *o = out + t * N + n, *p = o + N;
            o[0] = s0; o[1] = s1; o[2] = s2; o[3] = s3;
            p[0] = u0; p[1] = u1; p[2] = u2; p[3] = u3;
        }
        for (; t < T; t++) {
            const float *xt = x + t * K;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t k = 0; k < K8; k += 8) {
                __m256 xa = _mm256_loadu_ps(xt + k);
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), xa, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), xa, a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), xa, a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), xa, a3);
            }
            float s0 = hsum256(a0), s1 = hsum256(a1), s2 = hsum256(a2), s3 = hsum256(a3);
            if (K8 < K) {
                s0 = dot_tail(s0, w0, xt, K8, K); s1 = dot_tail(s1, w1, xt, K8, K);
                s2 = dot_tail(s2, w2, xt, K8, K); s3 = dot_tail(s3, w3, xt, K8, K);
            }
            float *o = out + t * N + n;
            o[0] = s0; o[1] = s1; o[2] = s2; o[3] = s3;
        }
    }
    for (; n < n_hi; n++) {
        for (int64_t t = 0; t < T; t++) {
            const float *xt = x + t * K, *wr = w + n * K;
            __m256 a = _mm256_setzero_ps();
            for (int64_t k = 0; k < K8; k += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(wr + k), _mm256_loadu_ps(xt + k), a);
            float s = hsum256(a);
            for (int64_t k = K8; k < K; k++) s += wr[k] * xt[k];
            out[t * N + n] = s;
        }
    }
}
#endif

static void gemv_scalar(float *out, const float *x, const float *w, int64_t T, int64_t n_lo, int64_t n_hi,
                        int64_t N, int64_t K) {
    for (int64_t n = n_lo; n < n_hi; n++) {
        const float *wr = w + n * K;
        for (int64_t t = 0; t < T; t++) {
            const float *xt = x + t * K;
            float acc[8] = {0};
            int64_t k = 0;
            for (; k + 8 <= K; k += 8)
                for (int j = 0; j < 8; j++) acc[j] += wr[k + j] * xt[k + j];
            float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            for (; k < K; k++) s += wr[k] * xt[k];
            out[t * N + n] = s;
        }
    }
}

/* ---------------- packed GEMM ---------------- */

struct weight_src;
typedef void (*pack_b_fn)(float *bp, const struct weight_src *src, int64_t N, int64_t n0, int64_t K, int64_t k0,
                          int64_t kc, int NR);
/* where gemm's B panels come from: float32 weights, or quantized ones dequantized while packing */
typedef struct weight_src {
    pack_b_fn pack;
    const void *w;
    const float *scales;
    const uint8_t *zeros;
    int64_t group_size;
} weight_src_t;

#define KC 256          /* K per packed block: a B micro-panel (KC x NR) stays in L1 */

/* x rows [t0, t0 + MR), columns [k0, k0 + kc) -> ap (kc, MR), zero rows past T */
static void pack_a(float *ap, const float *x, int64_t T, int64_t t0, int64_t K, int64_t k0, int64_t kc, int MR) {
    for (int r = 0; r < MR; r++) {
        int64_t t = t0 + r;
        if (t < T) for (int64_t k = 0; k < kc; k++) ap[k * MR + r] = x[t * K + k0 + k];
        else for (int64_t k = 0; k < kc; k++) ap[k * MR + r] = 0.0f;
    }
}

/* w rows [n0, n0 + NR), columns [k0, k0 + kc) -> bp (kc, NR), zero rows past N */
static void pack_b(float *bp, const float *w, int64_t N, int64_t n0, int64_t K, int64_t k0, int64_t kc, int NR) {
    for (int c = 0; c < NR; c++) {
        int64_t n = n0 + c;
        if (n < N) for (int64_t k = 0; k < kc; k++) bp[k * NR + c] = w[n * K + k0 + k];
        else for (int64_t k = 0; k < kc; k++) bp[k * NR + c] = 0.0f;
    }
}

/* tile (MR, NR) -> out rows t0.., cols n0.., clipped to (T, N); added to what is there unless first */
static void store_tile(float *out, const float *tile, int64_t T, int64_t N, int64_t t0, int64_t n0, int MR, int NR,
                       int first) {
    for (int r = 0; r < MR && t0 + r < T; r++) {
        float *o = out + (t0 + r) * N + n0;
        const float *src = tile + r * NR;
        int cols = (int)MIN(NR, N - n0);
        if (first) memcpy(o, src, (size_t)cols * sizeof(float));
        else for (int c = 0; c < cols; c++) o[c] += src[c];
    }
}

/* the float32 weight itself as the B source of gemm_packed */
static void pack_b_f32(float *bp, const weight_src_t *src, int64_t N, int64_t n0, int64_t K, int64_t k0, int64_t kc,
                       int NR) {
    pack_b(bp, src->w, N, n0, K, k0, kc, NR);
}

#if PYINFER_X86
/* r (16 rows of 16) -> o (16 columns of 16): unpack, then 128-bit lane shuffles */
TARGET_AVX512 static inline void transpose16(__m512 *o, const __m512 *r) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {             /* u[4i + j] quad q: rows 4i..4i+3 of column 4q + j */
        u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        __m512 lo0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88), hi0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
        __m512 lo1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88), hi1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
        o[j] = _mm512_shuffle_f32x4(lo0, lo1, 0x88);
        o[j + 8] = _mm512_shuffle_f32x4(lo0, lo1, 0xDD);
        o[j + 4] = _mm512_shuffle_f32x4(hi0, hi1, 0x88);
        o[j + 12] = _mm512_shuffle_f32x4(hi0, hi1, 0xDD);
    }
}

/* pack_b with AVX-512: 16 x 16 blocks of W transposed in registers; rows past N and k past kc read as
 * zero (masked loads). NR == 32. */
TARGET_AVX512 static void pack_b_f32_avx512(float *bp, const weight_src_t *src, int64_t N, int64_t n0, int64_t K,
                                            int64_t k0, int64_t kc, int NR) {
    const float *w = src->w;
    __m512 r[16], o[16];
    for (int64_t kk = 0; kk < kc; kk += 16) {
        int64_t cols = MIN(16, kc - kk);
        __mmask16 m = (__mmask16)((1u << cols) - 1);
        for (int h = 0; h < 2; h++) {
            for (int i = 0; i < 16; i++) {
                int64_t n = n0 + 16 * h + i;
                r[i] = n < N ? _mm512_maskz_loadu_ps(m, w + n * K + k0 + kk) : _mm512_setzero_ps();
            }
            transpose16(o, r);
            for (int c = 0; c < cols; c++) _mm512_storeu_ps(bp + (kk + c) * NR + 16 * h, o[c]);
        }
    }
}
#endif

#if PYINFER_X86
/* pack_b with AVX2: 8 x 8 blocks of W transposed in registers (NR == 16: two blocks side by side); rows
 * past N read as zero, a k tail past the last whole 8 by the scalar pack. The scalar pack wrote one float
 * at a time with a 64-byte stride and cost as much as the microkernel at decode-sized T (measured). */
TARGET_AVX2 static void pack_b_f32_avx2(float *bp, const weight_src_t *src, int64_t N, int64_t n0, int64_t K,
                                        int64_t k0, int64_t kc, int NR) {
    const float *w = src->w;
    int64_t k8 = kc & ~(int64_t)7;
    for (int64_t kk = 0; kk < k8; kk += 8) {
        for (int h = 0; h < NR / 8; h++) {
            __m256 r[8];
            for (int i = 0; i < 8; i++) {
                int64_t n = n0 + 8 * h + i;
                r[i] = n < N ? _mm256_loadu_ps(w + n * K + k0 + kk) : _mm256_setzero_ps();
            }
            __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
            __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
            __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
            __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *o = bp + kk * NR + 8 * h;               /* column c of the block -> bp row kk + c */
            _mm256_storeu_ps(o + 0 * NR, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(o + 1 * NR, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(o + 2 * NR, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(o + 3 * NR, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(o + 4 * NR, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(o + 5 * NR, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(o + 6 * NR, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(o + 7 * NR, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
    }
    if (k8 < kc) {                                        /* the k tail: scalar */
        for (int c = 0; c < NR; c++) {
            int64_t n = n0 + c;
            for (int64_t k = k8; k < kc; k++) bp[k * NR + c] = n < N ? w[n * K + k0 + k] : 0.0f;
        }
    }
}
#endif

/* the rows of a dequantized block, tmp (rows, kc) row-major, into a B panel: the float32 pack's
 * in-register transposes (one float written at a time with an NR-float stride cost as much as the GEMM) */
static void pack_dequantized(float *bp, const float *tmp, int64_t rows, int64_t kc, int NR) {
    weight_src_t t = {NULL, tmp, NULL, NULL, 0};
#if PYINFER_X86
    int isa = pyinfer_isa();
    if (isa >= ISA_AVX512 && NR == 32) {
        pack_b_f32_avx512(bp, &t, rows, 0, kc, 0, kc, NR);
        return;
    }
    if (isa >= ISA_AVX2 && NR == 16) {
        pack_b_f32_avx2(bp, &t, rows, 0, kc, 0, kc, NR);
        return;
    }
#endif
    (void)t;
    pack_b(bp, tmp, rows, 0, kc, 0, kc, NR);
}

/* dst[i] = q[i] * s, n values: 8 at a time on AVX2 (built for the baseline ISA this loop had no
 * int8 -> int32 widening and cost as much as the GEMM it feeds, measured at T = 32) */
#if PYINFER_X86
TARGET_AVX2 static void dequant_i8_avx2(float *dst, const int8_t *q, float s, int64_t n) {
    __m256 sv = _mm256_set1_ps(s);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i b = _mm_loadl_epi64((const __m128i *)(q + i));
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), sv));
    }
    for (; i < n; i++) dst[i] = (float)q[i] * s;
}

/* dst[i] = (nibble i - z) * s for n values from bytes b: low nibbles (hi = 0) or high ones (hi = 1) */
TARGET_AVX2 static void dequant_u4_avx2(float *dst, const uint8_t *b, int hi, float z, float s, int64_t n) {
    __m256 sv = _mm256_set1_ps(s), zv = _mm256_set1_ps(z);
    __m256i mask = _mm256_set1_epi32(15);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + i)));
        u = hi ? _mm256_srli_epi32(u, 4) : _mm256_and_si256(u, mask);
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(u), zv), sv));
    }
    for (; i < n; i++) dst[i] = ((float)(hi ? b[i] >> 4 : b[i] & 15) - z) * s;
}
#endif

static void dequant_i8(float *dst, const int8_t *q, float s, int64_t n, int isa) {
#if PYINFER_X86
    if (isa >= ISA_AVX2) {
        dequant_i8_avx2(dst, q, s, n);
        return;
    }
#endif
    (void)isa;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)q[i] * s;
}

static void dequant_u4(float *dst, const uint8_t *b, int hi, float z, float s, int64_t n, int isa) {
#if PYINFER_X86
    if (isa >= ISA_AVX2) {
        dequant_u4_avx2(dst, b, hi, z, s, n);
        return;
    }
#endif
    (void)isa;
    for (int64_t i = 0; i < n; i++) dst[i] = ((float)(hi ? b[i] >> 4 : b[i] & 15) - z) * s;
}

/* int8 weights times per-channel scales (W8A16, group_size 0) or per-group ones (W8A8's weights):
 * each of the panel's rows dequantized a group run at a time into tmp, then packed */
static void pack_b_w8(float *bp, const weight_src_t *src, int64_t N, int64_t n0, int64_t K, int64_t k0, int64_t kc,
                      int NR) {
    int64_t G = src->group_size, ng = G > 0 ? K / G : 1, rows = MIN((int64_t)NR, N - n0);
    float tmp[32 * KC] __attribute__((aligned(64)));          /* (rows, kc), NR <= 32 */
    int isa = pyinfer_isa();
    for (int64_t r = 0; r < rows; r++) {
        const int8_t *q = (const int8_t *)src->w + (n0 + r) * K;
        const float *s = src->scales + (n0 + r) * ng;
        float *row = tmp + r * kc;
        for (int64_t k = k0; k < k0 + kc;) {
            int64_t end = G > 0 ? MIN(k0 + kc, (k / G + 1) * G) : k0 + kc;     /* [k, end): one scale */
            dequant_i8(row + (k - k0), q + k, s[G > 0 ? k / G : 0], end - k, isa);
            k = end;
        }
    }
    pack_dequantized(bp, tmp, rows, kc, NR);
}

/* int4 weights (u - z) * s per group, nibble layout of pyinfer/quant.py (W4A16), as the reference dequantizes:
 * one row's K block into tmp a group run at a time (low nibbles, then high), then packed */
static void pack_b_w4(float *bp, const weight_src_t *src, int64_t N, int64_t n0, int64_t K, int64_t k0, int64_t kc,
                      int NR) {
    int64_t G = src->group_size, half = G / 2, ng = K / G, rows = MIN((int64_t)NR, N - n0);
    float tmp[32 * KC] __attribute__((aligned(64)));          /* (rows, kc), NR <= 32 */
    int isa = pyinfer_isa();
    for (int64_t r = 0; r < rows; r++) {
        int64_t n = n0 + r;
        const uint8_t *q = (const uint8_t *)src->w + n * (K / 2);
        float *row = tmp + r * kc;
        for (int64_t k = k0; k < k0 + kc;) {
            int64_t g = k / G, j = k - g * G, end = MIN(k0 + kc - g * G, G);      /* [j, end) of group g */
            float sc = src->scales[n * ng + g], z = src->zeros ? (float)src->zeros[n * ng + g] : 8.0f;
            const uint8_t *b = q + g * half;
            int64_t at = g * G - k0;                                            /* row[at + i]: element i of g */
            int64_t lo_end = MIN(end, half), hi_start = MAX(j, half);
            if (j < lo_end) dequant_u4(row + at + j, b + j, 0, z, sc, lo_end - j, isa);
            if (hi_start < end) dequant_u4(row + at + hi_start, b + hi_start - half, 1, z, sc, end - hi_start, isa);
            k = g * G + end;
        }
    }
    pack_dequantized(bp, tmp, rows, kc, NR);
}

static void gemm(float *out, const float *x, const weight_src_t *src, int64_t T, int64_t N, int64_t K, int isa) {
    int MR, NR;
    micro_fn micro = pick_micro(isa, &MR, &NR);
    int64_t t_blocks = cdiv(T, MR), n_panels = cdiv(N, NR);
    float *ap = malloc((size_t)(t_blocks * MR * KC) * sizeof(float));    /* (t_blocks, KC, MR) */
    if (!ap) return;
#pragma omp parallel num_threads(pyinfer_num_threads()) if (T * N * K >= 8 * PAR_MIN_WORK)
    {
        float *bp = malloc((size_t)(NR * KC) * sizeof(float));           /* (KC, NR) */
        float tile[12 * 32];
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            int64_t kc = MIN(KC, K - k0);
#pragma omp for schedule(static)
            for (int64_t tb = 0; tb < t_blocks; tb++) pack_a(ap + tb * MR * kc, x, T, tb * MR, K, k0, kc, MR);
            /* panels handed out one at a time: a thread whose core is shared (another process, a noisy
             * host) takes fewer, where a static split made the other wait for it at every K block
             * (stories110M 128-token prefill, 2 threads beside a busy process: 0.46x -> 0.60x of 1
             * thread; no change measured on a quiet machine). Each output tile is still summed over the
             * K blocks in order by one thread at a time: the result does not depend on the split. */
#pragma omp for schedule(dynamic, 1)
            for (int64_t p = 0; p < n_panels; p++) {
                if (!bp) continue;
                src->pack(bp, src, N, p * NR, K, k0, kc, NR);
                /* the next panel's rows of this K block (float32, int8 or packed int4 bytes), fetched while this
                 * one computes: without it the int8 dequantizing pack stalled on DRAM (14% of a T = 32 step) */
                int bits = src->pack == pack_b_w8 ? 8 : src->pack == pack_b_w4 ? 4 : 32;
                int64_t row_bytes = K * bits / 8, off = k0 * bits / 8, lines = cdiv(kc * bits / 8, 64);
                int64_t next = p + 1 < N / NR ? (p + 1) * NR : -1;
                for (int64_t tb = 0; tb < t_blocks; tb++) {
                    for (int64_t i = tb * NR * lines / t_blocks; next >= 0 && i < (tb + 1) * NR * lines / t_blocks; i++)
                        __builtin_prefetch((const char *)src->w + (next + i / lines) * row_bytes + off + 64 * (i % lines),
                                           0, 3);
                    if ((tb + 1) * MR <= T && (p + 1) * NR <= N) {     /* a whole tile: straight into out */
                        micro(out + tb * MR * N + p * NR, N, k0 > 0, ap + tb * MR * kc, MR, bp, NR, kc);
                        continue;
                    }
                    micro(tile, NR, 0, ap + tb * MR * kc, MR, bp, NR, kc);
                    store_tile(out, tile, T, N, tb * MR, p * NR, MR, NR, k0 == 0);
                }
            }
        }
        free(bp);
    }
    free(ap);
}

/* thread tid of nt: its share of the N output rows */
static void gemv_rows(float *out, const float *x, const float *w, int64_t T, int64_t N, int64_t K, int isa,
                      int tid, int nt) {
    int64_t lo, hi;
    thread_range(N, 16, tid, nt, &lo, &hi);
#if PYINFER_X86
    if (isa >= ISA_AVX512) gemv_avx512(out, x, w, T, lo, hi, N, K);
    else if (isa >= ISA_AVX2) gemv_avx2(out, x, w, T, lo, hi, N, K);
    else
#endif
        gemv_scalar(out, x, w, T, lo, hi, N, K);
    (void)isa;
}

void matmul_f32(float *out, const float *x, const float *w, int64_t T, int64_t N, int64_t K) {
    if (T <= 0 || N <= 0) return;
    if (K <= 0) {
        memset(out, 0, (size_t)(T * N) * sizeof(float));
        return;
    }
    int isa = pyinfer_isa();
    if (T >= GEMM_MIN_T) {
        weight_src_t src = {pack_b_f32, w, NULL, NULL, 0};
#if PYINFER_X86
        if (isa >= ISA_AVX512) src.pack = pack_b_f32_avx512;      /* NR = 32 there */
        else if (isa >= ISA_AVX2) src.pack = pack_b_f32_avx2;     /* NR = 16 */
#endif
        gemm(out, x, &src, T, N, K, isa);
        return;
    }
    if (N * K < 4 * PAR_MIN_WORK || pyinfer_num_threads() == 1) {   /* no OpenMP team for small work */
        gemv_rows(out, x, w, T, N, K, isa, 0, 1);
        return;
    }
#pragma omp parallel num_threads(pyinfer_num_threads())
    gemv_rows(out, x, w, T, N, K, isa, omp_tid(), omp_nt());
}

/* W8A16 / W4A16 for prefill-sized T: the float32 GEMM on weights dequantized panel by panel */
void gemm_dequant(float *out, const float *x, const void *w, const float *scales, const uint8_t *zeros,
                  int64_t T, int64_t N, int64_t K, int64_t G, int weight_bits) {
    if (amx_gemm_a16(out, x, w, scales, zeros, T, N, K, weight_bits == 8 ? 0 : G, weight_bits)) return;
    weight_src_t src = {weight_bits == 8 ? pack_b_w8 : pack_b_w4, w, scales, zeros, G};
    gemm(out, x, &src, T, N, K, pyinfer_isa());
}

/* W8A8 / W4A8 for prefill-sized T on a CPU without an int8 dot product (AVX2: vpmaddubsw gives
 * ~11 G int8 MAC/s on one Zen 3 core, the float32 FMA twice that): the activations quantized per
 * group exactly as the integer path does, dequantized (xq * xs), through the float32 GEMM on weights
 * dequantized panel by panel. The same products as the reference's integer dots, summed in another
 * order. 0 (nothing written) when its buffers cannot be had: the caller runs the integer path. */
int gemm_a8_dequant(float *out, const float *x, const void *w, const float *scales, const uint8_t *zeros,
                    int64_t T, int64_t N, int64_t K, int64_t G, int weight_bits) {
    if (T <= 0 || N <= 0 || G <= 0 || K % G) return 0;
    float *xd = malloc((size_t)(T * K) * sizeof(float));     /* (T, K) dequantized activations */
    int8_t *xq = malloc((size_t)(T * K));                      /* (T, K) their int8 codes */
    float *xs = malloc((size_t)(T * (K / G)) * sizeof(float)); /* (T, K / G) group scales */
    int ok = xd && xq && xs;
    if (ok) {
#pragma omp parallel for num_threads(pyinfer_num_threads()) schedule(static) if (T * K >= PAR_MIN_WORK)
        for (int64_t t = 0; t < T; t++) {
            int8_t *q = xq + t * K;
            float *sc = xs + t * (K / G), *d = xd + t * K;
            quantize_row_i8(q, sc, x + t * K, K, G);
            for (int64_t g = 0; g < K / G; g++)
                for (int64_t k = g * G; k < (g + 1) * G; k++) d[k] = (float)q[k] * sc[g];
        }
        weight_src_t src = {weight_bits == 8 ? pack_b_w8 : pack_b_w4, w, scales, zeros, G};
        gemm(out, xd, &src, T, N, K, pyinfer_isa());
    }
    free(xd); free(xq); free(xs);
    return ok;
}
