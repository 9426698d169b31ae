/* Internal helpers shared by the kernel files (not read by cffi: the public API is pyinfer_api.h).
 *
 * Instruction sets are chosen at run time, per call: every hot kernel has an AVX-512 (with VNNI)
 * body, an AVX2 body and a portable scalar body, compiled with function-level target attributes so
 * one build runs on any x86-64 (no -march=native). pyinfer_isa() says which one runs. */
#ifndef PYINFER_COMMON_H
#define PYINFER_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "pyinfer_api.h"

enum { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512 = 2, ISA_AMX = 3 };

#if defined(__x86_64__) || defined(__i386__)
#define PYINFER_X86 1
#include <immintrin.h>
#define TARGET_AVX2 __attribute__((target("avx2,fma,f16c,bmi2")))
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c,bmi2")))
#define TARGET_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,amx-tile,amx-int8")))
#else
#define PYINFER_X86 0
#endif

#define INLINE static inline __attribute__((always_inline))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Software prefetch distance of the streaming GEMV kernels, in bytes ahead of the current load:
 * enough lines in flight to cover memory latency at full bandwidth (harmless past the end). */
#define PF_BYTES 2048
#define PREFETCH(p) __builtin_prefetch((const char *)(p) + PF_BYTES, 0, 3)
/* Kernels that read R rows per pass prefetch the same bytes some passes ahead: whole passes of at least
 * PF_PASS_MIN bytes, so a short row (K = 768: a 4-row pass is 40 ns of work) still looks far enough ahead
 * to hide DRAM latency; a long one (K = 4096) looks one pass ahead. */
#define PF_PASS_MIN 8192
static inline int64_t pf_ahead(int64_t pass_bytes) {
    return pass_bytes <= 0 ? 0 : pass_bytes * ((PF_PASS_MIN + pass_bytes - 1) / pass_bytes);
}

/* Fewer elements of work than this run on one thread: a parallel region costs microseconds. */
#define PAR_MIN_WORK 32768

static inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Float helpers for the scalar bodies. */
/* silu(-inf) = 0, its limit (g * sigmoid(g) would be -inf * 0 = NaN): docs/numerics.md */
static inline float silu_scalar(float g) { return g == -INFINITY ? 0.0f : g * (1.0f / (1.0f + expf(-g))); }

/* Activation preparation for the integer kernels (quant_act.c). */
/* x (K,) -> xq (K,) int8 and xs (K/G,) exactly as kernels/reference.py quantize_act. */
void quantize_row_i8(int8_t *xq, float *xs, const float *x, int64_t K, int64_t G);
/* x (K,) -> three balanced base-256 digit planes c0, c1, c2 (each (K,) int8) and exponent e with
 * x ~= 2^-e * (c0 + 256 c1 + 65536 c2), |x| * 2^e < 2^22: 24-bit fixed point per row. */
#if PYINFER_X86
/* four horizontal sums at once: element i of the result is the sum of the lanes of a, b, c, d (i = 0..3);
 * folds 512 -> 256 -> 128 bits pairwise, then within the 128-bit blocks */
TARGET_AVX512 static inline __m128 hsum4_ps(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
    __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, 0x4E));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, 0xB1));
    return _mm512_castps512_ps128(
        _mm512_permutexvar_ps(_mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0), t));
}
#endif

int split_row_digits(int8_t *c0, int8_t *c1, int8_t *c2, const float *x, int64_t K);

/* W8A8 / W4A8 on AMX for prefill-sized T (matmul_q8.c); 0 when it did not run */
int amx_int8(float *out, const float *x, const void *w, const float *scales, const uint8_t *zeros,
             int64_t T, int64_t N, int64_t K, int64_t G, int weight_bits);

/* W8A16 / W4A16 for prefill-sized T: float32 GEMM on panels dequantized while packing (matmul_f32.c) */
#define DEQUANT_GEMM_MIN_T 16
void gemm_dequant(float *out, const float *x, const void *w, const float *scales, const uint8_t *zeros,
                  int64_t T, int64_t N, int64_t K, int64_t G, int weight_bits);
/* W8A8 / W4A8 for prefill-sized T where there is no int8 dot product (AVX2): activations quantized as
 * the integer path does, dequantized, through that float32 GEMM (matmul_f32.c); 0 when it did not run.
 * Measured on a Zen 3 core, (T, 768) x (2048, 768): the integer path's vpmaddubsw rows stay at ~23
 * GFLOP/s for any T; this one passes them between 8 and 12 tokens (equal at 12), 45-55 from 16 */
#define A8_DEQUANT_GEMM_MIN_T 12
int gemm_a8_dequant(float *out, const float *x, const void *w, const float *scales, const uint8_t *zeros,
                    int64_t T, int64_t N, int64_t K, int64_t G, int weight_bits);

/* Work split over threads: rows [*lo, *hi) of n for thread `tid` of `nt`, in multiples of `align`. */
static inline void thread_range(int64_t n, int64_t align, int tid, int nt, int64_t *lo, int64_t *hi) {
    int64_t blocks = cdiv(n, align);
    int64_t per = blocks / nt, rem = blocks % nt;
    int64_t b0 = tid * per + MIN(tid, rem), b1 = b0 + per + (tid < rem);
    *lo = MIN(b0 * align, n);
    *hi = MIN(b1 * align, n);
}

static inline int omp_tid(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int omp_nt(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

#endif
