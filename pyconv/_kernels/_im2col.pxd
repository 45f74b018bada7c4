# Row-wise N-D im2col driven by per-axis index tables (inline, compiled into each user).
#
# Every padding mode is reduced, before the kernel runs, to one table per axis:
# idx_a[k*O_a + o] is the input index that kernel tap k reads at output position o
# (reflected, wrapped or clamped as the mode says), or -1 for a constant pad. The
# kernel therefore knows nothing about padding rules and never re-derives a shape.
# 1-D and 2-D problems are 3-D problems with unit leading axes.
from cython cimport floating

# Input rows up to this long are split into their two stride-2 phases once per row
# (a buffer on the stack), which every tap of that row then copies from contiguously.
cdef enum:
    PHASE_ROW_MAX = 4096


cdef inline void edge_taps(floating* dst, const floating* src, const Py_ssize_t* wrow,
                           Py_ssize_t a, Py_ssize_t e0, Py_ssize_t e1,
                           floating pad_value) noexcept nogil:
    # dst[ow - a] for e0 <= ow < e1 through the tap's index table (the row's edges)
    cdef Py_ssize_t ow, iw
    for ow in range(e0, e1):
        iw = wrow[ow]
        dst[ow - a] = src[iw] if iw >= 0 else pad_value


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
    cdef Py_ssize_t c, kd, kh, kw, r, od, oh, ow, id_, ih, start, m, p
    cdef Py_ssize_t a, b, mid_a, mid_b
    cdef Py_ssize_t r0 = q0 // OW
    cdef Py_ssize_t r1 = (q1 + OW - 1) // OW
    cdef Py_ssize_t row_len = q1 - q0
    cdef const floating* xc
    cdef const floating* src = NULL
    cdef const floating* phase
    cdef floating* dst
    cdef bint inside
    # Stride 2 with 3 or more taps: each input row is split once into its even and
    # odd phases (ph[0:half], ph[half:]), which every tap then copies contiguously,
    # rather than gathered once per tap (7x7 stride 2 on 8x3x224x224).
    cdef floating ph[PHASE_ROW_MAX + 2]
    cdef Py_ssize_t half = (W + 1) // 2
    cdef bint phases = sw == 2 and KW > 2 and W <= PHASE_ROW_MAX
    for c in range(channels):
        xc = x + c * plane
        for kd in range(KD):
            for kh in range(KH):
                for r in range(r0, r1):
                    # this row's part of the range: a <= ow < b
                    a = q0 - r * OW if r == r0 else 0
                    b = q1 - r * OW if r == r1 - 1 else OW
                    od = r // OH
                    oh = r - od * OH
                    id_ = idx_d[kd * OD + od]
                    ih = idx_h[kh * OH + oh]
                    inside = id_ >= 0 and ih >= 0
                    if inside:
                        src = xc + id_ * HW + ih * W
                        if phases:
                            for m in range(W // 2):
                                ph[m] = src[2 * m]
                                ph[half + m] = src[2 * m + 1]
                            if W % 2:
                                ph[W // 2] = src[W - 1]
                    # each tap's col row, at this row's place in it
                    dst = col + ((c * KD + kd) * KH + kh) * KW * row_len + r * OW + a - q0
                    for kw in range(KW):
                        if not inside:
                            for ow in range(b - a):
                                dst[ow] = pad_value
                            dst += row_len
                            continue
                        start = span[3 * kw + 2]
                        mid_a = span[3 * kw] if span[3 * kw] > a else a
                        mid_b = span[3 * kw + 1] if span[3 * kw + 1] < b else b
                        if mid_b < mid_a:
                            mid_b = mid_a
                        edge_taps(dst, src, idx_w + kw * OW, a, a,
                                  mid_a if mid_a < b else b, pad_value)
                        if phases:
                            # start + 2*ow = 2*((start - p)/2 + ow) + p: phase p
                            p = start & 1
                            phase = ph + p * half + ((start - p) >> 1)
                            for ow in range(mid_a, mid_b):
                                dst[ow - a] = phase[ow]
                        elif sw == 1:
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
                        edge_taps(dst, src, idx_w + kw * OW, a,
                                  mid_b if mid_b > a else a, b, pad_value)
                        dst += row_len
