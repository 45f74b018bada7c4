"""Deformable convolution (DCNv1/DCNv2) in 1, 2 and 3 spatial dimensions.

The work is split in three steps:

1. ``pad_planes`` copies the input into planes with a one-pixel zero border along
   every spatial axis (two after the end of the first axis). Every corner a sample
   can touch (``floor(y) + {0, 1}`` with ``-1 < y < H``) then lies inside the
   bordered plane, and a corner outside the image reads an exact zero: no branch in
   the gather, no out-of-bounds read, and the rule "outside corners count 0" holds
   even when the input holds inf/NaN (a clamped index with weight 0 would turn
   0 * inf into NaN). Samples entirely outside read a block of border zeros at the
   end (the extra slab), for the same reason.
2. A sampling *plan* per (image, offset group, tap, output position): the index of
   the lowest corner in the bordered plane and the 2**rank corner weights with the
   DCNv2 mask folded in. It is computed once and shared by every channel of the
   offset group.
3. A gather of every input channel into a column buffer ``(C_in * K, chunk)`` for a
   chunk of output positions, then one GEMM per weight group straight into the
   output, with bias and ReLU applied while the tile is in cache.

Units of work are ``(image, chunk of output positions)``; they write disjoint
output columns, so they run under one ``prange`` with single-threaded BLAS inside
(the caller pins scipy's OpenBLAS). The chunk size never depends on the thread
count, so results are bit-identical for any number of threads.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport exp
from libc.string cimport memcpy, memset

from pyconv._kernels._blas cimport gemm_rm
from pyconv._kernels._epilogue cimport bias_relu_tile
from pyconv._kernels._openmp_helpers cimport omp_get_thread_num


cdef struct Geom:
    # Per axis (D, H, W); a rank-r problem uses the last r axes.
    Py_ssize_t n[3]    # input size
    Py_ssize_t o[3]    # output size
    Py_ssize_t k[3]    # kernel size
    Py_ssize_t s[3]    # stride
    Py_ssize_t p[3]    # leading padding
    Py_ssize_t d[3]    # dilation
    Py_ssize_t ps[3]   # element stride of the axis in the zero-bordered plane
    int first          # 3 - rank: the first used axis


def pad_planes(const floating[:, ::1] x, floating[:, ::1] xp,
               Py_ssize_t D, Py_ssize_t H, Py_ssize_t W,
               Py_ssize_t Dp, Py_ssize_t Hp, Py_ssize_t Wp,
               Py_ssize_t bd, Py_ssize_t bh, int n_threads):
    """Copy planes ``x[q]`` (D*H*W values) into zero-bordered planes ``xp[q]``.

    ``xp[q]`` is ``Dp*Hp*Wp``; the data starts at ``(bd, bh, 1)`` and everything
    around it is zero.
    """
    cdef Py_ssize_t NC = x.shape[0]
    cdef Py_ssize_t q, zz, yy, z, y
    cdef floating* row
    cdef const floating* src
    if NC == 0:
        return
    for q in prange(NC, nogil=True, schedule='static', num_threads=n_threads):
        for zz in range(Dp):
            for yy in range(Hp):
                row = &xp[q, 0] + (zz * Hp + yy) * Wp
                z = zz - bd
                y = yy - bh
                if z < 0 or z >= D or y < 0 or y >= H:
                    memset(row, 0, Wp * sizeof(floating))
                else:
                    src = &x[q, 0] + (z * H + y) * W
                    row[0] = 0
                    memcpy(row + 1, src, W * sizeof(floating))
                    memset(row + W + 1, 0, (Wp - W - 1) * sizeof(floating))


cdef inline void plan_chunk(const Geom* g, const floating* off, Py_ssize_t ocs,
                            const floating* msk, Py_ssize_t mcs, int mask_mode,
                            Py_ssize_t p0, Py_ssize_t pc, Py_ssize_t K,
                            Py_ssize_t zero_idx, Py_ssize_t* pidx,
                            floating* pw) noexcept nogil:
    # Plan for output positions p0 <= p < p0 + pc and every tap of one offset group.
    # off[(rank*t + a)*ocs + p]: offset of tap t along used axis a (dz, dy, dx order);
    # msk[t*mcs + p]: mask (mask_mode 1: as given, 2: sigmoid of it, 0: no mask).
    # Writes pidx[t*pc + q] and the weights of tap t as nc/2 rows of 2*pc values:
    # corner c's weight at pw[t*pc*nc + (c >> 1)*2*pc + 2*q + (c & 1)], corner bits
    # ordered with the first used axis most significant (2-D: y0x0, y0x1, y1x0, y1x1,
    # as torchvision), so x-adjacent corners sit side by side for the gather.
    # Samples outside the image point at zero_idx, whose 2**rank corners are all
    # border zeros, so their zero weights never meet an inf or NaN pixel.
    cdef int first = g.first
    cdef int rank = 3 - first
    cdef int nc = 1 << rank
    cdef int a, c
    cdef Py_ssize_t q, p, t, rem, base, c0
    cdef Py_ssize_t pos[3]
    cdef Py_ssize_t tap[3]
    cdef floating coord, l, m, w, nanv = 0
    cdef floating wlo[3]
    cdef floating whi[3]
    cdef bint nan, outside
    cdef floating* dw
    for q in range(pc):
        p = p0 + q
        rem = p
        for a in range(2, -1, -1):
            pos[a] = rem % g.o[a]
            rem = rem // g.o[a]
        tap[0] = 0
        tap[1] = 0
        tap[2] = 0
        for t in range(K):
            base = 0
            nan = False
            outside = False
            for a in range(first, 3):
                coord = <floating>(pos[a] * g.s[a] - g.p[a] + tap[a] * g.d[a]) \
                    + off[(rank * t + a - first) * ocs + p]
                if coord != coord:
                    nan = True
                    nanv = coord
                elif not (coord > -1 and coord < g.n[a]):
                    outside = True   # also +-inf
                else:
                    c0 = <Py_ssize_t>coord   # floor for coord > -1, no libm call
                    if <floating>c0 > coord:
                        c0 = c0 - 1
                    l = coord - <floating>c0
                    wlo[a] = <floating>1 - l   # a bare 1 would make it double
                    whi[a] = l
                    base = base + (c0 + 1) * g.ps[a]
            dw = pw + t * pc * nc + 2 * q
            if outside:
                pidx[t * pc + q] = zero_idx
                for c in range(nc):
                    dw[(c >> 1) * 2 * pc + (c & 1)] = 0
            elif nan:
                # A NaN offset makes the sample NaN (as a NaN input would).
                pidx[t * pc + q] = zero_idx
                for c in range(nc):
                    dw[(c >> 1) * 2 * pc + (c & 1)] = nanv
            else:
                if mask_mode == 0:
                    m = 1
                elif mask_mode == 1:
                    m = msk[t * mcs + p]
                else:
                    m = <floating>(1.0 / (1.0 + exp(-<double>msk[t * mcs + p])))
                pidx[t * pc + q] = base
                for c in range(nc):
                    w = 1
                    for a in range(first, 3):
                        if (c >> (2 - a)) & 1:
                            w = w * whi[a]
                        else:
                            w = w * wlo[a]
                    dw[(c >> 1) * 2 * pc + (c & 1)] = w * m if mask_mode != 0 else w
            # Next tap, last axis fastest.
            tap[2] += 1
            if tap[2] == g.k[2]:
                tap[2] = 0
                tap[1] += 1
                if tap[1] == g.k[1]:
                    tap[1] = 0
                    tap[0] += 1


cdef extern from *:
    """
    #include <stddef.h>
    #ifdef __AVX2__
    #include <immintrin.h>
    #endif
    /* Interpolated samples of nch channels (planes x0 + j*plane) at positions
       q < pc of one tap, into dst[j*dstride + q]. The lowest corner of position q is
       idx[q]; wt[2q], wt[2q+1] weigh the corners idx[q] and idx[q]+1, and with
       rows == 2, wb[2q], wb[2q+1] the corners one row (sy) further. The sum runs
       in torchvision's order, ((c0 + c1) + c2) + c3, in every build; acc adds the
       result to dst instead (3-D: the second z-slab of corners).

       The AVX2 build does four positions per step: each pair of x-adjacent corners
       is one 64-bit load, a horizontal add gives c0 + c1 and two shuffles split
       c2 and c3 out of the second row's products, so the rounding is that of the
       scalar loop. Channels go four at a time to reuse the plan's registers. */
    #define PYCONV_DEF_SCALAR(T, NAME)                                              \
    static inline T NAME(const T* x, Py_ssize_t b, const T* wt, const T* wb,     \
                         Py_ssize_t q, Py_ssize_t sy, int rows) {                 \
        T s = wt[2 * q] * x[b] + wt[2 * q + 1] * x[b + 1];                        \
        if (rows == 2) {                                                          \
            s = s + wb[2 * q] * x[b + sy];                                        \
            s = s + wb[2 * q + 1] * x[b + sy + 1];                                \
        }                                                                         \
        return s;                                                                 \
    }
    PYCONV_DEF_SCALAR(float, pyconv_dfm_one_f)
    PYCONV_DEF_SCALAR(double, pyconv_dfm_one_d)

    #ifdef __AVX2__
    #define PYCONV_LD2(p0, p1) _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(),         \
                                 (const __m64*)(p0)), (const __m64*)(p1))
    static inline __m128 pyconv_dfm_four_f(const float* x, const Py_ssize_t* b,
                                           Py_ssize_t sy, int rows, __m128 t01,
                                           __m128 t23, __m128 b01, __m128 b23) {
        __m128 h = _mm_hadd_ps(_mm_mul_ps(PYCONV_LD2(x + b[0], x + b[1]), t01),
                               _mm_mul_ps(PYCONV_LD2(x + b[2], x + b[3]), t23));
        if (rows == 2) {
            const float* y = x + sy;
            __m128 pa = _mm_mul_ps(PYCONV_LD2(y + b[0], y + b[1]), b01);
            __m128 pb = _mm_mul_ps(PYCONV_LD2(y + b[2], y + b[3]), b23);
            h = _mm_add_ps(h, _mm_shuffle_ps(pa, pb, _MM_SHUFFLE(2, 0, 2, 0)));
            h = _mm_add_ps(h, _mm_shuffle_ps(pa, pb, _MM_SHUFFLE(3, 1, 3, 1)));
        }
        return h;
    }
    static inline __m128d pyconv_dfm_two_d(const double* x, const Py_ssize_t* b,
                                           Py_ssize_t sy, int rows, __m128d t0,
                                           __m128d t1, __m128d b0, __m128d b1) {
        __m128d h = _mm_hadd_pd(_mm_mul_pd(_mm_loadu_pd(x + b[0]), t0),
                                _mm_mul_pd(_mm_loadu_pd(x + b[1]), t1));
        if (rows == 2) {
            const double* y = x + sy;
            __m128d pa = _mm_mul_pd(_mm_loadu_pd(y + b[0]), b0);
            __m128d pb = _mm_mul_pd(_mm_loadu_pd(y + b[1]), b1);
            h = _mm_add_pd(h, _mm_unpacklo_pd(pa, pb));
            h = _mm_add_pd(h, _mm_unpackhi_pd(pa, pb));
        }
        return h;
    }
    #endif

    static void pyconv_dfm_gather_f(const float* x0, Py_ssize_t plane, Py_ssize_t nch,
                                    const Py_ssize_t* idx, const float* wt,
                                    const float* wb, float* dst, Py_ssize_t dstride,
                                    Py_ssize_t pc, Py_ssize_t sy, int rows, int acc) {
        Py_ssize_t j = 0, q, c;
        for (; j < nch; j += 4) {
            Py_ssize_t nb = nch - j < 4 ? nch - j : 4;
            const float* xj = x0 + j * plane;
            float* dj = dst + j * dstride;
            q = 0;
    #ifdef __AVX2__
            if (nb == 4) {
                for (; q + 4 <= pc; q += 4) {
                    __m128 t01 = _mm_loadu_ps(wt + 2 * q), t23 = _mm_loadu_ps(wt + 2 * q + 4);
                    __m128 b01 = t01, b23 = t23;
                    if (rows == 2) {
                        b01 = _mm_loadu_ps(wb + 2 * q);
                        b23 = _mm_loadu_ps(wb + 2 * q + 4);
                    }
                    for (c = 0; c < 4; c++) {
                        __m128 r = pyconv_dfm_four_f(xj + c * plane, idx + q, sy, rows,
                                                     t01, t23, b01, b23);
                        float* d = dj + c * dstride + q;
                        if (acc)
                            r = _mm_add_ps(_mm_loadu_ps(d), r);
                        _mm_storeu_ps(d, r);
                    }
                }
            }
    #endif
            for (c = 0; c < nb; c++) {
                const float* x = xj + c * plane;
                float* d = dj + c * dstride;
                Py_ssize_t qq;
                for (qq = q; qq < pc; qq++) {
                    float s = pyconv_dfm_one_f(x, idx[qq], wt, wb, qq, sy, rows);
                    d[qq] = acc ? d[qq] + s : s;
                }
            }
        }
    }

    static void pyconv_dfm_gather_d(const double* x0, Py_ssize_t plane, Py_ssize_t nch,
                                    const Py_ssize_t* idx, const double* wt,
                                    const double* wb, double* dst, Py_ssize_t dstride,
                                    Py_ssize_t pc, Py_ssize_t sy, int rows, int acc) {
        Py_ssize_t j = 0, q, c;
        for (; j < nch; j += 4) {
            Py_ssize_t nb = nch - j < 4 ? nch - j : 4;
            const double* xj = x0 + j * plane;
            double* dj = dst + j * dstride;
            q = 0;
    #ifdef __AVX2__
            if (nb == 4) {
                for (; q + 2 <= pc; q += 2) {
                    __m128d t0 = _mm_loadu_pd(wt + 2 * q), t1 = _mm_loadu_pd(wt + 2 * q + 2);
                    __m128d b0 = t0, b1 = t1;
                    if (rows == 2) {
                        b0 = _mm_loadu_pd(wb + 2 * q);
                        b1 = _mm_loadu_pd(wb + 2 * q + 2);
                    }
                    for (c = 0; c < 4; c++) {
                        __m128d r = pyconv_dfm_two_d(xj + c * plane, idx + q, sy, rows,
                                                     t0, t1, b0, b1);
                        double* d = dj + c * dstride + q;
                        if (acc)
                            r = _mm_add_pd(_mm_loadu_pd(d), r);
                        _mm_storeu_pd(d, r);
                    }
                }
            }
    #endif
            for (c = 0; c < nb; c++) {
                const double* x = xj + c * plane;
                double* d = dj + c * dstride;
                Py_ssize_t qq;
                for (qq = q; qq < pc; qq++) {
                    double s = pyconv_dfm_one_d(x, idx[qq], wt, wb, qq, sy, rows);
                    d[qq] = acc ? d[qq] + s : s;
                }
            }
        }
    }
    """
    void pyconv_dfm_gather_f(const float* x0, Py_ssize_t plane, Py_ssize_t nch,
                             const Py_ssize_t* idx, const float* wt, const float* wb,
                             float* dst, Py_ssize_t dstride, Py_ssize_t pc,
                             Py_ssize_t sy, int rows, int acc) noexcept nogil
    void pyconv_dfm_gather_d(const double* x0, Py_ssize_t plane, Py_ssize_t nch,
                             const Py_ssize_t* idx, const double* wt, const double* wb,
                             double* dst, Py_ssize_t dstride, Py_ssize_t pc,
                             Py_ssize_t sy, int rows, int acc) noexcept nogil


cdef inline void gather_rows(const floating* x0, Py_ssize_t plane, Py_ssize_t nch,
                             const Py_ssize_t* idx, const floating* w, floating* dst,
                             Py_ssize_t dstride, Py_ssize_t pc, int rank,
                             Py_ssize_t sy, Py_ssize_t sz) noexcept nogil:
    # One tap's samples of channels j < nch into dst[j*dstride + q]. w holds the
    # plan's weights as 2**rank / 2 rows of 2*pc values (see plan_chunk); 3-D adds
    # the second z-slab onto the first, as (z0 corners) + (z1 corners).
    cdef int rows = 1 if rank == 1 else 2
    if floating is float:
        pyconv_dfm_gather_f(x0, plane, nch, idx, w, w + 2 * pc, dst, dstride, pc, sy,
                            rows, 0)
        if rank == 3:
            pyconv_dfm_gather_f(x0 + sz, plane, nch, idx, w + 4 * pc, w + 6 * pc, dst,
                                dstride, pc, sy, rows, 1)
    else:
        pyconv_dfm_gather_d(x0, plane, nch, idx, w, w + 2 * pc, dst, dstride, pc, sy,
                            rows, 0)
        if rank == 3:
            pyconv_dfm_gather_d(x0 + sz, plane, nch, idx, w + 4 * pc, w + 6 * pc, dst,
                                dstride, pc, sy, rows, 1)


def deform_nd(const floating[:, ::1] xpad, const floating[:, :, :] offset,
              const floating[:, :, :] mask, const floating[:, ::1] weight,
              const floating[::1] bias, floating[:, :, ::1] out,
              const Py_ssize_t[::1] geom, int rank, Py_ssize_t groups,
              Py_ssize_t offset_groups, int mask_mode, bint has_bias, bint relu,
              Py_ssize_t zero_idx, Py_ssize_t chunk, floating[:, ::1] col,
              Py_ssize_t[:, ::1] pidx, floating[:, ::1] pw, int n_threads):
    """Deformable convolution of zero-bordered planes.

    xpad: (N*C_in, bordered plane) from :func:`pad_planes`; offset: (N, rank*og*K, P)
    and mask: (N, og*K, P) (a dummy when mask_mode is 0), both with unit stride
    along the last axis (the caller guarantees it; channel strides are free); weight: (C_out, C_in/groups * K); out: (N, C_out, P). geom holds 21 values:
    input size, output size, kernel, stride, leading padding, dilation, bordered
    strides, 3 per quantity in (D, H, W) order. zero_idx: an index whose 2**rank
    corners are all zeros in every bordered plane. Per thread: col >= C_in*K*chunk,
    pidx >= K*chunk, pw >= K*chunk*2**rank values.
    """
    cdef Geom g
    cdef int a
    for a in range(3):
        g.n[a] = geom[a]
        g.o[a] = geom[3 + a]
        g.k[a] = geom[6 + a]
        g.s[a] = geom[9 + a]
        g.p[a] = geom[12 + a]
        g.d[a] = geom[15 + a]
        g.ps[a] = geom[18 + a]
    g.first = 3 - rank
    cdef Py_ssize_t N = out.shape[0]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t P = out.shape[2]
    cdef Py_ssize_t C_in = xpad.shape[0] // N if N > 0 else 0
    cdef Py_ssize_t plane = xpad.shape[1]
    cdef Py_ssize_t K = g.k[0] * g.k[1] * g.k[2]
    cdef Py_ssize_t nc = 1 << rank
    cdef Py_ssize_t cin_g = C_in // groups
    cdef Py_ssize_t cout_g = C_out // groups
    cdef Py_ssize_t cin_og = C_in // offset_groups
    cdef Py_ssize_t ck = cin_g * K
    cdef Py_ssize_t n_chunks = (P + chunk - 1) // chunk
    cdef Py_ssize_t n_units = N * n_chunks
    cdef Py_ssize_t ocs = offset.strides[1] // sizeof(floating)
    cdef Py_ssize_t mcs = mask.strides[1] // sizeof(floating)
    cdef Py_ssize_t sy = g.ps[1], sz = g.ps[0]
    cdef Py_ssize_t u, n, p0, pc, og, c, t, gr, tid
    cdef floating* colp
    cdef Py_ssize_t* ip
    cdef floating* wp
    cdef floating* c_ptr
    cdef const floating* offp
    cdef const floating* mskp
    cdef const floating* bias_ptr = &bias[0] if has_bias else NULL
    if n_units == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        tid = omp_get_thread_num()
        colp = &col[tid, 0]
        ip = &pidx[tid, 0]
        wp = &pw[tid, 0]
        for u in prange(n_units, schedule='static'):
            n = u // n_chunks
            p0 = (u % n_chunks) * chunk
            pc = P - p0
            if pc > chunk:
                pc = chunk
            for og in range(offset_groups):
                offp = &offset[n, og * rank * K, 0]
                mskp = &mask[n, og * K, 0] if mask_mode != 0 else &mask[0, 0, 0]
                plan_chunk(&g, offp, ocs, mskp, mcs, mask_mode, p0, pc, K, zero_idx, ip, wp)
                c = og * cin_og
                for t in range(K):
                    gather_rows(&xpad[n * C_in + c, 0], plane, cin_og, ip + t * pc,
                                wp + t * pc * nc, colp + (c * K + t) * pc, K * pc, pc,
                                rank, sy, sz)
            for gr in range(groups):
                c_ptr = &out[n, gr * cout_g, p0]
                gemm_rm(&weight[gr * cout_g, 0], colp + gr * ck * pc, c_ptr,
                        cout_g, pc, ck, ck, pc, P, 0)
                if has_bias or relu:
                    bias_relu_tile(c_ptr, cout_g, pc, P,
                                   bias_ptr + gr * cout_g if has_bias else NULL,
                                   has_bias, relu)
