/* Int8 GEMM on AMX (Sapphire Rapids and later): the prefill path of the W8A8 and W4A8 matmuls.
 *
 * out (T, N) = sum over groups g of xs[t, g] s[n, g] (xq[t, g-block] . w[n, g-block]), with xq the
 * int8 activations (T_pad, K) and w int8: the weights themselves (W8A8) or u - z (W4A8, in [-15, 15]).
 * Each thread packs one 16-row panel of W at a time into AMX's B layout (per K chunk of KB bytes:
 * KB/4 rows of [16 columns x 4 bytes]), then walks the token blocks: per group, tdpbssd accumulates a
 * 16 x 16 int32 tile over the group's chunks, which is stored, converted and scaled into 16 float
 * rows held in zmm registers. Groups of 32 use 32-byte chunks; G % 64 == 0 uses 64-byte chunks. */
#include "common.h"
#include "amx.h"

#if PYINFER_X86
typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config_t;

/* tiles: 0-3 = C (16 x 16 int32: token block i x panel j at 2i + j), 4-5 = A (16 tokens x KB bytes),
 * 6-7 = B (KB/4 x 64 bytes, one per 16-column panel) */
TARGET_AMX static void amx_configure(int KB) {
    tile_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int i = 0; i < 4; i++) { cfg.rows[i] = 16; cfg.colsb[i] = 64; }
    for (int i = 4; i < 6; i++) { cfg.rows[i] = 16; cfg.colsb[i] = (uint16_t)KB; }
    for (int i = 6; i < 8; i++) { cfg.rows[i] = (uint8_t)(KB / 4); cfg.colsb[i] = 64; }
    _tile_loadconfig(&cfg);
}

/* w rows [n0, n0 + 16) (int8, row stride K, zero past N) -> bp: per chunk c, (KB/4, 16, 4) */
static void pack_b_int8(int8_t *bp, const int8_t *w, int64_t N, int64_t n0, int64_t K, int KB) {
    for (int64_t c = 0; c < K / KB; c++) {
        int8_t *dst = bp + c * KB * 16;
        for (int r = 0; r < KB / 4; r++)
            for (int j = 0; j < 16; j++) {
                int64_t n = n0 + j;
                int8_t *d = dst + (r * 16 + j) * 4;
                if (n < N) memcpy(d, w + n * K + c * KB + 4 * r, 4);
                else memset(d, 0, 4);
            }
    }
}

/* int4 rows -> u - z as int8 in the same packed layout (nibble layout of pyinfer/quant.py) */
static void pack_b_int4(int8_t *bp, int8_t *row, const uint8_t *qw, const uint8_t *zeros, int64_t N, int64_t n0,
                        int64_t K, int64_t G, int KB) {
    int64_t ng = K / G, half = G / 2;
    int8_t *rows = row;                                   /* (16, K) scratch: u - z per weight */
    for (int j = 0; j < 16; j++) {
        int64_t n = n0 + j;
        int8_t *dst = rows + j * K;
        if (n >= N) { memset(dst, 0, (size_t)K); continue; }
        const uint8_t *q = qw + n * (K / 2);
        for (int64_t g = 0; g < ng; g++) {
            int z = zeros ? zeros[n * ng + g] : 8;
            for (int64_t i = 0; i < half; i++) {
                uint8_t b = q[g * half + i];
                dst[g * G + i] = (int8_t)((b & 15) - z);
                dst[g * G + half + i] = (int8_t)((b >> 4) - z);
            }
        }
    }
    pack_b_int8(bp, rows, 16, 0, K, KB);
}

/* 32 columns (two packed panels bp, bp + 16 K) against every block of 32 tokens. facc: (4, 16, 16) floats */
TARGET_AMX static void amx_panel_pair(float *out, const int8_t *xq, const float *xs, const int8_t *bp, const float *wsT,
                                      int64_t T, int64_t T_pad, int64_t N, int64_t n0, int64_t K, int64_t G, int KB,
                                      float *facc, int32_t *ctile) {
    int64_t ng = K / G, per = G / KB, N_pad = cdiv(N, 32) * 32;
    const int8_t *bp1 = bp + 16 * K;
    for (int64_t m0 = 0; m0 < T_pad; m0 += 32) {
        memset(facc, 0, 4 * 256 * sizeof(float));
        const int8_t *a0 = xq + m0 * K, *a1 = a0 + 16 * K;
        for (int64_t g = 0; g < ng; g++) {
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            for (int64_t c = g * per; c < (g + 1) * per; c++) {
                _tile_loadd(4, a0 + c * KB, K);
                _tile_loadd(5, a1 + c * KB, K);
                _tile_loadd(6, bp + c * KB * 16, 64);
                _tile_loadd(7, bp1 + c * KB * 16, 64);
                _tile_dpbssd(0, 4, 6);
                _tile_dpbssd(1, 4, 7);
                _tile_dpbssd(2, 5, 6);
                _tile_dpbssd(3, 5, 7);
            }
            _tile_stored(0, ctile, 64);
            _tile_stored(1, ctile + 256, 64);
            _tile_stored(2, ctile + 512, 64);
            _tile_stored(3, ctile + 768, 64);
            const float *wrow = wsT + g * N_pad + n0;                         /* s[n0..n0+31, g] */
            for (int i = 0; i < 4; i++) {
                __m512 ws = _mm512_loadu_ps(wrow + 16 * (i & 1));
                const float *xsr = xs + (m0 + 16 * (i >> 1)) * ng + g;
                float *f = facc + i * 256;
                const int32_t *ct = ctile + i * 256;
                for (int r = 0; r < 16; r++) {
                    __m512 sc = _mm512_mul_ps(ws, _mm512_set1_ps(xsr[r * ng]));
                    _mm512_storeu_ps(f + 16 * r, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(ct + 16 * r)),
                                                                 sc, _mm512_loadu_ps(f + 16 * r)));
                }
            }
        }
        for (int i = 0; i < 4; i++) {
            int64_t cn = n0 + 16 * (i & 1), cm = m0 + 16 * (i >> 1);
            if (cn >= N) continue;
            __mmask16 cols = N - cn >= 16 ? 0xFFFF : (__mmask16)((1u << (N - cn)) - 1);
            for (int r = 0; r < 16 && cm + r < T; r++)
                _mm512_mask_storeu_ps(out + (cm + r) * N + cn, cols, _mm512_loadu_ps(facc + i * 256 + 16 * r));
        }
    }
}

/* one thread's share of the panels (an orphaned omp for: it binds to the caller's parallel region) */
TARGET_AMX static void amx_thread(float *out, const int8_t *xq, const float *xs, const void *w, const uint8_t *zeros,
                                  const float *wsT, int8_t *bp, int8_t *rows, int64_t T, int64_t T_pad, int64_t N,
                                  int64_t K, int64_t G, int KB, int weight_bits) {
    float facc[4 * 256];
    int32_t ctile[4 * 256];
    amx_configure(KB);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < cdiv(N, 32); p++) {
        for (int half = 0; half < 2; half++) {
            if (weight_bits == 8) pack_b_int8(bp + half * 16 * K, w, N, p * 32 + 16 * half, K, KB);
            else pack_b_int4(bp + half * 16 * K, rows, w, zeros, N, p * 32 + 16 * half, K, G, KB);
        }
        amx_panel_pair(out, xq, xs, bp, wsT, T, T_pad, N, p * 32, K, G, KB, facc, ctile);
    }
    _tile_release();
}

int amx_matmul_i8(float *out, const int8_t *xq, const float *xs, const void *w, const float *scales,
                  const uint8_t *zeros, int64_t T, int64_t T_pad, int64_t N, int64_t K, int64_t G, int weight_bits) {
    int KB = G % 64 == 0 ? 64 : 32;
    if (G % 32 || pyinfer_isa() < ISA_AMX) return 0;
    int64_t ng = K / G;
    int64_t N_pad = cdiv(N, 32) * 32;
    float *wsT = calloc((size_t)(ng * N_pad), sizeof(float));               /* (ng, N_pad): scales by group */
    if (!wsT) return 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t g = 0; g < ng; g++) wsT[g * N_pad + n] = scales[n * ng + g];
    int ok = 1;
#pragma omp parallel if (T * N * K >= 8 * PAR_MIN_WORK)
    {
        int8_t *bp = malloc((size_t)(32 * K));
        int8_t *rows = weight_bits == 4 ? malloc((size_t)(16 * K)) : NULL;
        if (!bp || (weight_bits == 4 && !rows)) {
#pragma omp atomic write
            ok = 0;
        } else {
            amx_thread(out, xq, xs, w, zeros, wsT, bp, rows, T, T_pad, N, K, G, KB, weight_bits);
        }
        free(bp);
        free(rows);
    }
    free(wsT);
    return ok;
}
#else
int amx_matmul_i8(float *out, const int8_t *xq, const float *xs, const void *w, const float *scales,
                  const uint8_t *zeros, int64_t T, int64_t T_pad, int64_t N, int64_t K, int64_t G, int weight_bits) {
    return 0;
}
#endif
