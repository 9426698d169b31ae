/* Row-wise and elementwise ops: embedding, RMSNorm (as llama2.c's run.c), RoPE (adjacent pairs),
 * SwiGLU's silu(gate) * up, residual add, KV cache write, argmax and softmax. */
#include "common.h"
#include "vecmath.h"

int64_t embedding_f32(float *out, const int64_t *tokens, const float *table, int64_t T, int64_t V, int64_t D) {
    for (int64_t t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= V) return t + 1;
    for (int64_t t = 0; t < T; t++) memcpy(out + t * D, table + tokens[t] * D, (size_t)D * sizeof(float));
    return 0;
}

/* ---- RMSNorm: one body, compiled per instruction set ---- */
INLINE void rmsnorm_row(float *out, const float *x, const float *w, int64_t D, float eps) {
    v16f acc = v16f_splat(0.0f);
    int64_t i = 0;
    for (; i + 16 <= D; i += 16) {
        v16f v = v16f_load(x + i);
        acc += v * v;
    }
    float ss = v16f_hsum(acc);
    for (; i < D; i++) ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss / (float)D + eps);
    for (i = 0; i + 16 <= D; i += 16) v16f_store(out + i, v16f_load(w + i) * (v16f_load(x + i) * inv));
    for (; i < D; i++) out[i] = w[i] * (inv * x[i]);
}

#if PYINFER_X86
TARGET_AVX512 static void rmsnorm_avx512(float *o, const float *x, const float *w, int64_t D, float eps) {
    rmsnorm_row(o, x, w, D, eps);
}
TARGET_AVX2 static void rmsnorm_avx2(float *o, const float *x, const float *w, int64_t D, float eps) {
    rmsnorm_row(o, x, w, D, eps);
}
#endif
static void rmsnorm_scalar(float *o, const float *x, const float *w, int64_t D, float eps) {
    float ss = 0.0f;
    for (int64_t i = 0; i < D; i++) ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss / (float)D + eps);
    for (int64_t i = 0; i < D; i++) o[i] = w[i] * (inv * x[i]);
}

static void rmsnorm_dispatch(float *out, const float *x, const float *w, int64_t D, float eps, int isa) {
#if PYINFER_X86
    if (isa >= ISA_AVX512) rmsnorm_avx512(out, x, w, D, eps);
    else if (isa >= ISA_AVX2) rmsnorm_avx2(out, x, w, D, eps);
    else
#endif
        rmsnorm_scalar(out, x, w, D, eps);
    (void)isa;
}

/* Small work runs without entering an OpenMP region: even `parallel if (0)` builds a team (~0.5 us),
 * which a small model's decode step would pay ~45 times per token. */
void rmsnorm_f32(float *out, const float *x, const float *w, int64_t T, int64_t D, float eps) {
    if (T <= 0 || D <= 0) return;
    int isa = pyinfer_isa();
    if (T * D < PAR_MIN_WORK || T == 1) {
        for (int64_t t = 0; t < T; t++) rmsnorm_dispatch(out + t * D, x + t * D, w, D, eps, isa);
        return;
    }
#pragma omp parallel for num_threads(pyinfer_num_threads()) schedule(static)
    for (int64_t t = 0; t < T; t++) rmsnorm_dispatch(out + t * D, x + t * D, w, D, eps, isa);
}

/* ---- RoPE: angle = pos * freq_i in float32, cos/sin in double (as the reference) ---- */
void rope_f32(float *out, const float *x, const int64_t *positions, const float *freq, int64_t T,
              int64_t width, int64_t head_dim) {
    if (T <= 0 || width <= 0 || head_dim < 2) return;
    int64_t half = head_dim / 2, n_heads = width / head_dim;
#pragma omp parallel num_threads(pyinfer_num_threads()) if (T * width >= PAR_MIN_WORK)
    {
        float *cs = malloc((size_t)(2 * half) * sizeof(float));   /* (2, half): cos then sin */
#pragma omp for schedule(static)
        for (int64_t t = 0; t < T; t++) {
            if (!cs) continue;
            float pos = (float)positions[t];
            for (int64_t i = 0; i < half; i++) {
                double angle = (double)(pos * freq[i]);
                cs[i] = (float)cos(angle);
                cs[half + i] = (float)sin(angle);
            }
            const float *xr = x + t * width;
            float *orow = out + t * width;
            for (int64_t h = 0; h < n_heads; h++) {
                for (int64_t i = 0; i < half; i++) {
                    float x0 = xr[h * head_dim + 2 * i], x1 = xr[h * head_dim + 2 * i + 1];
                    orow[h * head_dim + 2 * i] = x0 * cs[i] - x1 * cs[half + i];
                    orow[h * head_dim + 2 * i + 1] = x0 * cs[half + i] + x1 * cs[i];
                }
            }
        }
        free(cs);
    }
}

/* ---- silu(gate) * up and add ---- */
INLINE v16f silu_mul_16(v16f g, v16f u) {
    v16f s = v16f_select(g == v16f_splat(-INFINITY), v16f_splat(0.0f),           /* silu(-inf) = 0 (its limit) */
                         g * (v16f_splat(1.0f) / (v16f_splat(1.0f) + v16f_exp(-g))));
    return s * u;
}
INLINE void silu_mul_body(float *out, const float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        v16f_store(out + i, silu_mul_16(v16f_load(gate + i), v16f_load(up + i)));
    if (i < n) {            /* the tail through the same vector math, so an element's bits never depend on
                               where it sits in the array (batch-invariant mode relies on it) */
        float g[16] = {0}, u[16] = {0}, o[16];
        for (int64_t j = 0; j < n - i; j++) { g[j] = gate[i + j]; u[j] = up[i + j]; }
        v16f_store(o, silu_mul_16(v16f_load(g), v16f_load(u)));
        for (int64_t j = 0; j < n - i; j++) out[i + j] = o[j];
    }
}
#if PYINFER_X86
TARGET_AVX512 static void silu_mul_avx512(float *o, const float *g, const float *u, int64_t n) { silu_mul_body(o, g, u, n); }
TARGET_AVX2 static void silu_mul_avx2(float *o, const float *g, const float *u, int64_t n) { silu_mul_body(o, g, u, n); }
#endif
static void silu_mul_scalar(float *o, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) o[i] = silu_scalar(g[i]) * u[i];
}

static void silu_mul_part(float *out, const float *gate, const float *up, int64_t n, int isa, int tid, int nt) {
    int64_t lo, hi;
    thread_range(n, 256, tid, nt, &lo, &hi);
#if PYINFER_X86
    if (isa >= ISA_AVX512) silu_mul_avx512(out + lo, gate + lo, up + lo, hi - lo);
    else if (isa >= ISA_AVX2) silu_mul_avx2(out + lo, gate + lo, up + lo, hi - lo);
    else
#endif
        silu_mul_scalar(out + lo, gate + lo, up + lo, hi - lo);
    (void)isa;
}

void silu_mul_f32(float *out, const float *gate, const float *up, int64_t n) {
    if (n <= 0) return;
    int isa = pyinfer_isa();
    if (n < 4 * PAR_MIN_WORK) {
        silu_mul_part(out, gate, up, n, isa, 0, 1);
        return;
    }
#pragma omp parallel num_threads(pyinfer_num_threads())
    silu_mul_part(out, gate, up, n, isa, omp_tid(), omp_nt());
}

void add_f32(float *out, const float *x, const float *y, int64_t n) {
    if (n < 8 * PAR_MIN_WORK) {
        for (int64_t i = 0; i < n; i++) out[i] = x[i] + y[i];
        return;
    }
#pragma omp parallel for num_threads(pyinfer_num_threads()) schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = x[i] + y[i];
}

void bias_add_f32(float *out, const float *x, const float *bias, int64_t T, int64_t N) {
    if (T * N < 8 * PAR_MIN_WORK) {
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < N; i++) out[t * N + i] = x[t * N + i] + bias[i];
        return;
    }
#pragma omp parallel for num_threads(pyinfer_num_threads()) schedule(static)
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < N; i++) out[t * N + i] = x[t * N + i] + bias[i];
}

int64_t kv_cache_write_f32(float *k_cache, float *v_cache, const float *k, const float *v,
                           const int64_t *slots, int64_t T, int64_t num_slots, int64_t width) {
    for (int64_t t = 0; t < T; t++)
        if (slots[t] < 0 || slots[t] >= num_slots) return t + 1;
    for (int64_t t = 0; t < T; t++) {
        memmove(k_cache + slots[t] * width, k + t * width, (size_t)width * sizeof(float));
        memmove(v_cache + slots[t] * width, v + t * width, (size_t)width * sizeof(float));
    }
    return 0;
}

/* ---- sampling primitives ---- */
void argmax_f32(int64_t *out, const float *logits, int64_t B, int64_t V) {
    for (int64_t b = 0; b < B; b++) {
        const float *row = logits + b * V;
        int64_t best = 0;
        for (int64_t i = 0; i < V; i++) {
            if (row[i] != row[i]) { best = i; break; }        /* numpy: the first NaN wins */
            if (row[i] > row[best]) best = i;
        }
        out[b] = best;
    }
}

INLINE void softmax_body(float *out, const float *x, int64_t V, float temperature) {
    float m = -INFINITY;
    for (int64_t i = 0; i < V; i++) {
        m = maxnanf(x[i] / temperature, m);
    }
    v16f acc = v16f_splat(0.0f);
    int64_t i = 0;
    for (; i + 16 <= V; i += 16) {
        v16f e = v16f_exp(v16f_load(x + i) / v16f_splat(temperature) - v16f_splat(m));
        v16f_store(out + i, e);
        acc += e;
    }
    float sum = v16f_hsum(acc);
    for (; i < V; i++) {
        out[i] = expf(x[i] / temperature - m);
        sum += out[i];
    }
    for (i = 0; i < V; i++) out[i] /= sum;
}
#if PYINFER_X86
TARGET_AVX512 static void softmax_avx512(float *o, const float *x, int64_t V, float t) { softmax_body(o, x, V, t); }
#endif
static void softmax_scalar(float *o, const float *x, int64_t V, float t) { softmax_body(o, x, V, t); }

void softmax_f32(float *out, const float *logits, int64_t B, int64_t V, float temperature) {
    int isa = pyinfer_isa();
    for (int64_t b = 0; b < B; b++) {
#if PYINFER_X86
        if (isa >= ISA_AVX512) softmax_avx512(out + b * V, logits + b * V, V, temperature);
        else
#endif
            softmax_scalar(out + b * V, logits + b * V, V, temperature);
    }
    (void)isa;
}
