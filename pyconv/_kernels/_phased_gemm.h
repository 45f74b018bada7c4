/* The GEMM of conv2d_phased (_conv.pyx): the packed tiles of _packed_gemm.h with the
 * im2col matrix left implicit.
 *
 * Row kk of B (tap kk) is a run of the thread's strip at b + off[kk], on the flat
 * index f = r*PW + ow of a band's output (r, ow): padded rows of PW >= OW values. A
 * tile is MR rows of weights by three vectors of W output columns; each vector lies
 * inside one output row, at its own place in B (r*PW + ow) and in the output (r*OW
 * + ow), so the tiles read B in place and write the output rows directly, and the
 * PW - OW columns between rows are never computed. A row's last vector may be partial
 * (masked loads and stores of C). Each output is one sum over k in order, one FMA
 * per tap, as in the packed tiles: the same bits.
 */
#ifndef PYCONV_PHASED_GEMM_H
#define PYCONV_PHASED_GEMM_H

#include "_packed_gemm.h"

/* The tiles, written once for each vector kind S: f8 and d4 (256-bit), f16 and d8
 * (512-bit): PH_T_S the element type, PH_VEC_S the vector, PH_MASKS_S the masks of
 * lanes[v] leading lanes (m0..m2), and the loads, stores and FMA. */
#define PH_LOAD_ROW(S, i)                                                             \
    if (accumulate && (i) < mr) {                                                     \
        c##i##0 = PH_MLOAD_##S(c + (i) * ldc + vc[0], m0);                            \
        c##i##1 = PH_MLOAD_##S(c + (i) * ldc + vc[1], m1);                            \
        c##i##2 = PH_MLOAD_##S(c + (i) * ldc + vc[2], m2);                            \
    } else {                                                                          \
        c##i##0 = c##i##1 = c##i##2 = PH_ZERO_##S();                                  \
    }
#define PH_STORE_ROW(S, i)                                                            \
    if ((i) < mr) {                                                                   \
        PH_MSTORE_##S(c + (i) * ldc + vc[0], m0, c##i##0);                            \
        PH_MSTORE_##S(c + (i) * ldc + vc[1], m1, c##i##1);                            \
        PH_MSTORE_##S(c + (i) * ldc + vc[2], m2, c##i##2);                            \
    }
#define PH_FMA_ROW(S, i, ap)                                                          \
    av = PH_BCAST_##S(ap);                                                            \
    c##i##0 = PH_FMA_##S(av, b0, c##i##0);                                            \
    c##i##1 = PH_FMA_##S(av, b1, c##i##1);                                            \
    c##i##2 = PH_FMA_##S(av, b2, c##i##2);
#define PH_LOAD_B(S)                                                                  \
    const PH_T_##S* bk_ = b + off[kk_];                                               \
    PH_VEC_##S b0 = PH_LOADU_##S(bk_ + vb[0]), b1 = PH_LOADU_##S(bk_ + vb[1]),        \
        b2 = PH_LOADU_##S(bk_ + vb[2]), av;

/* 4 rows (mr <= 4 of them stored): a, one packed A panel */
#define PH_DEFINE_TILE4(NAME, S, ATTR)                                                \
ATTR static void NAME(PH_PARAMS(PH_T_##S), ptrdiff_t mr, int accumulate)              \
{                                                                                     \
    ptrdiff_t kk_;                                                                    \
    PH_VEC_##S c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32;            \
    PH_MASKS_##S                                                                      \
    PH_LOAD_ROW(S, 0) PH_LOAD_ROW(S, 1) PH_LOAD_ROW(S, 2) PH_LOAD_ROW(S, 3)           \
    for (kk_ = 0; kk_ < k; kk_++) {                                                   \
        PH_LOAD_B(S)                                                                  \
        PH_FMA_ROW(S, 0, a) PH_FMA_ROW(S, 1, a + 1) PH_FMA_ROW(S, 2, a + 2)           \
        PH_FMA_ROW(S, 3, a + 3)                                                       \
        a += PG_MR;                                                                   \
    }                                                                                 \
    PH_STORE_ROW(S, 0) PH_STORE_ROW(S, 1) PH_STORE_ROW(S, 2) PH_STORE_ROW(S, 3)       \
}

/* 8 rows: two packed A panels, a and a + k*PG_MR (AVX-512: 24 accumulators) */
#define PH_DEFINE_TILE8(NAME, S, ATTR)                                                \
ATTR static void NAME(PH_PARAMS(PH_T_##S), int accumulate)                            \
{                                                                                     \
    const ptrdiff_t mr = 8;                                                           \
    const PH_T_##S* a1 = a + k * PG_MR;                                               \
    ptrdiff_t kk_;                                                                    \
    PH_VEC_##S c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32;            \
    PH_VEC_##S c40, c41, c42, c50, c51, c52, c60, c61, c62, c70, c71, c72;            \
    PH_MASKS_##S                                                                      \
    PH_LOAD_ROW(S, 0) PH_LOAD_ROW(S, 1) PH_LOAD_ROW(S, 2) PH_LOAD_ROW(S, 3)           \
    PH_LOAD_ROW(S, 4) PH_LOAD_ROW(S, 5) PH_LOAD_ROW(S, 6) PH_LOAD_ROW(S, 7)           \
    for (kk_ = 0; kk_ < k; kk_++) {                                                   \
        PH_LOAD_B(S)                                                                  \
        PH_FMA_ROW(S, 0, a) PH_FMA_ROW(S, 1, a + 1) PH_FMA_ROW(S, 2, a + 2)           \
        PH_FMA_ROW(S, 3, a + 3) PH_FMA_ROW(S, 4, a1) PH_FMA_ROW(S, 5, a1 + 1)         \
        PH_FMA_ROW(S, 6, a1 + 2) PH_FMA_ROW(S, 7, a1 + 3)                             \
        a += PG_MR;                                                                   \
        a1 += PG_MR;                                                                  \
    }                                                                                 \
    PH_STORE_ROW(S, 0) PH_STORE_ROW(S, 1) PH_STORE_ROW(S, 2) PH_STORE_ROW(S, 3)       \
    PH_STORE_ROW(S, 4) PH_STORE_ROW(S, 5) PH_STORE_ROW(S, 6) PH_STORE_ROW(S, 7)       \
}

#define PH_PARAMS(T)                                                                  \
    ptrdiff_t k, const T* a, const T* b, const ptrdiff_t* off, const ptrdiff_t* vb,   \
    T* c, const ptrdiff_t* vc, const int* lanes, ptrdiff_t ldc

#if PG_VECTOR

/* 256-bit vectors: masks of lanes[v] leading lanes as vectors of all-ones lanes */
#define PH_T_f8 float
#define PH_VEC_f8 __m256
#define PH_MLOAD_f8(p, m) _mm256_maskload_ps((p), (m))
#define PH_MSTORE_f8(p, m, v) _mm256_maskstore_ps((p), (m), (v))
#define PH_LOADU_f8(p) _mm256_loadu_ps(p)
#define PH_BCAST_f8(p) _mm256_broadcast_ss(p)
#define PH_FMA_f8(x, y, z) _mm256_fmadd_ps((x), (y), (z))
#define PH_ZERO_f8() _mm256_setzero_ps()
#define PH_MASKS_f8                                                                   \
    const __m256i iota_ = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);                  \
    __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes[0]), iota_);              \
    __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes[1]), iota_);              \
    __m256i m2 = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes[2]), iota_);
#define PH_T_d4 double
#define PH_VEC_d4 __m256d
#define PH_MLOAD_d4(p, m) _mm256_maskload_pd((p), (m))
#define PH_MSTORE_d4(p, m, v) _mm256_maskstore_pd((p), (m), (v))
#define PH_LOADU_d4(p) _mm256_loadu_pd(p)
#define PH_BCAST_d4(p) _mm256_broadcast_sd(p)
#define PH_FMA_d4(x, y, z) _mm256_fmadd_pd((x), (y), (z))
#define PH_ZERO_d4() _mm256_setzero_pd()
#define PH_MASKS_d4                                                                   \
    const __m256i iota_ = _mm256_setr_epi64x(0, 1, 2, 3);                             \
    __m256i m0 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(lanes[0]), iota_);             \
    __m256i m1 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(lanes[1]), iota_);             \
    __m256i m2 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(lanes[2]), iota_);
PH_DEFINE_TILE4(ph_tile_float4, f8, )
PH_DEFINE_TILE4(ph_tile_double4, d4, )

#if PG_WIDE_BUILT
/* 512-bit vectors (taken where pg_wide is set), masks as bit masks */
#define PH_T_f16 float
#define PH_VEC_f16 __m512
#define PH_MLOAD_f16(p, m) _mm512_maskz_loadu_ps((m), (p))
#define PH_MSTORE_f16(p, m, v) _mm512_mask_storeu_ps((p), (m), (v))
#define PH_LOADU_f16(p) _mm512_loadu_ps(p)
#define PH_BCAST_f16(p) _mm512_set1_ps(*(p))
#define PH_FMA_f16(x, y, z) _mm512_fmadd_ps((x), (y), (z))
#define PH_ZERO_f16() _mm512_setzero_ps()
#define PH_MASK_BITS(T, n, W) (T)((n) >= (W) ? (1u << (W)) - 1 : (1u << (n)) - 1)
#define PH_MASKS_f16                                                                  \
    __mmask16 m0 = PH_MASK_BITS(__mmask16, lanes[0], 16);                             \
    __mmask16 m1 = PH_MASK_BITS(__mmask16, lanes[1], 16);                             \
    __mmask16 m2 = PH_MASK_BITS(__mmask16, lanes[2], 16);
#define PH_T_d8 double
#define PH_VEC_d8 __m512d
#define PH_MLOAD_d8(p, m) _mm512_maskz_loadu_pd((m), (p))
#define PH_MSTORE_d8(p, m, v) _mm512_mask_storeu_pd((p), (m), (v))
#define PH_LOADU_d8(p) _mm512_loadu_pd(p)
#define PH_BCAST_d8(p) _mm512_set1_pd(*(p))
#define PH_FMA_d8(x, y, z) _mm512_fmadd_pd((x), (y), (z))
#define PH_ZERO_d8() _mm512_setzero_pd()
#define PH_MASKS_d8                                                                   \
    __mmask8 m0 = PH_MASK_BITS(__mmask8, lanes[0], 8);                                \
    __mmask8 m1 = PH_MASK_BITS(__mmask8, lanes[1], 8);                                \
    __mmask8 m2 = PH_MASK_BITS(__mmask8, lanes[2], 8);
#define PH_AVX512 __attribute__((target("avx512f")))
PH_DEFINE_TILE4(ph_tile_float4w, f16, PH_AVX512)
PH_DEFINE_TILE8(ph_tile_float8w, f16, PH_AVX512)
PH_DEFINE_TILE4(ph_tile_double4w, d8, PH_AVX512)
PH_DEFINE_TILE8(ph_tile_double8w, d8, PH_AVX512)
#define PH_WIDE_FLOAT 16
#define PH_WIDE_DOUBLE 8
#endif /* PG_WIDE_BUILT */

#define PH_VEC_FLOAT 8
#define PH_VEC_DOUBLE 4

#else /* the portable loop: vectors of 8 floats (4 doubles), lane by lane */

#define PH_TILE_PLAIN(T, W)                                                           \
    T t_[PG_MR][3][W];                                                                \
    ptrdiff_t kk_, i_, v_, j_;                                                        \
    for (i_ = 0; i_ < PG_MR; i_++)                                                    \
        for (v_ = 0; v_ < 3; v_++)                                                    \
            for (j_ = 0; j_ < W; j_++)                                                \
                t_[i_][v_][j_] = (accumulate && i_ < mr && j_ < lanes[v_])            \
                    ? c[i_ * ldc + vc[v_] + j_] : 0;                                  \
    for (kk_ = 0; kk_ < k; kk_++)                                                     \
        for (i_ = 0; i_ < PG_MR; i_++)                                                \
            for (v_ = 0; v_ < 3; v_++)                                                \
                for (j_ = 0; j_ < W; j_++)                                            \
                    t_[i_][v_][j_] += a[kk_ * PG_MR + i_] * b[off[kk_] + vb[v_] + j_]; \
    for (i_ = 0; i_ < mr; i_++)                                                       \
        for (v_ = 0; v_ < 3; v_++)                                                    \
            for (j_ = 0; j_ < lanes[v_] && j_ < W; j_++)                              \
                c[i_ * ldc + vc[v_] + j_] = t_[i_][v_][j_];

#define PH_VEC_FLOAT 8
#define PH_VEC_DOUBLE 4
static inline void ph_tile_float4(PH_PARAMS(float), ptrdiff_t mr, int accumulate)
{
    PH_TILE_PLAIN(float, PH_VEC_FLOAT)
}
static inline void ph_tile_double4(PH_PARAMS(double), ptrdiff_t mr, int accumulate)
{
    PH_TILE_PLAIN(double, PH_VEC_DOUBLE)
}
#endif /* PG_VECTOR */

#if !(PG_VECTOR && PG_WIDE_BUILT)
/* never called (pg_wide stays 0) */
#define PH_WIDE_FLOAT PH_VEC_FLOAT
#define PH_WIDE_DOUBLE PH_VEC_DOUBLE
static void ph_tile_float4w(PH_PARAMS(float), ptrdiff_t mr, int accumulate)
{
    ph_tile_float4(k, a, b, off, vb, c, vc, lanes, ldc, mr, accumulate);
}
static void ph_tile_float8w(PH_PARAMS(float), int accumulate)
{
    ph_tile_float4(k, a, b, off, vb, c, vc, lanes, ldc, PG_MR, accumulate);
    ph_tile_float4(k, a + k * PG_MR, b, off, vb, c + PG_MR * ldc, vc, lanes, ldc, PG_MR,
                   accumulate);
}
static void ph_tile_double4w(PH_PARAMS(double), ptrdiff_t mr, int accumulate)
{
    ph_tile_double4(k, a, b, off, vb, c, vc, lanes, ldc, mr, accumulate);
}
static void ph_tile_double8w(PH_PARAMS(double), int accumulate)
{
    ph_tile_double4(k, a, b, off, vb, c, vc, lanes, ldc, PG_MR, accumulate);
    ph_tile_double4(k, a + k * PG_MR, b, off, vb, c + PG_MR * ldc, vc, lanes, ldc, PG_MR,
                    accumulate);
}
#endif

/* Values per vector of the tiles that run now (the strip's slack past its end). */
static inline ptrdiff_t ph_vector_float(void) { return pg_wide ? PH_WIDE_FLOAT : PH_VEC_FLOAT; }
static inline ptrdiff_t ph_vector_double(void)
{
    return pg_wide ? PH_WIDE_DOUBLE : PH_VEC_DOUBLE;
}

/* c[i, (r, ow)] (+)= sum_kk A[i, kk] * b[off[kk] + r*PW + ow] for i < m, r < rows,
 * ow < OW: A packed as ceil(m / PG_MR) panels of k * PG_MR values; output (i, r, ow) at
 * c + i*ldc + r*OW + ow. The band's vectors, row by row, three to a tile (the last
 * tile repeats its last vector: the same values written twice). */
#define PH_GEMM(VECTOR, TILE4, TILE4W, TILE8W)                                        \
    const int wide = pg_wide;                                                         \
    const ptrdiff_t w = VECTOR();                                                     \
    const ptrdiff_t nv = (OW + w - 1) / w, total = rows * nv;                         \
    const ptrdiff_t whole = m / PG_MR, panels = (m + PG_MR - 1) / PG_MR;              \
    ptrdiff_t q0, v, mp, vb[3], vc[3];                                                \
    int lanes[3];                                                                     \
    for (q0 = 0; q0 < total; q0 += 3) {                                               \
        for (v = 0; v < 3; v++) {                                                     \
            ptrdiff_t q = q0 + v < total ? q0 + v : total - 1;                        \
            ptrdiff_t r = q / nv, j = (q - r * nv) * w;                               \
            vb[v] = r * PW + j;                                                       \
            vc[v] = r * OW + j;                                                       \
            lanes[v] = (int)(OW - j < w ? OW - j : w);                                \
        }                                                                             \
        mp = 0;                                                                       \
        if (wide && pg_tall)                                                          \
            for (; mp + 2 <= whole; mp += 2)                                          \
                TILE8W(k, a + mp * k * PG_MR, b, off, vb, c + mp * PG_MR * ldc, vc,   \
                       lanes, ldc, accumulate);                                       \
        for (; mp < panels; mp++) {                                                   \
            ptrdiff_t mr = m - mp * PG_MR < PG_MR ? m - mp * PG_MR : PG_MR;           \
            (wide ? TILE4W : TILE4)(k, a + mp * k * PG_MR, b, off, vb,                \
                                    c + mp * PG_MR * ldc, vc, lanes, ldc, mr, accumulate); \
        }                                                                             \
    }

static void ph_gemm_float(ptrdiff_t k, const float* a, ptrdiff_t m, const float* b,
                          const ptrdiff_t* off, ptrdiff_t rows, ptrdiff_t OW, ptrdiff_t PW,
                          float* c, ptrdiff_t ldc, int accumulate)
{
    PH_GEMM(ph_vector_float, ph_tile_float4, ph_tile_float4w, ph_tile_float8w)
}

static void ph_gemm_double(ptrdiff_t k, const double* a, ptrdiff_t m, const double* b,
                           const ptrdiff_t* off, ptrdiff_t rows, ptrdiff_t OW, ptrdiff_t PW,
                           double* c, ptrdiff_t ldc, int accumulate)
{
    PH_GEMM(ph_vector_double, ph_tile_double4, ph_tile_double4w, ph_tile_double8w)
}

#endif /* PYCONV_PHASED_GEMM_H */
