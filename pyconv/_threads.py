"""The one place that decides how many threads pyconv uses.

Policy, first match wins:

1. ``n_threads=`` given to ``apply``;
2. the innermost ``with pyconv.num_threads(n):`` block (per Python thread);
3. ``pyconv.set_num_threads(n)``;
4. the ``OMP_NUM_THREADS`` environment variable (its first entry);
5. the number of CPUs this process may run on.

The result is capped at the number of work units and drops to 1 for inputs so small
that starting a parallel region would cost more than it saves. A build without
OpenMP always runs on one thread.

pyconv owns the only level of parallelism: scipy's OpenBLAS (the BLAS its GEMMs call)
is pinned to one thread once pyconv runs its first GEMM, because an OpenMP loop around
a multi-threaded GEMM oversubscribes the cores (see :class:`_BlasPin`).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading

from pyconv._kernels._openmp_helpers import openmp_enabled

# Below this many FLOPs (about 0.2 ms of work on one core) a kernel runs on one
# thread: a parallel region costs ~10 us on an idle machine but milliseconds when the
# cores are shared, because the team waits for its slowest, descheduled thread.
SERIAL_WORK_FLOPS = 8_000_000
# The same for memory-bound kernels (pooling, activations), whose few FLOPs per byte
# would keep them serial by the count above: below this many bytes read and written
# (about 0.2 ms at one core's ~10 GB/s) they run on one thread.
SERIAL_WORK_BYTES = 2 << 20

_global_threads = None
_scoped_threads = contextvars.ContextVar("pyconv_num_threads", default=None)


def _check_count(n, where):
    import numbers

    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{where} expects a positive int; got {n!r}")
    return int(n)


def cpu_count():
    """CPUs this process may run on (respects affinity masks and cgroups' cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _env_threads():
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return None


def get_num_threads():
    """Threads pyconv uses for a call that does not say (before the small-input rule).

    Examples
    --------
    >>> import pyconv
    >>> with pyconv.num_threads(1):
    ...     pyconv.get_num_threads()
    1
    """
    if not openmp_enabled():
        return 1
    for value in (_scoped_threads.get(), _global_threads, _env_threads()):
        if value is not None:
            return value
    return cpu_count()


def set_num_threads(n):
    """Set the default thread count for every later call (``None`` restores the policy).

    Examples
    --------
    >>> import pyconv
    >>> pyconv.set_num_threads(1)
    >>> pyconv.get_num_threads()
    1
    >>> pyconv.set_num_threads(None)
    """
    global _global_threads
    _global_threads = None if n is None else _check_count(n, "set_num_threads")


@contextlib.contextmanager
def num_threads(n):
    """Context manager: use ``n`` threads inside the block (this Python thread only).

    Examples
    --------
    >>> import numpy as np, pyconv
    >>> conv = pyconv.Conv({"op": "conv1d", "in_channels": 1, "out_channels": 1,
    ...                     "kernel_size": 3}, seed=0)
    >>> with pyconv.num_threads(1):
    ...     y = conv.apply(np.ones((1, 1, 8)))
    """
    token = _scoped_threads.set(_check_count(n, "num_threads"))
    try:
        yield
    finally:
        _scoped_threads.reset(token)


def resolve(n_threads, flops, units, nbytes=0):
    """Thread count for one kernel call doing ``flops`` work split into ``units``.

    ``nbytes``: the bytes the call reads and writes; a call runs serially only when
    both its FLOPs and its bytes are below the thresholds.
    """
    if n_threads is not None:
        n = _check_count(n_threads, "n_threads")
    if flops < SERIAL_WORK_FLOPS and nbytes < SERIAL_WORK_BYTES:
        # serial whatever the policy says, so it is not consulted (the environment
        # and the affinity mask cost microseconds of a small call)
        return 1
    if n_threads is None:
        n = get_num_threads()
    elif not openmp_enabled():
        n = 1
    return max(1, min(n, max(units, 1)))


class _BlasPin:
    """Pins scipy's BLAS to one thread, the first time a pyconv GEMM kernel runs.

    pyconv calls ``sgemm``/``dgemm`` from inside its own OpenMP loop, one GEMM per
    thread, so that BLAS must not start threads of its own (measured: 6x slower when
    it does). The pin applies to the OpenBLAS bundled with SciPy (used by
    ``scipy.linalg``), never to NumPy's. It is kept for the life of the process:
    switching the OpenBLAS thread count back and forth around each call, while other
    Python threads run GEMMs, was measured to change their results in the last bits.
    ``pyconv.config()["blas"]`` shows the setting; ``threadpoolctl`` can change it
    back for code that needs a multi-threaded ``scipy.linalg`` between pyconv calls.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._done = False

    def _pin_bundled_openblas(self):
        """Fast path: call ``scipy_openblas_set_num_threads`` in SciPy's bundled copy.

        Returns False where SciPy has no bundled OpenBLAS (e.g. a distribution build
        against a system BLAS); threadpoolctl then finds the library (~0.3 s).
        """
        import ctypes
        import glob

        import scipy

        libs = os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs")
        found = False
        for path in glob.glob(os.path.join(libs, "libscipy_openblas*.so*")):
            lib = ctypes.CDLL(path)  # already loaded by cython_blas: the same handle
            setter = getattr(lib, "scipy_openblas_set_num_threads", None)
            if setter is not None:
                setter(ctypes.c_int(1))
                found = True
        return found

    def _pin_with_threadpoolctl(self):
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            return
        for lib in ThreadpoolController().lib_controllers:
            if lib.user_api == "blas" and (
                    "scipy.libs" in lib.filepath
                    or os.path.basename(os.path.dirname(lib.filepath)) == "scipy"):
                lib.set_num_threads(1)

    def __enter__(self):
        if not self._done:
            with self._lock:
                if not self._done:
                    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS)

                    if not self._pin_bundled_openblas():
                        self._pin_with_threadpoolctl()
                    _warm_sgemm()
                    self._done = True
        return self

    def __exit__(self, *exc):
        return False


def _warm_sgemm():
    """One 448x448x448 ``sgemm`` on every OpenMP thread (once per process).

    Measured with SciPy's OpenBLAS 0.3.30 on Zen 1: until a thread had run one
    single-precision GEMM of about 384**3 or more, GEMMs of pyconv's tile shapes
    (e.g. 64 x 280 x 256) took 3x the CPU time on that thread (the 1x1
    8x256x56x56 -> 64 layer: 87 ms, then 29 ms), with no page faults to explain it;
    double precision was not affected. The cause inside OpenBLAS is not established;
    the warm-up is harmless where there is none. OpenMP keeps its threads for later
    parallel regions, so warming the pool once (as many threads as there are CPUs, up
    to 64) covers later calls. Measured cost here: 15-21 ms (two threads, each
    running its own, cold). Transient memory: two shared 0.8 MB operands and one
    0.8 MB result per thread.
    """
    import numpy as np

    from pyconv import _kernels

    # every CPU (a scoped num_threads(1) at the first call must not leave the rest
    # cold), and any larger count asked for; at most 64 in memory's name
    n, threads = 448, min(max(cpu_count(), get_num_threads()), 64)
    work = np.ones((2 + threads) * n * n, np.float32)
    _kernels.load("_conv").warm_sgemm(work, n, threads)


blas_pinned = _BlasPin()
