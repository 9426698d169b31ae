/* Run-time choice of instruction set, thread count, and the STREAM-style bandwidth kernels the
 * benchmark measures its ceilings with. */
#define _GNU_SOURCE
#include <stdatomic.h>
#include "common.h"
#if PYINFER_X86
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* The cap is a process-wide execution setting, like OpenMP's thread count: it never changes a
 * result beyond the tolerance table, only which body computes it. */
static _Atomic int isa_cap = ISA_AMX;
static _Atomic int amx_state = 0;          /* 0 not asked yet, 1 permitted, -1 unavailable */

#if PYINFER_X86
static int amx_available(void) {
    int s = atomic_load(&amx_state);
    if (s != 0) return s > 0;
    unsigned a, b, c, d;
    s = -1;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 24)) && (d & (1u << 25))) {
        /* Linux asks each process to request the AMX tile state (ARCH_REQ_XCOMP_PERM, XTILEDATA). */
        if (syscall(SYS_arch_prctl, 0x1023, 18) == 0) s = 1;
    }
    atomic_store(&amx_state, s);
    return s > 0;
}
#endif

int pyinfer_detected_isa(void) {
#if PYINFER_X86
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("avx512vnni");
    if (avx512) return amx_available() ? ISA_AMX : ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ISA_AVX2;
#endif
    return ISA_SCALAR;
}

int pyinfer_isa(void) {
    int cap = atomic_load(&isa_cap);
    int got = pyinfer_detected_isa();
    return got < cap ? got : cap;
}

int pyinfer_set_isa(int max_level) {
    if (max_level < ISA_SCALAR) max_level = ISA_SCALAR;
    if (max_level > ISA_AMX) max_level = ISA_AMX;
    return atomic_exchange(&isa_cap, max_level);
}

/* The thread count, process-wide. OpenMP's own setting (omp_set_num_threads) belongs to the thread
 * that calls it: a kernel called from another thread (a server's engine thread, a user's worker)
 * would run with every core whatever --threads said. Every parallel region names this count. */
static atomic_int n_threads_set = 0;         /* 0: not set, OpenMP's default */

int pyinfer_num_threads(void) {
#ifdef _OPENMP
    int n = atomic_load(&n_threads_set);
    return n > 0 ? n : omp_get_max_threads();
#else
    return 1;
#endif
}

void pyinfer_set_num_threads(int n) {
    atomic_store(&n_threads_set, n < 1 ? 1 : n);
#ifdef _OPENMP
    omp_set_num_threads(n < 1 ? 1 : n);
#endif
}

/* ---- STREAM-style kernels ---- */

#if PYINFER_X86
TARGET_AVX512 static double read_avx512(const float *a, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(a + i));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(a + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_loadu_ps(a + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_loadu_ps(a + i + 48));
    }
    double s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; i++) s += a[i];
    return s;
}
#endif

static double read_scalar(const float *a, int64_t n) {
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += a[i + j];
    double s = 0;
    for (int j = 0; j < 16; j++) s += acc[j];
    for (; i < n; i++) s += a[i];
    return s;
}

double stream_read_f32(const float *a, int64_t n) {
    double total = 0;
    int isa = pyinfer_isa();
#pragma omp parallel num_threads(pyinfer_num_threads()) reduction(+ : total)
    {
        int64_t lo, hi;
        thread_range(n, 1024, omp_tid(), omp_nt(), &lo, &hi);
#if PYINFER_X86
        if (isa >= ISA_AVX512) total += read_avx512(a + lo, hi - lo);
        else
#endif
            total += read_scalar(a + lo, hi - lo);
    }
    (void)isa;
    return total;
}

INLINE void triad_body(float *a, const float *b, const float *c, float s, int64_t n) {
    for (int64_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}
#if PYINFER_X86
TARGET_AVX512 static void triad_avx512(float *a, const float *b, const float *c, float s, int64_t n) {
    triad_body(a, b, c, s, n);
}
#endif
static void triad_scalar(float *a, const float *b, const float *c, float s, int64_t n) { triad_body(a, b, c, s, n); }

void stream_triad_f32(float *a, const float *b, const float *c, float s, int64_t n) {
    int isa = pyinfer_isa();
#pragma omp parallel num_threads(pyinfer_num_threads())
    {
        int64_t lo, hi;
        thread_range(n, 1024, omp_tid(), omp_nt(), &lo, &hi);
#if PYINFER_X86
        if (isa >= ISA_AVX512) triad_avx512(a + lo, b + lo, c + lo, s, hi - lo);
        else
#endif
            triad_scalar(a + lo, b + lo, c + lo, s, hi - lo);
    }
    (void)isa;
}
