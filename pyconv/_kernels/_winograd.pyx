"""Winograd minimal filtering F(2x2, 3x3) and F(4x4, 3x3) for 3x3 stride-1 convolution.

Per work unit (group, chunk of output tiles, numbered image after image so that small
images share GEMMs):

1. input transform: each alpha x alpha input tile (alpha = m + 2) of each channel is
   transformed, ``V[a, c, t] = (B^T d B)[a]``;
2. ``alpha**2`` GEMMs ``M[a] = U[a] @ V[a]`` with the pre-transformed filter
   ``U[a] = (G g G^T)[a]`` of shape ``(C_out/groups, C_in/groups)``;
3. output transform ``Y = A^T M A`` (m x m outputs per tile), bias and ReLU fused,
   only the outputs inside ``(OH, OW)`` written (partial edge tiles).

Inputs are addressed in "virtual" (padded) coordinates: ``rowidx[j]`` / ``colidx[j]``
give the input row / column read at padded position ``j`` (-1: a pad, filled with
``pad_value``; -2: past the padded extent, read as 0, since it only feeds outputs
that are never written). ``colrun[j]`` is the length of the run of consecutive input
columns starting at ``j``, so interior stretches are read in place, with no copy.

The transforms run over blocks of up to ``BLK`` tiles of one tile row with the tile
index innermost (so the compiler can vectorise them): the vertical pass over the
alpha input rows is shared by horizontally overlapping tiles and written
phase-split (``T[p][k][i]`` = column ``m*i + p``), so the horizontal pass reads
contiguous data and writes each V[a] stream contiguously. float32 F(4x4, 3x3), the
common case, has SSE passes of its own (the same bits in both builds): the vertical
pass reads the input rows in place, and the split and horizontal pass are one step,
four tiles at a time through a 4x4 transpose, straight into V; the output transform
and its interleaving into output rows likewise. On a CPU with AVX-512 (``set_wide_loops``)
the AVX2 build runs these passes 16 tiles per step instead (the same bits): the split
de-interleaves by two-source permutes. A segment's split waits until the next
segment's vertical pass is done, and a block's values are stored into the output rows
after the next block's transform, so that the values stored just before have reached
the cache when they are read back at other offsets.

Units write disjoint output tiles, so they run under one ``prange`` with
single-threaded GEMMs inside (pyconv's packed tiles, or OpenBLAS pinned to one
thread). A unit's arithmetic does not depend on which thread runs
it nor on the thread count, so results are bit-identical for any ``n_threads``.
Each thread owns one row of the caller's workspace of ``workspace_row(...)`` values
(V and M of one chunk).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memcpy, memset

from pyconv._kernels._blas cimport gemm_rm
from pyconv._kernels._openmp_helpers cimport omp_get_thread_num
from pyconv._kernels._packed cimport (PG_MR, PG_NR_DOUBLE, PG_NR_FLOAT, PG_VECTOR,
                                      packed_gemm, pg_set_tall, pg_set_wide)

#: Whether the GEMMs can run on pyconv's packed tiles (the AVX2 build; see
#: ``_packed_gemm.h``), given the filter in ``pyconv.ops._winograd.packed_filter``'s
#: layout; otherwise OpenBLAS runs them.
PACKED_VECTOR = bool(PG_VECTOR)
#: Rows of U per packed panel.
PACKED_ROWS = PG_MR
#: Columns (tiles) per packed panel, by dtype name.
PACKED_COLUMNS = {"float32": PG_NR_FLOAT, "float64": PG_NR_DOUBLE}


cdef enum:
    # Tiles per transform block (packed across tile rows).
    BLK = 64
    # Leading dimension of the vertical-pass scratch: the columns of BLK 4x4 tiles.
    LDC = 4 * BLK + 4
    # The alpha**2 matrices V[a] (and M[a]) are written (read) together, one value
    # each per tile; with a plain cin_g*chunk stride (often a multiple of 4 KiB) they
    # would all fall in the same L1 cache sets and evict each other. A skew of one
    # cache line per matrix spreads them over the sets.
    SKEW = 16


def workspace_row(Py_ssize_t mt, Py_ssize_t cin_g, Py_ssize_t cout_g, Py_ssize_t chunk):
    """Values one thread's workspace row needs: V and M of one chunk, skewed, and one
    column panel of the packed GEMM (float32's, the wider)."""
    return (mt + 2) ** 2 * ((cin_g + cout_g) * chunk + 2 * SKEW) + cin_g * PG_NR_FLOAT


# ---- input side ----------------------------------------------------------------------

cdef extern from *:
    """
    #if defined(__SSE__) || defined(_M_X64)
      #include <xmmintrin.h>
      #define PYCONV_WG_SSE 1
    #else
      #define PYCONV_WG_SSE 0
    #endif
    /* B^T of one step of vectors of type V (d0..d5), P the intrinsics' prefix (_mm,
       _mm512) and STORE(p, v) the store of o_s: the scalar loops' order of
       operations, without FMA (see PYCONV_WG_BT6_SSE below). */
    #define PYCONV_WG_BT6_VEC(V, P, STORE, d0, d1, d2, d3, d4, d5, o, ldo, i)          \
        do {                                                                        \
            const V c2_ = P##_set1_ps(2.0f), c4_ = P##_set1_ps(4.0f);               \
            const V c5_ = P##_set1_ps(5.0f);                                        \
            V a_ = P##_sub_ps(d4, P##_mul_ps(c4_, d2));                             \
            V b_ = P##_sub_ps(d3, P##_mul_ps(c4_, d1));                             \
            V e_ = P##_sub_ps(d4, d2);                                              \
            V f_ = P##_mul_ps(c2_, P##_sub_ps(d3, d1));                             \
            STORE((o) + (i), P##_add_ps(P##_sub_ps(P##_mul_ps(c4_, d0),             \
                                                   P##_mul_ps(c5_, d2)), d4));      \
            STORE((o) + (ldo) + (i), P##_add_ps(a_, b_));                           \
            STORE((o) + 2 * (ldo) + (i), P##_sub_ps(a_, b_));                       \
            STORE((o) + 3 * (ldo) + (i), P##_add_ps(e_, f_));                       \
            STORE((o) + 4 * (ldo) + (i), P##_sub_ps(e_, f_));                       \
            STORE((o) + 5 * (ldo) + (i), P##_add_ps(P##_sub_ps(P##_mul_ps(c4_, d1), \
                                                               P##_mul_ps(c5_, d3)), d5)); \
        } while (0)
    /* A^T of one step: declares y0..y3 (vectors of type V) from m0..m5, with c2, c4,
       c8 the constants in scope, in the scalar loop's order of operations. */
    #define PYCONV_WG_AT6_VEC(V, P, m0, m1, m2, m3, m4, m5, y0, y1, y2, y3)            \
        V p12_ = P##_add_ps(m1, m2), p34_ = P##_add_ps(m3, m4);                     \
        V n12_ = P##_sub_ps(m1, m2), n34_ = P##_sub_ps(m3, m4);                     \
        V y0 = P##_add_ps(P##_add_ps(m0, p12_), p34_);                              \
        V y1 = P##_add_ps(n12_, P##_mul_ps(c2, n34_));                              \
        V y2 = P##_add_ps(p12_, P##_mul_ps(c4, p34_));                              \
        V y3 = P##_add_ps(P##_add_ps(n12_, P##_mul_ps(c8, n34_)), m5)
    /* The AVX2 build made by GCC also holds the float32 F(4x4) transforms below in
       AVX-512 form, 16 tiles (or columns) per step instead of 4, taken where
       pyconv_wg_wide is set (set_wide_loops: the CPU has AVX-512, asked from Python).
       Tails are masked, so they read and write nothing past the valid values. The
       same operations in the same order, without contraction (-ffp-contract=off):
       the same bits. */
    #if defined(__AVX2__) && defined(__x86_64__) && defined(__GNUC__) \
        && !defined(__clang__) && __GNUC__ >= 8
      #include <immintrin.h>
      #define PYCONV_WG_WIDE_BUILT 1
      #define PYCONV_WG_WIDE_ATTR __attribute__((target("avx512f")))
    #else
      #define PYCONV_WG_WIDE_BUILT 0
    #endif
    static int pyconv_wg_wide = 0;
    static int pyconv_wg_set_wide(int on) {
        pyconv_wg_wide = PYCONV_WG_WIDE_BUILT && on;
        return pyconv_wg_wide;
    }
    #if PYCONV_WG_WIDE_BUILT
    /* Lanes [0, n) of a 16-lane step (n >= 16: all). */
    #define PYCONV_WG_MASK16(n) \
        ((n) >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n)) - 1u))
    /* Loads and stores under mask k: the plain forms where k has every lane (all
       steps but a row's last), so that only the tail pays for masking. */
    #define PYCONV_WG_LOAD16(k, p) \
        ((k) == 0xFFFF ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(k, p))
    #define PYCONV_WG_STORE16(p, k, v) \
        do { if ((k) == 0xFFFF) _mm512_storeu_ps(p, v); \
             else _mm512_mask_storeu_ps(p, k, v); } while (0)
    /* B^T of one 16-lane step, as PYCONV_WG_BT6_SSE; stores under mask k. */
    #define PYCONV_WG_STORE16_K(p, v) PYCONV_WG_STORE16(p, k_, v)
    #define PYCONV_WG_BT6_512(d0, d1, d2, d3, d4, d5, o, ldo, i, k)                    \
        do {                                                                        \
            const __mmask16 k_ = (k);                                               \
            PYCONV_WG_BT6_VEC(__m512, _mm512, PYCONV_WG_STORE16_K,                  \
                              d0, d1, d2, d3, d4, d5, o, ldo, i);                   \
        } while (0)

    PYCONV_WG_WIDE_ATTR
    static void pyconv_wg_bt6_rows_f_wide(const float* const* r, ptrdiff_t n, float* o,
                                          ptrdiff_t ldo)
    {
        ptrdiff_t i;
        for (i = 0; i < n; i += 16) {
            const __mmask16 k = PYCONV_WG_MASK16(n - i);
            __m512 d0 = PYCONV_WG_LOAD16(k, r[0] + i);
            __m512 d1 = PYCONV_WG_LOAD16(k, r[1] + i);
            __m512 d2 = PYCONV_WG_LOAD16(k, r[2] + i);
            __m512 d3 = PYCONV_WG_LOAD16(k, r[3] + i);
            __m512 d4 = PYCONV_WG_LOAD16(k, r[4] + i);
            __m512 d5 = PYCONV_WG_LOAD16(k, r[5] + i);
            PYCONV_WG_BT6_512(d0, d1, d2, d3, d4, d5, o, ldo, i, k);
        }
    }

    /* pyconv_wg_split_bt6_f, 16 tiles per step: the 64 values of a step's columns
       0-3 are de-interleaved by phase with two-source permutes (phases 0|1 and 2|3 of
       8 tiles per permute, then the halves of 16 tiles joined), and columns 4 and 5
       are phases 0 and 1 shifted by one tile. Reads src[0, 4*nb + 2) only. */
    PYCONV_WG_WIDE_ATTR
    static void pyconv_wg_split_bt6_f_wide(const float* src, ptrdiff_t nb, float* o,
                                           ptrdiff_t ldo)
    {
        const __m512i p01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28,
                                              1, 5, 9, 13, 17, 21, 25, 29);
        const __m512i p23 = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30,
                                              3, 7, 11, 15, 19, 23, 27, 31);
        const ptrdiff_t nv = 4 * nb + 2;
        ptrdiff_t i, j;
        for (i = 0; i < nb; i += 16) {
            const __mmask16 k = PYCONV_WG_MASK16(nb - i);
            const float* s = src + 4 * i;
            ptrdiff_t left = nv - 4 * i;
            __m512 z[4], a01, a23, b01, b23, d0, d1, d2, d3, d4, d5;
            for (j = 0; j < 4; j++)
                z[j] = PYCONV_WG_LOAD16(
                    PYCONV_WG_MASK16(left > 16 * j ? left - 16 * j : 0), s + 16 * j);
            a01 = _mm512_permutex2var_ps(z[0], p01, z[1]);
            a23 = _mm512_permutex2var_ps(z[0], p23, z[1]);
            b01 = _mm512_permutex2var_ps(z[2], p01, z[3]);
            b23 = _mm512_permutex2var_ps(z[2], p23, z[3]);
            d0 = _mm512_shuffle_f32x4(a01, b01, _MM_SHUFFLE(1, 0, 1, 0));
            d1 = _mm512_shuffle_f32x4(a01, b01, _MM_SHUFFLE(3, 2, 3, 2));
            d2 = _mm512_shuffle_f32x4(a23, b23, _MM_SHUFFLE(1, 0, 1, 0));
            d3 = _mm512_shuffle_f32x4(a23, b23, _MM_SHUFFLE(3, 2, 3, 2));
            d4 = _mm512_castsi512_ps(_mm512_alignr_epi32(
                _mm512_castps_si512(_mm512_set1_ps(left > 64 ? s[64] : 0.0f)),
                _mm512_castps_si512(d0), 1));
            d5 = _mm512_castsi512_ps(_mm512_alignr_epi32(
                _mm512_castps_si512(_mm512_set1_ps(left > 65 ? s[65] : 0.0f)),
                _mm512_castps_si512(d1), 1));
            PYCONV_WG_BT6_512(d0, d1, d2, d3, d4, d5, o, ldo, i, k);
        }
    }

    /* pyconv_wg_at6_f, 16 tiles per step (probe: its four lanes collect the sums of
       the step's four 128-bit quarters). */
    PYCONV_WG_WIDE_ATTR
    static void pyconv_wg_at6_f_wide(const float* d, ptrdiff_t ldd, ptrdiff_t n,
                                     float* o, ptrdiff_t ldo, float* probe)
    {
        const __m512 c2 = _mm512_set1_ps(2.0f), c4 = _mm512_set1_ps(4.0f);
        const __m512 c8 = _mm512_set1_ps(8.0f);
        __m512 acc = _mm512_setzero_ps();
        ptrdiff_t i;
        for (i = 0; i < n; i += 16) {
            const __mmask16 k = PYCONV_WG_MASK16(n - i);
            __m512 m0 = PYCONV_WG_LOAD16(k, d + i);
            __m512 m1 = PYCONV_WG_LOAD16(k, d + ldd + i);
            __m512 m2 = PYCONV_WG_LOAD16(k, d + 2 * ldd + i);
            __m512 m3 = PYCONV_WG_LOAD16(k, d + 3 * ldd + i);
            __m512 m4 = PYCONV_WG_LOAD16(k, d + 4 * ldd + i);
            __m512 m5 = PYCONV_WG_LOAD16(k, d + 5 * ldd + i);
            PYCONV_WG_AT6_VEC(__m512, _mm512, m0, m1, m2, m3, m4, m5, y0, y1, y2, y3);
            PYCONV_WG_STORE16(o + i, k, y0);
            PYCONV_WG_STORE16(o + ldo + i, k, y1);
            PYCONV_WG_STORE16(o + 2 * ldo + i, k, y2);
            PYCONV_WG_STORE16(o + 3 * ldo + i, k, y3);
            if (probe)
                acc = _mm512_add_ps(acc, _mm512_add_ps(
                    _mm512_add_ps(_mm512_sub_ps(y0, y0), _mm512_sub_ps(y1, y1)),
                    _mm512_add_ps(_mm512_sub_ps(y2, y2), _mm512_sub_ps(y3, y3))));
        }
        if (probe) {
            __m128 q = _mm_add_ps(
                _mm_add_ps(_mm512_extractf32x4_ps(acc, 0), _mm512_extractf32x4_ps(acc, 1)),
                _mm_add_ps(_mm512_extractf32x4_ps(acc, 2), _mm512_extractf32x4_ps(acc, 3)));
            _mm_storeu_ps(probe, _mm_add_ps(_mm_loadu_ps(probe), q));
        }
    }

    /* pyconv_wg_store4_f for all n tiles, 16 per step: bias, ReLU (kept where not
       v < 0, so NaN and -0.0 stay), then the four streams interleaved by two rounds
       of two-source permutes (pairs of floats, then pairs of pairs). */
    PYCONV_WG_WIDE_ATTR
    static void pyconv_wg_store4_f_wide(const float* y0, const float* y1,
                                        const float* y2, const float* y3, ptrdiff_t n,
                                        float* o, float b, int relu)
    {
        const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19,
                                             4, 20, 5, 21, 6, 22, 7, 23);
        const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27,
                                             12, 28, 13, 29, 14, 30, 15, 31);
        const __m512i lo2 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
        const __m512i hi2 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
        const __m512 vb = _mm512_set1_ps(b), zero = _mm512_setzero_ps();
        ptrdiff_t i, j;
        for (i = 0; i < n; i += 16) {
            const __mmask16 k = PYCONV_WG_MASK16(n - i);
            __m512 v[4], t01l, t01h, t23l, t23h, w[4];
            v[0] = _mm512_add_ps(PYCONV_WG_LOAD16(k, y0 + i), vb);
            v[1] = _mm512_add_ps(PYCONV_WG_LOAD16(k, y1 + i), vb);
            v[2] = _mm512_add_ps(PYCONV_WG_LOAD16(k, y2 + i), vb);
            v[3] = _mm512_add_ps(PYCONV_WG_LOAD16(k, y3 + i), vb);
            if (relu)
                for (j = 0; j < 4; j++)
                    v[j] = _mm512_maskz_mov_ps(
                        _mm512_cmp_ps_mask(v[j], zero, _CMP_NLT_UQ), v[j]);
            t01l = _mm512_permutex2var_ps(v[0], lo, v[1]);
            t01h = _mm512_permutex2var_ps(v[0], hi, v[1]);
            t23l = _mm512_permutex2var_ps(v[2], lo, v[3]);
            t23h = _mm512_permutex2var_ps(v[2], hi, v[3]);
            w[0] = _mm512_castpd_ps(_mm512_permutex2var_pd(
                _mm512_castps_pd(t01l), lo2, _mm512_castps_pd(t23l)));
            w[1] = _mm512_castpd_ps(_mm512_permutex2var_pd(
                _mm512_castps_pd(t01l), hi2, _mm512_castps_pd(t23l)));
            w[2] = _mm512_castpd_ps(_mm512_permutex2var_pd(
                _mm512_castps_pd(t01h), lo2, _mm512_castps_pd(t23h)));
            w[3] = _mm512_castpd_ps(_mm512_permutex2var_pd(
                _mm512_castps_pd(t01h), hi2, _mm512_castps_pd(t23h)));
            for (j = 0; j < 4; j++) {
                ptrdiff_t left = 4 * (n - i) - 16 * j;
                PYCONV_WG_STORE16(o + 4 * i + 16 * j,
                                      PYCONV_WG_MASK16(left > 0 ? left : 0), w[j]);
            }
        }
    }
    #endif
    /* o[4*i + c] = act(y_c[i] + b) for i < n (the interleaving of four output
       columns of F(4x4) tiles): a 4x4 transpose per four tiles. act is ReLU (NaN and
       -0.0 kept, as v < 0 is false for both) or nothing, as in the scalar loop: the
       same bits. */
    static inline ptrdiff_t pyconv_wg_store4_f(const float* y0, const float* y1,
                                               const float* y2, const float* y3,
                                               ptrdiff_t n, float* o, float b, int relu)
    {
        ptrdiff_t i = 0;
    #if PYCONV_WG_WIDE_BUILT
        if (pyconv_wg_wide) {
            pyconv_wg_store4_f_wide(y0, y1, y2, y3, n, o, b, relu);
            return n;
        }
    #endif
    #if PYCONV_WG_SSE
        const __m128 vb = _mm_set1_ps(b), zero = _mm_setzero_ps();
        for (; i + 4 <= n; i += 4) {
            __m128 a = _mm_add_ps(_mm_loadu_ps(y0 + i), vb);
            __m128 c = _mm_add_ps(_mm_loadu_ps(y1 + i), vb);
            __m128 d = _mm_add_ps(_mm_loadu_ps(y2 + i), vb);
            __m128 e = _mm_add_ps(_mm_loadu_ps(y3 + i), vb);
            if (relu) {
                a = _mm_andnot_ps(_mm_cmplt_ps(a, zero), a);
                c = _mm_andnot_ps(_mm_cmplt_ps(c, zero), c);
                d = _mm_andnot_ps(_mm_cmplt_ps(d, zero), d);
                e = _mm_andnot_ps(_mm_cmplt_ps(e, zero), e);
            }
            _MM_TRANSPOSE4_PS(a, c, d, e);
            _mm_storeu_ps(o + 4 * i, a);
            _mm_storeu_ps(o + 4 * i + 4, c);
            _mm_storeu_ps(o + 4 * i + 8, d);
            _mm_storeu_ps(o + 4 * i + 12, e);
        }
    #endif
        return i;
    }
    /* The float32 F(4x4) transforms along one axis, four tiles (or columns) per step,
       every output of a step from one load of its inputs (the compiler's loops, one
       per output, read each input three to four times), in the scalar loops' order
       of operations, without FMA:
       input, B^T:  o_s[i] = sum_j B^T[s][j] d_j[i], s < 6, o_s = o + s*ldo;
       output, A^T: o_r[i] = sum_j A^T[r][j] d_j[i], r < 4.
       PYCONV_WG_BT6_SSE: B^T of one step (d0..d5: four lanes each). */
    #define PYCONV_WG_BT6_SSE(d0, d1, d2, d3, d4, d5, o, ldo, i)                       \
        PYCONV_WG_BT6_VEC(__m128, _mm, _mm_storeu_ps, d0, d1, d2, d3, d4, d5, o, ldo, i)
    #define PYCONV_WG_BT6_SCALAR(d0, d1, d2, d3, d4, d5, o, ldo, i)                    \
        do {                                                                        \
            float a_ = d4 - 4.0f * d2, b_ = d3 - 4.0f * d1, e_ = d4 - d2;           \
            float f_ = 2.0f * (d3 - d1);                                            \
            (o)[i] = (4.0f * d0 - 5.0f * d2) + d4;                                   \
            (o)[(ldo) + (i)] = a_ + b_;                                              \
            (o)[2 * (ldo) + (i)] = a_ - b_;                                          \
            (o)[3 * (ldo) + (i)] = e_ + f_;                                          \
            (o)[4 * (ldo) + (i)] = e_ - f_;                                          \
            (o)[5 * (ldo) + (i)] = (4.0f * d1 - 5.0f * d3) + d5;                     \
        } while (0)

    static inline void pyconv_wg_bt6_rows_f(const float* const* r, ptrdiff_t n,
                                            float* o, ptrdiff_t ldo)
    {
        const float *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3], *r4 = r[4];
        const float *r5 = r[5];
        ptrdiff_t i = 0;
    #if PYCONV_WG_WIDE_BUILT
        if (pyconv_wg_wide && n >= 8) {
            pyconv_wg_bt6_rows_f_wide(r, n, o, ldo);
            return;
        }
    #endif
    #if PYCONV_WG_SSE
        for (; i + 4 <= n; i += 4) {
            __m128 d0 = _mm_loadu_ps(r0 + i), d1 = _mm_loadu_ps(r1 + i);
            __m128 d2 = _mm_loadu_ps(r2 + i), d3 = _mm_loadu_ps(r3 + i);
            __m128 d4 = _mm_loadu_ps(r4 + i), d5 = _mm_loadu_ps(r5 + i);
            PYCONV_WG_BT6_SSE(d0, d1, d2, d3, d4, d5, o, ldo, i);
        }
    #endif
        for (; i < n; i++) {
            float d0 = r0[i], d1 = r1[i], d2 = r2[i], d3 = r3[i], d4 = r4[i];
            float d5 = r5[i];
            PYCONV_WG_BT6_SCALAR(d0, d1, d2, d3, d4, d5, o, ldo, i);
        }
    }

    /* The columns of F(4x4) tiles split out and B^T applied in one step, four tiles
       at a time: o_s[i] = sum_j B^T[s][j] src[4*i + j], s < 6. A 4x4 transpose gives
       each tile's columns 0-3; columns 4 and 5 are the next tile's 0 and 1. (The
       compiler's loop for the split alone gathered each value with permutes and
       blends, 43% of the input transform; and stores, which bound it, are fewer
       without the split columns stored.) Rows are short (14 tiles on a 56-wide
       image), so with SSE the last step is a whole one too: it reads src up to
       src[4*ceil4(nb) + 1] and writes o_s up to o_s[ceil4(nb) - 1] (ceil4: nb rounded
       up to a multiple of 4); the caller provides both. */
    static inline void pyconv_wg_split_bt6_f(const float* src, ptrdiff_t nb, float* o,
                                             ptrdiff_t ldo)
    {
        ptrdiff_t i = 0;
    #if PYCONV_WG_WIDE_BUILT
        if (pyconv_wg_wide) {
            pyconv_wg_split_bt6_f_wide(src, nb, o, ldo);
            return;
        }
    #endif
    #if PYCONV_WG_SSE
        for (; i < nb; i += 4) {
            __m128 a = _mm_loadu_ps(src + 4 * i), b = _mm_loadu_ps(src + 4 * i + 4);
            __m128 c = _mm_loadu_ps(src + 4 * i + 8), d = _mm_loadu_ps(src + 4 * i + 12);
            __m128 a4, b4;
            _MM_TRANSPOSE4_PS(a, b, c, d);
            a4 = _mm_move_ss(a, _mm_load_ss(src + 4 * i + 16));
            b4 = _mm_move_ss(b, _mm_load_ss(src + 4 * i + 17));
            a4 = _mm_shuffle_ps(a4, a4, _MM_SHUFFLE(0, 3, 2, 1));
            b4 = _mm_shuffle_ps(b4, b4, _MM_SHUFFLE(0, 3, 2, 1));
            PYCONV_WG_BT6_SSE(a, b, c, d, a4, b4, o, ldo, i);
        }
    #endif
        for (; i < nb; i++) {
            float d0 = src[4 * i], d1 = src[4 * i + 1], d2 = src[4 * i + 2];
            float d3 = src[4 * i + 3], d4 = src[4 * i + 4], d5 = src[4 * i + 5];
            PYCONV_WG_BT6_SCALAR(d0, d1, d2, d3, d4, d5, o, ldo, i);
        }
    }

    /* With probe (else NULL), probe[0:4] also collects v - v of every output: they
       stay 0 while all are finite (see nonfinite_probe). */
    static inline void pyconv_wg_at6_f(const float* d, ptrdiff_t ldd, ptrdiff_t n,
                                       float* o, ptrdiff_t ldo, float* probe)
    {
        ptrdiff_t i = 0;
    #if PYCONV_WG_WIDE_BUILT
        if (pyconv_wg_wide) {
            pyconv_wg_at6_f_wide(d, ldd, n, o, ldo, probe);
            return;
        }
    #endif
    #if PYCONV_WG_SSE
        const __m128 c2 = _mm_set1_ps(2.0f), c4 = _mm_set1_ps(4.0f);
        const __m128 c8 = _mm_set1_ps(8.0f);
        __m128 acc = _mm_setzero_ps();
        for (; i + 4 <= n; i += 4) {
            __m128 m0 = _mm_loadu_ps(d + i), m1 = _mm_loadu_ps(d + ldd + i);
            __m128 m2 = _mm_loadu_ps(d + 2 * ldd + i), m3 = _mm_loadu_ps(d + 3 * ldd + i);
            __m128 m4 = _mm_loadu_ps(d + 4 * ldd + i), m5 = _mm_loadu_ps(d + 5 * ldd + i);
            PYCONV_WG_AT6_VEC(__m128, _mm, m0, m1, m2, m3, m4, m5, y0, y1, y2, y3);
            _mm_storeu_ps(o + i, y0);
            _mm_storeu_ps(o + ldo + i, y1);
            _mm_storeu_ps(o + 2 * ldo + i, y2);
            _mm_storeu_ps(o + 3 * ldo + i, y3);
            if (probe)
                acc = _mm_add_ps(acc, _mm_add_ps(_mm_add_ps(_mm_sub_ps(y0, y0),
                                                            _mm_sub_ps(y1, y1)),
                                                 _mm_add_ps(_mm_sub_ps(y2, y2),
                                                            _mm_sub_ps(y3, y3))));
        }
        if (probe)
            _mm_storeu_ps(probe, _mm_add_ps(_mm_loadu_ps(probe), acc));
    #endif
        for (; i < n; i++) {
            float m0 = d[i], m1 = d[ldd + i], m2 = d[2 * ldd + i], m3 = d[3 * ldd + i];
            float m4 = d[4 * ldd + i], m5 = d[5 * ldd + i];
            float p12 = m1 + m2, p34 = m3 + m4, n12 = m1 - m2, n34 = m3 - m4;
            float y0 = (m0 + p12) + p34, y1 = n12 + 2.0f * n34;
            float y2 = p12 + 4.0f * p34, y3 = (n12 + 8.0f * n34) + m5;
            o[i] = y0;
            o[ldo + i] = y1;
            o[2 * ldo + i] = y2;
            o[3 * ldo + i] = y3;
            if (probe)
                probe[0] += (y0 - y0) + (y1 - y1) + (y2 - y2) + (y3 - y3);
        }
    }
    """
    void pyconv_wg_bt6_rows_f(const float** r, Py_ssize_t n, float* o,
                              Py_ssize_t ldo) noexcept nogil
    void pyconv_wg_split_bt6_f(const float* src, Py_ssize_t nb, float* o,
                               Py_ssize_t ldo) noexcept nogil
    void pyconv_wg_at6_f(const float* d, Py_ssize_t ldd, Py_ssize_t n, float* o,
                         Py_ssize_t ldo, float* probe) noexcept nogil
    Py_ssize_t pyconv_wg_store4_f(const float* y0, const float* y1, const float* y2,
                                  const float* y3, Py_ssize_t n, float* o, float b,
                                  int relu) noexcept nogil
    int pyconv_wg_set_wide(int on) noexcept nogil
    int pyconv_wg_wide


cdef inline const floating* row_pointer(const floating* xp, Py_ssize_t W, Py_ssize_t h,
                                        Py_ssize_t j0, Py_ssize_t ncol,
                                        const Py_ssize_t* colidx, const Py_ssize_t* colrun,
                                        floating pad, floating* buf) noexcept nogil:
    # Pointer to ``ncol`` values of input row h at padded columns j0 .. j0+ncol-1:
    # in place when they are consecutive input columns, else gathered into buf, each
    # run of consecutive columns as one copy (a value at a time, the gather of a padded
    # row took 45% of the input transform).
    cdef Py_ssize_t j, w, run
    cdef floating fill
    cdef const floating* src
    if h >= 0 and colrun[j0] >= ncol:
        return xp + h * W + colidx[j0]
    if h < 0:
        fill = pad if h == -1 else 0
        for j in range(ncol):
            buf[j] = fill
        return buf
    src = xp + h * W
    j = 0
    while j < ncol:
        w = colidx[j0 + j]
        if w >= 0:
            run = colrun[j0 + j]
            if run > ncol - j:
                run = ncol - j
            memcpy(buf + j, src + w, run * sizeof(floating))
            j = j + run
        else:
            buf[j] = pad if w == -1 else 0
            j = j + 1
    return buf


# Each input block goes through three passes over local scratch:
#   vertical: tc[k][j] = (B^T d[:, j])[k] over whole (contiguous) rows of one tile row;
#   split:    tp[s][k][i] = tc[k][m*i + s], so tile i's alpha columns are contiguous
#             over i (tiles of several tile rows are packed one after another);
#   horizontal: v[(alpha*k + s)*ldv + i] = (B^T tp[:, k, i])[s], one V stream per loop.

# F(2x2, 3x3): B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]

cdef inline void vertical_f2(const floating** rp, Py_ssize_t ncol,
                             floating* tc) noexcept nogil:
    cdef const floating* r0 = rp[0]
    cdef const floating* r1 = rp[1]
    cdef const floating* r2 = rp[2]
    cdef const floating* r3 = rp[3]
    cdef Py_ssize_t j
    for j in range(ncol):
        tc[j] = r0[j] - r2[j]
        tc[LDC + j] = r1[j] + r2[j]
        tc[2 * LDC + j] = r2[j] - r1[j]
        tc[3 * LDC + j] = r1[j] - r3[j]


cdef inline void split_f2(const floating* tc, Py_ssize_t nb, floating* tp) noexcept nogil:
    cdef Py_ssize_t k, i
    cdef const floating* src
    cdef floating* dst
    for k in range(4):
        src = tc + k * LDC
        dst = tp + k * BLK
        for i in range(nb):
            dst[i] = src[2 * i]
            dst[4 * BLK + i] = src[2 * i + 1]
            dst[8 * BLK + i] = src[2 * i + 2]
            dst[12 * BLK + i] = src[2 * i + 3]


cdef inline void horizontal_f2(const floating* tp, Py_ssize_t n, floating* v,
                               Py_ssize_t ldv) noexcept nogil:
    cdef Py_ssize_t k, i
    cdef const floating* d0
    cdef const floating* d1
    cdef const floating* d2
    cdef const floating* d3
    cdef floating* o
    for k in range(4):
        d0 = tp + k * BLK
        d1 = d0 + 4 * BLK
        d2 = d1 + 4 * BLK
        d3 = d2 + 4 * BLK
        o = v + 4 * k * ldv
        for i in range(n):
            o[i] = d0[i] - d2[i]
        o = o + ldv
        for i in range(n):
            o[i] = d1[i] + d2[i]
        o = o + ldv
        for i in range(n):
            o[i] = d2[i] - d1[i]
        o = o + ldv
        for i in range(n):
            o[i] = d1[i] - d3[i]


# F(4x4, 3x3), points 0, +-1, +-2, inf:
# B^T = [[4,0,-5,0,1,0],[0,-4,-4,1,1,0],[0,4,-4,-1,1,0],
#        [0,-2,-1,2,1,0],[0,2,-1,-2,1,0],[0,4,0,-5,0,1]]

cdef inline void vertical_f4(const floating** rp, Py_ssize_t ncol,
                             floating* tc) noexcept nogil:
    cdef const floating* r0 = rp[0]
    cdef const floating* r1 = rp[1]
    cdef const floating* r2 = rp[2]
    cdef const floating* r3 = rp[3]
    cdef const floating* r4 = rp[4]
    cdef const floating* r5 = rp[5]
    cdef Py_ssize_t j
    cdef floating d0, d1, d2, d3, d4, d5
    for j in range(ncol):
        d0 = r0[j]
        d1 = r1[j]
        d2 = r2[j]
        d3 = r3[j]
        d4 = r4[j]
        d5 = r5[j]
        tc[j] = 4 * d0 - 5 * d2 + d4
        tc[LDC + j] = (d4 - 4 * d2) + (d3 - 4 * d1)
        tc[2 * LDC + j] = (d4 - 4 * d2) - (d3 - 4 * d1)
        tc[3 * LDC + j] = (d4 - d2) + 2 * (d3 - d1)
        tc[4 * LDC + j] = (d4 - d2) - 2 * (d3 - d1)
        tc[5 * LDC + j] = 4 * d1 - 5 * d3 + d5


cdef inline void vertical_f4_in_place(const float* xp, Py_ssize_t W,
                                      const Py_ssize_t* rows, Py_ssize_t j0,
                                      Py_ssize_t ncol, const Py_ssize_t* colidx,
                                      const Py_ssize_t* colrun, float pad,
                                      const float* padrows, float* tc) noexcept nogil:
    # vertical_f4 of the 6 input rows rows[0:6] (-1: a row of pad values, -2: of
    # zeros, as in row_pointer) at padded columns j0 .. j0+ncol-1, float32, reading the
    # input in place: the first stretch of consecutive input columns goes through the
    # vector pass from the rows themselves, the columns around it (padding, mirrored
    # or wrapped columns: one or two at a usual edge) one at a time. Copying whole
    # padded rows for it took 18% of the convolution. padrows: LDC pad values, then
    # LDC zeros.
    cdef Py_ssize_t a, ja, run, r, h, w
    cdef const float* rp[6]
    cdef const float* cp[6]
    cdef float col[6]
    ja = 0
    while ja < ncol and colidx[j0 + ja] < 0:
        ja = ja + 1
    run = 0
    if ja < ncol:
        run = colrun[j0 + ja]
        if run > ncol - ja:
            run = ncol - ja
        for r in range(6):
            h = rows[r]
            rp[r] = (xp + h * W + colidx[j0 + ja] if h >= 0
                     else padrows + (0 if h == -1 else LDC))
        pyconv_wg_bt6_rows_f(rp, run, tc + ja, LDC)
    for r in range(6):
        cp[r] = col + r
    a = 0
    while a < ncol:
        if a == ja:
            a = ja + run
            continue
        w = colidx[j0 + a]
        for r in range(6):
            h = rows[r]
            if h >= 0 and w >= 0:
                col[r] = xp[h * W + w]
            else:
                col[r] = pad if (h == -1 or (h >= 0 and w == -1)) else 0
        pyconv_wg_bt6_rows_f(cp, 1, tc + a, LDC)
        a = a + 1


cdef inline void split_f4(const floating* tc, Py_ssize_t nb, floating* tp) noexcept nogil:
    cdef Py_ssize_t k, i
    cdef const floating* src
    cdef floating* dst
    for k in range(6):
        src = tc + k * LDC
        dst = tp + k * BLK
        for i in range(nb):
            dst[i] = src[4 * i]
            dst[6 * BLK + i] = src[4 * i + 1]
            dst[12 * BLK + i] = src[4 * i + 2]
            dst[18 * BLK + i] = src[4 * i + 3]
            dst[24 * BLK + i] = src[4 * i + 4]
            dst[30 * BLK + i] = src[4 * i + 5]


cdef inline void horizontal_f4(const floating* tp, Py_ssize_t n, floating* v,
                               Py_ssize_t ldv) noexcept nogil:
    cdef Py_ssize_t k, i
    cdef const floating* d0
    cdef const floating* d1
    cdef const floating* d2
    cdef const floating* d3
    cdef const floating* d4
    cdef const floating* d5
    cdef floating* o
    for k in range(6):
        d0 = tp + k * BLK
        d1 = d0 + 6 * BLK
        d2 = d1 + 6 * BLK
        d3 = d2 + 6 * BLK
        d4 = d3 + 6 * BLK
        d5 = d4 + 6 * BLK
        o = v + 6 * k * ldv
        for i in range(n):
            o[i] = 4 * d0[i] - 5 * d2[i] + d4[i]
        o = o + ldv
        for i in range(n):
            o[i] = (d4[i] - 4 * d2[i]) + (d3[i] - 4 * d1[i])
        o = o + ldv
        for i in range(n):
            o[i] = (d4[i] - 4 * d2[i]) - (d3[i] - 4 * d1[i])
        o = o + ldv
        for i in range(n):
            o[i] = (d4[i] - d2[i]) + 2 * (d3[i] - d1[i])
        o = o + ldv
        for i in range(n):
            o[i] = (d4[i] - d2[i]) - 2 * (d3[i] - d1[i])
        o = o + ldv
        for i in range(n):
            o[i] = 4 * d1[i] - 5 * d3[i] + d5[i]


cdef inline void split_segment(const float* tc, Py_ssize_t nb, float* v,
                               Py_ssize_t ldv) noexcept nogil:
    # float32 F(4x4): the split and horizontal pass of a segment of nb tiles whose
    # vertical pass is in tc, into V from v on (nothing when nb is 0).
    cdef Py_ssize_t r
    for r in range(6 if nb > 0 else 0):
        pyconv_wg_split_bt6_f(tc + r * LDC, nb, v + 6 * r * ldv, ldv)


# ---- output side ---------------------------------------------------------------------

# F(2x2, 3x3): A^T = [[1,1,1,0],[0,1,-1,-1]]

cdef inline void output_block_f2(const floating* mm, Py_ssize_t ldm, Py_ssize_t nb,
                                 floating* y) noexcept nogil:
    # y[(2*r + c)*BLK + i] = (A^T M_i A)[r, c], M_i[a] = mm[a*ldm + i].
    cdef floating pbuf[4 * 2 * BLK]
    cdef const floating* m0
    cdef const floating* m1
    cdef const floating* m2
    cdef const floating* m3
    cdef floating* q0
    cdef floating* q1
    cdef floating* q2
    cdef floating* q3
    cdef floating* o
    cdef Py_ssize_t k, c, i
    for k in range(4):              # rows of M: A^T along the columns s
        m0 = mm + 4 * k * ldm
        m1 = m0 + ldm
        m2 = m1 + ldm
        m3 = m2 + ldm
        o = pbuf + 2 * k * BLK
        for i in range(nb):
            o[i] = m0[i] + m1[i] + m2[i]
        o = o + BLK
        for i in range(nb):
            o[i] = m1[i] - m2[i] - m3[i]
    for c in range(2):              # then along the rows
        q0 = pbuf + c * BLK
        q1 = q0 + 2 * BLK
        q2 = q1 + 2 * BLK
        q3 = q2 + 2 * BLK
        o = y + c * BLK
        for i in range(nb):
            o[i] = q0[i] + q1[i] + q2[i]
        o = y + (2 + c) * BLK
        for i in range(nb):
            o[i] = q1[i] - q2[i] - q3[i]


# F(4x4, 3x3): A^T = [[1,1,1,1,1,0],[0,1,-1,2,-2,0],[0,1,1,4,4,0],[0,1,-1,8,-8,1]]

cdef inline void output_block_f4_float(const float* mm, Py_ssize_t ldm, Py_ssize_t nb,
                                       float* y, float* probe) noexcept nogil:
    # output_block_f4 in float32, vectorised; probe[0:4] also collects y - y (see
    # nonfinite_probe).
    cdef float pbuf[6 * 4 * BLK]
    cdef Py_ssize_t k, c
    for k in range(6):
        pyconv_wg_at6_f(mm + 6 * k * ldm, ldm, nb, pbuf + 4 * k * BLK, BLK, NULL)
    for c in range(4):
        pyconv_wg_at6_f(pbuf + c * BLK, 4 * BLK, nb, y + c * BLK, 4 * BLK, probe)


cdef inline void output_block_f4(const floating* mm, Py_ssize_t ldm, Py_ssize_t nb,
                                 floating* y) noexcept nogil:
    # y[(4*r + c)*BLK + i] = (A^T M_i A)[r, c], M_i[a] = mm[a*ldm + i].
    cdef floating pbuf[6 * 4 * BLK]
    cdef const floating* m0
    cdef const floating* m1
    cdef const floating* m2
    cdef const floating* m3
    cdef const floating* m4
    cdef const floating* m5
    cdef floating* o
    cdef Py_ssize_t k, c, i
    for k in range(6):              # rows of M: A^T along the columns s
        m0 = mm + 6 * k * ldm
        m1 = m0 + ldm
        m2 = m1 + ldm
        m3 = m2 + ldm
        m4 = m3 + ldm
        m5 = m4 + ldm
        o = pbuf + 4 * k * BLK
        for i in range(nb):
            o[i] = m0[i] + (m1[i] + m2[i]) + (m3[i] + m4[i])
        o = o + BLK
        for i in range(nb):
            o[i] = (m1[i] - m2[i]) + 2 * (m3[i] - m4[i])
        o = o + BLK
        for i in range(nb):
            o[i] = (m1[i] + m2[i]) + 4 * (m3[i] + m4[i])
        o = o + BLK
        for i in range(nb):
            o[i] = (m1[i] - m2[i]) + 8 * (m3[i] - m4[i]) + m5[i]
    for c in range(4):              # then along the rows
        m0 = pbuf + c * BLK
        m1 = m0 + 4 * BLK
        m2 = m1 + 4 * BLK
        m3 = m2 + 4 * BLK
        m4 = m3 + 4 * BLK
        m5 = m4 + 4 * BLK
        o = y + c * BLK
        for i in range(nb):
            o[i] = m0[i] + (m1[i] + m2[i]) + (m3[i] + m4[i])
        o = y + (4 + c) * BLK
        for i in range(nb):
            o[i] = (m1[i] - m2[i]) + 2 * (m3[i] - m4[i])
        o = y + (8 + c) * BLK
        for i in range(nb):
            o[i] = (m1[i] + m2[i]) + 4 * (m3[i] + m4[i])
        o = y + (12 + c) * BLK
        for i in range(nb):
            o[i] = (m1[i] - m2[i]) + 8 * (m3[i] - m4[i]) + m5[i]


cdef inline floating act(floating v, bint relu) noexcept nogil:
    # ReLU keeps NaN, as torch.relu and every other pyconv epilogue do.
    if relu:
        return 0 if v < 0 else v
    return v


cdef inline void store_rows(const floating* y, Py_ssize_t mt, Py_ssize_t nb,
                            Py_ssize_t ni, Py_ssize_t nj_last, floating* orow,
                            Py_ssize_t OW, floating b, bint relu) noexcept nogil:
    # Output rows r < ni of nb tiles: orow[r*OW + mt*i + c] = act(y[(mt*r + c)*BLK + i]
    # + b); the last tile keeps only nj_last columns.
    cdef Py_ssize_t r, c, i, i0, nfull
    cdef floating* o
    cdef const floating* y0
    cdef const floating* y1
    cdef const floating* y2
    cdef const floating* y3
    nfull = nb if nj_last == mt else nb - 1
    for r in range(ni):
        o = orow + r * OW
        y0 = y + mt * r * BLK
        y1 = y0 + BLK
        if mt == 2:
            for i in range(nfull):
                o[2 * i] = act(y0[i] + b, relu)
                o[2 * i + 1] = act(y1[i] + b, relu)
        else:
            y2 = y1 + BLK
            y3 = y2 + BLK
            i0 = 0
            if floating is float:
                i0 = pyconv_wg_store4_f(y0, y1, y2, y3, nfull, o, b, relu)
            for i in range(i0, nfull):
                o[4 * i] = act(y0[i] + b, relu)
                o[4 * i + 1] = act(y1[i] + b, relu)
                o[4 * i + 2] = act(y2[i] + b, relu)
                o[4 * i + 3] = act(y3[i] + b, relu)
        for c in range(nj_last if nfull < nb else 0):
            o[mt * nfull + c] = act(y0[c * BLK + nfull] + b, relu)


cdef inline void store_block(const floating* y, Py_ssize_t qb, Py_ssize_t qb_end,
                             Py_ssize_t mt, Py_ssize_t n_tiles, Py_ssize_t TW,
                             Py_ssize_t OH, Py_ssize_t OW, floating* out,
                             const Py_ssize_t* out_off, floating b,
                             bint relu) noexcept nogil:
    # The output transform's values y of tiles qb <= q < qb_end into the output plane of
    # one channel (out: at that channel of image 0), a segment of one tile row at a
    # time; only the valid outputs of edge tiles.
    cdef Py_ssize_t q, img, th, tw, tw_end, nb, ni, nj
    img = qb // n_tiles
    th = (qb - img * n_tiles) // TW
    tw = qb - img * n_tiles - th * TW
    q = qb
    while q < qb_end:
        tw_end = TW if qb_end - q > TW - tw else tw + (qb_end - q)
        nb = tw_end - tw
        ni = OH - th * mt
        if ni > mt:
            ni = mt
        nj = OW - (tw_end - 1) * mt
        if nj > mt:
            nj = mt
        store_rows(y + (q - qb), mt, nb, ni, nj,
                   out + out_off[img] + th * mt * OW + tw * mt, OW, b, relu)
        q = q + nb
        # the next segment starts the next tile row (or the next image's first)
        tw = 0
        th = th + 1
        if th * TW == n_tiles:
            th = 0
            img = img + 1


# ---- one work unit -------------------------------------------------------------------

cdef inline void nonfinite_probe(const floating* y, Py_ssize_t mt, Py_ssize_t nb,
                                 floating* acc) noexcept nogil:
    # acc[i] stays 0 while the block's mt*mt*nb transform outputs are all finite, else
    # turns NaN: v - v is NaN exactly for inf and NaN (no -ffast-math, so it is not
    # folded to 0). One sum per tile, not one for the block: a single running sum is a
    # chain of dependent scalar adds, which took half of the output transform's time.
    cdef Py_ssize_t r, i
    for r in range(mt * mt):
        for i in range(nb):
            acc[i] = acc[i] + (y[r * BLK + i] - y[r * BLK + i])


cdef inline bint unit(const floating* x, const Py_ssize_t* in_off,
                      const floating* pad_plane, const floating* u, const floating* bias,
                      floating* out, const Py_ssize_t* out_off, Py_ssize_t out_ch,
                      floating* vbuf, floating* mbuf,
                      Py_ssize_t mt, Py_ssize_t cin_g, Py_ssize_t cout_g,
                      Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                      Py_ssize_t q0, Py_ssize_t q1, Py_ssize_t chunk,
                      const Py_ssize_t* rowidx, const Py_ssize_t* colidx,
                      const Py_ssize_t* colrun, Py_ssize_t TW, Py_ssize_t n_tiles,
                      Py_ssize_t in_ld, Py_ssize_t u_ld, const floating* up,
                      Py_ssize_t up_ld, floating* panel,
                      floating pad, bint has_bias, bint relu, int stages) noexcept nogil:
    # Returns whether every output the unit computed is finite.
    # Input plane (image img, channel c of this group) at x + in_off[img*in_ld + c]
    # (in_off already points at the group's first channel), or pad_plane where the
    # offset is -1; u: U[a] rows for this group, U[a] at u + a*u_ld, row stride cin_g;
    # output plane (img, c) at out + out_off[img] + c*out_ch (out at the group's first
    # channel). Tiles q0 <= q < q1 are numbered
    # across images (n_tiles per image), so small images share one GEMM. up: NULL, or
    # this group's U[a] packed for packed_gemm, at up + a*up_ld (panel: its scratch).
    cdef Py_ssize_t alpha = mt + 2
    cdef Py_ssize_t A2 = alpha * alpha
    cdef Py_ssize_t nt = q1 - q0
    cdef Py_ssize_t ldv = cin_g * chunk + SKEW
    cdef Py_ssize_t ldm = cout_g * chunk + SKEW
    cdef Py_ssize_t c, q, th, tw, tw_end, nb, r, a, ni, nj, qb, qb_end, ncol, img, ql, off
    cdef floating rbuf[6 * LDC]
    # float32 F4 reads whole steps of 4 tiles of a row, up to 4*BLK + 1 < LDC values:
    # zeroed first, so that none of them is uninitialised
    cdef floating tc[6 * LDC]
    # float32 F4 splits a segment's vertical pass after the next segment's is computed:
    # the split's 16-wide loads of values stored just before by other, narrower stores
    # (the edge columns; the run from column 1) wait for those stores to reach the
    # cache (store forwarding fails); perf put a fifth of the 16-tile split's samples
    # on its first load
    cdef float tc_next[6 * LDC]
    cdef float* tcur = NULL
    cdef float* tdone = NULL
    cdef float* vdone = NULL
    cdef Py_ssize_t nb_done = 0
    cdef floating padrows[2 * LDC]
    cdef bint padrows_ready = False
    cdef floating tp[36 * BLK]
    # the output transform's blocks, two: a block is stored into the output rows after
    # the next one is computed, as tc above (store_rows reads y by segment, across the
    # vectors that wrote it)
    cdef floating y[16 * BLK]
    cdef floating y_next[16 * BLK]
    cdef floating* ycur = y
    cdef floating* ydone = y_next
    cdef floating* ytmp
    cdef Py_ssize_t done_c = -1, done_qb = 0, done_qb_end = 0
    cdef floating done_b = 0
    cdef const floating* rp[6]
    cdef floating b
    cdef floating probe = 0
    cdef floating probes[BLK]
    cdef const floating* xp
    # 1. input transform: blocks of up to BLK tiles, each block packed from the tile
    #    row segments it spans
    if floating is float and mt == 4:
        if not pyconv_wg_wide:   # (the 16-tile steps read only valid values)
            memset(tc, 0, sizeof(tc))
            memset(tc_next, 0, sizeof(tc_next))
        tcur = <float*>tc
        tdone = tc_next
    for c in range(cin_g if stages & 1 else 0):
        qb = q0
        while qb < q1:
            qb_end = qb + BLK if q1 - qb > BLK else q1
            q = qb
            while q < qb_end:
                img = q // n_tiles
                ql = q - img * n_tiles
                th = ql // TW
                tw = ql - th * TW
                tw_end = TW if qb_end - q > TW - tw else tw + (qb_end - q)
                nb = tw_end - tw
                ncol = nb * mt + 2
                off = in_off[img * in_ld + c]
                xp = x + off if off >= 0 else pad_plane
                if floating is float and mt == 4:
                    if not padrows_ready:
                        for r in range(LDC):
                            padrows[r] = pad
                            padrows[LDC + r] = 0
                        padrows_ready = True
                    vertical_f4_in_place(xp, W, rowidx + th * mt, tw * mt, ncol, colidx,
                                         colrun, pad, padrows, tcur)
                else:
                    for r in range(alpha):
                        rp[r] = row_pointer(xp, W, rowidx[th * mt + r], tw * mt, ncol,
                                            colidx, colrun, pad, rbuf + r * LDC)
                if mt == 2:
                    vertical_f2(rp, ncol, tc)
                    split_f2(tc, nb, tp + (q - qb))
                elif floating is not float:
                    vertical_f4(rp, ncol, tc)
                    split_f4(tc, nb, tp + (q - qb))
                else:
                    # Split and horizontal pass at once, for the previous segment.
                    # The up to 3 tiles past the segment it writes are the next
                    # segment's (written after it), the next channel's first
                    # (likewise), past the unit's last tile (never read), or in the
                    # last V row's SKEW padding.
                    split_segment(tdone, nb_done, vdone, ldv)
                    tdone, tcur = tcur, tdone
                    nb_done = nb
                    vdone = <float*>vbuf + c * chunk + (q - q0)
                q = q + nb
            if mt == 2:
                horizontal_f2(tp, qb_end - qb, vbuf + c * chunk + (qb - q0), ldv)
            elif floating is not float:
                horizontal_f4(tp, qb_end - qb, vbuf + c * chunk + (qb - q0), ldv)
            qb = qb_end
    if floating is float and mt == 4:
        split_segment(tdone, nb_done, vdone, ldv)
    # 2. alpha^2 GEMMs: M[a] (cout_g x nt) = U[a] (cout_g x cin_g) @ V[a] (cin_g x nt)
    for a in range(A2 if stages & 2 else 0):
        if up != NULL:
            packed_gemm(up + a * up_ld, vbuf + a * ldv, chunk, mbuf + a * ldm, chunk,
                        cout_g, nt, cin_g, False, panel)
        else:
            gemm_rm(u + a * u_ld, vbuf + a * ldv, mbuf + a * ldm, cout_g, nt, cin_g,
                    cin_g, chunk, chunk, 0)
    # 3. output transform, bias, ReLU; only valid outputs of edge tiles are written
    for q in range(BLK):
        probes[q] = 0
    for c in range(cout_g if stages & 4 else 0):
        b = bias[c] if has_bias else 0
        qb = q0
        while qb < q1:
            qb_end = qb + BLK if q1 - qb > BLK else q1
            if mt == 2:
                output_block_f2(mbuf + c * chunk + (qb - q0), ldm, qb_end - qb, ycur)
            elif floating is float:   # probed as computed
                output_block_f4_float(mbuf + c * chunk + (qb - q0), ldm, qb_end - qb,
                                      ycur, probes)
            else:
                output_block_f4(mbuf + c * chunk + (qb - q0), ldm, qb_end - qb, ycur)
            if mt == 2 or floating is not float:
                nonfinite_probe(ycur, mt, qb_end - qb, probes)
            if done_c >= 0:
                store_block(ydone, done_qb, done_qb_end, mt, n_tiles, TW, OH, OW,
                            out + done_c * out_ch, out_off, done_b, relu)
            ytmp = ydone
            ydone = ycur
            ycur = ytmp
            done_c = c
            done_qb = qb
            done_qb_end = qb_end
            done_b = b
            qb = qb_end
    if done_c >= 0:
        store_block(ydone, done_qb, done_qb_end, mt, n_tiles, TW, OH, OW,
                    out + done_c * out_ch, out_off, done_b, relu)
    for q in range(BLK):
        probe = probe + probes[q]
    return probe == probe


def winograd_2d(const floating[::1] x, const Py_ssize_t[:, ::1] in_off,
                const floating[::1] pad_plane, const floating[:, :, ::1] u,
                const floating[::1] bias, floating[::1] out,
                const Py_ssize_t[::1] out_off, Py_ssize_t out_ch,
                Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                const Py_ssize_t[::1] rowidx, const Py_ssize_t[::1] colidx,
                const Py_ssize_t[::1] colrun, Py_ssize_t TH, Py_ssize_t TW,
                Py_ssize_t mt, Py_ssize_t groups, floating pad_value,
                bint has_bias, bint relu, Py_ssize_t chunk,
                floating[:, ::1] work, int n_threads, const floating[:, ::1] u_packed=None,
                int stages=7):
    """out = conv3x3(x, g) + bias by Winograd F(mt x mt, 3x3), mt in {2, 4}.

    Planes are addressed through tables, so that one call covers any layout: input
    plane (image i, channel c) is the H*W values at ``x[in_off[i, c]:]``, or
    ``pad_plane`` (H*W values) where ``in_off[i, c]`` is -1; output plane (i, channel
    co) is the OH*OW values at ``out[out_off[i] + co*out_ch:]``. (A conv2d's tables
    are affine; conv3d's stacked depth taps are not.) u: ((mt+2)**2, C_out,
    C_in/groups), the transformed filter, C_in = in_off.shape[1]; TH = ceil(OH/mt),
    TW = ceil(OW/mt) tiles; rowidx: (TH*mt + 2,) input row at each padded row (-1
    pad, -2 zero); colidx, colrun: (TW*mt + 2,) the same for columns, and the length
    of the run of consecutive input columns starting at each padded column.
    ``work`` has one row of at least ``workspace_row(mt, cin_g, cout_g, chunk)``
    values per thread; a unit covers ``chunk`` consecutive tiles of one group, numbered
    image after image (a chunk may span images). The caller guarantees that every
    offset stays inside its array.
    ``u_packed`` (optional, when ``PACKED_VECTOR``): u in
    ``pyconv.ops._winograd.packed_filter``'s layout, (groups, (mt+2)**2 * up_ld); the
    GEMMs then run on pyconv's packed tiles instead of OpenBLAS.
    ``stages`` (a bit mask of the three steps) exists for profiling only.

    Returns True when every output computed (before bias and ReLU) is finite, so a
    caller can tell, without a pass over the input, that a NaN or inf was spread
    over whole tiles (or a value overflowed).
    """
    cdef Py_ssize_t N = in_off.shape[0]
    cdef Py_ssize_t C_in = in_off.shape[1]
    cdef Py_ssize_t C_out = u.shape[1]
    cdef Py_ssize_t cin_g = C_in // groups
    cdef Py_ssize_t cout_g = C_out // groups
    cdef Py_ssize_t alpha = mt + 2
    cdef Py_ssize_t n_tiles = TH * TW
    cdef Py_ssize_t n_chunks
    cdef Py_ssize_t n_units
    cdef Py_ssize_t u_ld = C_out * cin_g
    cdef Py_ssize_t uu, g, k, q0, q1
    cdef floating* vbuf = NULL
    cdef floating* mbuf = NULL
    cdef floating* panel = NULL
    cdef Py_ssize_t up_ld = 0
    cdef const floating* bias_ptr = &bias[0] if has_bias else NULL
    cdef unsigned char[::1] finite
    if N == 0 or C_out == 0 or OH == 0 or OW == 0:
        return True
    if rowidx.shape[0] < TH * mt + 2 or colidx.shape[0] < TW * mt + 2 \
            or colrun.shape[0] < colidx.shape[0] or mt not in (2, 4) \
            or out_off.shape[0] != N or u.shape[2] != cin_g or pad_plane.shape[0] < 1 \
            or chunk < 1 or work.shape[1] < workspace_row(mt, cin_g, cout_g, chunk):
        raise ValueError("winograd_2d: inconsistent tables")
    if pad_plane.shape[0] < H * W:
        for uu in range(N):
            for k in range(C_in):
                if in_off[uu, k] < 0:
                    raise ValueError("winograd_2d: pad planes need an H*W pad_plane")
    if u_packed is not None and u_packed.shape[0] > 0:
        up_ld = u_packed.shape[1] // (alpha * alpha)
        if (not PG_VECTOR or u_packed.shape[0] != groups
                or up_ld != (cout_g + PG_MR - 1) // PG_MR * PG_MR * cin_g
                or u_packed.shape[1] != alpha * alpha * up_ld):
            raise ValueError("winograd_2d: u_packed of the wrong shape, or no packed GEMM")
    n_chunks = (N * n_tiles + chunk - 1) // chunk
    n_units = groups * n_chunks
    finite = bytearray(n_units)
    with nogil, parallel(num_threads=n_threads):
        vbuf = &work[omp_get_thread_num(), 0]
        mbuf = vbuf + alpha * alpha * (cin_g * chunk + SKEW)
        panel = mbuf + alpha * alpha * (cout_g * chunk + SKEW)
        for uu in prange(n_units, schedule='static'):
            k = uu % n_chunks
            g = uu // n_chunks
            q0 = k * chunk
            q1 = q0 + chunk
            if q1 > N * n_tiles:
                q1 = N * n_tiles
            finite[uu] = unit(&x[0], &in_off[0, g * cin_g], &pad_plane[0],
                 &u[0, g * cout_g, 0], bias_ptr + g * cout_g if has_bias else NULL,
                 &out[g * cout_g * out_ch], &out_off[0], out_ch, vbuf, mbuf, mt, cin_g,
                 cout_g, H, W, OH, OW, q0, q1, chunk, &rowidx[0], &colidx[0],
                 &colrun[0], TW, n_tiles, C_in, u_ld,
                 &u_packed[g, 0] if up_ld > 0 else NULL, up_ld, panel,
                 pad_value, has_bias, relu, stages)
    for uu in range(n_units):
        if not finite[uu]:
            return False
    return True


def set_wide_loops(bint on, bint tall=True):
    """Run the packed GEMM's whole tiles two column panels at a time in AVX-512
    registers, and the float32 F(4x4) transforms 16 tiles per step (``on``; only where
    built, and only on a CPU with AVX-512: the caller checks), or the AVX2 tiles and
    the 4-tile SSE steps. Returns whether the AVX-512 forms now run. ``tall``: the
    AVX-512 tiles take two weight panels (8 rows) at a time where there are two (false:
    one, for comparisons). All give the same bits."""
    pg_set_tall(tall)
    cdef int tiles = pg_set_wide(on)
    return bool(pyconv_wg_set_wide(on) and tiles)
include "_winograd_1d.pxi"
