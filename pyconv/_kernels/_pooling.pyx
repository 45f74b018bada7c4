"""Pooling kernels: separable window reductions, max pooling with indices, unpooling.

Every input is seen as ``(P, D, H, W)`` planes (1-D and 2-D problems have unit
leading axes). Per-axis plans built in Python (``pyconv._pool_geometry``) say which
input rows/columns each window reads, with -1 for a padding cell and -2 for "not in
the window"; padding modes, ceil mode and adaptive windows are all resolved there.

The parallel loop runs over output rows ``(p, od, oh)``: each iteration writes one
row of the output and nothing else, so results are bit-identical for any thread
count. The only scratch is one padded input row per thread (the caller's
workspace, ``W + lo + hi`` values).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, fabs, pow, sqrt
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from pyconv._kernels._openmp_helpers cimport omp_get_thread_num

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


cdef inline void reduce_uniform(floating* orow, const floating* rb, Py_ssize_t n,
                                Py_ssize_t k, Py_ssize_t sw, bint is_max) noexcept nogil:
    # Full windows at a uniform stride with adjacent taps: the common shapes get
    # loops with constant offsets, which the compiler vectorises (strided loads).
    cdef Py_ssize_t ow, t
    cdef const floating* src
    cdef floating m
    if is_max:
        if k == 2 and sw == 2:
            for ow in range(n):
                orow[ow] = nanmax(rb[2 * ow], rb[2 * ow + 1])
        elif k == 3 and sw == 2:
            for ow in range(n):
                orow[ow] = nanmax(nanmax(rb[2 * ow], rb[2 * ow + 1]), rb[2 * ow + 2])
        elif k == 3 and sw == 1:
            for ow in range(n):
                orow[ow] = nanmax(nanmax(rb[ow], rb[ow + 1]), rb[ow + 2])
        else:
            for ow in range(n):
                src = rb + ow * sw
                m = src[0]
                for t in range(1, k):
                    m = nanmax(m, src[t])
                orow[ow] = m
    else:
        if k == 2 and sw == 2:
            for ow in range(n):
                orow[ow] = rb[2 * ow] + rb[2 * ow + 1]
        elif k == 3 and sw == 2:
            for ow in range(n):
                orow[ow] = rb[2 * ow] + rb[2 * ow + 1] + rb[2 * ow + 2]
        elif k == 3 and sw == 1:
            for ow in range(n):
                orow[ow] = rb[ow] + rb[ow + 1] + rb[ow + 2]
        else:
            for ow in range(n):
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


def pool_separable(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                   const int64_t[:, ::1] tab_d, const int64_t[:, ::1] tab_h,
                   const int64_t[::1] wsrc, Py_ssize_t lo_w,
                   const int64_t[::1] wstart, const int64_t[::1] wcnt, Py_ssize_t dw,
                   Py_ssize_t n_uniform, Py_ssize_t kw, Py_ssize_t sw,
                   const double[::1] div_d, const double[::1] div_h,
                   const double[::1] div_w, int kind, bint has_pad_value,
                   double pad_value, double norm, double scale, bint use_override,
                   double divisor_override, floating[:, ::1] work, int n_threads):
    """Window reduction of every plane, rows first then columns.

    For each output row the (d, h) taps are combined elementwise into a row buffer
    laid out in padded coordinates (``lo_w + W + hi_w`` values; padded cells are
    filled from ``wsrc``), then each output column reduces its taps
    ``wstart[ow] + t*dw``, ``t < wcnt[ow]``, from that buffer; the first ``n_uniform``
    columns are known to be full windows ``ow*sw + t``, ``t < kw`` (``dw == 1``), which
    take a faster loop. Divisors (integers held as doubles) (avg, lp) are
    ``divisor_override`` if ``use_override``, else ``div_d[od] * div_h[oh] * div_w[ow]``.
    """
    cdef Py_ssize_t P = x.shape[0], D = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OD = out.shape[1], OH = out.shape[2], OW = out.shape[3]
    cdef Py_ssize_t KD = tab_d.shape[1], KH = tab_h.shape[1]
    cdef Py_ssize_t Wp = wsrc.shape[0]
    cdef Py_ssize_t n_units = P * OD * OH
    cdef bint is_max = kind == K_MAX or kind == K_LPINF
    cdef floating identity = -INFINITY if is_max else 0
    cdef floating padv = <floating>pad_value
    cdef Py_ssize_t u, p, od, oh, a, b, i, j, n_real, n_pad
    cdef int64_t sd, sh, src
    cdef floating* rb
    cdef floating* inner
    cdef floating* orow
    cdef floating fill, v, scale_f = <floating>scale
    cdef floating override_f = <floating>divisor_override
    cdef double base_div
    cdef double inv_norm = 1.0 / norm if norm != 0 else 0.0
    if n_units == 0 or OW == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        rb = &work[omp_get_thread_num(), 0]
        for u in prange(n_units, schedule='static'):
            p = u // (OD * OH)
            od = (u // OH) % OD
            oh = u % OH
            inner = rb + lo_w
            n_real = 0
            n_pad = 0
            # vertical pass: combine the window's input rows elementwise
            for a in range(KD):
                sd = tab_d[od, a]
                if sd == -2:
                    break
                for b in range(KH):
                    sh = tab_h[oh, b]
                    if sh == -2:
                        break
                    if sd < 0 or sh < 0:
                        n_pad = n_pad + 1
                        continue
                    if n_real == 0:
                        init_row(inner, &x[p, sd, sh, 0], W, kind, norm)
                    else:
                        accum_row(inner, &x[p, sd, sh, 0], W, kind, norm)
                    n_real = n_real + 1
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
            # horizontal pass
            orow = &out[p, od, oh, 0]
            reduce_uniform(orow, rb, n_uniform, kw, sw, is_max)
            reduce_windows(orow, rb, n_uniform, OW, &wstart[0], &wcnt[0], dw, is_max)
            if kind == K_AVG or kind == K_LP:
                if use_override:
                    for i in range(OW):
                        orow[i] = orow[i] / override_f
                else:
                    base_div = div_d[od] * div_h[oh]
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
