# Row-wise N-D im2col driven by per-axis index tables (inline, compiled into each user).
#
# Every padding mode is reduced, before the kernel runs, to one table per axis:
# idx_a[k*O_a + o] is the input index that kernel tap k reads at output position o
# (reflected, wrapped or clamped as the mode says), or -1 for a constant pad. The
# kernel therefore knows nothing about padding rules and never re-derives a shape.
# 1-D and 2-D problems are 3-D problems with unit leading axes.
from cython cimport floating


cdef inline void im2col_span(const floating* x, floating* col,
                             Py_ssize_t channels, Py_ssize_t plane,
                             Py_ssize_t q0, Py_ssize_t q1,
                             const Py_ssize_t* idx_d, const Py_ssize_t* idx_h,
                             const Py_ssize_t* idx_w, const Py_ssize_t* span,
                             Py_ssize_t H, Py_ssize_t W,
                             Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW,
                             Py_ssize_t KD, Py_ssize_t KH, Py_ssize_t KW,
                             Py_ssize_t sw, floating pad_value) noexcept nogil:
    # Fill col[(c, kd, kh, kw), q - q0] for the flattened output positions
    # q = (od*OH + oh)*OW + ow in [q0, q1); x holds `channels` planes of `plane` =
    # D*H*W values; col rows are q1 - q0 long. A range may start and end inside an
    # output row (tiles of whole rows are the case q0 = r0*OW, q1 = r1*OW).
    # span[3*kw : 3*kw+3] = (lo, hi, start): for lo <= ow < hi the w-index is the affine
    # start + ow*sw inside the image, so that stretch is a plain (strided) copy and only
    # the edges go through the table.
    cdef Py_ssize_t HW = H * W
    cdef Py_ssize_t c, kd, kh, kw, r, od, oh, ow, id_, ih, iw, lo, hi, start
    cdef Py_ssize_t a, b, mid_a, mid_b
    cdef Py_ssize_t r0 = q0 // OW
    cdef Py_ssize_t r1 = (q1 + OW - 1) // OW
    cdef const floating* xc
    cdef const floating* src
    cdef const Py_ssize_t* wrow
    cdef floating* dst = col
    for c in range(channels):
        xc = x + c * plane
        for kd in range(KD):
            for kh in range(KH):
                for kw in range(KW):
                    wrow = idx_w + kw * OW
                    lo = span[3 * kw]
                    hi = span[3 * kw + 1]
                    start = span[3 * kw + 2]
                    for r in range(r0, r1):
                        # this row's part of the range: a <= ow < b
                        a = q0 - r * OW if r == r0 else 0
                        b = q1 - r * OW if r == r1 - 1 else OW
                        od = r // OH
                        oh = r - od * OH
                        id_ = idx_d[kd * OD + od]
                        ih = idx_h[kh * OH + oh]
                        if id_ < 0 or ih < 0:
                            for ow in range(b - a):
                                dst[ow] = pad_value
                        else:
                            mid_a = lo if lo > a else a
                            mid_b = hi if hi < b else b
                            if mid_b < mid_a:
                                mid_b = mid_a
                            src = xc + id_ * HW + ih * W
                            for ow in range(a, mid_a if mid_a < b else b):
                                iw = wrow[ow]
                                dst[ow - a] = src[iw] if iw >= 0 else pad_value
                            if sw == 1:
                                for ow in range(mid_a, mid_b):
                                    dst[ow - a] = src[start + ow]
                            elif sw == 2:
                                # a constant stride the compiler can vectorise (loads
                                # and shuffles); the general loop below stays scalar
                                for ow in range(mid_a, mid_b):
                                    dst[ow - a] = src[start + 2 * ow]
                            else:
                                for ow in range(mid_a, mid_b):
                                    dst[ow - a] = src[start + ow * sw]
                            for ow in range(mid_b if mid_b > a else a, b):
                                iw = wrow[ow]
                                dst[ow - a] = src[iw] if iw >= 0 else pad_value
                        dst += b - a
