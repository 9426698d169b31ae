/* AMX int8 GEMM (amx.c), used by matmul_q8.c and matmul_q4.c for prefill-sized T. */
#ifndef PYINFER_AMX_H
#define PYINFER_AMX_H
#include <stdint.h>

#define AMX_MIN_T 16

/* out (T, N) from xq (T_pad, K) int8 (T_pad a multiple of 32, rows past T zero), xs (T_pad, K/G), int8 weights (N, K) or int4
 * (N, K/2) with zeros (N, K/G) or NULL, scales (N, K/G). Returns 1 when it ran, 0 when AMX is not
 * available here or G is not a multiple of 32 (the caller then runs its VNNI path). */
int amx_matmul_i8(float *out, const int8_t *xq, const float *xs, const void *w, const float *scales,
                  const uint8_t *zeros, int64_t T, int64_t T_pad, int64_t N, int64_t K, int64_t G, int weight_bits);
#endif
