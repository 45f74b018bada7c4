"""``show_config``: what this build of pyconv is and what it will use."""
import platform
import sys

import numpy as np

from pyconv._version import __version__


def config():
    """Build and runtime facts as a dict (what :func:`show_config` prints).

    Examples
    --------
    >>> import pyconv
    >>> c = pyconv.config()
    >>> c["kernels"] in ("avx2", "baseline"), isinstance(c["openmp"], bool)
    (True, True)
    >>> c["gemm"] in ("packed", "openblas")
    True
    """
    from pyconv import _kernels, _threads
    from pyconv._kernels._openmp_helpers import openmp_enabled

    blas = []
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS pyconv calls)
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            if info.get("user_api") == "blas":
                blas.append({k: info.get(k) for k in
                             ("internal_api", "version", "architecture", "num_threads",
                              "filepath")})
    except ImportError:  # pragma: no cover
        pass
    scipy_blas = [b for b in blas if "scipy.libs" in (b.get("filepath") or "")]
    import scipy

    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "openmp": openmp_enabled(),
        "kernels": _kernels.LEVEL,
        # the AVX2 build's activation loops and GEMM tiles in their AVX-512 copies
        # (same results)
        "avx512_loops": _kernels.LEVEL == "avx2" and _kernels.WIDE_LOOPS,
        # the kernel modules running their AVX-512 builds (same results)
        "avx512_builds": [name for name in _kernels.AVX512_BUILDS
                          if _kernels.active_level(name) == "avx512"],
        # the GEMM behind Winograd for a layer of 64 output channels: pyconv's packed
        # tiles, or OpenBLAS (baseline build; AVX-512 CPUs with PYCONV_KERNELS=avx2)
        "gemm": "packed" if _kernels.packed_gemm(64, wide_wins=True) else "openblas",
        "threads": _threads.get_num_threads(),
        "cpu_count": _threads.cpu_count(),
        "blas": scipy_blas or blas,
    }


def _gemm_line(gemm):
    """show_config's words for the GEMM policy (``config()["gemm"]`` and the CPU)."""
    from pyconv import _kernels

    limit = _kernels.AVX512_PACKED_MAX_ROWS
    form = "in AVX-512 form" if _kernels.packed_panel_multiple() == 2 else "AVX2/FMA"
    if gemm == "packed" and not _kernels.packed_gemm(64):
        return (f"pyconv's packed tiles, {form} (OpenBLAS for float64 im2col and "
                f"transposed layers of more than {limit} output channels per group)")
    if gemm == "packed":
        return f"pyconv's packed tiles, {form} (OpenBLAS for wide float32 layers)"
    if _kernels.packed_gemm(1):
        return f"OpenBLAS (pyconv's packed AVX2/FMA tiles up to {limit} output channels per group)"
    return "OpenBLAS"


def show_config(file=None):
    """Print pyconv's version, OpenMP status, thread count and the BLAS it calls.

    Examples
    --------
    >>> import pyconv
    >>> pyconv.show_config()  # doctest: +ELLIPSIS
    pyconv ...
    """
    c = config()
    lines = [
        f"pyconv {c['version']}",
        f"  python      {c['python']} ({c['platform']})",
        f"  numpy       {c['numpy']}",
        f"  scipy       {c['scipy']}",
        f"  openmp      {'on' if c['openmp'] else 'off (serial build)'}",
        f"  kernels     {c['kernels']} instruction set"
        f"{' (AVX2 build)' if c['kernels'] == 'avx2' else ' (x86-64 baseline or native arch)'}"
        f"{'; AVX-512 activation loops and GEMM tiles' if c['avx512_loops'] else ''}"
        f"{'; AVX-512 builds of ' + ', '.join(c['avx512_builds']) if c['avx512_builds'] else ''}",
        f"  gemm        {_gemm_line(c['gemm'])}",
        f"  threads     {c['threads']} (of {c['cpu_count']} CPUs available)",
    ]
    for b in c["blas"]:
        lines.append(f"  blas        {b['internal_api']} {b['version']} "
                     f"({b['architecture']}) {b['filepath']}")
    if not c["blas"]:
        lines.append("  blas        not found by threadpoolctl")
    print("\n".join(lines), file=file)
