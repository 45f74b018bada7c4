/* Packed GEMM tiles: c[MR x NR] = a_panel . b_panel, register-blocked for AVX2/FMA.
 *
 * The operands are packed so that the inner loop reads both sequentially:
 *   a_panel[k * MR + i]  = A[i, k]   (MR rows of the weights, k-major)
 *   b_panel[k * NR + j]  = B[k, j]   (NR output columns, k-major)
 * (the *_rows variants read B's rows in place, ldb apart, instead of a b_panel).
 * Each output of a tile is one sum over k in increasing order, accumulated in one
 * register lane: the result does not depend on tiling or on the thread count.
 *
 * With AVX2 and FMA the tile is 4 x 24 floats (4 x 12 doubles): 12 accumulators,
 * three vector loads and four broadcasts per k; on CPUs with AVX-512, 4 x 48 and
 * 8 x 48 (below). The weights' rows are few (64 is
 * typical) and the columns many, which is the shape OpenBLAS serves worst (about 30
 * GFLOP/s of a 39.5 GFLOP/s core here, against 39 for this tile). Without AVX2 the
 * same function is a plain loop, correct but slow: callers use it only when
 * PG_VECTOR is 1.
 */
#ifndef PYCONV_PACKED_GEMM_H
#define PYCONV_PACKED_GEMM_H

#include <stddef.h>
#include <string.h>

#define PG_MR 4
#define PG_NR_FLOAT 24
#define PG_NR_DOUBLE 12

#if defined(__AVX2__) && (defined(__FMA__) || defined(_MSC_VER))
#include <immintrin.h>
#define PG_VECTOR 1
#else
#define PG_VECTOR 0
#endif

/* Copy the valid mr x nr corner of a full tile held in t (row stride nr_full). */
#define PG_STORE_EDGE(T, t, nr_full, c, ldc, mr, nr)                      \
    do {                                                                  \
        ptrdiff_t i_, j_;                                                 \
        for (i_ = 0; i_ < (mr); i_++)                                     \
            for (j_ = 0; j_ < (nr); j_++)                                 \
                (c)[i_ * (ldc) + j_] = (t)[i_ * (nr_full) + j_];          \
    } while (0)

#if PG_VECTOR

/* One row i of a tile's accumulators (ci0..ci2, three vectors of W values): loaded
 * from p, updated with row ap of A against B's vectors b0..b2, stored to p. */
#define PG_ROW_LOAD(LOAD, W, i, p)                                                    \
    c##i##0 = LOAD(p); c##i##1 = LOAD((p) + W); c##i##2 = LOAD((p) + 2 * W);
#define PG_ROW_FMA(BCAST, FMA, i, ap)                                                 \
    av = BCAST(ap);                                                                   \
    c##i##0 = FMA(av, b0, c##i##0); c##i##1 = FMA(av, b1, c##i##1);                   \
    c##i##2 = FMA(av, b2, c##i##2);
#define PG_ROW_STORE(STORE, W, i, p)                                                  \
    STORE(p, c##i##0); STORE((p) + W, c##i##1); STORE((p) + 2 * W, c##i##2);

#define PG_TILE_VEC(T, VEC, LOAD, STORE, BCAST, FMA, ZERO, W)                        \
    T t_[PG_MR * 3 * W];                                                              \
    const T* s_;                                                                      \
    T* d_;                                                                            \
    ptrdiff_t ld_, kk_, i_, j_;                                                       \
    int edge_ = !(mr == PG_MR && nr == 3 * W);                                        \
    VEC c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32;                   \
    if (edge_) { d_ = t_; ld_ = 3 * W; }                                              \
    else { d_ = c; ld_ = ldc; }                                                       \
    if (accumulate) {                                                                 \
        if (edge_)                                                                    \
            for (i_ = 0; i_ < PG_MR; i_++)                                            \
                for (j_ = 0; j_ < 3 * W; j_++)                                        \
                    t_[i_ * 3 * W + j_] = (i_ < mr && j_ < nr) ? c[i_ * ldc + j_] : 0; \
        s_ = d_;                                                                      \
        PG_ROW_LOAD(LOAD, W, 0, s_) PG_ROW_LOAD(LOAD, W, 1, s_ + ld_)                 \
        PG_ROW_LOAD(LOAD, W, 2, s_ + 2 * ld_) PG_ROW_LOAD(LOAD, W, 3, s_ + 3 * ld_)   \
    } else {                                                                          \
        c00 = c01 = c02 = c10 = c11 = c12 = c20 = c21 = c22 = c30 = c31 = c32 = ZERO(); \
    }                                                                                 \
    for (kk_ = 0; kk_ < k; kk_++) {                                                   \
        VEC b0 = LOAD(b), b1 = LOAD(b + W), b2 = LOAD(b + 2 * W), av;                 \
        PG_ROW_FMA(BCAST, FMA, 0, a) PG_ROW_FMA(BCAST, FMA, 1, a + 1)                 \
        PG_ROW_FMA(BCAST, FMA, 2, a + 2) PG_ROW_FMA(BCAST, FMA, 3, a + 3)             \
        a += PG_MR;                                                                   \
        b += ldb;                                                                     \
    }                                                                                 \
    PG_ROW_STORE(STORE, W, 0, d_) PG_ROW_STORE(STORE, W, 1, d_ + ld_)                 \
    PG_ROW_STORE(STORE, W, 2, d_ + 2 * ld_) PG_ROW_STORE(STORE, W, 3, d_ + 3 * ld_)   \
    if (edge_) PG_STORE_EDGE(T, t_, 3 * W, c, ldc, mr, nr);

/* c[i, j] (+)= sum_k a[k*MR + i] * b[k*NR + j] for i < mr <= MR, j < nr <= NR; with
 * `accumulate` the sum starts from c's values (a k-range continued), else from 0. */
static inline void pg_tile_float(ptrdiff_t k, const float* a, const float* b, float* c,
                                 ptrdiff_t ldc, ptrdiff_t mr, ptrdiff_t nr,
                                 int accumulate)
{
    const ptrdiff_t ldb = PG_NR_FLOAT;
    PG_TILE_VEC(float, __m256, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_broadcast_ss,
                 _mm256_fmadd_ps, _mm256_setzero_ps, 8)
}

static inline void pg_tile_double(ptrdiff_t k, const double* a, const double* b,
                                  double* c, ptrdiff_t ldc, ptrdiff_t mr, ptrdiff_t nr,
                                  int accumulate)
{
    const ptrdiff_t ldb = PG_NR_DOUBLE;
    PG_TILE_VEC(double, __m256d, _mm256_loadu_pd, _mm256_storeu_pd,
                 _mm256_broadcast_sd, _mm256_fmadd_pd, _mm256_setzero_pd, 4)
}

/* The same tiles reading B's rows in place, ldb apart: no packing, for full tiles
 * whose B rows are cheap to reach (measured 3% faster than packing on a 1x1 layer). */
static inline void pg_tile_float_rows(ptrdiff_t k, const float* a, const float* b,
                                      ptrdiff_t ldb, float* c, ptrdiff_t ldc,
                                      int accumulate)
{
    const ptrdiff_t mr = PG_MR, nr = PG_NR_FLOAT;
    PG_TILE_VEC(float, __m256, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_broadcast_ss,
                 _mm256_fmadd_ps, _mm256_setzero_ps, 8)
}

static inline void pg_tile_double_rows(ptrdiff_t k, const double* a, const double* b,
                                       ptrdiff_t ldb, double* c, ptrdiff_t ldc,
                                       int accumulate)
{
    const ptrdiff_t mr = PG_MR, nr = PG_NR_DOUBLE;
    PG_TILE_VEC(double, __m256d, _mm256_loadu_pd, _mm256_storeu_pd,
                 _mm256_broadcast_sd, _mm256_fmadd_pd, _mm256_setzero_pd, 4)
}

/* Two whole column panels at once in 512-bit vectors, for CPUs with AVX-512 (taken
 * at run time where pg_wide is set; pg_set_wide, called from Python after its CPU
 * check): a 4 x 48-float (4 x 24-double) tile, B's rows read in place. Each lane
 * runs the same FMAs in the same order as in the 256-bit tiles: the same bits.
 * Measured on one core of a Xeon with AVX-512, a 64-row GEMM over 3120 columns:
 * 88-97 GFLOP/s for the 256-bit tiles, 147-180 for these. */
#if defined(__GNUC__) && defined(__x86_64__)
#define PG_WIDE_BUILT 1
/* one broadcast from memory, as the 256-bit tiles' _mm256_broadcast_s* */
#define PG_BCAST512_PS(p) _mm512_set1_ps(*(p))
#define PG_BCAST512_PD(p) _mm512_set1_pd(*(p))

__attribute__((target("avx512f")))
static void pg_tile_float_rows2(ptrdiff_t k, const float* a, const float* b,
                                ptrdiff_t ldb, float* c, ptrdiff_t ldc, int accumulate)
{
    const ptrdiff_t mr = PG_MR, nr = 3 * 16;
    PG_TILE_VEC(float, __m512, _mm512_loadu_ps, _mm512_storeu_ps, PG_BCAST512_PS,
                 _mm512_fmadd_ps, _mm512_setzero_ps, 16)
}

__attribute__((target("avx512f")))
static void pg_tile_double_rows2(ptrdiff_t k, const double* a, const double* b,
                                 ptrdiff_t ldb, double* c, ptrdiff_t ldc, int accumulate)
{
    const ptrdiff_t mr = PG_MR, nr = 3 * 8;
    PG_TILE_VEC(double, __m512d, _mm512_loadu_pd, _mm512_storeu_pd, PG_BCAST512_PD,
                 _mm512_fmadd_pd, _mm512_setzero_pd, 8)
}
/* the k loop of PG_TILE8_WIDE, B's row kk at BROW and the row to prefetch at PFROW */
#define PG_TILE8_LOOP(T, VEC, LOAD, STORE, BCAST, FMA, W, BROW, PFROW)                \
    for (kk_ = 0; kk_ < k; kk_++) {                                                   \
        const T* b_ = (BROW);                                                         \
        VEC b0 = LOAD(b_), b1 = LOAD(b_ + W), b2 = LOAD(b_ + 2 * W), av;              \
        if (pk_) {                                                                    \
            STORE(pk_, b0); STORE(pk_ + W, b1); STORE(pk_ + 2 * W, b2);               \
            pk_ += 3 * W;                                                             \
        }                                                                             \
        PG_ROW_FMA(BCAST, FMA, 0, a) PG_ROW_FMA(BCAST, FMA, 1, a + 1)                 \
        PG_ROW_FMA(BCAST, FMA, 2, a + 2) PG_ROW_FMA(BCAST, FMA, 3, a + 3)             \
        PG_ROW_FMA(BCAST, FMA, 4, a1) PG_ROW_FMA(BCAST, FMA, 5, a1 + 1)               \
        PG_ROW_FMA(BCAST, FMA, 6, a1 + 2) PG_ROW_FMA(BCAST, FMA, 7, a1 + 3)           \
        _mm_prefetch((const char*)(PFROW), _MM_HINT_T1);                              \
        a += PG_MR;                                                                   \
        a1 += PG_MR;                                                                  \
    }
/* Two whole A panels by two whole B panels: an 8 x 48-float (8 x 24-double) tile in
 * 24 of the 32 AVX-512 registers. Per k it loads B's three vectors once for eight
 * rows (the 4-row tile: once for four), which halves B's reads from L1 per
 * multiply-add. a1 is the next A panel (a + k * PG_MR in a packed block). Each lane
 * runs the same FMAs in the same order as the tiles above: the same bits.
 * boff (NULL: rows ldb apart): row kk of B at b + boff[kk]. pf (NULL: none): one
 * address per k, pf + k * pf_ld (with boff: pf + boff[k]; in values of T), is
 * prefetched into L2, so that B's rows that a later tile reads from memory arrive
 * while this one computes. pack (NULL: none): B's rows are also stored there,
 * k-major (3W values per k), for the next weight panels to read. */
#define PG_TILE8_WIDE(T, VEC, LOAD, STORE, BCAST, FMA, ZERO, W)                       \
    const T* a1 = a + k * PG_MR;                                                      \
    const T* pf_ = pf ? pf : b;                                                       \
    ptrdiff_t pf_ld_ = pf ? pf_ld : ldb;                                              \
    T* pk_ = pack;                                                                    \
    ptrdiff_t kk_;                                                                    \
    VEC c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32;                   \
    VEC c40, c41, c42, c50, c51, c52, c60, c61, c62, c70, c71, c72;                   \
    if (accumulate) {                                                                 \
        PG_ROW_LOAD(LOAD, W, 0, c) PG_ROW_LOAD(LOAD, W, 1, c + ldc)                   \
        PG_ROW_LOAD(LOAD, W, 2, c + 2 * ldc) PG_ROW_LOAD(LOAD, W, 3, c + 3 * ldc)     \
        PG_ROW_LOAD(LOAD, W, 4, c + 4 * ldc) PG_ROW_LOAD(LOAD, W, 5, c + 5 * ldc)     \
        PG_ROW_LOAD(LOAD, W, 6, c + 6 * ldc) PG_ROW_LOAD(LOAD, W, 7, c + 7 * ldc)     \
    } else {                                                                          \
        c00 = c01 = c02 = c10 = c11 = c12 = c20 = c21 = c22 = c30 = c31 = c32 = ZERO(); \
        c40 = c41 = c42 = c50 = c51 = c52 = c60 = c61 = c62 = c70 = c71 = c72 = ZERO(); \
    }                                                                                 \
    if (boff) {                                                                       \
        PG_TILE8_LOOP(T, VEC, LOAD, STORE, BCAST, FMA, W, b + boff[kk_],              \
                      pf_ + boff[kk_])                                                \
    } else {                                                                          \
        PG_TILE8_LOOP(T, VEC, LOAD, STORE, BCAST, FMA, W, b + kk_ * ldb,              \
                      pf_ + kk_ * pf_ld_)                                             \
    }                                                                                 \
    PG_ROW_STORE(STORE, W, 0, c) PG_ROW_STORE(STORE, W, 1, c + ldc)                   \
    PG_ROW_STORE(STORE, W, 2, c + 2 * ldc) PG_ROW_STORE(STORE, W, 3, c + 3 * ldc)     \
    PG_ROW_STORE(STORE, W, 4, c + 4 * ldc) PG_ROW_STORE(STORE, W, 5, c + 5 * ldc)     \
    PG_ROW_STORE(STORE, W, 6, c + 6 * ldc) PG_ROW_STORE(STORE, W, 7, c + 7 * ldc)

__attribute__((target("avx512f")))
static void pg_tile_float_rows4(ptrdiff_t k, const float* a, const float* b,
                                ptrdiff_t ldb, float* c, ptrdiff_t ldc, int accumulate,
                                const float* pf, ptrdiff_t pf_ld, float* pack,
                                const ptrdiff_t* boff)
{
    PG_TILE8_WIDE(float, __m512, _mm512_loadu_ps, _mm512_storeu_ps, PG_BCAST512_PS,
                  _mm512_fmadd_ps, _mm512_setzero_ps, 16)
}

__attribute__((target("avx512f")))
static void pg_tile_double_rows4(ptrdiff_t k, const double* a, const double* b,
                                 ptrdiff_t ldb, double* c, ptrdiff_t ldc, int accumulate,
                                 const double* pf, ptrdiff_t pf_ld, double* pack,
                                 const ptrdiff_t* boff)
{
    PG_TILE8_WIDE(double, __m512d, _mm512_loadu_pd, _mm512_storeu_pd, PG_BCAST512_PD,
                  _mm512_fmadd_pd, _mm512_setzero_pd, 8)
}
#else
#define PG_WIDE_BUILT 0
#endif

#else /* the portable loop */

#define PG_TILE_PLAIN(T, NR, ROW)                                                     \
    T t_[PG_MR * NR];                                                                 \
    ptrdiff_t kk_, i_, j_;                                                            \
    for (i_ = 0; i_ < PG_MR; i_++)                                                    \
        for (j_ = 0; j_ < NR; j_++)                                                   \
            t_[i_ * NR + j_] = (accumulate && i_ < mr && j_ < nr) ? c[i_ * ldc + j_] : 0; \
    for (kk_ = 0; kk_ < k; kk_++) {                                                   \
        const T* bk_ = ROW;                                                           \
        for (i_ = 0; i_ < PG_MR; i_++)                                                \
            for (j_ = 0; j_ < NR; j_++)                                               \
                t_[i_ * NR + j_] += a[kk_ * PG_MR + i_] * bk_[j_];                    \
    }                                                                                 \
    PG_STORE_EDGE(T, t_, NR, c, ldc, mr, nr);

static inline void pg_tile_float(ptrdiff_t k, const float* a, const float* b, float* c,
                                 ptrdiff_t ldc, ptrdiff_t mr, ptrdiff_t nr,
                                 int accumulate)
{
    PG_TILE_PLAIN(float, PG_NR_FLOAT, b + kk_ * PG_NR_FLOAT)
}

static inline void pg_tile_double(ptrdiff_t k, const double* a, const double* b,
                                  double* c, ptrdiff_t ldc, ptrdiff_t mr, ptrdiff_t nr,
                                  int accumulate)
{
    PG_TILE_PLAIN(double, PG_NR_DOUBLE, b + kk_ * PG_NR_DOUBLE)
}

static inline void pg_tile_float_rows(ptrdiff_t k, const float* a, const float* b,
                                      ptrdiff_t ldb, float* c, ptrdiff_t ldc,
                                      int accumulate)
{
    const ptrdiff_t mr = PG_MR, nr = PG_NR_FLOAT;
    PG_TILE_PLAIN(float, PG_NR_FLOAT, b + kk_ * ldb)
}

static inline void pg_tile_double_rows(ptrdiff_t k, const double* a, const double* b,
                                       ptrdiff_t ldb, double* c, ptrdiff_t ldc,
                                       int accumulate)
{
    const ptrdiff_t mr = PG_MR, nr = PG_NR_DOUBLE;
    PG_TILE_PLAIN(double, PG_NR_DOUBLE, b + kk_ * ldb)
}

#endif /* PG_VECTOR */

#if !(PG_VECTOR && PG_WIDE_BUILT)
#undef PG_WIDE_BUILT
#define PG_WIDE_BUILT 0
/* never called (pg_wide stays 0): two panels of the tiles above */
static void pg_tile_float_rows2(ptrdiff_t k, const float* a, const float* b,
                                ptrdiff_t ldb, float* c, ptrdiff_t ldc, int accumulate)
{
    pg_tile_float_rows(k, a, b, ldb, c, ldc, accumulate);
    pg_tile_float_rows(k, a, b + PG_NR_FLOAT, ldb, c + PG_NR_FLOAT, ldc, accumulate);
}
static void pg_tile_double_rows2(ptrdiff_t k, const double* a, const double* b,
                                 ptrdiff_t ldb, double* c, ptrdiff_t ldc, int accumulate)
{
    pg_tile_double_rows(k, a, b, ldb, c, ldc, accumulate);
    pg_tile_double_rows(k, a, b + PG_NR_DOUBLE, ldb, c + PG_NR_DOUBLE, ldc, accumulate);
}
/* the 8-row tile as two 4-row ones (pf ignored); rows by boff are read through the
 * pack, as the caller always gives one with them */
#define PG_ROWS4_PLAIN(T, NR)                                                          \
    ptrdiff_t kk;                                                                     \
    (void)pf; (void)pf_ld;                                                            \
    if (pack) {                                                                       \
        for (kk = 0; kk < k; kk++)                                                    \
            memcpy(pack + kk * 2 * NR, b + (boff ? boff[kk] : kk * ldb),              \
                   2 * NR * sizeof(T));                                               \
        b = pack;                                                                     \
        ldb = 2 * NR;                                                                 \
    }
static void pg_tile_float_rows4(ptrdiff_t k, const float* a, const float* b,
                                ptrdiff_t ldb, float* c, ptrdiff_t ldc, int accumulate,
                                const float* pf, ptrdiff_t pf_ld, float* pack,
                                const ptrdiff_t* boff)
{
    PG_ROWS4_PLAIN(float, PG_NR_FLOAT)
    pg_tile_float_rows2(k, a, b, ldb, c, ldc, accumulate);
    pg_tile_float_rows2(k, a + k * PG_MR, b, ldb, c + PG_MR * ldc, ldc, accumulate);
}
static void pg_tile_double_rows4(ptrdiff_t k, const double* a, const double* b,
                                 ptrdiff_t ldb, double* c, ptrdiff_t ldc, int accumulate,
                                 const double* pf, ptrdiff_t pf_ld, double* pack,
                                 const ptrdiff_t* boff)
{
    PG_ROWS4_PLAIN(double, PG_NR_DOUBLE)
    pg_tile_double_rows2(k, a, b, ldb, c, ldc, accumulate);
    pg_tile_double_rows2(k, a + k * PG_MR, b, ldb, c + PG_MR * ldc, ldc, accumulate);
}
#endif

/* Whether full tiles run two panels at a time in 512-bit vectors (see above). */
static int pg_wide = 0;
static int pg_set_wide(int on) { pg_wide = PG_WIDE_BUILT && on; return pg_wide; }
/* Whether those tiles take two A panels at a time too (8 rows; for comparisons). */
static int pg_tall = 1;
static int pg_set_tall(int on) { pg_tall = on != 0; return pg_tall; }
/* Whether the 8-row tiles of packed pairs prefetch the next pair (for comparisons). */
static int pg_prefetch = 1;
static inline int pg_set_prefetch(int on) { pg_prefetch = on != 0; return pg_prefetch; }

#endif /* PYCONV_PACKED_GEMM_H */
