/* The C kernels' public signatures. Read by cffi's cdef (so: plain prototypes only) and
 * included by every kernel file. Destination-passing, sizes always passed explicitly:
 * the Python wrappers in kernels/c_cpu.py check shapes, dtypes and contiguity first.
 * Functions returning int64_t return 0 on success, or 1 + the index of the first bad index
 * argument (a token, slot or block id out of range); they write nothing in that case. */
#include <stdint.h>

/* ---- runtime: instruction set and threads (runtime.c) ---- */
/* 0 scalar, 1 AVX2+FMA, 2 AVX-512 with VNNI, 3 AVX-512 VNNI + AMX-INT8 */
int pyinfer_detected_isa(void);
int pyinfer_isa(void);
/* cap the instruction set used (tests run every path); returns the previous cap */
int pyinfer_set_isa(int max_level);
int pyinfer_num_threads(void);
void pyinfer_set_num_threads(int n);

/* ---- bandwidth ceilings, STREAM style (runtime.c) ---- */
/* a: (n,) float32; returns the sum (so the read cannot be optimised away) */
double stream_read_f32(const float *a, int64_t n);
/* a, b, c: (n,) float32; a = b + s * c */
void stream_triad_f32(float *a, const float *b, const float *c, float s, int64_t n);

/* ---- elementwise and small ops (elementwise.c) ---- */
/* out: (T, D); tokens: (T,); table: (V, D) */
int64_t embedding_f32(float *out, const int64_t *tokens, const float *table, int64_t T, int64_t V, int64_t D);
/* out, x: (T, D) float32 row-major; w: (D,). out = w * x / sqrt(mean(x^2) + eps) */
void rmsnorm_f32(float *out, const float *x, const float *w, int64_t T, int64_t D, float eps);
/* out, x: (T, width) with width = n_heads * head_dim (out may be x); positions: (T,);
 * freq: (head_dim / 2,) the rotation frequencies 1 / theta^(2i / head_dim) (numpy computes them,
 * so the angles are bit-identical to the reference's) */
void rope_f32(float *out, const float *x, const int64_t *positions, const float *freq, int64_t T,
              int64_t width, int64_t head_dim);
/* out, gate, up: (n,) */
void silu_mul_f32(float *out, const float *gate, const float *up, int64_t n);
/* out, x, y: (n,) (out may alias x or y) */
void add_f32(float *out, const float *x, const float *y, int64_t n);
/* out, x: (T, N) (out may alias x); bias: (N,). out = x + bias per row */
void bias_add_f32(float *out, const float *x, const float *bias, int64_t T, int64_t N);
/* k_cache, v_cache: (num_slots, width); k, v: (T, width); slots: (T,) */
int64_t kv_cache_write_f32(float *k_cache, float *v_cache, const float *k, const float *v,
                           const int64_t *slots, int64_t T, int64_t num_slots, int64_t width);
/* out: (B,) int64; logits: (B, V) */
void argmax_f32(int64_t *out, const float *logits, int64_t B, int64_t V);
/* out, logits: (B, V) */
void softmax_f32(float *out, const float *logits, int64_t B, int64_t V, float temperature);

/* ---- matmuls: out (T, N) = x (T, K) @ W.T (matmul_f32.c, matmul_q8.c, matmul_q4.c) ---- */
/* w: (N, K) float32 */
void matmul_f32(float *out, const float *x, const float *w, int64_t T, int64_t N, int64_t K);
/* qweight: (N, K) int8; scales: (N,) */
void matmul_w8a16(float *out, const float *x, const int8_t *qweight, const float *scales,
                  int64_t T, int64_t N, int64_t K);
/* qweight: (N, K) int8; scales: (N, K/G) */
void matmul_w8a8(float *out, const float *x, const int8_t *qweight, const float *scales,
                 int64_t T, int64_t N, int64_t K, int64_t G);
/* qweight: (N, K/2) uint8 nibbles; scales: (N, K/G); zeros: (N, K/G) uint8 or NULL (z = 8) */
void matmul_w4a16(float *out, const float *x, const uint8_t *qweight, const float *scales,
                  const uint8_t *zeros, int64_t T, int64_t N, int64_t K, int64_t G);
void matmul_w4a8(float *out, const float *x, const uint8_t *qweight, const float *scales,
                 const uint8_t *zeros, int64_t T, int64_t N, int64_t K, int64_t G);
/* xq: (T, K) int8; xs: (T, K/G); x: (T, K) */
void quantize_act_i8(int8_t *xq, float *xs, const float *x, int64_t T, int64_t K, int64_t G);

/* ---- attention (attention.c, paged_attention.c) ---- */
/* out, q: (T, H, hd); k, v: (S, KVH, hd), S >= T; causal, queries are the last T positions */
void attention_prefill_f32(float *out, const float *q, const float *k, const float *v, int64_t T,
                           int64_t S, int64_t H, int64_t KVH, int64_t head_dim, float scale);
/* out, q: (T_total, H, hd); caches: (num_blocks, block_size, KVH, hd); block_tables: (B, max_blocks);
 * cu_seqlens_q: (B + 1,); context_lens: (B,) */
int64_t paged_prefill_attention_f32(float *out, const float *q, const float *k_cache, const float *v_cache,
                                    const int64_t *block_tables, const int64_t *cu_seqlens_q,
                                    const int64_t *context_lens, int64_t B, int64_t max_blocks,
                                    int64_t num_blocks, int64_t block_size, int64_t T_total, int64_t H,
                                    int64_t KVH, int64_t head_dim, float scale);
/* out, q: (B, H, hd); caches as above; block_tables: (B, max_blocks); context_lens: (B,).
 * Returns 0, 1 + the first sequence whose table or length is bad, or -1 when scratch memory for the
 * partial results cannot be allocated (out is then NaN). */
int64_t paged_decode_attention_f32(float *out, const float *q, const float *k_cache, const float *v_cache,
                                   const int64_t *block_tables, const int64_t *context_lens, int64_t B,
                                   int64_t max_blocks, int64_t num_blocks, int64_t block_size, int64_t H,
                                   int64_t KVH, int64_t head_dim, float scale);

/* ---- fused decode step (fused.c): every layer of a batch of one-token sequences ---- */
/* logits: (B, vocab); tokens, positions, slots: (B,); block_tables: (B, max_blocks); context_lens: (B,);
 * k_cache, v_cache: (n_layers, num_blocks, block_size, KVH, hd); config: (7,) int64; rope_freq: (hd/2,);
 * plan: (n_plan,) int64 weight descriptors (kernels/fused_reference.py DecodePlan) */
int64_t decode_step_f32(float *logits, const int64_t *tokens, const int64_t *positions, const int64_t *slots,
                        const int64_t *block_tables, const int64_t *context_lens, int64_t B, int64_t max_blocks,
                        float *k_cache, float *v_cache, int64_t num_blocks, int64_t block_size,
                        const int64_t *config, float norm_eps, const float *rope_freq,
                        const int64_t *plan, int64_t n_plan);
