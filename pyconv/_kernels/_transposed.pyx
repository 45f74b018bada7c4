"""Transposed N-D convolution: GEMM into a column block, then col2im scatter-add.

A work unit is (image, group, block of ``cob`` output channels). It owns those output
channels' planes: it fills them with the bias, then for each chunk of input positions it
forms ``cols[(co, tap), p] = sum_ci wt[g, (co, tap), ci] * x[n, ci, p]`` with one
single-threaded GEMM (the caller pins scipy's OpenBLAS) and scatter-adds every column
row into the planes, and finally applies the fused ReLU. Units write disjoint output,
so they run under one ``prange`` with no atomics, and each unit does the same
operations in the same order whichever thread runs it: results are bit-identical for
any thread count. Each thread's column buffer is one row of the caller's workspace,
``cob * KD*KH*KW * chunk`` values for a chunk of ``chunk`` input positions (whole input
rows where the budget allows, so the scatter runs along rows).

1-D and 2-D problems are 3-D problems with unit leading axes. Per axis and tap the
caller passes ``(i_lo, i_hi, o0)``: input positions ``i_lo <= i < i_hi`` land on output
``o0 + i*stride`` inside the output (cropping and output padding are folded in).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange

from pyconv._kernels._blas cimport gemm_rm
from pyconv._kernels._openmp_helpers cimport omp_get_thread_num


cdef inline void fill_planes(floating* o, Py_ssize_t channels, Py_ssize_t plane,
                             const floating* bias, bint has_bias) noexcept nogil:
    cdef Py_ssize_t c, j
    cdef floating b
    for c in range(channels):
        b = bias[c] if has_bias else 0
        for j in range(plane):
            o[c * plane + j] = b


cdef inline void relu_planes(floating* o, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t j
    # Same rule as the dense conv kernel's epilogue (and torch.relu): NaN stays NaN.
    for j in range(count):
        if o[j] < 0:
            o[j] = 0


cdef inline void col2im_range(const floating* col, floating* o, Py_ssize_t channels,
                              Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t oplane,
                              Py_ssize_t KD, Py_ssize_t KH, Py_ssize_t KW,
                              Py_ssize_t sd, Py_ssize_t sh, Py_ssize_t sw,
                              const Py_ssize_t* span_d, const Py_ssize_t* span_h,
                              const Py_ssize_t* span_w) noexcept nogil:
    # col[(c, kd, kh, kw), p - p0] for input positions p0 <= p = (id*H + ih)*W + iw < p1
    # is added to o[c, od, oh, ow] with od = o0_d + id*sd etc., where the tap lands
    # inside the output. The chunk may start and end inside a row.
    cdef Py_ssize_t pc = p1 - p0
    cdef Py_ssize_t c, kd, kh, kw, r, id_, ih, j, a, b, wlo, whi
    cdef const floating* crow
    cdef const floating* src
    cdef floating* oc
    cdef floating* dst
    for c in range(channels):
        oc = o + c * oplane
        for kd in range(KD):
            for kh in range(KH):
                for kw in range(KW):
                    crow = col + (((c * KD + kd) * KH + kh) * KW + kw) * pc
                    wlo = span_w[3 * kw]
                    whi = span_w[3 * kw + 1]
                    if wlo >= whi:
                        continue
                    for r in range(p0 // W, (p1 - 1) // W + 1):
                        id_ = r // H
                        ih = r - id_ * H
                        if (id_ < span_d[3 * kd] or id_ >= span_d[3 * kd + 1]
                                or ih < span_h[3 * kh] or ih >= span_h[3 * kh + 1]):
                            continue
                        a = wlo if wlo > p0 - r * W else p0 - r * W
                        b = whi if whi < p1 - r * W else p1 - r * W
                        if a >= b:
                            continue
                        dst = (oc + ((span_d[3 * kd + 2] + id_ * sd) * OH
                                     + span_h[3 * kh + 2] + ih * sh) * OW
                               + span_w[3 * kw + 2] + a * sw)
                        src = crow + (r * W + a - p0)
                        if sw == 1:
                            for j in range(b - a):
                                dst[j] += src[j]
                        else:
                            for j in range(b - a):
                                dst[j * sw] += src[j]


def conv_transpose_nd(const floating[:, :, ::1] x, const floating[:, :, ::1] wt,
                      const floating[::1] bias, floating[:, :, ::1] out,
                      const Py_ssize_t[::1] span_d, const Py_ssize_t[::1] span_h,
                      const Py_ssize_t[::1] span_w,
                      Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                      Py_ssize_t KD, Py_ssize_t KH, Py_ssize_t KW,
                      Py_ssize_t sd, Py_ssize_t sh, Py_ssize_t sw,
                      Py_ssize_t groups, Py_ssize_t cob, Py_ssize_t chunk,
                      bint has_bias, bint relu, floating[:, ::1] work, int n_threads):
    """out[n, g*cout_g + co, o(p, tap)] += sum_ci wt[g, (co, tap), ci] * x[n, g*cin_g + ci, p].

    x: (N, C_in, D*H*W); wt: (groups, cout_g * KD*KH*KW, cin_g), the weight transposed
    per group; out: (N, C_out, OD*OH*OW), overwritten. ``work`` has one row of at least
    ``cob * KD*KH*KW * chunk`` values per thread (``chunk`` input positions per GEMM).
    """
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t plane = x.shape[2]
    cdef Py_ssize_t cin_g = x.shape[1] // groups
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t oplane = out.shape[2]
    cdef Py_ssize_t cout_g = C_out // groups
    cdef Py_ssize_t K = KD * KH * KW
    cdef Py_ssize_t n_blocks = (cout_g + cob - 1) // cob
    cdef Py_ssize_t n_units = N * groups * n_blocks
    cdef Py_ssize_t u, n, g, b, co0, nc, p0, p1
    cdef floating* col = NULL
    cdef floating* o_ptr
    cdef const floating* bias_ptr = &bias[0]
    if n_units == 0 or oplane == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        col = &work[omp_get_thread_num(), 0]
        for u in prange(n_units, schedule='static'):
            b = u % n_blocks
            g = (u // n_blocks) % groups
            n = u // (n_blocks * groups)
            co0 = b * cob
            nc = cout_g - co0
            if nc > cob:
                nc = cob
            o_ptr = &out[n, g * cout_g + co0, 0]
            fill_planes(o_ptr, nc, oplane, bias_ptr + g * cout_g + co0, has_bias)
            p0 = 0
            while p0 < plane:
                p1 = p0 + chunk
                if p1 > plane:
                    p1 = plane
                gemm_rm(&wt[g, co0 * K, 0], &x[n, g * cin_g, p0], col,
                        nc * K, p1 - p0, cin_g, cin_g, plane, p1 - p0, 0)
                col2im_range(col, o_ptr, nc, p0, p1, H, W, OH, OW, oplane,
                             KD, KH, KW, sd, sh, sw, &span_d[0], &span_h[0], &span_w[0])
                p0 = p1
            if relu:
                relu_planes(o_ptr, nc * oplane)


def interleave_phases(const floating[:, :, :, ::1] src, floating[:, :, ::1] dst,
                      const Py_ssize_t[:, ::1] phases, Py_ssize_t QH, Py_ssize_t QW,
                      Py_ssize_t LH, Py_ssize_t LW, Py_ssize_t sd, Py_ssize_t sh,
                      Py_ssize_t sw, int n_threads):
    """Write every phase's outputs to their places in the output planes.

    src: (planes, P, C, QD*QH*QW), phase p of channel c computed at Q positions;
    dst: (planes, C, LD*LH*LW); phases: (P, 6) rows ``(phi_d, phi_h, phi_w, q_d, q_h,
    q_w)``: phase p's outputs ``(qd, qh, qw) < (q_d, q_h, q_w)`` go to output position
    ``(qd*sd + phi_d, qh*sh + phi_h, qw*sw + phi_w)``. Parallel over (plane, channel).
    """
    cdef Py_ssize_t n_planes = dst.shape[0], C = dst.shape[1], P = src.shape[1]
    cdef Py_ssize_t QP = src.shape[3], LP = dst.shape[2]
    cdef Py_ssize_t u, p, c, qd, qh, qw, nq
    cdef const floating* s
    cdef floating* d
    if src.shape[0] != n_planes or src.shape[2] != C or phases.shape[0] != P \
            or phases.shape[1] != 6 or QP % (QH * QW) or LP % (LH * LW):
        raise ValueError("interleave_phases: inconsistent shapes")
    for p in range(P):
        if phases[p, 3] * QH * QW > QP or phases[p, 4] > QH or phases[p, 5] > QW \
                or (phases[p, 3] - 1) * sd + phases[p, 0] >= LP // (LH * LW) \
                or (phases[p, 4] - 1) * sh + phases[p, 1] >= LH \
                or (phases[p, 5] - 1) * sw + phases[p, 2] >= LW:
            raise ValueError("interleave_phases: a phase reaches past its planes")
    with nogil:
        for u in prange(n_planes * C, schedule='static', num_threads=n_threads):
            c = u % C
            for p in range(P):
                nq = phases[p, 5]
                for qd in range(phases[p, 3]):
                    for qh in range(phases[p, 4]):
                        s = &src[u // C, p, c, (qd * QH + qh) * QW]
                        d = &dst[u // C, c, ((qd * sd + phases[p, 0]) * LH
                                             + qh * sh + phases[p, 1]) * LW + phases[p, 2]]
                        for qw in range(nq):
                            d[qw * sw] = s[qw]
