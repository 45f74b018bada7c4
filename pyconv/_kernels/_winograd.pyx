"""Winograd minimal filtering F(2x2, 3x3) and F(4x4, 3x3) for 3x3 stride-1 convolution.

Per work unit (image, group, chunk of output tiles):

1. input transform: each alpha x alpha input tile (alpha = m + 2) of each channel is
   gathered through per-axis index tables (so every padding mode works without a
   padded copy) and transformed, ``V[a, c, t] = (B^T d B)[a]``;
2. ``alpha**2`` GEMMs ``M[a] = U[a] @ V[a]`` with the pre-transformed filter
   ``U[a] = (G g G^T)[a]`` of shape ``(C_out/groups, C_in/groups)``;
3. output transform ``Y = A^T M A`` (m x m outputs per tile), bias and ReLU fused,
   only the outputs inside ``(OH, OW)`` written (partial edge tiles).

Units write disjoint output tiles, so they run under one ``prange`` with
single-threaded BLAS inside. A unit's arithmetic does not depend on which thread runs
it nor on the thread count, so results are bit-identical for any ``n_threads``.
Each thread owns one row of the caller's workspace of
``alpha**2 * chunk * (C_in/groups + C_out/groups)`` values (V and M of one chunk).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange

from pyconv._kernels._blas cimport gemm_rm
from pyconv._kernels._openmp_helpers cimport omp_get_thread_num


cdef inline void load_tile(const floating* xp, Py_ssize_t W, Py_ssize_t alpha,
                           Py_ssize_t bh, Py_ssize_t bw,
                           const Py_ssize_t* ih, Py_ssize_t TH,
                           const Py_ssize_t* iw, Py_ssize_t TW,
                           floating pad, floating* d) noexcept nogil:
    # d[r*alpha + s] = input at tap (r, s) of the tile. bh/bw >= 0: the tile's rows /
    # columns are the contiguous range starting there (interior tile, no table lookups);
    # otherwise ih[r*TH] / iw[s*TW] give the index: -1 is a pad (value ``pad``), -2 a
    # position past the padded extent, read as 0 (it only feeds outputs that are not
    # written, so a zero keeps huge pad values from leaking rounding into valid ones).
    cdef Py_ssize_t r, s, h, w
    cdef const floating* row
    if bh >= 0 and bw >= 0:
        for r in range(alpha):
            row = xp + (bh + r) * W + bw
            for s in range(alpha):
                d[r * alpha + s] = row[s]
        return
    for r in range(alpha):
        h = bh + r if bh >= 0 else ih[r * TH]
        if h < 0:
            for s in range(alpha):
                d[r * alpha + s] = pad if h == -1 else 0
            continue
        row = xp + h * W
        if bw >= 0:
            for s in range(alpha):
                d[r * alpha + s] = row[bw + s]
        else:
            for s in range(alpha):
                w = iw[s * TW]
                if w >= 0:
                    d[r * alpha + s] = row[w]
                else:
                    d[r * alpha + s] = pad if w == -1 else 0


# ---- F(2x2, 3x3): alpha = 4 ---------------------------------------------------------
# B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]];  A^T = [[1,1,1,0],[0,1,-1,-1]]

cdef inline void input_f2(const floating* d, floating* v, Py_ssize_t ldv) noexcept nogil:
    # v[a*ldv] = (B^T d B)[a] for a = r*4 + s.
    cdef floating t[16]
    cdef Py_ssize_t s, r
    cdef floating t0, t1, t2, t3
    for s in range(4):
        t[0 + s] = d[0 + s] - d[8 + s]
        t[4 + s] = d[4 + s] + d[8 + s]
        t[8 + s] = d[8 + s] - d[4 + s]
        t[12 + s] = d[4 + s] - d[12 + s]
    for r in range(4):
        t0 = t[4 * r]
        t1 = t[4 * r + 1]
        t2 = t[4 * r + 2]
        t3 = t[4 * r + 3]
        v[(4 * r + 0) * ldv] = t0 - t2
        v[(4 * r + 1) * ldv] = t1 + t2
        v[(4 * r + 2) * ldv] = t2 - t1
        v[(4 * r + 3) * ldv] = t1 - t3


cdef inline void output_f2(const floating* mm, Py_ssize_t ldm, floating* y) noexcept nogil:
    # y[i*2 + j] = (A^T M A)[i, j], M[a] = mm[a*ldm].
    cdef floating p[8]
    cdef Py_ssize_t s, i
    cdef floating m0, m1, m2, m3
    for s in range(4):
        m0 = mm[(0 + s) * ldm]
        m1 = mm[(4 + s) * ldm]
        m2 = mm[(8 + s) * ldm]
        m3 = mm[(12 + s) * ldm]
        p[s] = m0 + m1 + m2
        p[4 + s] = m1 - m2 - m3
    for i in range(2):
        y[2 * i] = p[4 * i] + p[4 * i + 1] + p[4 * i + 2]
        y[2 * i + 1] = p[4 * i + 1] - p[4 * i + 2] - p[4 * i + 3]


# ---- F(4x4, 3x3): alpha = 6, interpolation points 0, +-1, +-2, inf ------------------
# B^T = [[4,0,-5,0,1,0],[0,-4,-4,1,1,0],[0,4,-4,-1,1,0],
#        [0,-2,-1,2,1,0],[0,2,-1,-2,1,0],[0,4,0,-5,0,1]]
# A^T = [[1,1,1,1,1,0],[0,1,-1,2,-2,0],[0,1,1,4,4,0],[0,1,-1,8,-8,1]]

cdef inline void bt6(floating d0, floating d1, floating d2, floating d3, floating d4,
                     floating d5, floating* o, Py_ssize_t st) noexcept nogil:
    # o[k*st] = (B^T d)[k] for the 6-vector d.
    cdef floating a = d4 - 4 * d2
    cdef floating b = d3 - 4 * d1
    cdef floating c = d4 - d2
    cdef floating e = 2 * (d3 - d1)
    o[0] = 4 * d0 - 5 * d2 + d4
    o[st] = a + b
    o[2 * st] = a - b
    o[3 * st] = c + e
    o[4 * st] = c - e
    o[5 * st] = 4 * d1 - 5 * d3 + d5


cdef inline void input_f4(const floating* d, floating* v, Py_ssize_t ldv) noexcept nogil:
    cdef floating t[36]
    cdef Py_ssize_t s, r
    for s in range(6):
        bt6(d[s], d[6 + s], d[12 + s], d[18 + s], d[24 + s], d[30 + s], &t[s], 6)
    for r in range(6):
        bt6(t[6 * r], t[6 * r + 1], t[6 * r + 2], t[6 * r + 3], t[6 * r + 4],
            t[6 * r + 5], v + 6 * r * ldv, ldv)


cdef inline void at6(floating m0, floating m1, floating m2, floating m3, floating m4,
                     floating m5, floating* o, Py_ssize_t st) noexcept nogil:
    # o[k*st] = (A^T m)[k] for the 6-vector m.
    cdef floating a = m1 + m2
    cdef floating b = m1 - m2
    cdef floating c = m3 + m4
    cdef floating e = m3 - m4
    o[0] = m0 + a + c
    o[st] = b + 2 * e
    o[2 * st] = a + 4 * c
    o[3 * st] = b + 8 * e + m5


cdef inline void output_f4(const floating* mm, Py_ssize_t ldm, floating* y) noexcept nogil:
    cdef floating p[24]
    cdef Py_ssize_t s, i
    for s in range(6):
        at6(mm[s * ldm], mm[(6 + s) * ldm], mm[(12 + s) * ldm], mm[(18 + s) * ldm],
            mm[(24 + s) * ldm], mm[(30 + s) * ldm], &p[s], 6)
    for i in range(4):
        at6(p[6 * i], p[6 * i + 1], p[6 * i + 2], p[6 * i + 3], p[6 * i + 4],
            p[6 * i + 5], &y[4 * i], 1)


# ---- one work unit -------------------------------------------------------------------

cdef inline void unit(const floating* xn, const floating* u, const floating* bias,
                      floating* outn, floating* vbuf, floating* mbuf,
                      Py_ssize_t mt, Py_ssize_t cin_g, Py_ssize_t cout_g,
                      Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                      Py_ssize_t q0, Py_ssize_t q1, Py_ssize_t chunk,
                      const Py_ssize_t* tab_h, const Py_ssize_t* tab_w,
                      const Py_ssize_t* base_h, const Py_ssize_t* base_w,
                      Py_ssize_t TH, Py_ssize_t TW, Py_ssize_t u_ld,
                      floating pad, bint has_bias, bint relu) noexcept nogil:
    # xn: cin_g input planes (H*W); u: U[a] rows for this group, U[a] at u + a*u_ld,
    # row stride cin_g; outn: cout_g output planes (OH*OW); tiles q0 <= q < q1.
    cdef Py_ssize_t alpha = mt + 2
    cdef Py_ssize_t A2 = alpha * alpha
    cdef Py_ssize_t nt = q1 - q0
    cdef Py_ssize_t ldv = cin_g * chunk
    cdef Py_ssize_t ldm = cout_g * chunk
    cdef Py_ssize_t c, q, th, tw, a, i, j, oh0, ow0, ni, nj
    cdef floating d[36]
    cdef floating y[16]
    cdef floating b, val
    cdef const floating* xp
    cdef floating* op
    # 1. input transform
    for c in range(cin_g):
        xp = xn + c * H * W
        for q in range(q0, q1):
            th = q // TW
            tw = q - th * TW
            load_tile(xp, W, alpha, base_h[th], base_w[tw], tab_h + th, TH,
                      tab_w + tw, TW, pad, d)
            if mt == 2:
                input_f2(d, vbuf + c * chunk + (q - q0), ldv)
            else:
                input_f4(d, vbuf + c * chunk + (q - q0), ldv)
    # 2. alpha^2 GEMMs: M[a] (cout_g x nt) = U[a] (cout_g x cin_g) @ V[a] (cin_g x nt)
    for a in range(A2):
        gemm_rm(u + a * u_ld, vbuf + a * ldv, mbuf + a * ldm, cout_g, nt, cin_g,
                cin_g, chunk, chunk, 0)
    # 3. output transform, bias, ReLU; only valid outputs of edge tiles are written
    for c in range(cout_g):
        b = bias[c] if has_bias else 0
        op = outn + c * OH * OW
        for q in range(q0, q1):
            th = q // TW
            tw = q - th * TW
            if mt == 2:
                output_f2(mbuf + c * chunk + (q - q0), ldm, y)
            else:
                output_f4(mbuf + c * chunk + (q - q0), ldm, y)
            oh0 = th * mt
            ow0 = tw * mt
            ni = OH - oh0
            if ni > mt:
                ni = mt
            nj = OW - ow0
            if nj > mt:
                nj = mt
            for i in range(ni):
                for j in range(nj):
                    val = y[i * mt + j] + b
                    if relu and not (val > 0):
                        val = 0  # as the im2col kernel's epilogue (NaN -> 0 too)
                    op[(oh0 + i) * OW + ow0 + j] = val


def winograd_2d(const floating[:, :, :, ::1] x, const floating[:, :, ::1] u,
                const floating[::1] bias, floating[:, :, :, ::1] out,
                const Py_ssize_t[:, ::1] tab_h, const Py_ssize_t[:, ::1] tab_w,
                const Py_ssize_t[::1] base_h, const Py_ssize_t[::1] base_w,
                Py_ssize_t mt, Py_ssize_t groups, floating pad_value,
                bint has_bias, bint relu, Py_ssize_t chunk,
                floating[:, ::1] work, int n_threads):
    """out = conv3x3(x, g) + bias by Winograd F(mt x mt, 3x3), mt in {2, 4}.

    x: (N, C_in, H, W); u: ((mt+2)**2, C_out, C_in/groups), the transformed filter;
    out: (N, C_out, OH, OW); tab_h: (mt+2, TH) input row read by tap r of tile row
    ``th`` (-1: pad, -2: past the padded extent, read as 0), tab_w likewise for columns; base_h[th] >= 0 when tile row th reads
    the contiguous rows base_h[th] .. base_h[th]+mt+1 (no lookup needed), else -1.
    ``work`` has one row of at least ``(mt+2)**2 * chunk * (C_in + C_out) / groups``
    values per thread; a unit covers ``chunk`` consecutive tiles of one image and group.
    """
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t C_in = x.shape[1]
    cdef Py_ssize_t H = x.shape[2]
    cdef Py_ssize_t W = x.shape[3]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t OH = out.shape[2]
    cdef Py_ssize_t OW = out.shape[3]
    cdef Py_ssize_t cin_g = C_in // groups
    cdef Py_ssize_t cout_g = C_out // groups
    cdef Py_ssize_t TH = tab_h.shape[1]
    cdef Py_ssize_t TW = tab_w.shape[1]
    cdef Py_ssize_t alpha = mt + 2
    cdef Py_ssize_t n_tiles = TH * TW
    cdef Py_ssize_t n_chunks = (n_tiles + chunk - 1) // chunk
    cdef Py_ssize_t n_units = N * groups * n_chunks
    cdef Py_ssize_t u_ld = C_out * cin_g
    cdef Py_ssize_t uu, n, g, k, q0, q1
    cdef floating* vbuf = NULL
    cdef floating* mbuf = NULL
    cdef const floating* bias_ptr = &bias[0] if has_bias else NULL
    if n_units == 0 or OH == 0 or OW == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        vbuf = &work[omp_get_thread_num(), 0]
        mbuf = vbuf + alpha * alpha * cin_g * chunk
        for uu in prange(n_units, schedule='static'):
            k = uu % n_chunks
            g = (uu // n_chunks) % groups
            n = uu // (n_chunks * groups)
            q0 = k * chunk
            q1 = q0 + chunk
            if q1 > n_tiles:
                q1 = n_tiles
            unit(&x[n, g * cin_g, 0, 0], &u[0, g * cout_g, 0],
                 bias_ptr + g * cout_g if has_bias else NULL,
                 &out[n, g * cout_g, 0, 0], vbuf, mbuf, mt, cin_g, cout_g,
                 H, W, OH, OW, q0, q1, chunk, &tab_h[0, 0], &tab_w[0, 0],
                 &base_h[0], &base_w[0], TH, TW, u_ld, pad_value, has_bias, relu)
