/* RMSNorm, as llama2.c's run.c computes it, one row per token. */
#include <math.h>
#include "pyinfer_api.h"

void rmsnorm_f32(float *out, const float *x, const float *w, int64_t T, int64_t D, float eps) {
    if (T <= 0 || D <= 0) return;
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * D;   /* (D,) */
        float *outr = out + t * D;     /* (D,) */
        float ss = 0.0f;
        for (int64_t i = 0; i < D; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)D + eps);
        for (int64_t i = 0; i < D; i++) outr[i] = w[i] * (inv * xr[i]);
    }
}
