"""What the OpenMP runtime says, for ``show_config`` and the thread policy."""


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(PYCONV_OPENMP_ENABLED)


def openmp_max_threads():
    """Threads OpenMP would use by default (1 in a serial build)."""
    return omp_get_max_threads()
