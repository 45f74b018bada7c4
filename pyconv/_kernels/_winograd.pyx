"""Winograd minimal filtering F(2x2, 3x3) and F(4x4, 3x3) for 3x3 stride-1 convolution.

Per work unit (image, group, chunk of output tiles):

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
contiguous data and writes each V[a] stream contiguously.

Units write disjoint output tiles, so they run under one ``prange`` with
single-threaded BLAS inside. A unit's arithmetic does not depend on which thread runs
it nor on the thread count, so results are bit-identical for any ``n_threads``.
Each thread owns one row of the caller's workspace of ``workspace_row(...)`` values
(V and M of one chunk).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange

from pyconv._kernels._blas cimport gemm_rm
from pyconv._kernels._openmp_helpers cimport omp_get_thread_num


cdef enum:
    # Tiles per transform block (one tile row at most).
    BLK = 32
    # Leading dimension of the phase-split scratch T[p][k][:] (BLK + 1 tiles).
    LDT = BLK + 1
    # The alpha**2 matrices V[a] (and M[a]) are written (read) together, one value
    # each per tile; with a plain cin_g*chunk stride (often a multiple of 4 KiB) they
    # would all fall in the same L1 cache sets and evict each other. A skew of one
    # cache line per matrix spreads them over the sets.
    SKEW = 16


def workspace_row(Py_ssize_t mt, Py_ssize_t cin_g, Py_ssize_t cout_g, Py_ssize_t chunk):
    """Values one thread's workspace row needs: V and M of one chunk, skewed."""
    return (mt + 2) ** 2 * ((cin_g + cout_g) * chunk + 2 * SKEW)


# ---- input side ----------------------------------------------------------------------

cdef inline const floating* row_pointer(const floating* xp, Py_ssize_t W, Py_ssize_t h,
                                        Py_ssize_t j0, Py_ssize_t ncol,
                                        const Py_ssize_t* colidx, const Py_ssize_t* colrun,
                                        floating pad, floating* buf) noexcept nogil:
    # Pointer to ``ncol`` values of input row h at padded columns j0 .. j0+ncol-1:
    # in place when they are consecutive input columns, else gathered into buf.
    cdef Py_ssize_t j, w
    cdef floating fill
    if h >= 0 and colrun[j0] >= ncol:
        return xp + h * W + colidx[j0]
    if h < 0:
        fill = pad if h == -1 else 0
        for j in range(ncol):
            buf[j] = fill
        return buf
    for j in range(ncol):
        w = colidx[j0 + j]
        if w >= 0:
            buf[j] = xp[h * W + w]
        else:
            buf[j] = pad if w == -1 else 0
    return buf


# F(2x2, 3x3): B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]

cdef inline void input_block_f2(const floating** rp, Py_ssize_t nb, floating* v,
                                Py_ssize_t ldv) noexcept nogil:
    # v[a*ldv + i] = (B^T d_i B)[a] for the nb tiles whose rows start at rp[r][2*i].
    cdef floating t[2 * 4 * LDT]
    cdef floating tc[4 * 2 * LDT]
    cdef const floating* r0 = rp[0]
    cdef const floating* r1 = rp[1]
    cdef const floating* r2 = rp[2]
    cdef const floating* r3 = rp[3]
    cdef floating* tp
    cdef floating* t0
    cdef floating* t1
    cdef floating* o
    cdef const floating* src
    cdef Py_ssize_t i, k, j
    cdef Py_ssize_t ncol = 2 * (nb + 1)
    # vertical pass over whole rows (contiguous): tc[k][j] = (B^T d[:, j])[k]
    for j in range(ncol):
        tc[j] = r0[j] - r2[j]
        tc[2 * LDT + j] = r1[j] + r2[j]
        tc[4 * LDT + j] = r2[j] - r1[j]
        tc[6 * LDT + j] = r1[j] - r3[j]
    # split by phase: t[p][k][i] = tc[k][2i + p]
    for k in range(4):
        src = tc + 2 * k * LDT
        tp = t + k * LDT
        for i in range(nb + 1):
            tp[i] = src[2 * i]
            tp[4 * LDT + i] = src[2 * i + 1]
    for k in range(4):
        t0 = t + k * LDT            # phase 0: columns 2i, 2i+2
        t1 = t + (4 + k) * LDT      # phase 1: columns 2i+1, 2i+3
        o = v + 4 * k * ldv
        for i in range(nb):
            o[i] = t0[i] - t0[i + 1]
        o = o + ldv
        for i in range(nb):
            o[i] = t1[i] + t0[i + 1]
        o = o + ldv
        for i in range(nb):
            o[i] = t0[i + 1] - t1[i]
        o = o + ldv
        for i in range(nb):
            o[i] = t1[i] - t1[i + 1]


# F(4x4, 3x3), points 0, +-1, +-2, inf:
# B^T = [[4,0,-5,0,1,0],[0,-4,-4,1,1,0],[0,4,-4,-1,1,0],
#        [0,-2,-1,2,1,0],[0,2,-1,-2,1,0],[0,4,0,-5,0,1]]

cdef inline void input_block_f4(const floating** rp, Py_ssize_t nb, floating* v,
                                Py_ssize_t ldv) noexcept nogil:
    # v[a*ldv + i] = (B^T d_i B)[a] for the nb tiles whose rows start at rp[r][4*i].
    cdef floating t[4 * 6 * LDT]
    cdef floating tc[6 * 4 * LDT]
    cdef const floating* r0 = rp[0]
    cdef const floating* r1 = rp[1]
    cdef const floating* r2 = rp[2]
    cdef const floating* r3 = rp[3]
    cdef const floating* r4 = rp[4]
    cdef const floating* r5 = rp[5]
    cdef floating* tp
    cdef floating* p0
    cdef floating* p1
    cdef floating* p2
    cdef floating* p3
    cdef floating* o
    cdef const floating* src
    cdef Py_ssize_t i, k, j
    cdef Py_ssize_t ncol = 4 * (nb + 1)
    cdef floating d0, d1, d2, d3, d4, d5
    # vertical pass over whole rows (contiguous): tc[k][j] = (B^T d[:, j])[k]
    for j in range(ncol):
        d0 = r0[j]
        d1 = r1[j]
        d2 = r2[j]
        d3 = r3[j]
        d4 = r4[j]
        d5 = r5[j]
        tc[j] = 4 * d0 - 5 * d2 + d4
        tc[4 * LDT + j] = (d4 - 4 * d2) + (d3 - 4 * d1)
        tc[8 * LDT + j] = (d4 - 4 * d2) - (d3 - 4 * d1)
        tc[12 * LDT + j] = (d4 - d2) + 2 * (d3 - d1)
        tc[16 * LDT + j] = (d4 - d2) - 2 * (d3 - d1)
        tc[20 * LDT + j] = 4 * d1 - 5 * d3 + d5
    # split by phase: t[p][k][i] = tc[k][4i + p]
    for k in range(6):
        src = tc + 4 * k * LDT
        tp = t + k * LDT
        for i in range(nb + 1):
            tp[i] = src[4 * i]
            tp[6 * LDT + i] = src[4 * i + 1]
            tp[12 * LDT + i] = src[4 * i + 2]
            tp[18 * LDT + i] = src[4 * i + 3]
    for k in range(6):
        # Tile i's columns 4i .. 4i+5 are phases 0..3 at i, then phases 0, 1 at i+1.
        p0 = t + k * LDT
        p1 = t + (6 + k) * LDT
        p2 = t + (12 + k) * LDT
        p3 = t + (18 + k) * LDT
        o = v + 6 * k * ldv
        for i in range(nb):
            o[i] = 4 * p0[i] - 5 * p2[i] + p0[i + 1]
        o = o + ldv
        for i in range(nb):
            o[i] = (p0[i + 1] - 4 * p2[i]) + (p3[i] - 4 * p1[i])
        o = o + ldv
        for i in range(nb):
            o[i] = (p0[i + 1] - 4 * p2[i]) - (p3[i] - 4 * p1[i])
        o = o + ldv
        for i in range(nb):
            o[i] = (p0[i + 1] - p2[i]) + 2 * (p3[i] - p1[i])
        o = o + ldv
        for i in range(nb):
            o[i] = (p0[i + 1] - p2[i]) - 2 * (p3[i] - p1[i])
        o = o + ldv
        for i in range(nb):
            o[i] = 4 * p1[i] - 5 * p3[i] + p1[i + 1]


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
    # ReLU maps NaN to 0, as the im2col kernel's epilogue does.
    if relu:
        return v if v > 0 else 0
    return v


cdef inline void store_rows(const floating* y, Py_ssize_t mt, Py_ssize_t nb,
                            Py_ssize_t ni, Py_ssize_t nj_last, floating* orow,
                            Py_ssize_t OW, floating b, bint relu) noexcept nogil:
    # Output rows r < ni of nb tiles: orow[r*OW + mt*i + c] = act(y[(mt*r + c)*BLK + i]
    # + b); the last tile keeps only nj_last columns.
    cdef Py_ssize_t r, c, i, nfull
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
            for i in range(nfull):
                o[4 * i] = act(y0[i] + b, relu)
                o[4 * i + 1] = act(y1[i] + b, relu)
                o[4 * i + 2] = act(y2[i] + b, relu)
                o[4 * i + 3] = act(y3[i] + b, relu)
        for c in range(nj_last if nfull < nb else 0):
            o[mt * nfull + c] = act(y0[c * BLK + nfull] + b, relu)


# ---- one work unit -------------------------------------------------------------------

cdef inline void unit(const floating* xn, const floating* u, const floating* bias,
                      floating* outn, floating* vbuf, floating* mbuf,
                      Py_ssize_t mt, Py_ssize_t cin_g, Py_ssize_t cout_g,
                      Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                      Py_ssize_t q0, Py_ssize_t q1, Py_ssize_t chunk,
                      const Py_ssize_t* rowidx, const Py_ssize_t* colidx,
                      const Py_ssize_t* colrun, Py_ssize_t TW, Py_ssize_t u_ld,
                      floating pad, bint has_bias, bint relu, int stages) noexcept nogil:
    # xn: cin_g input planes (H*W); u: U[a] rows for this group, U[a] at u + a*u_ld,
    # row stride cin_g; outn: cout_g output planes (OH*OW); tiles q0 <= q < q1.
    cdef Py_ssize_t alpha = mt + 2
    cdef Py_ssize_t A2 = alpha * alpha
    cdef Py_ssize_t nt = q1 - q0
    cdef Py_ssize_t ldv = cin_g * chunk + SKEW
    cdef Py_ssize_t ldm = cout_g * chunk + SKEW
    cdef Py_ssize_t c, q, th, tw, tw_end, nb, r, a, ni, nj
    cdef floating rbuf[6 * (BLK + 1) * 4]
    cdef floating y[16 * BLK]
    cdef const floating* rp[6]
    cdef floating b
    cdef const floating* xp
    # 1. input transform, block by block along tile rows
    for c in range(cin_g if stages & 1 else 0):
        xp = xn + c * H * W
        q = q0
        while q < q1:
            th = q // TW
            tw = q - th * TW
            tw_end = TW if q1 - q > TW - tw else tw + (q1 - q)
            if tw_end - tw > BLK:
                tw_end = tw + BLK
            nb = tw_end - tw
            for r in range(alpha):
                rp[r] = row_pointer(xp, W, rowidx[th * mt + r], tw * mt, (nb + 1) * mt,
                                    colidx, colrun, pad, rbuf + r * (BLK + 1) * 4)
            if mt == 2:
                input_block_f2(rp, nb, vbuf + c * chunk + (q - q0), ldv)
            else:
                input_block_f4(rp, nb, vbuf + c * chunk + (q - q0), ldv)
            q = q + nb
    # 2. alpha^2 GEMMs: M[a] (cout_g x nt) = U[a] (cout_g x cin_g) @ V[a] (cin_g x nt)
    for a in range(A2 if stages & 2 else 0):
        gemm_rm(u + a * u_ld, vbuf + a * ldv, mbuf + a * ldm, cout_g, nt, cin_g,
                cin_g, chunk, chunk, 0)
    # 3. output transform, bias, ReLU; only valid outputs of edge tiles are written
    for c in range(cout_g if stages & 4 else 0):
        b = bias[c] if has_bias else 0
        q = q0
        while q < q1:
            th = q // TW
            tw = q - th * TW
            tw_end = TW if q1 - q > TW - tw else tw + (q1 - q)
            if tw_end - tw > BLK:
                tw_end = tw + BLK
            nb = tw_end - tw
            if mt == 2:
                output_block_f2(mbuf + c * chunk + (q - q0), ldm, nb, y)
            else:
                output_block_f4(mbuf + c * chunk + (q - q0), ldm, nb, y)
            ni = OH - th * mt
            if ni > mt:
                ni = mt
            nj = OW - (tw_end - 1) * mt
            if nj > mt:
                nj = mt
            store_rows(y, mt, nb, ni, nj, outn + c * OH * OW + th * mt * OW + tw * mt,
                       OW, b, relu)
            q = q + nb


def winograd_2d(const floating[:, :, :, ::1] x, const floating[:, :, ::1] u,
                const floating[::1] bias, floating[:, :, :, ::1] out,
                const Py_ssize_t[::1] rowidx, const Py_ssize_t[::1] colidx,
                const Py_ssize_t[::1] colrun, Py_ssize_t TH, Py_ssize_t TW,
                Py_ssize_t mt, Py_ssize_t groups, floating pad_value,
                bint has_bias, bint relu, Py_ssize_t chunk,
                floating[:, ::1] work, int n_threads, int stages=7):
    """out = conv3x3(x, g) + bias by Winograd F(mt x mt, 3x3), mt in {2, 4}.

    x: (N, C_in, H, W); u: ((mt+2)**2, C_out, C_in/groups), the transformed filter;
    out: (N, C_out, OH, OW) with TH = ceil(OH/mt), TW = ceil(OW/mt) tiles;
    rowidx: (TH*mt + 2,) input row at each padded row (-1 pad, -2 zero);
    colidx, colrun: (TW*mt + 2*mt,) the same for columns, and the length of the run
    of consecutive input columns starting at each padded column.
    ``work`` has one row of at least ``workspace_row(mt, cin_g, cout_g, chunk)``
    values per thread; a unit covers ``chunk`` consecutive tiles of one image and group.
    ``stages`` (a bit mask of the three steps) exists for profiling only.
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
    if rowidx.shape[0] < TH * mt + 2 or colidx.shape[0] < TW * mt + 2 * mt \
            or colrun.shape[0] < colidx.shape[0] or mt not in (2, 4):
        raise ValueError("winograd_2d: inconsistent tables")
    with nogil, parallel(num_threads=n_threads):
        vbuf = &work[omp_get_thread_num(), 0]
        mbuf = vbuf + alpha * alpha * (cin_g * chunk + SKEW)
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
                 H, W, OH, OW, q0, q1, chunk, &rowidx[0], &colidx[0], &colrun[0],
                 TW, u_ld, pad_value, has_bias, relu, stages)
