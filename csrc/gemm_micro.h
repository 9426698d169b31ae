/* The register-tile microkernels of the float32 GEMM, shared by matmul_f32.c and attention.c:
 *   C (MR, NR) (+)= sum_k a[k * lda + r] * b[k * ldb + c],  C rows ldc apart.
 * a holds MR values per k (a packed A panel, or any matrix whose k-steps are lda apart), b NR values
 * per k. AVX-512: 8 x 32 in 16 zmm accumulators; AVX2: 4 x 16 in 8 ymm; scalar: 4 x 16. */
#ifndef PYINFER_GEMM_MICRO_H
#define PYINFER_GEMM_MICRO_H
#include "common.h"

typedef void (*micro_fn)(float *c, int64_t ldc, int accumulate, const float *a, int64_t lda, const float *b,
                         int64_t ldb, int64_t K);

#if PYINFER_X86
TARGET_AVX512 static void micro_8x32_avx512(float *c, int64_t ldc, int accumulate, const float *a, int64_t lda,
                                            const float *b, int64_t ldb, int64_t K) {
    __m512 acc[8][2];
    for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        __m512 b0 = _mm512_loadu_ps(b + k * ldb), b1 = _mm512_loadu_ps(b + k * ldb + 16);
        const float *ak = a + k * lda;
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            __m512 av = _mm512_set1_ps(ak[r]);
            acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < 8; r++) {
        float *cr = c + r * ldc;
        if (accumulate) {
            acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_loadu_ps(cr));
            acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_loadu_ps(cr + 16));
        }
        _mm512_storeu_ps(cr, acc[r][0]);
        _mm512_storeu_ps(cr + 16, acc[r][1]);
    }
}

/* Eight named accumulators, not an array: GCC kept part of an __m256 acc[4][2] on the stack and stored it
 * every k (6 stores per 8 FMAs), which held this kernel to ~1/3 of its FMA rate on AVX2-only CPUs. */
TARGET_AVX2 static void micro_4x16_avx2(float *c, int64_t ldc, int accumulate, const float *a, int64_t lda,
                                        const float *b, int64_t ldb, int64_t K) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    for (int64_t k = 0; k < K; k++) {
        const float *bk = b + k * ldb, *ak = a + k * lda;
        __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8);
        __m256 a0 = _mm256_broadcast_ss(ak), a1 = _mm256_broadcast_ss(ak + 1);
        c00 = _mm256_fmadd_ps(a0, b0, c00);
        c01 = _mm256_fmadd_ps(a0, b1, c01);
        c10 = _mm256_fmadd_ps(a1, b0, c10);
        c11 = _mm256_fmadd_ps(a1, b1, c11);
        __m256 a2 = _mm256_broadcast_ss(ak + 2), a3 = _mm256_broadcast_ss(ak + 3);
        c20 = _mm256_fmadd_ps(a2, b0, c20);
        c21 = _mm256_fmadd_ps(a2, b1, c21);
        c30 = _mm256_fmadd_ps(a3, b0, c30);
        c31 = _mm256_fmadd_ps(a3, b1, c31);
    }
    __m256 acc[8] = {c00, c01, c10, c11, c20, c21, c30, c31};
    for (int r = 0; r < 4; r++) {
        float *cr = c + r * ldc;
        __m256 lo = acc[2 * r], hi = acc[2 * r + 1];
        if (accumulate) {
            lo = _mm256_add_ps(lo, _mm256_loadu_ps(cr));
            hi = _mm256_add_ps(hi, _mm256_loadu_ps(cr + 8));
        }
        _mm256_storeu_ps(cr, lo);
        _mm256_storeu_ps(cr + 8, hi);
    }
}
#endif

static void micro_4x16_scalar(float *c, int64_t ldc, int accumulate, const float *a, int64_t lda, const float *b,
                              int64_t ldb, int64_t K) {
    float acc[4][16] = {{0}};
    for (int64_t k = 0; k < K; k++)
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 16; j++) acc[r][j] += a[k * lda + r] * b[k * ldb + j];
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < 16; j++) c[r * ldc + j] = accumulate ? c[r * ldc + j] + acc[r][j] : acc[r][j];
}

/* the microkernel for this instruction set and its tile shape */
static inline micro_fn pick_micro(int isa, int *MR, int *NR) {
    *MR = 4;
    *NR = 16;
#if PYINFER_X86
    if (isa >= ISA_AVX512) { *MR = 8; *NR = 32; return micro_8x32_avx512; }
    if (isa >= ISA_AVX2) return micro_4x16_avx2;
#endif
    (void)isa;
    return micro_4x16_scalar;
}
#endif
