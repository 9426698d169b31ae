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

TARGET_AVX2 static void micro_4x16_avx2(float *c, int64_t ldc, int accumulate, const float *a, int64_t lda,
                                        const float *b, int64_t ldb, int64_t K) {
    __m256 acc[4][2];
    for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        __m256 b0 = _mm256_loadu_ps(b + k * ldb), b1 = _mm256_loadu_ps(b + k * ldb + 8);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            __m256 av = _mm256_broadcast_ss(a + k * lda + r);
            acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < 4; r++) {
        float *cr = c + r * ldc;
        if (accumulate) {
            acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_loadu_ps(cr));
            acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_loadu_ps(cr + 8));
        }
        _mm256_storeu_ps(cr, acc[r][0]);
        _mm256_storeu_ps(cr + 8, acc[r][1]);
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
