# The one place that touches the OpenMP runtime. The C preprocessor decides: with
# -fopenmp, _OPENMP is defined and the real runtime is used; without it the package
# builds serially (prange becomes a plain loop) and these shims report one thread.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define PYCONV_OPENMP_ENABLED 1
    #else
    #define PYCONV_OPENMP_ENABLED 0
    static inline int omp_get_thread_num(void) { return 0; }
    static inline int omp_get_max_threads(void) { return 1; }
    #endif
    """
    bint PYCONV_OPENMP_ENABLED
    int omp_get_thread_num() noexcept nogil
    int omp_get_max_threads() noexcept nogil
