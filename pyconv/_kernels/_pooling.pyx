"""Pooling kernels: separable window reductions, max pooling with indices, unpooling.

Every input is seen as ``(P, D, H, W)`` planes (1-D and 2-D problems have unit
leading axes). Per-axis plans built in Python (``pyconv._pool_geometry``) say which
input rows/columns each window reads, with -1 for a padding cell and -2 for "not in
the window"; padding modes, ceil mode and adaptive windows are all resolved there.

The parallel loop runs over units of ``block`` output rows of one plane (a whole
plane per unit when there are enough planes): each unit writes its own rows of the
output and nothing else, so results are bit-identical for any thread count. Each
output row is computed rows first (the window's input rows combined elementwise into
a row buffer, in tap order), then columns (each output reduces its taps of that
buffer left to right); the order of the operations is fixed, whatever the split or
the instruction set. The only scratch is one padded row buffer per thread (the
caller's workspace, ``W + lo + hi`` values plus 16 of slack that vector loads may
touch but never use).

In the AVX2 build, float32 max/sum passes use 8-wide intrinsics: stride-2 windows
read their taps through an even/odd deinterleave of the row buffer. ``max_ps(v, m)``
is ``v > m ? v : m``, so ``blend(max_ps(v, m), v, isnan(v))`` is bit for bit the
scalar rule ``v > m || isnan(v) ? v : m``.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, fabs, pow, sqrt
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memcpy

from pyconv._kernels._openmp_helpers cimport omp_get_thread_num

cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #ifdef __AVX2__
    #include <immintrin.h>
    #define PC_AVX2 1
    #else
    #define PC_AVX2 0
    #endif

    /* Ask for the bytes [p, p + n) ahead of their use (a hint: never faults). */
    static inline void pc_prefetch(const void* p, ptrdiff_t n) {
    #if defined(__GNUC__)
        const char* c = (const char*)p;
        ptrdiff_t i;
        for (i = 0; i < n; i += 64) __builtin_prefetch(c + i, 0, 3);
    #endif
    }

    /* PyTorch's max rule: v replaces m if v > m or v is NaN. */
    static inline float pc_fmax(float m, float v) { return (v > m || v != v) ? v : m; }

    #ifdef __AVX2__
    static inline __m256 pc_vmax(__m256 m, __m256 v) {
        /* max_ps(v, m) is v > m ? v : m (m on ties and on NaN); then a NaN v wins. */
        return _mm256_blendv_ps(_mm256_max_ps(v, m), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    /* p[0], p[2], ..., p[14] (reads p[0..15]) */
    static inline __m256 pc_evens(const float* p) {
        __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
        __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e),
                                                      _MM_SHUFFLE(3, 1, 2, 0)));
    }
    static inline __m256 pc_ld(const float* p) { return _mm256_loadu_ps(p); }
    #define PC_OP(m, v) (is_sum ? _mm256_add_ps((m), (v)) : pc_vmax((m), (v)))
    #endif
    #define PC_SOP(m, v) (is_sum ? (m) + (v) : pc_fmax((m), (v)))

    /* acc = (r0 op r1) [op r2]; r2 may be NULL. op: sum or max. */
    static void pc_vert_init_f(float* acc, const float* r0, const float* r1,
                               const float* r2, ptrdiff_t n, int is_sum) {
        ptrdiff_t i = 0;
    #ifdef __AVX2__
        if (r2) {
            for (; i + 8 <= n; i += 8)
                _mm256_storeu_ps(acc + i, PC_OP(PC_OP(pc_ld(r0 + i), pc_ld(r1 + i)),
                                                pc_ld(r2 + i)));
        } else {
            for (; i + 8 <= n; i += 8)
                _mm256_storeu_ps(acc + i, PC_OP(pc_ld(r0 + i), pc_ld(r1 + i)));
        }
    #endif
        if (r2) {
            for (; i < n; i++) acc[i] = PC_SOP(PC_SOP(r0[i], r1[i]), r2[i]);
        } else {
            for (; i < n; i++) acc[i] = PC_SOP(r0[i], r1[i]);
        }
    }

    /* acc = (acc op r0) [op r1]; r1 may be NULL: the init above with acc as its first
       row (each vector is loaded before it is stored). */
    static void pc_vert_acc_f(float* acc, const float* r0, const float* r1, ptrdiff_t n,
                              int is_sum) {
        pc_vert_init_f(acc, acc, r0, r1, n, is_sum);
    }

    /* out[ow] = rb[ow*s] op rb[ow*s + 1] op ... (k taps, left to right) for the
       leading multiple of 8 outputs below n, s in {1, 2, 4}; returns how many were
       done (0 without AVX2). Reads up to pc_horiz_over(k, s) values past the last
       tap, rb[(n-1)*s + k - 1]. */
    static ptrdiff_t pc_horiz_over(ptrdiff_t k, ptrdiff_t s) {
        return s == 2 ? 1 : s == 4 ? (k + 3) / 4 * 4 - k : 0;
    }
    static ptrdiff_t pc_horiz_f(float* out, const float* rb, ptrdiff_t n, ptrdiff_t k,
                                ptrdiff_t s, int is_sum) {
        ptrdiff_t ow = 0;
    #ifdef __AVX2__
        ptrdiff_t t;
        __m256 m;
        if (s == 4) {
            /* taps 4g..4g+3 of 8 windows: the 32 values from p + 4g, each 128-bit
               lane transposed as 4x4 (tap-major); the lanes then hold the windows in
               the order 0 2 4 6 1 3 5 7, put back by one permute at the end */
            const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            for (; ow + 8 <= n; ow += 8) {
                const float* p = rb + 4 * ow;
                ptrdiff_t g;
                m = _mm256_setzero_ps();
                for (g = 0; 4 * g < k; g++) {
                    __m256 a = pc_ld(p + 4 * g), b = pc_ld(p + 4 * g + 8);
                    __m256 c = pc_ld(p + 4 * g + 16), d = pc_ld(p + 4 * g + 24);
                    __m256 ab0 = _mm256_unpacklo_ps(a, b);
                    __m256 cd0 = _mm256_unpacklo_ps(c, d);
                    __m256 ab1 = _mm256_unpackhi_ps(a, b);
                    __m256 cd1 = _mm256_unpackhi_ps(c, d);
                    __m256 x[4];
                    x[0] = _mm256_shuffle_ps(ab0, cd0, _MM_SHUFFLE(1, 0, 1, 0));
                    x[1] = _mm256_shuffle_ps(ab0, cd0, _MM_SHUFFLE(3, 2, 3, 2));
                    x[2] = _mm256_shuffle_ps(ab1, cd1, _MM_SHUFFLE(1, 0, 1, 0));
                    x[3] = _mm256_shuffle_ps(ab1, cd1, _MM_SHUFFLE(3, 2, 3, 2));
                    for (t = 0; t < 4 && 4 * g + t < k; t++)
                        m = g == 0 && t == 0 ? x[0] : PC_OP(m, x[t]);
                }
                _mm256_storeu_ps(out + ow, _mm256_permutevar8x32_ps(m, order));
            }
            return ow;
        }
        if (s == 1) {
            for (; ow + 8 <= n; ow += 8) {
                const float* p = rb + ow;
                m = pc_ld(p);
                for (t = 1; t < k; t++) m = PC_OP(m, pc_ld(p + t));
                _mm256_storeu_ps(out + ow, m);
            }
        } else if (s == 2) {
            for (; ow + 8 <= n; ow += 8) {
                const float* p = rb + 2 * ow;
                m = pc_evens(p);
                for (t = 1; t < k; t++) m = PC_OP(m, pc_evens(p + t));
                _mm256_storeu_ps(out + ow, m);
            }
        }
    #endif
        return ow;
    }

    /* ---- max with indices (int32 flat indices in the plane, PC_NOIDX = padding) ---- */
    #define PC_NOIDX 2147483647

    #ifdef __AVX2__
    static inline __m256i pc_iota(ptrdiff_t i, int32_t base) {
        return _mm256_add_epi32(_mm256_set1_epi32((int32_t)(base + i)),
                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    /* sequential rule: (v, vi) replaces (m, mi) if v > m or v is NaN */
    static inline void pc_vseq(__m256* m, __m256i* mi, __m256 v, __m256i vi) {
        __m256 t = _mm256_or_ps(_mm256_cmp_ps(v, *m, _CMP_GT_OQ),
                                _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        *m = _mm256_blendv_ps(*m, v, t);
        *mi = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(*mi),
                                                   _mm256_castsi256_ps(vi), t));
    }
    /* order-free rule (same winner as a row-major scan): the NaN with the largest
       index, else the largest value with the smallest index */
    static inline void pc_vbest(__m256* a, __m256i* ai, __m256 b, __m256i bi) {
        __m256 na = _mm256_cmp_ps(*a, *a, _CMP_UNORD_Q);
        __m256 nb = _mm256_cmp_ps(b, b, _CMP_UNORD_Q);
        __m256 gt = _mm256_cmp_ps(b, *a, _CMP_GT_OQ);
        __m256 eq = _mm256_cmp_ps(b, *a, _CMP_EQ_OQ);
        __m256 ilt = _mm256_castsi256_ps(_mm256_cmpgt_epi32(*ai, bi));
        __m256 igt = _mm256_castsi256_ps(_mm256_cmpgt_epi32(bi, *ai));
        /* b wins: (b NaN and (a not NaN or bi > ai)) or
                   (a not NaN and (b > a or (b == a and bi < ai))) */
        __m256 t1 = _mm256_andnot_ps(_mm256_andnot_ps(igt, na), nb);
        __m256 t2 = _mm256_andnot_ps(na, _mm256_or_ps(gt, _mm256_and_ps(eq, ilt)));
        __m256 t = _mm256_or_ps(t1, t2);
        *a = _mm256_blendv_ps(*a, b, t);
        *ai = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(*ai),
                                                   _mm256_castsi256_ps(bi), t));
    }
    #endif

    /* first rows of a window: (m, mi) = r0 [then r1 by the sequential rule] */
    static void pc_ivert_init_f(float* m, int32_t* mi, const float* r0, int32_t b0,
                                const float* r1, int32_t b1, ptrdiff_t n) {
        ptrdiff_t i = 0;
    #ifdef __AVX2__
        for (; i + 8 <= n; i += 8) {
            __m256 v = pc_ld(r0 + i);
            __m256i vi = pc_iota(i, b0);
            if (r1) pc_vseq(&v, &vi, pc_ld(r1 + i), pc_iota(i, b1));
            _mm256_storeu_ps(m + i, v);
            _mm256_storeu_si256((__m256i*)(mi + i), vi);
        }
    #endif
        for (; i < n; i++) {
            float v = r0[i];
            int32_t vi = b0 + (int32_t)i;
            if (r1 && (r1[i] > v || r1[i] != r1[i])) { v = r1[i]; vi = b1 + (int32_t)i; }
            m[i] = v;
            mi[i] = vi;
        }
    }

    /* later rows, in order: r0 [then r1] by the sequential rule */
    static void pc_ivert_acc_f(float* m, int32_t* mi, const float* r0, int32_t b0,
                               const float* r1, int32_t b1, ptrdiff_t n) {
        ptrdiff_t i = 0;
    #ifdef __AVX2__
        for (; i + 8 <= n; i += 8) {
            __m256 v = pc_ld(m + i);
            __m256i vi = _mm256_loadu_si256((const __m256i*)(mi + i));
            pc_vseq(&v, &vi, pc_ld(r0 + i), pc_iota(i, b0));
            if (r1) pc_vseq(&v, &vi, pc_ld(r1 + i), pc_iota(i, b1));
            _mm256_storeu_ps(m + i, v);
            _mm256_storeu_si256((__m256i*)(mi + i), vi);
        }
    #endif
        for (; i < n; i++) {
            float v = m[i];
            int32_t vi = mi[i];
            if (r0[i] > v || r0[i] != r0[i]) { v = r0[i]; vi = b0 + (int32_t)i; }
            if (r1 && (r1[i] > v || r1[i] != r1[i])) { v = r1[i]; vi = b1 + (int32_t)i; }
            m[i] = v;
            mi[i] = vi;
        }
    }

    /* columns pass with indices for the leading multiple of 8 uniform windows
       (ow*s + t, t < k, s in {1, 2}); returns how many were done (0 without AVX2). */
    static ptrdiff_t pc_ihoriz_f(float* out, int64_t* iout, const float* m,
                                 const int32_t* mi, ptrdiff_t n, ptrdiff_t k, ptrdiff_t s) {
        ptrdiff_t ow = 0;
    #ifdef __AVX2__
        ptrdiff_t t;
        const __m256i noidx = _mm256_set1_epi32(PC_NOIDX), minus1 = _mm256_set1_epi32(-1);
        const float* mif = (const float*)mi;
        if (s != 1 && s != 2) return 0;
        for (; ow + 8 <= n; ow += 8) {
            __m256 a, b;
            __m256i ai, bi;
            if (s == 1) {
                a = pc_ld(m + ow);
                ai = _mm256_loadu_si256((const __m256i*)(mi + ow));
            } else {
                a = pc_evens(m + 2 * ow);
                ai = _mm256_castps_si256(pc_evens(mif + 2 * ow));
            }
            for (t = 1; t < k; t++) {
                if (s == 1) {
                    b = pc_ld(m + ow + t);
                    bi = _mm256_loadu_si256((const __m256i*)(mi + ow + t));
                } else {
                    b = pc_evens(m + 2 * ow + t);
                    bi = _mm256_castps_si256(pc_evens(mif + 2 * ow + t));
                }
                pc_vbest(&a, &ai, b, bi);
            }
            ai = _mm256_blendv_epi8(ai, minus1, _mm256_cmpeq_epi32(ai, noidx));
            _mm256_storeu_ps(out + ow, a);
            _mm256_storeu_si256((__m256i*)(iout + ow),
                                _mm256_cvtepi32_epi64(_mm256_castsi256_si128(ai)));
            _mm256_storeu_si256((__m256i*)(iout + ow + 4),
                                _mm256_cvtepi32_epi64(_mm256_extracti128_si256(ai, 1)));
        }
    #endif
        return ow;
    }
    """
    bint PC_AVX2
    int32_t PC_NOIDX
    void pc_prefetch(const void* p, Py_ssize_t n) noexcept nogil
    void pc_vert_init_f(float* acc, const float* r0, const float* r1, const float* r2,
                        Py_ssize_t n, int is_sum) noexcept nogil
    void pc_vert_acc_f(float* acc, const float* r0, const float* r1, Py_ssize_t n,
                       int is_sum) noexcept nogil
    Py_ssize_t pc_horiz_over(Py_ssize_t k, Py_ssize_t s) noexcept nogil
    Py_ssize_t pc_horiz_f(float* out, const float* rb, Py_ssize_t n, Py_ssize_t k,
                          Py_ssize_t s, int is_sum) noexcept nogil
    void pc_ivert_init_f(float* m, int32_t* mi, const float* r0, int32_t b0,
                         const float* r1, int32_t b1, Py_ssize_t n) noexcept nogil
    void pc_ivert_acc_f(float* m, int32_t* mi, const float* r0, int32_t b0,
                        const float* r1, int32_t b1, Py_ssize_t n) noexcept nogil
    Py_ssize_t pc_ihoriz_f(float* out, int64_t* iout, const float* m, const int32_t* mi,
                           Py_ssize_t n, Py_ssize_t k, Py_ssize_t s) noexcept nogil

# Reduction kinds (kept in sync with pyconv.ops.pooling.KINDS).
cdef enum:
    K_MAX = 0      # max, NaN-propagating
    K_AVG = 1      # sum, divided by the divisor
    K_LP = 2       # sum of x**p, then (sum / divisor * scale) ** (1/p)
    K_LPINF = 3    # max of |x|, NaN-propagating


cdef inline floating nanmax(floating m, floating v) noexcept nogil:
    # PyTorch's rule `v > m || isnan(v)`: a NaN anywhere in a window wins.
    return v if ((v > m) | (v != v)) else m


cdef inline floating lp_power(floating v, double norm) noexcept nogil:
    if norm == 2.0:
        return v * v
    if norm == 1.0:
        return v
    return <floating>pow(v, norm)


cdef inline void init_row(floating* acc, const floating* row, Py_ssize_t n, int kind,
                          double norm) noexcept nogil:
    cdef Py_ssize_t i
    if kind == K_MAX or kind == K_AVG:
        memcpy(acc, row, n * sizeof(floating))
    elif kind == K_LPINF:
        for i in range(n):
            acc[i] = fabs(row[i])
    elif norm == 2.0:
        for i in range(n):
            acc[i] = row[i] * row[i]
    else:
        for i in range(n):
            acc[i] = lp_power(row[i], norm)


cdef inline void accum_row(floating* acc, const floating* row, Py_ssize_t n, int kind,
                           double norm) noexcept nogil:
    # Elementwise over a whole input row: independent lanes, so the compiler
    # vectorises these loops (the reduction order per output is fixed).
    cdef Py_ssize_t i
    cdef floating v, m
    if kind == K_MAX:
        for i in range(n):
            v = row[i]
            m = acc[i]
            acc[i] = v if ((v > m) | (v != v)) else m
    elif kind == K_AVG:
        for i in range(n):
            acc[i] = acc[i] + row[i]
    elif kind == K_LPINF:
        for i in range(n):
            v = fabs(row[i])
            m = acc[i]
            acc[i] = v if ((v > m) | (v != v)) else m
    elif norm == 2.0:
        for i in range(n):
            acc[i] = acc[i] + row[i] * row[i]
    else:
        for i in range(n):
            acc[i] = acc[i] + lp_power(row[i], norm)


cdef inline void vert_init(floating* acc, const floating* r0, const floating* r1,
                           const floating* r2, Py_ssize_t n, int kind,
                           double norm) noexcept nogil:
    # acc = r0 (op r1) (op r2), in that order; r1/r2 may be NULL.
    if floating is float:
        if r1 != NULL and (kind == K_MAX or kind == K_AVG):
            pc_vert_init_f(acc, r0, r1, r2, n, kind == K_AVG)
            return
    init_row(acc, r0, n, kind, norm)
    if r1 != NULL:
        accum_row(acc, r1, n, kind, norm)
    if r2 != NULL:
        accum_row(acc, r2, n, kind, norm)


cdef inline void vert_acc(floating* acc, const floating* r0, const floating* r1,
                          Py_ssize_t n, int kind, double norm) noexcept nogil:
    # acc = (acc op r0) (op r1); r1 may be NULL.
    if floating is float:
        if kind == K_MAX or kind == K_AVG:
            pc_vert_acc_f(acc, r0, r1, n, kind == K_AVG)
            return
    accum_row(acc, r0, n, kind, norm)
    if r1 != NULL:
        accum_row(acc, r1, n, kind, norm)


cdef inline void reduce_uniform(floating* orow, const floating* rb, Py_ssize_t ow0,
                                Py_ssize_t n, Py_ssize_t k, Py_ssize_t sw,
                                bint is_max) noexcept nogil:
    # Full windows ow*sw + t (t < k), outputs ow0 <= ow < n: the common shapes get
    # loops with constant offsets, which the compiler vectorises (strided loads).
    cdef Py_ssize_t ow, t
    cdef const floating* src
    cdef floating m
    if is_max:
        if k == 2 and sw == 2:
            for ow in range(ow0, n):
                orow[ow] = nanmax(rb[2 * ow], rb[2 * ow + 1])
        elif k == 3 and sw == 2:
            for ow in range(ow0, n):
                orow[ow] = nanmax(nanmax(rb[2 * ow], rb[2 * ow + 1]), rb[2 * ow + 2])
        elif k == 3 and sw == 1:
            for ow in range(ow0, n):
                orow[ow] = nanmax(nanmax(rb[ow], rb[ow + 1]), rb[ow + 2])
        else:
            for ow in range(ow0, n):
                src = rb + ow * sw
                m = src[0]
                for t in range(1, k):
                    m = nanmax(m, src[t])
                orow[ow] = m
    else:
        if k == 2 and sw == 2:
            for ow in range(ow0, n):
                orow[ow] = rb[2 * ow] + rb[2 * ow + 1]
        elif k == 3 and sw == 2:
            for ow in range(ow0, n):
                orow[ow] = rb[2 * ow] + rb[2 * ow + 1] + rb[2 * ow + 2]
        elif k == 3 and sw == 1:
            for ow in range(ow0, n):
                orow[ow] = rb[ow] + rb[ow + 1] + rb[ow + 2]
        else:
            for ow in range(ow0, n):
                src = rb + ow * sw
                m = src[0]
                for t in range(1, k):
                    m = m + src[t]
                orow[ow] = m


cdef inline void reduce_windows(floating* orow, const floating* rb, Py_ssize_t ow0,
                                Py_ssize_t OW, const int64_t* wstart, const int64_t* wcnt,
                                Py_ssize_t dw, bint is_max) noexcept nogil:
    # Horizontal pass, general form: output columns ow0 <= ow < OW, window taps
    # wstart[ow] + t*dw for t < wcnt[ow].
    cdef Py_ssize_t ow, t, cnt
    cdef const floating* src
    cdef floating m, v
    for ow in range(ow0, OW):
        src = rb + wstart[ow]
        cnt = wcnt[ow]
        m = src[0]
        if is_max:
            for t in range(1, cnt):
                v = src[t * dw]
                m = v if ((v > m) | (v != v)) else m
        else:
            for t in range(1, cnt):
                m = m + src[t * dw]
        orow[ow] = m


cdef void pool_row(const floating* xp, Py_ssize_t H, Py_ssize_t W,
                   const int64_t* td, Py_ssize_t KD, const int64_t* th, Py_ssize_t KH,
                   floating* rb, const int64_t* wsrc, Py_ssize_t Wp, Py_ssize_t lo_w,
                   floating* orow, Py_ssize_t OW, const int64_t* wstart,
                   const int64_t* wcnt, Py_ssize_t dw, Py_ssize_t n_uniform,
                   Py_ssize_t kw, Py_ssize_t sw, int kind, bint has_pad_value,
                   floating padv, double norm, double scale, bint use_override,
                   floating override_f, double base_div,
                   const double* div_w, const floating* div_wc, bint div_exact,
                   Py_ssize_t prefetch) noexcept nogil:
    """One output row: rows pass into ``rb`` (padded coordinates), then columns.

    Each input row read is also prefetched ``prefetch`` values ahead (0: none), where
    a later output row will read it.
    """
    cdef bint is_max = kind == K_MAX or kind == K_LPINF
    cdef floating identity = -INFINITY if is_max else 0
    cdef floating* inner = rb + lo_w
    cdef Py_ssize_t a, b, i, j, n_real = 0, n_pad = 0, done = 0
    cdef int64_t sd, sh, src
    cdef const floating* row
    cdef const floating* pend0 = NULL
    cdef const floating* pend1 = NULL
    cdef floating fill, v, bdc
    cdef floating scale_f = <floating>scale
    cdef double inv_norm = 1.0 / norm if norm != 0 else 0.0
    cdef const floating* cols = rb     # what the columns pass reads
    cdef Py_ssize_t n_vec = n_uniform
    # rows pass: the window's input rows in tap order, combined two or three at a
    # time (acc = ((r0 op r1) op r2) op r3 ..., the same order as one at a time)
    for a in range(KD):
        sd = td[a]
        if sd == -2:
            break
        for b in range(KH):
            sh = th[b]
            if sh == -2:
                break
            if sd < 0 or sh < 0:
                n_pad = n_pad + 1
                continue
            row = xp + (sd * H + sh) * W
            if prefetch != 0:
                pc_prefetch(row + prefetch, W * sizeof(floating))
            if n_real == 0:
                pend0 = row
            elif n_real == 1:
                pend1 = row
            elif n_real == 2:
                vert_init(inner, pend0, pend1, row, W, kind, norm)
                pend0 = NULL
            elif pend0 == NULL:
                pend0 = row
            else:
                vert_acc(inner, pend0, row, W, kind, norm)
                pend0 = NULL
            n_real = n_real + 1
    if n_real == 1 and lo_w == 0 and Wp == W and (kind == K_MAX or kind == K_AVG) \
            and not (has_pad_value and n_pad > 0):
        # one input row and no padding columns (1-D pooling, a window one row high):
        # the columns pass reads the row in place rather than a copy of it. The vector
        # loop reads a few values past its last tap: it stops short of the row's end.
        cols = pend0
        while n_vec > 0 and (n_vec - 1) * sw + kw + pc_horiz_over(kw, sw) > W:
            n_vec = n_vec - 1
    elif n_real == 1:
        vert_init(inner, pend0, <const floating*>NULL, <const floating*>NULL, W, kind,
                  norm)
    elif n_real == 2:
        vert_init(inner, pend0, pend1, <const floating*>NULL, W, kind, norm)
    elif pend0 != NULL:
        vert_acc(inner, pend0, <const floating*>NULL, W, kind, norm)
    # padding rows that hold a value (constant mode)
    if has_pad_value and n_pad > 0:
        fill = padv if is_max else padv * n_pad
        if n_real == 0:
            for i in range(W):
                inner[i] = fill
        elif is_max:
            for i in range(W):
                inner[i] = nanmax(inner[i], fill)
        else:
            for i in range(W):
                inner[i] = inner[i] + fill
    elif n_real == 0:
        for i in range(W):
            inner[i] = identity
    # padding columns: copies of the reduced source column, or the pad value
    fill = identity
    if has_pad_value:
        fill = padv if is_max else padv * (n_real + n_pad)
    for j in range(lo_w):
        src = wsrc[j]
        rb[j] = rb[lo_w + src] if src >= 0 else fill
    for j in range(lo_w + W, Wp):
        src = wsrc[j]
        rb[j] = rb[lo_w + src] if src >= 0 else fill
    # columns pass
    if floating is float:
        if n_vec >= 8:
            done = pc_horiz_f(orow, cols, n_vec, kw, sw, not is_max)
    reduce_uniform(orow, cols, done, n_uniform, kw, sw, is_max)
    reduce_windows(orow, cols, n_uniform, OW, wstart, wcnt, dw, is_max)
    if kind == K_AVG or kind == K_LP:
        if use_override:
            for i in range(OW):
                orow[i] = orow[i] / override_f
        elif div_exact:
            # the divisor formed in the compute dtype: the same value (its factors
            # and their product are exact there), without a conversion per output
            # from double (that took a third of a 3x3 stride-1 average pool)
            bdc = <floating>base_div
            for i in range(OW):
                orow[i] = orow[i] / (bdc * div_wc[i])
        else:
            for i in range(OW):
                orow[i] = orow[i] / <floating>(base_div * div_w[i])
    if kind == K_LP:
        for i in range(OW):
            v = orow[i] * scale_f
            if norm == 2.0:
                v = sqrt(v)
            elif norm != 1.0:
                v = <floating>pow(v, inv_norm)
            orow[i] = v


cdef void pool_separable(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                         const int64_t[:, ::1] tab_d, const int64_t[:, ::1] tab_h,
                         const int64_t[::1] wsrc, Py_ssize_t lo_w,
                         const int64_t[::1] wstart, const int64_t[::1] wcnt, Py_ssize_t dw,
                         Py_ssize_t n_uniform, Py_ssize_t kw, Py_ssize_t sw,
                         const double[::1] div_d, const double[::1] div_h,
                         const double[::1] div_w, const floating[::1] div_wc,
                         bint div_exact, int kind, bint has_pad_value,
                         double pad_value, double norm, double scale, bint use_override,
                         double divisor_override, floating[:, ::1] work, Py_ssize_t block,
                         Py_ssize_t prefetch, int n_threads) noexcept:
    """Window reduction of every plane, rows first then columns.

    For each output row the (d, h) taps are combined elementwise into a row buffer
    laid out in padded coordinates (``lo_w + W + hi_w`` values; padded cells are
    filled from ``wsrc``), then each output column reduces its taps
    ``wstart[ow] + t*dw``, ``t < wcnt[ow]``, from that buffer; the first ``n_uniform``
    columns are known to be full windows ``ow*sw + t``, ``t < kw`` (``dw == 1``), which
    take a faster loop. Divisors (integers held as doubles) (avg, lp) are
    ``divisor_override`` if ``use_override``, else ``div_d[od] * div_h[oh] * div_w[ow]``
    (with ``div_exact``: formed in the compute dtype from ``div_wc``, ``div_w`` in that
    dtype, which the caller sets only where that is exact).
    ``work`` has at least ``Wp + 16`` values per thread; each parallel unit is
    ``block`` consecutive output rows (``od*OH + oh``) of one plane.
    """
    cdef Py_ssize_t P = x.shape[0], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OD = out.shape[1], OH = out.shape[2], OW = out.shape[3]
    cdef Py_ssize_t KD = tab_d.shape[1], KH = tab_h.shape[1]
    cdef Py_ssize_t Wp = wsrc.shape[0]
    cdef Py_ssize_t rows = OD * OH
    cdef Py_ssize_t nblk, n_units, u, p, r, r0, r1, od, oh
    cdef floating* rb
    cdef floating padv = <floating>pad_value
    cdef floating override_f = <floating>divisor_override
    cdef bint avg_like = kind == K_AVG or kind == K_LP
    cdef double base_div
    if P == 0 or rows == 0 or OW == 0:
        return
    if block < 1:
        block = rows
    nblk = (rows + block - 1) // block
    n_units = P * nblk
    with nogil, parallel(num_threads=n_threads):
        rb = &work[omp_get_thread_num(), 0]
        for u in prange(n_units, schedule='static'):
            p = u // nblk
            r0 = (u % nblk) * block
            r1 = r0 + block
            if r1 > rows:
                r1 = rows
            for r in range(r0, r1):
                od = r // OH
                oh = r - od * OH
                base_div = div_d[od] * div_h[oh] if avg_like and not use_override else 1.0
                pool_row(&x[p, 0, 0, 0], H, W, &tab_d[od, 0], KD, &tab_h[oh, 0], KH,
                         rb, &wsrc[0], Wp, lo_w, &out[p, od, oh, 0], OW, &wstart[0],
                         &wcnt[0], dw, n_uniform, kw, sw, kind, has_pad_value, padv,
                         norm, scale, use_override, override_f, base_div, &div_w[0],
                         &div_wc[0], div_exact, prefetch)


def pool_separable_f32(
        const float[:, :, :, ::1] x, float[:, :, :, ::1] out,
        const int64_t[:, ::1] tab_d, const int64_t[:, ::1] tab_h,
        const int64_t[::1] wsrc, Py_ssize_t lo_w, const int64_t[::1] wstart,
        const int64_t[::1] wcnt, Py_ssize_t dw, Py_ssize_t n_uniform, Py_ssize_t kw,
        Py_ssize_t sw, const double[::1] div_d, const double[::1] div_h,
        const double[::1] div_w, const float[::1] div_wc, bint div_exact, int kind,
        bint has_pad_value, double pad_value, double norm, double scale,
        bint use_override, double divisor_override, float[:, ::1] work,
        Py_ssize_t block, Py_ssize_t prefetch, int n_threads):
    """:func:`pool_separable` for float arrays (no fused-type dispatch per call)."""
    pool_separable(x, out, tab_d, tab_h, wsrc, lo_w, wstart, wcnt, dw, n_uniform, kw, sw,
                   div_d, div_h, div_w, div_wc, div_exact, kind, has_pad_value, pad_value,
                   norm, scale, use_override, divisor_override, work, block, prefetch,
                   n_threads)


def pool_separable_f64(
        const double[:, :, :, ::1] x, double[:, :, :, ::1] out,
        const int64_t[:, ::1] tab_d, const int64_t[:, ::1] tab_h,
        const int64_t[::1] wsrc, Py_ssize_t lo_w, const int64_t[::1] wstart,
        const int64_t[::1] wcnt, Py_ssize_t dw, Py_ssize_t n_uniform, Py_ssize_t kw,
        Py_ssize_t sw, const double[::1] div_d, const double[::1] div_h,
        const double[::1] div_w, const double[::1] div_wc, bint div_exact, int kind,
        bint has_pad_value, double pad_value, double norm, double scale,
        bint use_override, double divisor_override, double[:, ::1] work,
        Py_ssize_t block, Py_ssize_t prefetch, int n_threads):
    """:func:`pool_separable` for double arrays (no fused-type dispatch per call)."""
    pool_separable(x, out, tab_d, tab_h, wsrc, lo_w, wstart, wcnt, dw, n_uniform, kw, sw,
                   div_d, div_h, div_w, div_wc, div_exact, kind, has_pad_value, pad_value,
                   norm, scale, use_override, divisor_override, work, block, prefetch,
                   n_threads)


cdef inline bint better(floating a, int32_t ai, floating b, int32_t bi) noexcept nogil:
    # Order-free form of the row-major scan's winner: the NaN with the largest index,
    # else the largest value with the smallest index.
    if b != b:
        return (a == a) or (bi > ai)
    if a != a:
        return False
    return (b > a) or (b == a and bi < ai)


cdef inline void ivert_init(floating* m, int32_t* mi, const floating* r0, int32_t b0,
                            const floating* r1, int32_t b1, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    if floating is float:
        pc_ivert_init_f(m, mi, r0, b0, r1, b1, n)
    else:
        for i in range(n):
            m[i] = r0[i]
            mi[i] = b0 + <int32_t>i
        if r1 != NULL:
            for i in range(n):
                v = r1[i]
                if (v > m[i]) | (v != v):
                    m[i] = v
                    mi[i] = b1 + <int32_t>i


cdef inline void ivert_acc(floating* m, int32_t* mi, const floating* r0, int32_t b0,
                           const floating* r1, int32_t b1, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    if floating is float:
        pc_ivert_acc_f(m, mi, r0, b0, r1, b1, n)
    else:
        for i in range(n):
            v = r0[i]
            if (v > m[i]) | (v != v):
                m[i] = v
                mi[i] = b0 + <int32_t>i
        if r1 != NULL:
            for i in range(n):
                v = r1[i]
                if (v > m[i]) | (v != v):
                    m[i] = v
                    mi[i] = b1 + <int32_t>i


cdef void max_pool_indices_fast(
        const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
        int64_t[:, :, :, ::1] indices, const int64_t[:, ::1] tab_d,
        const int64_t[:, ::1] tab_h, Py_ssize_t lo_w, Py_ssize_t Wp,
        const int64_t[::1] wstart, const int64_t[::1] wcnt, Py_ssize_t dw,
        Py_ssize_t n_uniform, Py_ssize_t kw, Py_ssize_t sw, floating[:, ::1] work,
        int32_t[:, ::1] iwork, Py_ssize_t block, Py_ssize_t prefetch,
        int n_threads) noexcept:
    """Max pooling with argmax indices where padding cells never take part.

    For padding that is -inf (skipped, as PyTorch's) and no padding mode, the taps of
    a window in row-major order are also in increasing order of their plane index, so
    the scan's winner is order-free: the NaN with the largest index if there is one,
    else the largest value with the smallest index (the first maximum). The rows pass
    keeps, per column of the padded row buffer, the running winner and its int32
    index (sequential rule, rows in increasing order); the columns pass combines the
    column winners of each window by the order-free rule. Padding cells are (-inf,
    PC_NOIDX), which any input element beats; a window of padding only gives -inf
    and index -1. The caller checks ``D*H*W < 2**31 - 1``; ``work``/``iwork`` have
    ``Wp + 16`` entries per thread.
    """
    cdef Py_ssize_t P = x.shape[0], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OD = out.shape[1], OH = out.shape[2], OW = out.shape[3]
    cdef Py_ssize_t KD = tab_d.shape[1], KH = tab_h.shape[1]
    cdef Py_ssize_t rows = OD * OH
    cdef Py_ssize_t nblk, n_units, u, p, r, r0, r1, od, oh, a, b, j, ow, t, n_real, done
    cdef int64_t sd, sh
    cdef int32_t base, pb0, pb1, ai, bi
    cdef const floating* xp
    cdef const floating* row
    cdef const floating* pend0
    cdef const floating* pend1
    cdef const int64_t* td
    cdef const int64_t* th
    cdef floating* vb
    cdef int32_t* ib
    cdef floating* orow
    cdef int64_t* irow
    cdef floating av, bv
    if P == 0 or rows == 0 or OW == 0:
        return
    if block < 1:
        block = rows
    nblk = (rows + block - 1) // block
    n_units = P * nblk
    with nogil, parallel(num_threads=n_threads):
        vb = &work[omp_get_thread_num(), 0]
        ib = &iwork[omp_get_thread_num(), 0]
        for u in prange(n_units, schedule='static'):
            p = u // nblk
            r0 = (u % nblk) * block
            r1 = r0 + block
            if r1 > rows:
                r1 = rows
            xp = &x[p, 0, 0, 0]
            for r in range(r0, r1):
                od = r // OH
                oh = r - od * OH
                td = &tab_d[od, 0]
                th = &tab_h[oh, 0]
                n_real = 0
                pend0 = NULL
                pend1 = NULL
                pb0 = 0
                pb1 = 0
                for a in range(KD):
                    sd = td[a]
                    if sd == -2:
                        break
                    for b in range(KH):
                        sh = th[b]
                        if sh == -2:
                            break
                        if sd < 0 or sh < 0:
                            continue
                        base = <int32_t>((sd * H + sh) * W)
                        row = xp + base
                        if prefetch != 0:
                            pc_prefetch(row + prefetch, W * sizeof(floating))
                        if n_real == 0:
                            pend0 = row
                            pb0 = base
                        elif n_real == 1:
                            ivert_init(vb + lo_w, ib + lo_w, pend0, pb0, row, base, W)
                            pend0 = NULL
                        elif pend0 == NULL:
                            pend0 = row
                            pb0 = base
                        else:
                            ivert_acc(vb + lo_w, ib + lo_w, pend0, pb0, row, base, W)
                            pend0 = NULL
                        n_real = n_real + 1
                if n_real == 1:
                    ivert_init(vb + lo_w, ib + lo_w, pend0, pb0, <const floating*>NULL,
                               0, W)
                elif pend0 != NULL:
                    ivert_acc(vb + lo_w, ib + lo_w, pend0, pb0, <const floating*>NULL,
                              0, W)
                elif n_real == 0:
                    for j in range(lo_w, lo_w + W):
                        vb[j] = -INFINITY
                        ib[j] = PC_NOIDX
                for j in range(lo_w):
                    vb[j] = -INFINITY
                    ib[j] = PC_NOIDX
                for j in range(lo_w + W, Wp):
                    vb[j] = -INFINITY
                    ib[j] = PC_NOIDX
                # columns pass
                orow = &out[p, od, oh, 0]
                irow = &indices[p, od, oh, 0]
                done = 0
                if floating is float:
                    if n_uniform >= 8:
                        done = pc_ihoriz_f(orow, irow, vb, ib, n_uniform, kw, sw)
                for ow in range(done, OW):
                    j = wstart[ow]
                    av = vb[j]
                    ai = ib[j]
                    for t in range(1, wcnt[ow]):
                        bv = vb[j + t * dw]
                        bi = ib[j + t * dw]
                        if better(av, ai, bv, bi):
                            av = bv
                            ai = bi
                    orow[ow] = av
                    irow[ow] = -1 if ai == PC_NOIDX else ai


def max_pool_indices_fast_f32(
        const float[:, :, :, ::1] x, float[:, :, :, ::1] out,
        int64_t[:, :, :, ::1] indices,
        const int64_t[:, ::1] tab_d, const int64_t[:, ::1] tab_h, Py_ssize_t lo_w,
        Py_ssize_t Wp, const int64_t[::1] wstart, const int64_t[::1] wcnt, Py_ssize_t dw,
        Py_ssize_t n_uniform, Py_ssize_t kw, Py_ssize_t sw, float[:, ::1] work,
        int32_t[:, ::1] iwork, Py_ssize_t block, Py_ssize_t prefetch, int n_threads):
    """:func:`max_pool_indices_fast` for float arrays (no fused-type dispatch per call)."""
    max_pool_indices_fast(x, out, indices, tab_d, tab_h, lo_w, Wp, wstart, wcnt, dw,
                          n_uniform, kw, sw, work, iwork, block, prefetch, n_threads)


def max_pool_indices_fast_f64(
        const double[:, :, :, ::1] x, double[:, :, :, ::1] out,
        int64_t[:, :, :, ::1] indices,
        const int64_t[:, ::1] tab_d, const int64_t[:, ::1] tab_h, Py_ssize_t lo_w,
        Py_ssize_t Wp, const int64_t[::1] wstart, const int64_t[::1] wcnt, Py_ssize_t dw,
        Py_ssize_t n_uniform, Py_ssize_t kw, Py_ssize_t sw, double[:, ::1] work,
        int32_t[:, ::1] iwork, Py_ssize_t block, Py_ssize_t prefetch, int n_threads):
    """:func:`max_pool_indices_fast` for double arrays (no fused-type dispatch per call)."""
    max_pool_indices_fast(x, out, indices, tab_d, tab_h, lo_w, Wp, wstart, wcnt, dw,
                          n_uniform, kw, sw, work, iwork, block, prefetch, n_threads)


def max_pool_indices(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                     int64_t[:, :, :, ::1] indices, const int64_t[:, ::1] tab_d,
                     const int64_t[:, ::1] tab_h, const int64_t[:, ::1] tab_w,
                     bint has_pad_value, double pad_value, int n_threads):
    """Max pooling with argmax indices, scanning each window in row-major tap order.

    The first tap is taken, then ``v > m || isnan(v)`` (PyTorch's rule: the first
    maximum wins ties, the last NaN wins). Indices are ``(d*H + h)*W + w`` in the
    plane of the source element; a winning padding cell or an all-padding window
    gives -1. The window's input rows are visited in order, each one for the whole
    output row (the running maxima live in the output row itself), so every output
    still sees its taps in row-major order.
    """
    cdef Py_ssize_t P = x.shape[0], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OD = out.shape[1], OH = out.shape[2], OW = out.shape[3]
    cdef Py_ssize_t KD = tab_d.shape[1], KH = tab_h.shape[1], KW = tab_w.shape[1]
    cdef Py_ssize_t n_units = P * OD * OH
    cdef floating padv = <floating>pad_value
    cdef Py_ssize_t u, p, od, oh, ow, a, b, c
    cdef int64_t sd, sh, sw, vi, rowbase
    cdef floating m, v
    cdef floating* orow
    cdef int64_t* irow
    cdef const floating* xrow
    cdef const int64_t* tw
    cdef bint pad_row, take
    if n_units == 0 or OW == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        for u in prange(n_units, schedule='static'):
            p = u // (OD * OH)
            od = (u // OH) % OD
            oh = u % OH
            orow = &out[p, od, oh, 0]
            irow = &indices[p, od, oh, 0]
            for ow in range(OW):
                orow[ow] = -INFINITY
                irow[ow] = -3  # nothing seen yet
            for a in range(KD):
                sd = tab_d[od, a]
                if sd == -2:
                    break
                for b in range(KH):
                    sh = tab_h[oh, b]
                    if sh == -2:
                        break
                    pad_row = sd < 0 or sh < 0
                    if pad_row and not has_pad_value:
                        continue
                    rowbase = (sd * H + sh) * W
                    xrow = &x[p, 0, 0, 0] + rowbase
                    for ow in range(OW):
                        tw = &tab_w[ow, 0]
                        m = orow[ow]
                        vi = irow[ow]
                        for c in range(KW):
                            sw = tw[c]
                            if sw == -2:
                                break
                            if pad_row or sw < 0:
                                if not has_pad_value:
                                    continue
                                v = padv
                                sw = -1 - rowbase  # so that rowbase + sw == -1
                            else:
                                v = xrow[sw]
                            # selects, not branches: the winner is data-dependent
                            take = (vi == -3) | (v > m) | (v != v)
                            m = v if take else m
                            vi = (rowbase + sw) if take else vi
                        orow[ow] = m
                        irow[ow] = vi
            for ow in range(OW):
                if irow[ow] == -3:
                    irow[ow] = -1


cdef inline floating plane_reduce(const floating* row, Py_ssize_t L,
                                  bint is_max) noexcept nogil:
    # Eight interleaved partial results (a fixed order: the same bits on any thread
    # count) let the compiler vectorise the pass; the array is local to the call, so
    # private to the calling thread.
    cdef floating acc[8]
    cdef floating m, v
    cdef Py_ssize_t i, j, n8 = (L // 8) * 8
    if n8 == 0:
        m = row[0] if is_max else 0
        for i in range(1 if is_max else 0, L):
            m = nanmax(m, row[i]) if is_max else m + row[i]
        return m
    for j in range(8):
        acc[j] = row[j]
    i = 8
    if is_max:
        while i < n8:
            for j in range(8):
                v = row[i + j]
                acc[j] = v if ((v > acc[j]) | (v != v)) else acc[j]
            i = i + 8
        m = acc[0]
        for j in range(1, 8):
            m = nanmax(m, acc[j])
        for i in range(n8, L):
            m = nanmax(m, row[i])
        if m == 0 or m != m:
            # +0.0 and -0.0 tie, and NaNs differ in their bits: where the winner is
            # either, the row-major scan's own winner (its first zero of the largest
            # value, its last NaN), as max pooling over the same window gives
            m = row[0]
            for i in range(1, L):
                m = nanmax(m, row[i])
    else:
        while i < n8:
            for j in range(8):
                acc[j] = acc[j] + row[i + j]
            i = i + 8
        m = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
        for i in range(n8, L):
            m = m + row[i]
    return m


def global_pool(const floating[:, ::1] x, floating[::1] out, bint is_max,
                int n_threads):
    """``out[p]`` = mean (or NaN-propagating max) of the contiguous plane ``x[p]``."""
    cdef Py_ssize_t P = x.shape[0], L = x.shape[1]
    cdef Py_ssize_t p
    cdef floating m
    if P == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        for p in prange(P, schedule='static'):
            m = plane_reduce(&x[p, 0], L, is_max)
            out[p] = m if is_max else m / <floating>L


def max_unpool(const floating[:, ::1] x, const int64_t[:, ::1] indices,
               floating[:, ::1] out, int n_threads):
    """``out[p] = 0; out[p, indices[p, i]] = x[p, i]`` in order (the last write wins).

    The caller has checked ``0 <= indices < out.shape[1]``.
    """
    cdef Py_ssize_t P = x.shape[0], L = x.shape[1], M = out.shape[1]
    cdef Py_ssize_t p, i
    cdef floating* orow
    if P == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        for p in prange(P, schedule='static'):
            orow = &out[p, 0]
            for i in range(M):
                orow[i] = 0
            for i in range(L):
                orow[indices[p, i]] = x[p, i]
