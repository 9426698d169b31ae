/* Portable SIMD math on GCC vector types: written once, compiled per instruction set by inlining
 * into functions with target attributes (16 floats are one zmm, two ymm or four xmm registers). */
#ifndef PYINFER_VECMATH_H
#define PYINFER_VECMATH_H
#include <stdint.h>
#include <string.h>

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

#define VINLINE static inline __attribute__((always_inline))

VINLINE v16f v16f_splat(float a) { return (v16f){a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}; }
VINLINE v16f v16f_load(const float *p) { v16f v; memcpy(&v, p, sizeof v); return v; }
VINLINE void v16f_store(float *p, v16f v) { memcpy(p, &v, sizeof v); }
VINLINE v16f v16f_select(v16i mask, v16f a, v16f b) { return (v16f)((mask & (v16i)a) | (~mask & (v16i)b)); }
/* max and min return b when either operand is NaN (as x86 maxps). A running maximum may thus skip
 * a NaN score; the NaN still reaches the output through exp(s - m), which keeps NaN (v16f_exp), so
 * the row's weights and sum are NaN (docs/numerics.md). maxnanf: NaN from either operand. */
VINLINE v16f v16f_max(v16f a, v16f b) { return v16f_select(a > b, a, b); }
VINLINE v16f v16f_min(v16f a, v16f b) { return v16f_select(a < b, a, b); }
VINLINE float maxnanf(float a, float b) { return (a > b || a != a) ? a : b; }
VINLINE float v16f_hsum(v16f v) {        /* a shuffle tree: 4 shuffles and adds */
    v += __builtin_shuffle(v, (v16i){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
    v += __builtin_shuffle(v, (v16i){4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3});
    v += __builtin_shuffle(v, (v16i){2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1});
    v += __builtin_shuffle(v, (v16i){1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0});
    return v[0];
}
VINLINE float v16f_hmax(v16f v) {
    float m = v[0];
    for (int i = 1; i < 16; i++) m = v[i] > m ? v[i] : m;
    return m;
}

/* exp(x) for float32, relative error ~2 ulp on [-87, 88]; below -87.3 gives ~0 and from -88 on (so
 * -inf: a masked score has no weight) exactly 0 (2^n underflows to 0 at n = -127); above 88 is
 * clamped; NaN gives NaN (each clamp keeps x when a comparison with it is false).
 * Cody-Waite range reduction x = n ln2 + r, degree-6 polynomial, scale by 2^n through the exponent. */
VINLINE v16f v16f_exp(v16f x) {
    x = v16f_select(x < v16f_splat(-88.0f), v16f_splat(-88.0f), x);
    x = v16f_select(x > v16f_splat(88.3f), v16f_splat(88.3f), x);
    const v16f magic = v16f_splat(12582912.0f);                 /* 1.5 * 2^23: round to nearest */
    v16f t = x * v16f_splat(1.44269504088896341f) + magic;
    v16f n = t - magic;
    v16f r = x - n * v16f_splat(0.693359375f);
    r = r - n * v16f_splat(-2.12194440e-4f);
    v16f p = v16f_splat(1.9875691500e-4f);
    p = p * r + v16f_splat(1.3981999507e-3f);
    p = p * r + v16f_splat(8.3334519073e-3f);
    p = p * r + v16f_splat(4.1665795894e-2f);
    p = p * r + v16f_splat(1.6666665459e-1f);
    p = p * r + v16f_splat(5.0000001201e-1f);
    p = p * (r * r) + r + v16f_splat(1.0f);
    v16i ni = __builtin_convertvector(n, v16i);
    v16i bits = (ni + 127) << 23;
    v16f scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* max over the 16 lanes by a shuffle tree (v16f_hmax's result, 4 shuffles instead of 15 extracts) */
VINLINE float v16f_hmax_tree(v16f v) {
    v = v16f_max(v, __builtin_shuffle(v, (v16i){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7}));
    v = v16f_max(v, __builtin_shuffle(v, (v16i){4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3}));
    v = v16f_max(v, __builtin_shuffle(v, (v16i){2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1}));
    v = v16f_max(v, __builtin_shuffle(v, (v16i){1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0}));
    return v[0];
}

/* 16 horizontal sums at once: lane j of the result is the sum of a[j]'s lanes. A transpose-and-add
 * tree (halves, quarters, pairs, singles): 30 two-source shuffles and 15 adds instead of 16 hsums. */
VINLINE v16f v16f_sum16(const v16f a[16]) {
    v16f b[8], c[4], d[2];
    for (int j = 0; j < 8; j++)          /* lanes 0-7: a[j], 8-15: a[j + 8] */
        b[j] = __builtin_shuffle(a[j], a[j + 8], (v16i){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}) +
               __builtin_shuffle(a[j], a[j + 8], (v16i){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
    for (int j = 0; j < 4; j++)          /* lanes 4i..4i+3: a[j + 4i] */
        c[j] = __builtin_shuffle(b[j], b[j + 4], (v16i){0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27}) +
               __builtin_shuffle(b[j], b[j + 4], (v16i){4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31});
    for (int j = 0; j < 2; j++)          /* lanes 2i, 2i+1: a[j + 2i] */
        d[j] = __builtin_shuffle(c[j], c[j + 2], (v16i){0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29}) +
               __builtin_shuffle(c[j], c[j + 2], (v16i){2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31});
    return __builtin_shuffle(d[0], d[1], (v16i){0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}) +
           __builtin_shuffle(d[0], d[1], (v16i){1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31});
}

/* 8 floats: one ymm register, two xmm ones. Bodies for AVX2 and SSE use these where arrays of v16f
 * would live in memory (GCC lowers a 64-byte vector it has no register for through the stack). */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
VINLINE v8f v8f_load(const float *p) { v8f v; memcpy(&v, p, sizeof v); return v; }
VINLINE void v8f_store(float *p, v8f v) { memcpy(p, &v, sizeof v); }
VINLINE float v8f_hsum(v8f v) {
    v += __builtin_shuffle(v, (v8i){4, 5, 6, 7, 0, 1, 2, 3});
    v += __builtin_shuffle(v, (v8i){2, 3, 0, 1, 2, 3, 0, 1});
    v += __builtin_shuffle(v, (v8i){1, 0, 1, 0, 1, 0, 1, 0});
    return v[0];
}

VINLINE v8f v8f_splat(float a) { return (v8f){a, a, a, a, a, a, a, a}; }
VINLINE v8f v8f_select(v8i mask, v8f a, v8f b) { return (v8f)((mask & (v8i)a) | (~mask & (v8i)b)); }
VINLINE v8f v8f_max(v8f a, v8f b) { return v8f_select(a > b, a, b); }
VINLINE v8f v8f_min(v8f a, v8f b) { return v8f_select(a < b, a, b); }
VINLINE float v8f_hmax(v8f v) {
    v = v8f_max(v, __builtin_shuffle(v, (v8i){4, 5, 6, 7, 0, 1, 2, 3}));
    v = v8f_max(v, __builtin_shuffle(v, (v8i){2, 3, 0, 1, 2, 3, 0, 1}));
    v = v8f_max(v, __builtin_shuffle(v, (v8i){1, 0, 1, 0, 1, 0, 1, 0}));
    return v[0];
}
/* v16f_exp on 8 lanes (the same constants, the same results lane for lane) */
VINLINE v8f v8f_exp(v8f x) {
    x = v8f_select(x < v8f_splat(-88.0f), v8f_splat(-88.0f), x);
    x = v8f_select(x > v8f_splat(88.3f), v8f_splat(88.3f), x);
    const v8f magic = v8f_splat(12582912.0f);
    v8f t = x * v8f_splat(1.44269504088896341f) + magic;
    v8f n = t - magic;
    v8f r = x - n * v8f_splat(0.693359375f);
    r = r - n * v8f_splat(-2.12194440e-4f);
    v8f p = v8f_splat(1.9875691500e-4f);
    p = p * r + v8f_splat(1.3981999507e-3f);
    p = p * r + v8f_splat(8.3334519073e-3f);
    p = p * r + v8f_splat(4.1665795894e-2f);
    p = p * r + v8f_splat(1.6666665459e-1f);
    p = p * r + v8f_splat(5.0000001201e-1f);
    p = p * (r * r) + r + v8f_splat(1.0f);
    v8i ni = __builtin_convertvector(n, v8i);
    v8i bits = (ni + 127) << 23;
    v8f scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}
/* in place: r[d] lane j = r[j] lane d (the AVX 8x8 transpose: unpack, shufps, 128-bit halves) */
VINLINE void v8f_transpose8(v8f r[8]) {
    const v8i lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
    const v8i a = {0, 1, 8, 9, 4, 5, 12, 13}, b = {2, 3, 10, 11, 6, 7, 14, 15};
    const v8i h0 = {0, 1, 2, 3, 8, 9, 10, 11}, h1 = {4, 5, 6, 7, 12, 13, 14, 15};
    v8f t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = __builtin_shuffle(r[2 * i], r[2 * i + 1], lo);
        t[2 * i + 1] = __builtin_shuffle(r[2 * i], r[2 * i + 1], hi);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i] = __builtin_shuffle(t[4 * i], t[4 * i + 2], a);
        u[4 * i + 1] = __builtin_shuffle(t[4 * i], t[4 * i + 2], b);
        u[4 * i + 2] = __builtin_shuffle(t[4 * i + 1], t[4 * i + 3], a);
        u[4 * i + 3] = __builtin_shuffle(t[4 * i + 1], t[4 * i + 3], b);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = __builtin_shuffle(u[i], u[i + 4], h0);
        r[i + 4] = __builtin_shuffle(u[i], u[i + 4], h1);
    }
}
#endif
