"""Compiled kernels (private). Callers validate and allocate; kernels trust their arguments.

Every kernel module is built twice on x86-64: for the baseline instruction set and,
as ``<name>_avx2``, for AVX2. :func:`load` picks the AVX2 build when the CPU has AVX2
and FMA (asked once, at import), so one wheel runs on any x86-64 CPU. Both builds
round identically (no FMA contraction) except where a kernel asks for FMA
explicitly: the packed GEMM, the direct grouped kernel's register blocks and the
depthwise plane kernel's kernel-row sums (GCC and Clang builds). Elsewhere pyconv's
own loops give the same bits on every x86-64 CPU.
GEMM-based paths inherit OpenBLAS's CPU-specific kernels, whose rounding may differ
between CPU models. Nothing differs between thread counts.
``PYCONV_KERNELS=baseline`` forces the baseline build. On CPUs with AVX-512, the
AVX2 build's long activation loops, the packed GEMM's whole tiles and Winograd's
float32 F(4x4) transforms run AVX-512 copies of themselves, and the depthwise and
grouped kernels and Winograd run a third build of their modules, ``<name>_avx512``,
compiled for AVX-512 F/VL/BW/DQ (:data:`AVX512_BUILDS`). All give the AVX2 build's
bits; ``PYCONV_KERNELS=avx2`` keeps everything on AVX2.

The GEMMs behind im2col, Winograd, the transposed convolutions' phases and the
separable op's pointwise step run either on pyconv's packed AVX2/FMA tiles or on
OpenBLAS (:func:`packed_gemm`). The tiles are faster where OpenBLAS itself runs AVX2
code. On CPUs with AVX-512, OpenBLAS runs AVX-512 kernels, and so do the tiles' whole
tiles (two column panels at a time in 512-bit registers, the same bits); measured at
2 threads on such a CPU, the tiles then stay ahead for Winograd (float32 F4
8x64x56x56 -> 64: 3.2 ms against OpenBLAS's 3.6; float64 6.7-6.9 against 7.3-7.5;
conv3d 3x3x3 11.4-11.7 against 13.1-13.3), float32 im2col and 1x1 layers (7x7 s2
8.4-9.4 against 11.2 ms) and narrow groups, and OpenBLAS is ahead for float64 im2col
and 1x1 layers of more than :data:`AVX512_PACKED_MAX_ROWS` channels per group (1x1
8x256x56x56 -> 64: 7.5 ms against 11.6) and for the transposed convolutions' phases.
``PYCONV_GEMM=packed`` or ``=openblas`` forces one for every GEMM.
"""
import importlib
import os


def _cpu_features():
    """NumPy's table of CPU features (each checked for OS support too)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # pragma: no cover - NumPy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return {}
    return features


def _cpu_has(*names):
    """Whether the CPU has every feature named (NumPy's names: "AVX2", "FMA3",
    "AVX512F", "AVX512_SKX" for AVX-512 F/CD/BW/DQ/VL, ...)."""
    features = _cpu_features()
    return all(features.get(name) for name in names)


def _wanted(variable, choices):
    """The value of an environment variable among ``choices``; else "auto"."""
    wanted = os.environ.get(variable, "auto").strip().lower()
    return wanted if wanted in choices else "auto"


#: ``PYCONV_KERNELS``: "auto", "baseline" or "avx2" (AVX2, none of its AVX-512 copies).
KERNELS_WANTED = _wanted("PYCONV_KERNELS", ("baseline", "avx2"))


def _choose_level():
    if KERNELS_WANTED == "baseline":
        return "baseline"
    return "avx2" if _cpu_has("AVX2", "FMA3") else "baseline"


#: Instruction-set level of the kernels in use: "avx2" or "baseline".
LEVEL = _choose_level()

#: Whether the AVX2 build's kernels that hold AVX-512 copies of their loops (the long
#: activations, the packed GEMM's whole tiles, Winograd's float32 transforms) run
#: those, and the modules of :data:`AVX512_BUILDS` their AVX-512 build: on CPUs with
#: AVX-512, unless ``PYCONV_KERNELS=avx2``.
WIDE_LOOPS = LEVEL == "avx2" and KERNELS_WANTED != "avx2" and _cpu_has("AVX512_SKX")

#: Modules built a third time for AVX-512 (taken where :data:`WIDE_LOOPS` is set):
#: their vector loops gain from 512-bit vectors throughout. 2 threads, float32 (f64),
#: against their AVX2 build in one process: depthwise 3x3 on 8x256x56x56 1.91 ->
#: 1.61 ms (5.00 -> 3.71), 7x7 5.82 -> 3.96 ms (10.5 -> 6.4), grouped direct 8.5
#: -> 7.5 ms (21.1 -> 14.2), Winograd grouped 8 per group 7.6 -> 6.8 ms.
AVX512_BUILDS = ("_depthwise", "_winograd")

#: The GEMM wanted: "auto", "packed" (pyconv's tiles, where the build has them
#: vectorised) or "openblas" (``PYCONV_GEMM``); see :func:`packed_gemm`.
GEMM = _wanted("PYCONV_GEMM", ("packed", "openblas"))
#: Whether the CPU has AVX-512 (then OpenBLAS runs its AVX-512 kernels).
CPU_AVX512 = _cpu_has("AVX512F")
#: Under "auto" on an AVX-512 CPU, GEMMs of at most this many rows stay on the tiles.
AVX512_PACKED_MAX_ROWS = 16


# (name, level, WIDE_LOOPS) -> module: every call of every op asks, and the import
# machinery took several microseconds of a small call each time
_loaded = {}
# module name -> the WIDE_LOOPS it was last given: keys of both values share a module
# where there is no AVX-512 build, so a module found in the cache is told again when
# WIDE_LOOPS changed since (tests change it)
_wide_given = {}


def load(name, level=None, wide=True):
    """The kernel module ``name`` (e.g. ``"_conv"``) built for ``level`` (default: LEVEL).

    At level "avx2" on a CPU with AVX-512 (:data:`WIDE_LOOPS`), the module's AVX-512
    build where there is one (:data:`AVX512_BUILDS`), unless ``wide`` is false (the
    caller's rows are narrower than a 512-bit vector). Falls back to the baseline
    build when no AVX2 build exists (other architectures, debug builds).
    """
    level = LEVEL if level is None else level
    key = (name, level, WIDE_LOOPS and wide)
    module = _loaded.get(key)
    if module is not None:
        if _wide_given.get(module.__name__, WIDE_LOOPS) != WIDE_LOOPS:
            module.set_wide_loops(WIDE_LOOPS)
            _wide_given[module.__name__] = WIDE_LOOPS
        return module
    module = None
    if level == "avx2" and WIDE_LOOPS and wide and name in AVX512_BUILDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}_avx512")
        except ImportError:
            pass
    if module is None and level == "avx2":
        try:
            module = importlib.import_module(f"{__name__}.{name}_avx2")
        except ImportError:
            pass
    if module is None:
        module = importlib.import_module(f"{__name__}.{name}")
    if hasattr(module, "set_wide_loops"):
        module.set_wide_loops(WIDE_LOOPS)
        _wide_given[module.__name__] = WIDE_LOOPS
    _loaded[key] = module
    return module


def active_level(name):
    """Which build of kernel ``name`` :func:`load` returns: "avx512", "avx2" or
    "baseline"."""
    module_name = load(name).__name__
    for level in ("avx512", "avx2"):
        if module_name.endswith("_" + level):
            return level
    return "baseline"


def packed_gemm(rows, wide_wins=False):
    """Whether a GEMM of ``rows`` rows (output channels per group) runs on pyconv's
    packed tiles rather than OpenBLAS.

    Only where the kernels in use have the tiles vectorised (the AVX2 build). Then
    :data:`GEMM` decides; under "auto", the tiles take every GEMM on a CPU without
    AVX-512. On one with it they take those of at most
    :data:`AVX512_PACKED_MAX_ROWS` rows, and with ``wide_wins`` (the caller's GEMMs
    ran faster on the tiles' AVX-512 form than on OpenBLAS: Winograd's, float32
    im2col and 1x1 layers) every one where that form runs (:data:`WIDE_LOOPS`).
    (Callers apply their own upper bounds on top.)
    """
    if GEMM == "openblas" or not load("_conv").PACKED_VECTOR:
        return False
    if GEMM == "packed" or not CPU_AVX512:
        return True
    return rows <= AVX512_PACKED_MAX_ROWS or (wide_wins and WIDE_LOOPS)


def packed_panel_multiple():
    """Column panels per whole tile: 2 where the AVX-512 tiles run (they take two
    panels at a time; Winograd's chunks are sized in such pairs), else 1."""
    return 2 if WIDE_LOOPS else 1
