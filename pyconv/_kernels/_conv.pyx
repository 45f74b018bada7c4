"""Dense N-D convolution: im2col + one GEMM per (image, group, column range) tile
(:func:`conv_nd`), and for 2-D layers the same GEMM with the im2col matrix left
implicit (:func:`conv2d_phased`).

Two GEMMs: OpenBLAS, and pyconv's own packed tiles (``_packed_gemm.h``;
``_phased_gemm.h`` for the implicit matrix), which the AVX2 build uses.

The tiles write disjoint blocks of the output, so they run under one ``prange`` with
single-threaded BLAS inside (the caller pins scipy's OpenBLAS to one thread: an
OpenMP loop around a multi-threaded GEMM oversubscribes the cores). Each thread owns
one row of the caller's workspace, mostly its column buffer of
``C_in/groups * K * tile_columns`` values, so the extra memory is bounded by the
caller's choice of ``tile_columns`` (and the caller can reuse the workspace across
calls).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memcpy

from pyconv._kernels._blas cimport gemm_rm
from pyconv._kernels._epilogue cimport bias_relu_tile
from pyconv._kernels._im2col cimport im2col_span
from pyconv._kernels._openmp_helpers cimport omp_get_thread_num

cdef extern from "_phased_gemm.h" nogil:
    void ph_gemm_float(Py_ssize_t k, const float* a, Py_ssize_t m, const float* b,
                       const Py_ssize_t* off, Py_ssize_t rows, Py_ssize_t OW, Py_ssize_t PW,
                       float* c, Py_ssize_t ldc, int accumulate)
    void ph_gemm_double(Py_ssize_t k, const double* a, Py_ssize_t m, const double* b,
                        const Py_ssize_t* off, Py_ssize_t rows, Py_ssize_t OW,
                        Py_ssize_t PW, double* c, Py_ssize_t ldc, int accumulate)
    Py_ssize_t ph_vector_float()
    Py_ssize_t ph_vector_double()

from pyconv._kernels._packed cimport (PG_MR, PG_NR_DOUBLE, PG_NR_FLOAT, PG_VECTOR,
                                      packed_gemm, pg_set_prefetch, pg_set_tall,
                                      pg_set_wide)


#: Whether :func:`conv_nd`'s packed tiles are vectorised in this build (the AVX2
#: build); elsewhere they are a plain loop and OpenBLAS is faster.
PACKED_VECTOR = bool(PG_VECTOR)
#: Rows of the weights per packed panel.
PACKED_ROWS = PG_MR
#: Output columns per packed panel, by dtype name.
PACKED_COLUMNS = {"float32": PG_NR_FLOAT, "float64": PG_NR_DOUBLE}


def conv_nd(const floating[:, :, ::1] x, const floating[:, ::1] weight,
            const floating[::1] bias, floating[:, :, ::1] out,
            const Py_ssize_t[::1] idx_d, const Py_ssize_t[::1] idx_h,
            const Py_ssize_t[::1] idx_w, const Py_ssize_t[::1] span,
            Py_ssize_t H, Py_ssize_t W, Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW,
            Py_ssize_t KD, Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t sw,
            Py_ssize_t groups, floating pad_value, bint has_bias, bint relu,
            bint direct, Py_ssize_t tile_columns, bint packed, Py_ssize_t k_block,
            const Py_ssize_t[::1] out_index, floating[:, ::1] work, int n_threads,
            const Py_ssize_t[::1] b_off=None):
    """out[n, co, p] = sum_{ci, k} weight[co, (ci, k)] * x[n, ci, tap(p, k)] (+ bias).

    x: (N, C_in, D*H*W); out: (N, C_out, OD*OH*OW), or larger planes with
    ``out_index``. ``direct`` means a 1x1, stride-1, unpadded kernel: the input
    planes are the GEMM operand as they are, with no column buffer; or, with
    ``b_off`` (packed only), an unpadded stride-1 1-D kernel: row ``r`` of the GEMM
    operand is the group's input at ``b_off[r]`` (``ci * plane + k * dilation`` for
    ``r = ci * KW + k``) plus the output column, read in place.

    The units are (image, group, range of ``tile_columns`` flattened output
    positions); each fills its column buffer by im2col and runs one GEMM:

    * OpenBLAS (``packed`` false): weight is (C_out, C_in/groups * KD*KH*KW);
    * pyconv's packed tiles: weight is (groups, M_panels * ck * PACKED_ROWS), each
      group's weights in blocks of ``k_block`` taps (so that a block stays in L2),
      each block in panels of ``PACKED_ROWS`` output channels stored k-major, zero
      rows past ``C_out/groups`` (``pyconv.ops.conv.packed_weight``). Each output is
      one sum over k in order, so the result does not depend on the tiling.

    ``out_index``: empty, or for each of the ``OD*OH*OW`` positions its place in
    ``out``'s planes (one phase of a transposed convolution); tiles are then computed
    in scratch and scattered. ``work``: per thread, the column buffer
    (``ck * tile_columns`` values, none if ``direct``), with ``packed`` one panel
    (``k_block * PACKED_COLUMNS[dtype]``; two if ``direct``, for the pairs of panels
    packed from the input), with ``out_index`` the tile
    (``M_panels * PACKED_ROWS * tile_columns``). Results never depend on the thread
    count.
    """
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t plane = x.shape[2]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t out_plane = out.shape[2]
    cdef Py_ssize_t P = OD * OH * OW
    cdef bint scatter = out_index.shape[0] > 0
    cdef Py_ssize_t cin_g = x.shape[1] // groups
    cdef Py_ssize_t cout_g = C_out // groups
    cdef Py_ssize_t ck = (KD * KH * KW) * cin_g
    cdef Py_ssize_t nr_full = PG_NR_FLOAT if floating is float else PG_NR_DOUBLE
    cdef Py_ssize_t m_panels = (cout_g + PG_MR - 1) // PG_MR
    cdef Py_ssize_t col_size = 0 if direct else ck * tile_columns
    cdef Py_ssize_t panel_size = (2 if direct else 1) * k_block * nr_full if packed else 0
    cdef Py_ssize_t tile_size = m_panels * PG_MR * tile_columns if scatter else 0
    cdef Py_ssize_t n_tiles = (P + tile_columns - 1) // tile_columns if tile_columns > 0 else 0
    cdef Py_ssize_t n_units = N * groups * n_tiles
    cdef Py_ssize_t u, n, g, t, q0, pc, kb, k0, kl, i, j
    cdef floating* col = NULL
    cdef floating* panel = NULL
    cdef floating* tile = NULL
    cdef floating* c_ptr
    cdef floating* o_ptr
    cdef Py_ssize_t ldc
    cdef const floating* b_ptr
    cdef const floating* a_g
    cdef Py_ssize_t ldb
    cdef const floating* bias_ptr = &bias[0] if has_bias else NULL
    cdef const Py_ssize_t* boff = NULL
    cdef bint ok
    if n_units == 0:
        return
    if b_off is not None and b_off.shape[0] > 0:
        # every row's P columns inside the group's input planes
        ok = (direct and packed and not scatter and KD == 1 and KH == 1 and sw == 1
              and b_off.shape[0] == ck and OD * OH == 1)
        for i in range(b_off.shape[0] if ok else 0):
            if b_off[i] < 0 or b_off[i] + P > cin_g * plane:
                ok = False
        if not ok:
            raise ValueError("conv_nd: b_off needs a packed, unpadded stride-1 1-D "
                             "layer and one offset per tap within the input")
        boff = &b_off[0]
    if ((packed and (weight.shape[0] != groups or k_block < 1
                     or weight.shape[1] != m_panels * ck * PG_MR))
            or (not packed and (weight.shape[0] != C_out or weight.shape[1] != ck))
            or work.shape[0] < n_threads
            or work.shape[1] < col_size + panel_size + tile_size
            or (scatter and out_index.shape[0] != P)
            or (not scatter and out_plane != P)):
        raise ValueError("conv_nd: weights, k_block, out_index or workspace of the "
                         "wrong size")
    with nogil, parallel(num_threads=n_threads):
        col = &work[omp_get_thread_num(), 0]
        panel = col + col_size
        tile = panel + panel_size
        for u in prange(n_units, schedule='static'):
            t = u % n_tiles
            g = (u // n_tiles) % groups
            n = u // (n_tiles * groups)
            q0 = t * tile_columns
            pc = P - q0
            if pc > tile_columns:
                pc = tile_columns
            if direct:
                b_ptr = &x[n, g * cin_g, q0]
                ldb = plane
            else:
                im2col_span(&x[n, g * cin_g, 0], col, cin_g, plane, q0, q0 + pc,
                            &idx_d[0], &idx_h[0], &idx_w[0], &span[0],
                            H, W, OD, OH, OW, KD, KH, KW, sw, pad_value)
                b_ptr = col
                ldb = pc
            if scatter:
                c_ptr = tile
                ldc = pc
            else:
                c_ptr = &out[n, g * cout_g, q0]
                ldc = P
            if packed:
                a_g = &weight[g, 0]
                for kb in range((ck + k_block - 1) // k_block):
                    k0 = kb * k_block
                    kl = ck - k0
                    if kl > k_block:
                        kl = k_block
                    # B's rows of this k block: ldb apart, or by their offsets
                    packed_gemm(a_g + k0 * m_panels * PG_MR,
                                b_ptr if boff != NULL else b_ptr + k0 * ldb, ldb, c_ptr,
                                ldc, cout_g, pc, kl, k0 > 0, panel, direct, P - q0 - pc,
                                boff + k0 if boff != NULL else NULL)
            else:
                gemm_rm(&weight[g * cout_g, 0], b_ptr, c_ptr, cout_g, pc, ck,
                        ck, ldb, ldc, 0)
            if has_bias or relu:
                bias_relu_tile(c_ptr, cout_g, pc, ldc,
                               bias_ptr + g * cout_g if has_bias else NULL,
                               has_bias, relu)
            if scatter:
                for i in range(cout_g):
                    o_ptr = &out[n, g * cout_g + i, 0]
                    for j in range(pc):
                        o_ptr[out_index[q0 + j]] = tile[i * pc + j]


cdef inline void fill_phases(const floating* x, floating* strip, Py_ssize_t channels,
                             Py_ssize_t plane, Py_ssize_t W, const Py_ssize_t* pys,
                             Py_ssize_t n_py, const Py_ssize_t* pxs, Py_ssize_t n_px,
                             Py_ssize_t sw, Py_ssize_t i0, Py_ssize_t rows, Py_ssize_t R,
                             Py_ssize_t PW, const Py_ssize_t* hmap, Py_ssize_t n_prow,
                             const Py_ssize_t* wmap, Py_ssize_t lo_w,
                             floating pad_value) noexcept nogil:
    # strip[c, iy, ix, i, j] = padded input (row sh*(i0 + i) + pys[iy], column sw*j +
    # pxs[ix]) for i < rows, j < PW: row i of a plane is R*PW apart from the next plane.
    # Columns inside the input (sw*j + px - lo_w in [0, W)) are a strided copy; the
    # others go through wmap (padding: -1, or the mode's input column).
    cdef Py_ssize_t c, iy, ix, py, px, i, j, ih, jl, jh, shift
    cdef const floating* src
    cdef const Py_ssize_t* cols
    cdef floating* dst
    for c in range(channels):
        for iy in range(n_py):
            py = pys[iy]
            for i in range(rows):
                ih = hmap[py * n_prow + i0 + i]
                src = x + c * plane + ih * W
                for ix in range(n_px):
                    px = pxs[ix]
                    dst = strip + (((c * n_py + iy) * n_px + ix) * R + i) * PW
                    if ih < 0:
                        for j in range(PW):
                            dst[j] = pad_value
                        continue
                    cols = wmap + px * PW
                    # input column sw*j + shift, inside the row for jl <= j < jh
                    shift = px - lo_w
                    jl = 0 if shift >= 0 else (sw - 1 - shift) // sw
                    jh = (W - 1 - shift) // sw + 1 if W > shift else 0
                    if jh > PW:
                        jh = PW
                    if jl > jh:
                        jl = jh
                    for j in range(jl):
                        dst[j] = src[cols[j]] if cols[j] >= 0 else pad_value
                    if sw == 1:
                        memcpy(dst + jl, src + jl + shift, (jh - jl) * sizeof(floating))
                    elif sw == 2:
                        for j in range(jl, jh):
                            dst[j] = src[2 * j + shift]
                    else:
                        for j in range(jl, jh):
                            dst[j] = src[sw * j + shift]
                    for j in range(jh, PW):
                        dst[j] = src[cols[j]] if cols[j] >= 0 else pad_value


def phased_vector(Py_ssize_t itemsize):
    """Output columns per vector of :func:`conv2d_phased`'s tiles as they run now, for
    values of ``itemsize`` bytes (a row's last vector is partial where the row is not a
    whole number of them)."""
    return ph_vector_float() if itemsize == 4 else ph_vector_double()


#: Values a thread's strip needs past its end (the tiles' last vector of a row reads
#: a whole vector), at most.
PHASED_STRIP_SLACK = 16


def conv2d_phased(const floating[:, :, ::1] x, const floating[:, ::1] weight,
                  const floating[::1] bias, floating[:, :, ::1] out,
                  const Py_ssize_t[::1] hmap, const Py_ssize_t[::1] wmap,
                  const Py_ssize_t[::1] b_off, const Py_ssize_t[::1] pys,
                  const Py_ssize_t[::1] pxs, Py_ssize_t H, Py_ssize_t W,
                  Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t sh, Py_ssize_t sw,
                  Py_ssize_t QH, Py_ssize_t PW, Py_ssize_t lo_w, Py_ssize_t band,
                  Py_ssize_t groups, floating pad_value, bint has_bias, bint relu,
                  Py_ssize_t k_block, floating[:, ::1] work, int n_threads):
    """conv2d as :func:`conv_nd`'s packed GEMM, with the im2col matrix left implicit.

    Each unit, (image, group, band of ``band`` output rows), first copies the input
    rows the band reads into its thread's strip, split into the stride phases that
    taps read (``pys`` of the ``sh`` row phases, ``pxs`` of the ``sw`` column
    phases) and padded: phase plane ``(c, iy, ix)`` holds the padded pixels ``(sh*i +
    pys[iy], sw*j + pxs[ix])``, ``R = band + QH`` rows of ``PW`` values. Tap
    ``(c, kh, kw)`` of output ``(oh, ow)`` then sits at ``b_off[(c*KH + kh)*KW + kw]
    + oh*PW + ow`` in the strip: every row of the im2col matrix is a run of the
    strip, which the GEMM's tiles (``_phased_gemm.h``) read in place, writing the
    output rows directly. The sums are those of ``conv_nd``'s packed GEMM with the
    same ``k_block``, in the same order: the same bits.

    x: (N, C_in, H*W); out: (N, C_out, OH*OW); weight packed as for ``conv_nd``.
    hmap: (sh, n_prow) input row of padded row ``sh*i + py`` (-1: padding); wmap:
    (sw, PW) likewise for columns; both include the padding mode's mapping; ``lo_w``:
    the left padding (padded column ``j`` is input column ``j - lo_w`` inside the
    input). work: per thread the strip, ``C_in/groups * len(pys) * len(pxs) * R * PW
    + PHASED_STRIP_SLACK`` values.
    """
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t plane = x.shape[2]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t cin_g = x.shape[1] // groups
    cdef Py_ssize_t cout_g = C_out // groups
    cdef Py_ssize_t ck = b_off.shape[0]
    cdef Py_ssize_t P = OH * OW
    cdef Py_ssize_t R = band + QH
    cdef Py_ssize_t n_prow = hmap.shape[0] // sh if sh > 0 else 0
    cdef Py_ssize_t m_panels = (cout_g + PG_MR - 1) // PG_MR
    cdef Py_ssize_t n_py = pys.shape[0]
    cdef Py_ssize_t n_px = pxs.shape[0]
    cdef Py_ssize_t strip_size = cin_g * n_py * n_px * R * PW
    cdef Py_ssize_t vector = ph_vector_float() if floating is float else ph_vector_double()
    cdef Py_ssize_t n_bands = (OH + band - 1) // band if band > 0 else 0
    cdef Py_ssize_t n_units = N * groups * n_bands
    cdef Py_ssize_t u, n, g, oh0, rows, kb, k0, kl, i, first
    cdef floating* strip = NULL
    cdef floating* c_ptr
    cdef const floating* a_g
    cdef const floating* bias_ptr = &bias[0] if has_bias else NULL
    if n_units == 0:
        return
    if (band < 1 or sh < 1 or sw < 1 or QH < 0 or PW < OW or k_block < 1
            or vector > PHASED_STRIP_SLACK
            or x.shape[1] != cin_g * groups or C_out != cout_g * groups
            or plane != H * W or out.shape[2] != P or out.shape[0] != N
            or weight.shape[0] != groups or weight.shape[1] != m_panels * ck * PG_MR
            or hmap.shape[0] != sh * n_prow or n_prow < OH + QH
            or wmap.shape[0] != sw * PW or ck % cin_g != 0 or n_py < 1 or n_px < 1
            or work.shape[0] < n_threads
            or work.shape[1] < strip_size + PHASED_STRIP_SLACK):
        raise ValueError("conv2d_phased: arrays or geometry of the wrong size")
    for i in range(ck):
        # the runs of tap i stay inside its channel's planes, from `first` on
        first = i // (ck // cin_g) * (strip_size // cin_g)
        if (b_off[i] < first
                or b_off[i] + (band - 1) * PW + OW > first + strip_size // cin_g):
            raise ValueError("conv2d_phased: a tap offset outside its channel's planes")
    for i in range(n_py):
        if not 0 <= pys[i] < sh:
            raise ValueError("conv2d_phased: a row phase outside the stride")
    for i in range(n_px):
        if not 0 <= pxs[i] < sw:
            raise ValueError("conv2d_phased: a column phase outside the stride")
    for i in range(hmap.shape[0]):
        if hmap[i] >= H:
            raise ValueError("conv2d_phased: a row index outside the input")
    for i in range(wmap.shape[0]):
        if wmap[i] >= W:
            raise ValueError("conv2d_phased: a column index outside the input")
    with nogil, parallel(num_threads=n_threads):
        strip = &work[omp_get_thread_num(), 0]
        for u in prange(n_units, schedule='static'):
            oh0 = (u % n_bands) * band
            g = (u // n_bands) % groups
            n = u // (n_bands * groups)
            rows = OH - oh0
            if rows > band:
                rows = band
            fill_phases(&x[n, g * cin_g, 0], strip, cin_g, plane, W, &pys[0], n_py,
                        &pxs[0], n_px, sw, oh0, rows + QH, R, PW, &hmap[0], n_prow,
                        &wmap[0], lo_w, pad_value)
            a_g = &weight[g, 0]
            c_ptr = &out[n, g * cout_g, oh0 * OW]
            for kb in range((ck + k_block - 1) // k_block):
                k0 = kb * k_block
                kl = ck - k0
                if kl > k_block:
                    kl = k_block
                if floating is float:
                    ph_gemm_float(kl, a_g + k0 * m_panels * PG_MR, cout_g, strip, &b_off[k0],
                                  rows, OW, PW, c_ptr, P, k0 > 0)
                else:
                    ph_gemm_double(kl, a_g + k0 * m_panels * PG_MR, cout_g, strip,
                                   &b_off[k0], rows, OW, PW, c_ptr, P, k0 > 0)
            if has_bias or relu:
                bias_relu_tile(c_ptr, cout_g, rows * OW, P,
                               bias_ptr + g * cout_g if has_bias else NULL, has_bias, relu)


def warm_sgemm(float[::1] work, Py_ssize_t n, int n_threads):
    """One ``n x n x n`` sgemm on each of ``n_threads`` OpenMP threads, all reading the
    same two ``n x n`` operands at the start of ``work`` and each writing its own
    ``n x n`` block after them (``work``: ``(2 + n_threads) * n * n`` values). See
    ``pyconv._threads._warm_sgemm``."""
    cdef Py_ssize_t t
    cdef float* w = &work[0]
    if work.shape[0] < (2 + n_threads) * n * n:
        raise ValueError("warm_sgemm: work is too small")
    with nogil, parallel(num_threads=n_threads):
        for t in prange(n_threads, schedule='static', chunksize=1):
            gemm_rm(w, w + n * n, w + (2 + t) * n * n, n, n, n, n, n, n, 0)


def set_wide_loops(bint on, bint tall=True, bint prefetch=True):
    """Run the packed GEMM's whole tiles two column panels at a time in AVX-512
    registers (``on``; only where built, and only on a CPU with AVX-512: the caller
    checks) or one panel at a time in AVX2 ones. Returns whether the AVX-512 tiles now
    run. ``tall``: those tiles take two weight panels (8 rows) at a time where there
    are two (false: one, for comparisons); ``prefetch``: where they pack pairs of
    column panels (1x1 and 1-D layers), they prefetch the next pair (false: not, for
    comparisons). All give the same bits."""
    pg_set_tall(tall)
    pg_set_prefetch(prefetch)
    return bool(pg_set_wide(on))
