"""Compiled kernels (private). Callers validate and allocate; kernels trust their arguments.

Every kernel module is built twice on x86-64: for the baseline instruction set and,
as ``<name>_avx2``, for AVX2. :func:`load` picks the AVX2 build when the CPU has AVX2
and FMA (asked once, at import), so one wheel runs on any x86-64 CPU. Both builds
round identically (no FMA contraction) except where a kernel asks for FMA
explicitly: the packed GEMM, the direct grouped kernel's register blocks and the
depthwise plane kernel's kernel-row sums (GCC and Clang builds). Elsewhere pyconv's own loops give the same bits on every x86-64 CPU.
GEMM-based paths inherit OpenBLAS's CPU-specific kernels, whose rounding may differ
between CPU models. Nothing differs between thread counts.
``PYCONV_KERNELS=baseline`` forces the baseline build.
"""
import importlib
import os


def _cpu_has_avx2():
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # pragma: no cover - NumPy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return False
    return bool(features.get("AVX2") and features.get("FMA3"))


def _choose_level():
    wanted = os.environ.get("PYCONV_KERNELS", "auto").strip().lower()
    if wanted == "baseline":
        return "baseline"
    return "avx2" if _cpu_has_avx2() else "baseline"


#: Instruction-set level of the kernels in use: "avx2" or "baseline".
LEVEL = _choose_level()


# (name, level) -> module: every call of every op asks, and the import machinery
# took several microseconds of a small call each time
_loaded = {}


def load(name, level=None):
    """The kernel module ``name`` (e.g. ``"_conv"``) built for ``level`` (default: LEVEL).

    Falls back to the baseline build when no AVX2 build exists (other architectures,
    debug builds).
    """
    level = LEVEL if level is None else level
    module = _loaded.get((name, level))
    if module is not None:
        return module
    module = None
    if level == "avx2":
        try:
            module = importlib.import_module(f"{__name__}.{name}_avx2")
        except ImportError:
            pass
    if module is None:
        module = importlib.import_module(f"{__name__}.{name}")
    _loaded[(name, level)] = module
    return module


def active_level(name):
    """Which build of kernel ``name`` :func:`load` returns: "avx2" or "baseline"."""
    return "avx2" if load(name).__name__.endswith("_avx2") else "baseline"
