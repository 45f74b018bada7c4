"""Direct (no im2col) kernels for depthwise, grouped and separable convolution.

With few input channels per group, im2col + GEMM spends its time copying: the GEMM
has a tiny inner dimension. These kernels instead accumulate straight into the
output row, one input row at a time:

* ``conv_rows`` computes output rows ``r0 <= od*OH + oh < r1`` of one output channel.
  For each kernel row it reads one input row (chosen through the depth/height index
  tables, so every padding mode is a table lookup); along the row, the "interior"
  columns where every tap lands inside the image are a tight affine loop the compiler
  vectorises, and only the few edge columns go through the width table.
* The common 3x3 case fuses the three kernel rows and three taps into one pass (nine
  multiply-adds per output from three input rows, written once); 3-tap rows are fused
  the same way; anything else runs tap by tap.
* ``grouped_direct``: ``prange`` over (image, output channel, row tile); depthwise is the
  case of one input channel per group. No scratch memory.
* ``separable``: ``prange`` over (image, band of output rows); the depthwise result of a
  band goes into the thread's row of the caller's workspace and is multiplied at once by
  the pointwise weight (one single-threaded GEMM per band), so the intermediate never
  leaves the cache and its size is bounded by the band.

Every unit writes a disjoint block of the output, and its arithmetic does not depend on
which thread runs it: results are bit-identical for any thread count.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange

from pyconv._kernels._blas cimport gemm_rm
from pyconv._kernels._openmp_helpers cimport omp_get_thread_num


cdef inline void tap_edges(floating* acc, const floating* src, const Py_ssize_t* wrow,
                           floating wv, Py_ssize_t o0, Py_ssize_t o1,
                           floating pad_value) noexcept nogil:
    # One tap over output columns [o0, o1) through the width table (-1: the pad value).
    cdef Py_ssize_t ow, iw
    for ow in range(o0, o1):
        iw = wrow[ow]
        if iw >= 0:
            acc[ow] += wv * src[iw]
        else:
            acc[ow] += wv * pad_value


cdef inline void tap_row(floating* acc, const floating* src, const Py_ssize_t* wrow,
                         floating wv, const Py_ssize_t* span, Py_ssize_t sw,
                         Py_ssize_t OW, floating pad_value) noexcept nogil:
    # One tap along a whole output row: affine interior, table edges.
    cdef Py_ssize_t ow
    cdef Py_ssize_t lo = span[0], hi = span[1], start = span[2]
    tap_edges(acc, src, wrow, wv, 0, lo, pad_value)
    if sw == 1:
        for ow in range(lo, hi):
            acc[ow] += wv * src[start + ow]
    else:
        for ow in range(lo, hi):
            acc[ow] += wv * src[start + ow * sw]
    tap_edges(acc, src, wrow, wv, hi, OW, pad_value)


cdef inline void edges3(floating* acc, const floating* src, const Py_ssize_t* idx_w,
                        const floating* w3, Py_ssize_t L, Py_ssize_t R, Py_ssize_t OW,
                        floating pad_value) noexcept nogil:
    # The three taps of a row outside the common interior [L, R).
    cdef Py_ssize_t kw
    for kw in range(3):
        tap_edges(acc, src, idx_w + kw * OW, w3[kw], 0, L, pad_value)
        tap_edges(acc, src, idx_w + kw * OW, w3[kw], R, OW, pad_value)


cdef inline floating tap3(const floating* src, const Py_ssize_t* idx_w, Py_ssize_t ow,
                          Py_ssize_t OW, const floating* w3,
                          floating pad_value) noexcept nogil:
    # Three taps of one row at an edge column, through the width table.
    cdef floating s = 0
    cdef Py_ssize_t kw, iw
    for kw in range(3):
        iw = idx_w[kw * OW + ow]
        s = s + w3[kw] * (src[iw] if iw >= 0 else pad_value)
    return s


cdef inline void edges3x3(floating* acc, const floating* a, const floating* b,
                          const floating* c, const Py_ssize_t* idx_w, const floating* w9,
                          Py_ssize_t o0, Py_ssize_t o1, Py_ssize_t OW, floating pad_value,
                          bint first, floating bias) noexcept nogil:
    # The nine taps at edge columns [o0, o1): one short loop instead of nine.
    cdef Py_ssize_t ow
    cdef floating s
    for ow in range(o0, o1):
        s = (tap3(a, idx_w, ow, OW, w9, pad_value)
             + tap3(b, idx_w, ow, OW, w9 + 3, pad_value)
             + tap3(c, idx_w, ow, OW, w9 + 6, pad_value))
        acc[ow] = (bias if first else acc[ow]) + s


cdef inline void row3(floating* acc, const floating* a, const floating* w3,
                      Py_ssize_t L, Py_ssize_t R, Py_ssize_t base, Py_ssize_t sw,
                      Py_ssize_t dw) noexcept nogil:
    # Three taps of one input row over the common interior, in one pass.
    cdef Py_ssize_t ow, i
    cdef floating w0 = w3[0], w1 = w3[1], w2 = w3[2]
    if sw == 1 and dw == 1:
        for ow in range(L, R):
            i = base + ow
            acc[ow] += w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2]
    else:
        for ow in range(L, R):
            i = base + ow * sw
            acc[ow] += w0 * a[i] + w1 * a[i + dw] + w2 * a[i + 2 * dw]


cdef inline void rows3x3(floating* acc, const floating* a, const floating* b,
                         const floating* c, const floating* w9, Py_ssize_t L,
                         Py_ssize_t R, Py_ssize_t base, Py_ssize_t sw, Py_ssize_t dw,
                         bint first, floating bias) noexcept nogil:
    # Nine taps from three input rows over the common interior, one write per output.
    # ``first``: the row holds nothing yet, so start from the bias instead of acc.
    cdef Py_ssize_t ow, i
    cdef floating w0 = w9[0], w1 = w9[1], w2 = w9[2]
    cdef floating w3 = w9[3], w4 = w9[4], w5 = w9[5]
    cdef floating w6 = w9[6], w7 = w9[7], w8 = w9[8]
    cdef floating s0, s1, s2
    if sw == 1 and dw == 1:
        if first:
            for ow in range(L, R):
                i = base + ow
                s0 = w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2]
                s1 = w3 * b[i] + w4 * b[i + 1] + w5 * b[i + 2]
                s2 = w6 * c[i] + w7 * c[i + 1] + w8 * c[i + 2]
                acc[ow] = bias + (s0 + s1 + s2)
        else:
            for ow in range(L, R):
                i = base + ow
                s0 = w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2]
                s1 = w3 * b[i] + w4 * b[i + 1] + w5 * b[i + 2]
                s2 = w6 * c[i] + w7 * c[i + 1] + w8 * c[i + 2]
                acc[ow] = acc[ow] + (s0 + s1 + s2)
    elif sw == 2 and dw == 1:
        if first:
            for ow in range(L, R):
                i = base + 2 * ow
                s0 = w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2]
                s1 = w3 * b[i] + w4 * b[i + 1] + w5 * b[i + 2]
                s2 = w6 * c[i] + w7 * c[i + 1] + w8 * c[i + 2]
                acc[ow] = bias + (s0 + s1 + s2)
        else:
            for ow in range(L, R):
                i = base + 2 * ow
                s0 = w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2]
                s1 = w3 * b[i] + w4 * b[i + 1] + w5 * b[i + 2]
                s2 = w6 * c[i] + w7 * c[i + 1] + w8 * c[i + 2]
                acc[ow] = acc[ow] + (s0 + s1 + s2)
    else:
        for ow in range(L, R):
            i = base + ow * sw
            s0 = w0 * a[i] + w1 * a[i + dw] + w2 * a[i + 2 * dw]
            s1 = w3 * b[i] + w4 * b[i + dw] + w5 * b[i + 2 * dw]
            s2 = w6 * c[i] + w7 * c[i + dw] + w8 * c[i + 2 * dw]
            if first:
                acc[ow] = bias + (s0 + s1 + s2)
            else:
                acc[ow] = acc[ow] + (s0 + s1 + s2)


cdef inline void rows3x3_pair(floating* acc0, floating* acc1, const floating* a,
                              const floating* b, const floating* c, const floating* d,
                              const floating* w9, Py_ssize_t L, Py_ssize_t R,
                              Py_ssize_t base, bint first, floating bias) noexcept nogil:
    # Two consecutive output rows at stride 1, dilation 1: input rows (a, b, c) and
    # (b, c, d). Four input rows feed two outputs, so each loaded vector is used
    # for up to six multiply-adds; the per-row overhead is halved too.
    cdef Py_ssize_t ow, i
    cdef floating w0 = w9[0], w1 = w9[1], w2 = w9[2]
    cdef floating w3 = w9[3], w4 = w9[4], w5 = w9[5]
    cdef floating w6 = w9[6], w7 = w9[7], w8 = w9[8]
    cdef floating s0, s1
    # Two copies of the loop (first pass or not): a branch inside would stop the
    # compiler from vectorising it.
    if first:
        for ow in range(L, R):
            i = base + ow
            s0 = ((w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2])
                  + (w3 * b[i] + w4 * b[i + 1] + w5 * b[i + 2])
                  + (w6 * c[i] + w7 * c[i + 1] + w8 * c[i + 2]))
            s1 = ((w0 * b[i] + w1 * b[i + 1] + w2 * b[i + 2])
                  + (w3 * c[i] + w4 * c[i + 1] + w5 * c[i + 2])
                  + (w6 * d[i] + w7 * d[i + 1] + w8 * d[i + 2]))
            acc0[ow] = bias + s0
            acc1[ow] = bias + s1
    else:
        for ow in range(L, R):
            i = base + ow
            s0 = ((w0 * a[i] + w1 * a[i + 1] + w2 * a[i + 2])
                  + (w3 * b[i] + w4 * b[i + 1] + w5 * b[i + 2])
                  + (w6 * c[i] + w7 * c[i + 1] + w8 * c[i + 2]))
            s1 = ((w0 * b[i] + w1 * b[i + 1] + w2 * b[i + 2])
                  + (w3 * c[i] + w4 * c[i + 1] + w5 * c[i + 2])
                  + (w6 * d[i] + w7 * d[i + 1] + w8 * d[i + 2]))
            acc0[ow] = acc0[ow] + s0
            acc1[ow] = acc1[ow] + s1


cdef inline void fill(floating* acc, Py_ssize_t o0, Py_ssize_t o1,
                      floating v) noexcept nogil:
    cdef Py_ssize_t ow
    for ow in range(o0, o1):
        acc[ow] = v


cdef inline void slice_row(floating* acc, const floating* xc, Py_ssize_t id_,
                           const floating* wd, Py_ssize_t oh, bint first, floating bias,
                           const Py_ssize_t* idx_h, const Py_ssize_t* idx_w,
                           const Py_ssize_t* span, Py_ssize_t L, Py_ssize_t R,
                           Py_ssize_t W, Py_ssize_t HW, Py_ssize_t OH, Py_ssize_t OW,
                           Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t sw, Py_ssize_t dw,
                           floating pad_value) noexcept nogil:
    # One (input channel, kernel depth) slice of one output row: KH x KW taps.
    # id_ is the input depth index (-1: a plane of padding); wd the slice's weights.
    # ``first``: acc holds nothing yet and starts from the bias.
    cdef Py_ssize_t base = span[2]
    cdef bint fused3 = KW == 3 and L < R
    cdef Py_ssize_t kh, kw, ow, ih, ih0, ih1, ih2
    cdef const floating* xd
    cdef const floating* wk
    cdef const floating* src
    cdef floating v
    if fused3 and KH == 3 and id_ >= 0:
        ih0 = idx_h[oh]
        ih1 = idx_h[OH + oh]
        ih2 = idx_h[2 * OH + oh]
        if ih0 >= 0 and ih1 >= 0 and ih2 >= 0:
            xd = xc + id_ * HW
            edges3x3(acc, xd + ih0 * W, xd + ih1 * W, xd + ih2 * W, idx_w,
                     wd, 0, L, OW, pad_value, first, bias)
            rows3x3(acc, xd + ih0 * W, xd + ih1 * W, xd + ih2 * W, wd,
                    L, R, base, sw, dw, first, bias)
            edges3x3(acc, xd + ih0 * W, xd + ih1 * W, xd + ih2 * W, idx_w,
                     wd, R, OW, OW, pad_value, first, bias)
            return
    if first:
        fill(acc, 0, OW, bias)
    for kh in range(KH):
        ih = idx_h[kh * OH + oh]
        wk = wd + kh * KW
        if id_ < 0 or ih < 0:
            # A whole row of padding: every tap reads the pad value.
            if pad_value != 0:
                for kw in range(KW):
                    v = wk[kw] * pad_value
                    for ow in range(OW):
                        acc[ow] += v
            continue
        src = xc + id_ * HW + ih * W
        if fused3:
            row3(acc, src, wk, L, R, base, sw, dw)
            edges3(acc, src, idx_w, wk, L, R, OW, pad_value)
        else:
            for kw in range(KW):
                tap_row(acc, src, idx_w + kw * OW, wk[kw], span + 3 * kw,
                        sw, OW, pad_value)


cdef inline void relu_row(floating* acc, Py_ssize_t OW) noexcept nogil:
    cdef Py_ssize_t ow
    cdef floating v
    for ow in range(OW):
        v = acc[ow]
        acc[ow] = 0 if v < 0 else v  # NaN stays NaN, as in torch.relu


cdef void conv_rows(const floating* xg, Py_ssize_t cin_g, Py_ssize_t plane,
                    const floating* w, floating bias, floating* dst,
                    Py_ssize_t r0, Py_ssize_t r1,
                    const Py_ssize_t* idx_d, const Py_ssize_t* idx_h,
                    const Py_ssize_t* idx_w, const Py_ssize_t* span,
                    Py_ssize_t L, Py_ssize_t R, Py_ssize_t W, Py_ssize_t HW,
                    Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW,
                    Py_ssize_t KD, Py_ssize_t KH, Py_ssize_t KW,
                    Py_ssize_t sw, Py_ssize_t dw, floating pad_value,
                    bint relu) noexcept nogil:
    # Output rows r0 <= r < r1 (r = od*OH + oh) of one output channel into dst (OW
    # values per row, consecutive). xg: the group's cin_g input planes of `plane`
    # values; w: this channel's cin_g * KD*KH*KW weights. L < R is the common interior
    # of all width taps (R <= L when there is none). 3x3 kernels at stride 1 and
    # dilation 1 take two output rows at a time where their input rows overlap.
    cdef Py_ssize_t K = KD * KH * KW
    cdef Py_ssize_t base = span[2]
    cdef bint pairs = KH == 3 and KW == 3 and sw == 1 and dw == 1 and L < R
    cdef Py_ssize_t r, od, oh, ci, kd, id_, ih0, ih1, ih2, jh0, jh1, jh2
    cdef floating* acc
    cdef const floating* xc
    cdef const floating* xd
    cdef const floating* wd
    cdef bint first
    r = r0
    while r < r1:
        od = r // OH
        oh = r - od * OH
        acc = dst + (r - r0) * OW
        first = True
        if pairs and r + 1 < r1 and oh + 1 < OH:
            for ci in range(cin_g):
                xc = xg + ci * plane
                for kd in range(KD):
                    id_ = idx_d[kd * OD + od]
                    wd = w + ci * K + kd * 9
                    ih0 = idx_h[oh]
                    ih1 = idx_h[OH + oh]
                    ih2 = idx_h[2 * OH + oh]
                    jh0 = idx_h[oh + 1]
                    jh1 = idx_h[OH + oh + 1]
                    jh2 = idx_h[2 * OH + oh + 1]
                    if (id_ >= 0 and ih0 >= 0 and ih1 >= 0 and ih2 >= 0 and jh2 >= 0
                            and jh0 == ih1 and jh1 == ih2):
                        xd = xc + id_ * HW
                        edges3x3(acc, xd + ih0 * W, xd + ih1 * W, xd + ih2 * W, idx_w,
                                 wd, 0, L, OW, pad_value, first, bias)
                        edges3x3(acc, xd + ih0 * W, xd + ih1 * W, xd + ih2 * W, idx_w,
                                 wd, R, OW, OW, pad_value, first, bias)
                        edges3x3(acc + OW, xd + jh0 * W, xd + jh1 * W, xd + jh2 * W,
                                 idx_w, wd, 0, L, OW, pad_value, first, bias)
                        edges3x3(acc + OW, xd + jh0 * W, xd + jh1 * W, xd + jh2 * W,
                                 idx_w, wd, R, OW, OW, pad_value, first, bias)
                        rows3x3_pair(acc, acc + OW, xd + ih0 * W, xd + ih1 * W,
                                     xd + ih2 * W, xd + jh2 * W, wd, L, R, base,
                                     first, bias)
                    else:
                        slice_row(acc, xc, id_, wd, oh, first, bias, idx_h, idx_w,
                                  span, L, R, W, HW, OH, OW, KH, KW, sw, dw, pad_value)
                        slice_row(acc + OW, xc, id_, wd, oh + 1, first, bias, idx_h,
                                  idx_w, span, L, R, W, HW, OH, OW, KH, KW, sw, dw,
                                  pad_value)
                    first = False
            if relu:
                relu_row(acc, OW)
                relu_row(acc + OW, OW)
            r += 2
        else:
            for ci in range(cin_g):
                xc = xg + ci * plane
                for kd in range(KD):
                    slice_row(acc, xc, idx_d[kd * OD + od], w + ci * K + kd * KH * KW,
                              oh, first, bias, idx_h, idx_w, span, L, R, W, HW, OH, OW,
                              KH, KW, sw, dw, pad_value)
                    first = False
            if relu:
                relu_row(acc, OW)
            r += 1


cdef inline void bias_relu_tile(floating* c, Py_ssize_t rows, Py_ssize_t cols,
                                Py_ssize_t ldc, const floating* bias, bint has_bias,
                                bint relu) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating b, v
    cdef floating* row
    for i in range(rows):
        row = c + i * ldc
        b = bias[i] if has_bias else 0
        if relu:
            for j in range(cols):
                v = row[j] + b
                row[j] = v if v > 0 else 0
        elif has_bias:
            for j in range(cols):
                row[j] = row[j] + b


def grouped_direct(const floating[:, :, ::1] x, const floating[:, ::1] weight,
                   const floating[::1] bias, floating[:, :, ::1] out,
                   const Py_ssize_t[::1] idx_d, const Py_ssize_t[::1] idx_h,
                   const Py_ssize_t[::1] idx_w, const Py_ssize_t[::1] span,
                   Py_ssize_t L, Py_ssize_t R, Py_ssize_t H, Py_ssize_t W,
                   Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW,
                   Py_ssize_t KD, Py_ssize_t KH, Py_ssize_t KW,
                   Py_ssize_t sw, Py_ssize_t dw, Py_ssize_t groups,
                   floating pad_value, bint has_bias, bint relu,
                   Py_ssize_t rows_per_tile, int n_threads):
    """out[n, co] = bias[co] + sum_{ci in group(co), taps} weight[co, (ci, tap)] * x[...].

    x: (N, C_in, D*H*W); weight: (C_out, C_in/groups * KD*KH*KW); out: (N, C_out,
    OD*OH*OW). Units are (image, output channel, tile of rows_per_tile output rows).
    """
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t plane = x.shape[2]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t cin_g = x.shape[1] // groups
    cdef Py_ssize_t cout_g = C_out // groups
    cdef Py_ssize_t rows = OD * OH
    cdef Py_ssize_t n_tiles = (rows + rows_per_tile - 1) // rows_per_tile
    cdef Py_ssize_t n_units = N * C_out * n_tiles
    cdef Py_ssize_t u, n, co, t, r0, r1
    if n_units == 0 or out.shape[2] == 0:
        return
    for u in prange(n_units, nogil=True, schedule='static', num_threads=n_threads):
        t = u % n_tiles
        co = (u // n_tiles) % C_out
        n = u // (n_tiles * C_out)
        r0 = t * rows_per_tile
        r1 = r0 + rows_per_tile
        if r1 > rows:
            r1 = rows
        conv_rows(&x[n, (co // cout_g) * cin_g, 0], cin_g, plane, &weight[co, 0],
                  bias[co] if has_bias else 0, &out[n, co, r0 * OW], r0, r1,
                  &idx_d[0], &idx_h[0], &idx_w[0], &span[0], L, R, W, H * W,
                  OD, OH, OW, KD, KH, KW, sw, dw, pad_value, relu)


def separable(const floating[:, :, ::1] x, const floating[:, ::1] dw_weight,
              const floating[::1] dw_bias, const floating[:, ::1] pw_weight,
              const floating[::1] pw_bias, floating[:, :, ::1] out,
              const Py_ssize_t[::1] idx_d, const Py_ssize_t[::1] idx_h,
              const Py_ssize_t[::1] idx_w, const Py_ssize_t[::1] span,
              Py_ssize_t L, Py_ssize_t R, Py_ssize_t H, Py_ssize_t W,
              Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW,
              Py_ssize_t KD, Py_ssize_t KH, Py_ssize_t KW,
              Py_ssize_t sw, Py_ssize_t dw, Py_ssize_t multiplier,
              floating pad_value, bint has_dw_bias, bint has_pw_bias, bint relu,
              Py_ssize_t rows_per_band, floating[:, ::1] work, int n_threads):
    """Depthwise (multiplier m) then pointwise, fused per band of output rows.

    x: (N, C_in, D*H*W); dw_weight: (m*C_in, KD*KH*KW); pw_weight: (C_out, m*C_in);
    out: (N, C_out, OD*OH*OW). ``work`` has one row of at least
    ``m*C_in * rows_per_band * OW`` values per thread. The caller pins BLAS to one thread.
    """
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t plane = x.shape[2]
    cdef Py_ssize_t C_mid = dw_weight.shape[0]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t P = out.shape[2]
    cdef Py_ssize_t rows = OD * OH
    cdef Py_ssize_t n_bands = (rows + rows_per_band - 1) // rows_per_band
    cdef Py_ssize_t n_units = N * n_bands
    cdef Py_ssize_t u, n, t, r0, r1, cols, c2
    cdef floating* buf = NULL
    cdef floating* c_ptr
    cdef const floating* pw_bias_ptr = &pw_bias[0] if has_pw_bias else NULL
    if n_units == 0 or P == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        buf = &work[omp_get_thread_num(), 0]
        for u in prange(n_units, schedule='static'):
            t = u % n_bands
            n = u // n_bands
            r0 = t * rows_per_band
            r1 = r0 + rows_per_band
            if r1 > rows:
                r1 = rows
            cols = (r1 - r0) * OW
            for c2 in range(C_mid):
                conv_rows(&x[n, c2 // multiplier, 0], 1, plane, &dw_weight[c2, 0],
                          dw_bias[c2] if has_dw_bias else 0, buf + c2 * cols, r0, r1,
                          &idx_d[0], &idx_h[0], &idx_w[0], &span[0], L, R, W, H * W,
                          OD, OH, OW, KD, KH, KW, sw, dw, pad_value, False)
            c_ptr = &out[n, 0, r0 * OW]
            gemm_rm(&pw_weight[0, 0], buf, c_ptr, C_out, cols, C_mid, C_mid, cols, P, 0)
            if has_pw_bias or relu:
                bias_relu_tile(c_ptr, C_out, cols, P, pw_bias_ptr, has_pw_bias, relu)
