/* The C kernels' public signatures. Read by cffi's cdef (so: plain prototypes only) and
 * included by every kernel file. Destination-passing, sizes always passed explicitly:
 * the Python wrappers in kernels/c_cpu.py check shapes, dtypes and contiguity first. */
#include <stdint.h>

/* out, x: (T, D) float32 row-major; w: (D,). out = w * x / sqrt(mean(x^2) + eps) */
void rmsnorm_f32(float *out, const float *x, const float *w, int64_t T, int64_t D, float eps);
