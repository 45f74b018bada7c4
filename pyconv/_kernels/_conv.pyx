"""Dense N-D convolution: im2col + one GEMM per (image, group, row chunk) tile.

The tiles write disjoint blocks of the output, so they run under one ``prange`` with
single-threaded BLAS inside (the caller pins scipy's OpenBLAS to one thread: an
OpenMP loop around a multi-threaded GEMM oversubscribes the cores). Each thread owns
one row of the caller's workspace, ``C_in/groups * K * rows_per_tile * OW`` values, so
the extra memory is bounded by the caller's choice of ``rows_per_tile`` (and the caller
can reuse the workspace across calls).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange

from pyconv._kernels._blas cimport gemm_rm
from pyconv._kernels._epilogue cimport bias_relu_tile
from pyconv._kernels._im2col cimport im2col_rows
from pyconv._kernels._openmp_helpers cimport omp_get_thread_num


def conv_nd(const floating[:, :, ::1] x, const floating[:, ::1] weight,
            const floating[::1] bias, floating[:, :, ::1] out,
            const Py_ssize_t[::1] idx_d, const Py_ssize_t[::1] idx_h,
            const Py_ssize_t[::1] idx_w, const Py_ssize_t[::1] span,
            Py_ssize_t H, Py_ssize_t W, Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW,
            Py_ssize_t KD, Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t sw,
            Py_ssize_t groups, floating pad_value, bint has_bias, bint relu,
            bint direct, Py_ssize_t rows_per_tile, floating[:, ::1] work,
            int n_threads):
    """out[n, co, p] = sum_{ci, k} weight[co, (ci, k)] * x[n, ci, tap(p, k)] (+ bias).

    x: (N, C_in, D*H*W); weight: (C_out, C_in/groups * KD*KH*KW); out: (N, C_out,
    OD*OH*OW). ``direct`` means a 1x1, stride-1, unpadded kernel: the input planes are
    the GEMM operand as they are, with no column buffer. ``work`` has one row of at
    least ``C_in/groups * K * rows_per_tile * OW`` values per thread (unused if direct).
    """
    cdef Py_ssize_t N = x.shape[0]
    cdef Py_ssize_t plane = x.shape[2]
    cdef Py_ssize_t C_out = out.shape[1]
    cdef Py_ssize_t P = out.shape[2]
    cdef Py_ssize_t cin_g = x.shape[1] // groups
    cdef Py_ssize_t cout_g = C_out // groups
    cdef Py_ssize_t ck = weight.shape[1]
    cdef Py_ssize_t rows = OD * OH
    cdef Py_ssize_t n_tiles_rows = (rows + rows_per_tile - 1) // rows_per_tile
    cdef Py_ssize_t n_units = N * groups * n_tiles_rows
    cdef Py_ssize_t u, n, g, t, r0, r1, pc
    cdef floating* col = NULL
    cdef floating* c_ptr
    cdef const floating* b_ptr
    cdef Py_ssize_t ldb
    cdef const floating* bias_ptr = &bias[0] if has_bias else NULL
    if n_units == 0 or P == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        col = NULL if direct else &work[omp_get_thread_num(), 0]
        for u in prange(n_units, schedule='static'):
            t = u % n_tiles_rows
            g = (u // n_tiles_rows) % groups
            n = u // (n_tiles_rows * groups)
            r0 = t * rows_per_tile
            r1 = r0 + rows_per_tile
            if r1 > rows:
                r1 = rows
            pc = (r1 - r0) * OW
            if direct:
                b_ptr = &x[n, g * cin_g, r0 * OW]
                ldb = plane
            else:
                im2col_rows(&x[n, g * cin_g, 0], col, cin_g, plane, r0, r1,
                            &idx_d[0], &idx_h[0], &idx_w[0], &span[0],
                            H, W, OD, OH, OW, KD, KH, KW, sw, pad_value)
                b_ptr = col
                ldb = pc
            c_ptr = &out[n, g * cout_g, r0 * OW]
            gemm_rm(&weight[g * cout_g, 0], b_ptr, c_ptr, cout_g, pc, ck,
                    ck, ldb, P, 0)
            if has_bias or relu:
                bias_relu_tile(c_ptr, cout_g, pc, P,
                               bias_ptr + g * cout_g if has_bias else NULL,
                               has_bias, relu)


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
