# pyconv's packed GEMM (inline, compiled into each user): c = A @ B where A is packed
# once (panels of PG_MR rows, stored k-major; see _packed_gemm.h) and B is read in
# place by full tiles, and packed one column panel at a time at the edges.
from cython cimport floating


cdef extern from "_packed_gemm.h" nogil:
    int PG_VECTOR, PG_MR, PG_NR_FLOAT, PG_NR_DOUBLE
    void pg_tile_float(Py_ssize_t k, const float* a, const float* b, float* c,
                       Py_ssize_t ldc, Py_ssize_t mr, Py_ssize_t nr, int accumulate)
    void pg_tile_double(Py_ssize_t k, const double* a, const double* b, double* c,
                        Py_ssize_t ldc, Py_ssize_t mr, Py_ssize_t nr, int accumulate)
    void pg_tile_float_rows(Py_ssize_t k, const float* a, const float* b, Py_ssize_t ldb,
                            float* c, Py_ssize_t ldc, int accumulate)
    void pg_tile_double_rows(Py_ssize_t k, const double* a, const double* b,
                             Py_ssize_t ldb, double* c, Py_ssize_t ldc, int accumulate)
    void pg_tile_float_rows2(Py_ssize_t k, const float* a, const float* b, Py_ssize_t ldb,
                             float* c, Py_ssize_t ldc, int accumulate)
    void pg_tile_double_rows2(Py_ssize_t k, const double* a, const double* b,
                              Py_ssize_t ldb, double* c, Py_ssize_t ldc, int accumulate)
    void pg_tile_float_rows4(Py_ssize_t k, const float* a, const float* b, Py_ssize_t ldb,
                             float* c, Py_ssize_t ldc, int accumulate, const float* pf,
                             Py_ssize_t pf_ld, float* pack, const Py_ssize_t* boff)
    void pg_tile_double_rows4(Py_ssize_t k, const double* a, const double* b,
                              Py_ssize_t ldb, double* c, Py_ssize_t ldc, int accumulate,
                              const double* pf, Py_ssize_t pf_ld, double* pack,
                              const Py_ssize_t* boff)
    int pg_wide, pg_tall, PG_WIDE_BUILT
    int pg_set_wide(int on)
    int pg_set_tall(int on)
    int pg_prefetch
    int pg_set_prefetch(int on)


cdef inline void pack_columns(const floating* b, Py_ssize_t ldb, Py_ssize_t k,
                              Py_ssize_t nr, Py_ssize_t nr_full, floating* dst,
                              const Py_ssize_t* boff=NULL) noexcept nogil:
    # dst[kk, j] = b[kk, j] for j < nr, zero up to nr_full: one k-major column panel;
    # row kk of b at b + kk*ldb, or at b + boff[kk] where boff is given.
    cdef Py_ssize_t kk, j
    cdef const floating* row
    for kk in range(k):
        row = b + boff[kk] if boff != NULL else b + kk * ldb
        for j in range(nr):
            dst[j] = row[j]
        for j in range(nr, nr_full):
            dst[j] = 0
        dst += nr_full


cdef inline Py_ssize_t pair_line(Py_ssize_t i, Py_ssize_t width) noexcept nogil:
    # An offset in line i (< 4) of a row of `width` values (3 or 4 cache lines): the
    # first and third lines first, whose 128-byte pairs the L2 completes on its own.
    if i == 0:
        return 0
    if i == 1:
        return width * 2 // 3
    if i == 2:
        return width // 3
    return width - 1


cdef extern from *:
    """
    #define PYCONV_PG_PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)
    """
    void PYCONV_PG_PREFETCH_L2(const void* p) noexcept nogil


cdef inline void prefetch_rows(const floating* b, const Py_ssize_t* boff, Py_ssize_t k,
                               Py_ssize_t part, Py_ssize_t parts,
                               Py_ssize_t width) noexcept nogil:
    # Into L2: the lines of rows [part*k/parts, (part+1)*k/parts) of `width` values,
    # row kk at b + boff[kk].
    cdef Py_ssize_t kk, j
    cdef Py_ssize_t step = 64 // sizeof(floating)
    for kk in range(part * k // parts, (part + 1) * k // parts):
        j = 0
        while j < width:
            PYCONV_PG_PREFETCH_L2(b + boff[kk] + j)
            j += step
        PYCONV_PG_PREFETCH_L2(b + boff[kk] + width - 1)


cdef inline void packed_gemm(const floating* a, const floating* b, Py_ssize_t ldb,
                             floating* c, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t n,
                             Py_ssize_t k, bint accumulate, floating* panel,
                             bint pack_pairs=False, Py_ssize_t b_more=0,
                             const Py_ssize_t* boff=NULL) noexcept nogil:
    # c[m, n] (+)= A[m, k] @ b[k, n]: A packed as ceil(m / PG_MR) panels of k * PG_MR
    # values; panel: scratch for one column panel (k * PG_NR_FLOAT or PG_NR_DOUBLE).
    # With `accumulate` the sums continue c's values (a later block of k). Full tiles
    # read b's rows where they are (2-4% faster than packing them first, measured on
    # 1x1, 7x7 s2, conv1d, sub-pixel and Winograd layers); a partial panel of
    # columns or of rows is packed, zero-padded.
    # With pg_wide (AVX-512 CPUs), pairs of whole panels run as one 512-bit tile, and
    # with pg_tall two weight panels at a time. `pack_pairs` (panel: twice the size)
    # packs each pair of panels where two weight panels will read it: for B's rows far
    # apart, read in place from a layer's input (1x1 8x256x56x56 -> 64 on the AVX-512
    # tiles, medians of 15 alternating calls: one thread 7.49 -> 6.93 ms, two 3.63 ->
    # 3.53 ms; rows from an im2col buffer lost 4-6 % so). Those rows lie a plane
    # apart, so no hardware prefetcher follows them: the tiles of one pair prefetch
    # the next pair's rows into L2, a line of each row per tile, while they compute
    # (same layer, medians of 21 alternating calls: one thread 6.83-6.89 -> 6.41-6.49
    # ms, two 3.55-3.57 -> 3.22-3.29; 512 -> 128 on 8x28x28 3.13 -> 2.97; two pairs
    # ahead: no better). The pair's first tile stores the rows it loads into the
    # panel, rather than a copy before it, so that the copy's loads and stores use
    # the ports the multiply-adds leave idle (one thread 6.22-6.41 -> 5.78-5.89 ms,
    # two 3.31-3.35 -> 3.06-3.10; float64 within noise). b_more: columns of b's rows
    # past n that exist. boff (NULL: rows ldb apart): row kk of b at b + boff[kk]
    # (the taps of an unpadded stride-1 1-D layer, read from its input); such rows
    # are always packed, by the pair's first tile where it packs, else before.
    cdef Py_ssize_t nr_full = PG_NR_FLOAT if floating is float else PG_NR_DOUBLE
    cdef Py_ssize_t jp = 0, j0, nr, mp, mr
    cdef bint pair
    cdef const floating* bb
    cdef const floating* pf
    cdef floating* pack
    cdef const Py_ssize_t* toff
    cdef bint packing
    cdef Py_ssize_t lb, width
    cdef Py_ssize_t n_panels = (n + nr_full - 1) // nr_full
    cdef bint whole_panels = m % PG_MR == 0
    while jp < n_panels:
        j0 = jp * nr_full
        nr = n - j0
        if nr > nr_full:
            nr = nr_full
        jp += 1
        if whole_panels and nr == nr_full:
            pair = pg_wide and j0 + 2 * nr_full <= n
            bb = b + j0
            lb = ldb
            # packing pairs: the first tile also stores the pair's rows in the panel
            packing = pack_pairs and pair and pg_tall and m // PG_MR >= 2
            pack = panel if packing else NULL
            toff = boff if packing else NULL
            if boff != NULL and not packing:
                width = 2 * nr_full if pair else nr_full
                pack_columns(b + j0, ldb, k, width, width, panel, boff)
                bb = panel
                lb = width
            mp = 0
            while pair and pg_tall and mp + 2 <= m // PG_MR:
                # packing pairs: the tiles of this pair prefetch the next pair's
                # rows of b, a line of each row per tile (where b's rows go on)
                pf = NULL
                if (pg_prefetch and packing and boff == NULL and mp < 8
                        and j0 + 4 * nr_full <= n + b_more):
                    pf = b + j0 + 2 * nr_full + pair_line(mp // 2, 2 * nr_full)
                if (pg_prefetch and packing and boff != NULL
                        and j0 + 4 * nr_full <= n + b_more):
                    # rows by offsets: this tile's share of the next pair's rows
                    prefetch_rows(b + j0 + 2 * nr_full, boff, k, mp // 2,
                                  (m // PG_MR) // 2, 2 * nr_full)
                if floating is float:
                    pg_tile_float_rows4(k, a + mp * k * PG_MR, bb, lb,
                                        c + mp * PG_MR * ldc + j0, ldc, accumulate, pf, ldb,
                                        pack, toff)
                else:
                    pg_tile_double_rows4(k, a + mp * k * PG_MR, bb, lb,
                                         c + mp * PG_MR * ldc + j0, ldc, accumulate, pf,
                                         ldb, pack, toff)
                if pack != NULL:
                    # the first tile packed the pair: the next ones read the panel
                    pack = NULL
                    toff = NULL
                    bb = panel
                    lb = 2 * nr_full
                mp += 2
            while mp < m // PG_MR:
                if floating is float:
                    (pg_tile_float_rows2 if pair else pg_tile_float_rows)(
                        k, a + mp * k * PG_MR, bb, lb, c + mp * PG_MR * ldc + j0,
                        ldc, accumulate)
                else:
                    (pg_tile_double_rows2 if pair else pg_tile_double_rows)(
                        k, a + mp * k * PG_MR, bb, lb, c + mp * PG_MR * ldc + j0,
                        ldc, accumulate)
                mp += 1
            if pair:
                jp += 1
            continue
        pack_columns(b + j0, ldb, k, nr, nr_full, panel, boff)
        for mp in range((m + PG_MR - 1) // PG_MR):
            mr = m - mp * PG_MR
            if mr > PG_MR:
                mr = PG_MR
            if floating is float:
                pg_tile_float(k, a + mp * k * PG_MR, panel, c + mp * PG_MR * ldc + j0,
                              ldc, mr, nr, accumulate)
            else:
                pg_tile_double(k, a + mp * k * PG_MR, panel, c + mp * PG_MR * ldc + j0,
                               ldc, mr, nr, accumulate)
