/* AMX int8 GEMMs (amx.c), used by matmul_q8.c, matmul_q4.c and matmul_f32.c for prefill-sized T. */
#ifndef PYINFER_AMX_H
#define PYINFER_AMX_H
#include <stdint.h>

/* Token counts from which the AMX GEMMs beat the VNNI row kernels (measured on the Sapphire Rapids VM,
 * 2048 x 768 weights, 1 thread: A8 crossover between 4 and 6 tokens, A16 between 2 and 4). */
#define AMX_MIN_T 6
#define AMX_A16_MIN_T 4

/* out (T, N) = x (T, K) @ W.T with W int8 (N, K) (weight_bits 8) or int4 nibbles (N, K/2) with zeros
 * (N, K/G) or NULL (z = 8), scales (N, K/G); x quantized to int8 per group exactly as quantize_act.
 * Returns 1 when it ran, 0 when AMX is not available here, G is not a multiple of 32 or memory ran out
 * (the caller then runs its own path). */
int amx_gemm_a8(float *out, const float *x, const void *w, const float *scales, const uint8_t *zeros,
                int64_t T, int64_t N, int64_t K, int64_t G, int weight_bits);
/* The same with x kept float (24-bit fixed point per row, three int8 digit planes): W8A16 (weight_bits
 * 8, G = 0, scales (N,), K <= 65536) or W4A16 (weight_bits 4, G % 32 == 0). Returns 1 when it ran. */
int amx_gemm_a16(float *out, const float *x, const void *w, const float *scales, const uint8_t *zeros,
                 int64_t T, int64_t N, int64_t K, int64_t G, int weight_bits);
#endif
