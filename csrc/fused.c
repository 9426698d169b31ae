/* The whole decode step of a batch of one-token sequences in one call: embedding, every decoder layer
 * (RMSNorm, q/k/v projections, RoPE, KV cache write, paged decode attention, output projection,
 * residual, RMSNorm, SwiGLU MLP, residual), final norm and the output head. The same kernels as
 * the per-op entry points, without a Python round trip between them: for small and quantized
 * models that round trip (3-10 us per op, ~20 ops per layer) costs more than the arithmetic.
 *
 * The weights arrive as a plan of int64 descriptors built once per model by
 * kernels/fused_reference.py (make_decode_plan), which holds the arrays alive:
 *   plan = [tok_embeddings, norm, output(LINEAR)] + n_layers x [attn_norm, ffn_norm,
 *           wq, wk, wv, wo, w1, w3, w2 (LINEAR each)]
 *   LINEAR = [kind, qweight, scales, zeros, group_size, N, K_pad, K]   (addresses as int64)
 *   kind: 0 float32, 1 W8A16, 2 W8A8, 3 W4A16, 4 W4A8.
 * config = [dim, n_layers, n_heads, n_kv_heads, head_dim, hidden_dim, vocab_size]. */
#include "common.h"
#include "attention.h"

#define LINEAR_LEN 8
#define LAYER_LEN (2 + 7 * LINEAR_LEN)
#define HEAD_LEN (2 + LINEAR_LEN)

enum { LIN_F32 = 0, LIN_W8A16 = 1, LIN_W8A8 = 2, LIN_W4A16 = 3, LIN_W4A8 = 4 };

static inline const void *addr(int64_t a) { return (const void *)(uintptr_t)a; }

/* out (B, N) = x (B, K) @ W.T; xpad: (B, K_pad) scratch when K_pad > K */
static void linear(float *out, const float *x, float *xpad, int64_t B, const int64_t *d) {
    int64_t kind = d[0], G = d[4], N = d[5], K_pad = d[6], K = d[7];
    if (K_pad != K) {
        for (int64_t b = 0; b < B; b++) {
            memcpy(xpad + b * K_pad, x + b * K, (size_t)K * sizeof(float));
            memset(xpad + b * K_pad + K, 0, (size_t)(K_pad - K) * sizeof(float));
        }
        x = xpad;
    }
    switch (kind) {
    case LIN_F32: matmul_f32(out, x, addr(d[1]), B, N, K_pad); break;
    case LIN_W8A16: matmul_w8a16(out, x, addr(d[1]), addr(d[2]), B, N, K_pad); break;
    case LIN_W8A8: matmul_w8a8(out, x, addr(d[1]), addr(d[2]), B, N, K_pad, G); break;
    case LIN_W4A16: matmul_w4a16(out, x, addr(d[1]), addr(d[2]), addr(d[3]), B, N, K_pad, G); break;
    case LIN_W4A8: matmul_w4a8(out, x, addr(d[1]), addr(d[2]), addr(d[3]), B, N, K_pad, G); break;
    default: break;
    }
}

/* cs (B, 2, hd / 2): cos then sin of each sequence's angles, exactly as rope_f32 computes them
 * (angle = pos * freq in float32, cos / sin in double), once per step instead of twice per layer */
static void rope_table(float *cs, const int64_t *positions, const float *freq, int64_t B, int64_t hd) {
    int64_t half = hd / 2;
    for (int64_t b = 0; b < B; b++) {
        float pos = (float)positions[b];
        for (int64_t i = 0; i < half; i++) {
            double angle = (double)(pos * freq[i]);
            cs[b * hd + i] = (float)cos(angle);
            cs[b * hd + half + i] = (float)sin(angle);
        }
    }
}

/* x (B, width) rotated in place pair by pair, as rope_f32; cs from rope_table */
static void rope_apply(float *x, const float *cs, int64_t B, int64_t width, int64_t hd) {
    int64_t half = hd / 2;
    for (int64_t b = 0; b < B; b++) {
        const float *c = cs + b * hd, *sn = c + half;
        float *xr = x + b * width;
        for (int64_t h = 0; h + hd <= width; h += hd)
            for (int64_t i = 0; i < half; i++) {
                float x0 = xr[h + 2 * i], x1 = xr[h + 2 * i + 1];
                xr[h + 2 * i] = x0 * c[i] - x1 * sn[i];
                xr[h + 2 * i + 1] = x0 * sn[i] + x1 * c[i];
            }
    }
}

/* x += y over n floats (the residual; a few hundred floats: no parallel region) */
static void add_inplace(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

#define STACK_FLOATS 8192   /* activations of small batches of small models stay on the stack */

/* 0 when the plan's linear shapes agree with the config, else 1 + the offending descriptor's index */
static int64_t check_plan(const int64_t *plan, int64_t n_plan, const int64_t *cfg) {
    int64_t D = cfg[0], L = cfg[1], H = cfg[2], KVH = cfg[3], hd = cfg[4], HID = cfg[5], V = cfg[6];
    if (n_plan != HEAD_LEN + L * LAYER_LEN) return 1;
    int64_t shapes[7][2] = {{H * hd, D}, {KVH * hd, D}, {KVH * hd, D}, {D, H * hd}, {HID, D}, {HID, D}, {D, HID}};
    const int64_t *out = plan + 2;
    if (out[5] != V || out[7] != D || out[0] < 0 || out[0] > 4) return 3;
    for (int64_t l = 0; l < L; l++)
        for (int i = 0; i < 7; i++) {
            const int64_t *d = plan + HEAD_LEN + l * LAYER_LEN + 2 + i * LINEAR_LEN;
            if (d[5] != shapes[i][0] || d[7] != shapes[i][1] || d[6] < d[7] || d[0] < 0 || d[0] > 4)
                return HEAD_LEN + l * LAYER_LEN + 2 + i * LINEAR_LEN + 1;
        }
    return 0;
}

int64_t decode_step_f32(float *logits, const int64_t *tokens, const int64_t *positions, const int64_t *slots,
                        const int64_t *block_tables, const int64_t *context_lens, int64_t B, int64_t max_blocks,
                        float *k_cache, float *v_cache, int64_t num_blocks, int64_t block_size,
                        const int64_t *config, float norm_eps, const float *rope_freq,
                        const int64_t *plan, int64_t n_plan) {
    int64_t D = config[0], L = config[1], H = config[2], KVH = config[3], hd = config[4], HID = config[5],
            V = config[6];
    if (B <= 0) return 0;
    if (check_plan(plan, n_plan, config)) return -1;
    for (int64_t b = 0; b < B; b++) {
        if (tokens[b] < 0 || tokens[b] >= V || slots[b] < 0 || slots[b] >= num_blocks * block_size) return b + 1;
        if (context_lens[b] < 1 || context_lens[b] > max_blocks * block_size) return b + 1;
        for (int64_t i = 0; i < cdiv(context_lens[b], block_size); i++)
            if (block_tables[b * max_blocks + i] < 0 || block_tables[b * max_blocks + i] >= num_blocks) return b + 1;
    }
    int64_t QD = H * hd, KD = KVH * hd, maxK = plan[2 + 6];
    for (int64_t l = 0; l < L; l++)
        for (int i = 0; i < 7; i++) maxK = MAX(maxK, plan[HEAD_LEN + l * LAYER_LEN + 2 + i * LINEAR_LEN + 6]);
    int64_t layer_kv = num_blocks * block_size * KD;            /* floats of one layer's K (or V) cache */
    int64_t n_buf = B * (3 * D + 2 * QD + 2 * KD + 2 * HID + maxK + hd);
    float stack_buf[STACK_FLOATS] __attribute__((aligned(64)));
    float *buf = n_buf <= STACK_FLOATS ? stack_buf : malloc((size_t)n_buf * sizeof(float));
    if (!buf) return -2;
    float *x = buf, *h = x + B * D, *o = h + B * D, *q = o + B * D, *att = q + B * QD, *k = att + B * QD,
          *v = k + B * KD, *gate = v + B * KD, *up = gate + B * HID, *xpad = up + B * HID;   /* each (B, width) */
    float *cs = xpad + B * maxK;                                /* (B, hd) rope cos | sin */
    float scale = 1.0f / sqrtf((float)hd);
    int threads = pyinfer_num_threads();

    embedding_f32(x, tokens, addr(plan[0]), B, V, D);
    if (hd >= 2) rope_table(cs, positions, rope_freq, B, hd);
    for (int64_t l = 0; l < L; l++) {
        const int64_t *lp = plan + HEAD_LEN + l * LAYER_LEN;
        const int64_t *wq = lp + 2, *wk = wq + LINEAR_LEN, *wv = wk + LINEAR_LEN, *wo = wv + LINEAR_LEN,
                      *w1 = wo + LINEAR_LEN, *w3 = w1 + LINEAR_LEN, *w2 = w3 + LINEAR_LEN;
        float *kc = k_cache + l * layer_kv, *vc = v_cache + l * layer_kv;
        rmsnorm_f32(h, x, addr(lp[0]), B, D, norm_eps);
        linear(q, h, xpad, B, wq);
        linear(k, h, xpad, B, wk);
        linear(v, h, xpad, B, wv);
        if (hd >= 2) {
            rope_apply(q, cs, B, QD, hd);
            rope_apply(k, cs, B, KD, hd);
        }
        kv_cache_write_f32(kc, vc, k, v, slots, B, num_blocks * block_size, KD);
        if (paged_decode_core(att, q, kc, vc, block_tables, context_lens, B, max_blocks, block_size, H, KVH, hd,
                              scale, threads, 0)) {
            if (buf != stack_buf) free(buf);
            return -2;                                          /* its scratch could not be allocated */
        }
        linear(o, att, xpad, B, wo);
        add_inplace(x, o, B * D);
        rmsnorm_f32(h, x, addr(lp[1]), B, D, norm_eps);
        linear(gate, h, xpad, B, w1);
        linear(up, h, xpad, B, w3);
        silu_mul_f32(gate, gate, up, B * HID);
        linear(o, gate, xpad, B, w2);
        add_inplace(x, o, B * D);
    }
    rmsnorm_f32(h, x, addr(plan[1]), B, D, norm_eps);
    linear(logits, h, xpad, B, plan + 2);
    if (buf != stack_buf) free(buf);
    return 0;
}
