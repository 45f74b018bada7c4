# Row-major GEMM on top of scipy's Fortran BLAS (scipy.linalg.cython_blas).
# BLAS is column-major; a row-major C = A @ B is the column-major C^T = B^T @ A^T,
# so the operands are swapped (the trick scikit-learn's _cython_blas.pyx uses).
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm_rm(const floating* a, const floating* b, floating* c,
                         Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                         Py_ssize_t lda, Py_ssize_t ldb, Py_ssize_t ldc,
                         floating beta) noexcept nogil:
    """c[m, n] = a[m, k] @ b[k, n] + beta * c, all row-major with leading dims ld*.

    Callers keep every size below 2**31 (scipy's BLAS takes 32-bit ints).
    """
    cdef char trans = b'N'
    cdef int im = <int>m, in_ = <int>n, ik = <int>k
    cdef int ilda = <int>lda, ildb = <int>ldb, ildc = <int>ldc
    cdef floating one = 1
    if floating is float:
        sgemm(&trans, &trans, &in_, &im, &ik, &one, <float*>b, &ildb,
              <float*>a, &ilda, &beta, c, &ildc)
    else:
        dgemm(&trans, &trans, &in_, &im, &ik, &one, <double*>b, &ildb,
              <double*>a, &ilda, &beta, c, &ildc)
