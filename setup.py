"""Build script: the list of compiled kernels and how they are compiled.

Everything declarative lives in ``pyproject.toml``; this file exists because the
extension list, the OpenMP probe and the Cython directives need code.

Environment switches
--------------------
PYCONV_REQUIRE_OPENMP=1
    Fail the build when the compiler cannot use OpenMP (wheel builds set it).
PYCONV_DEBUG=1
    Compile the kernels with bounds checking and wrap-around indexing turned
    back on, and without optimisation, to chase an out-of-bounds access.
"""
import glob
import os
import platform
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ci"))
from openmp_probe import openmp_flags  # noqa: E402

KERNEL_DIR = os.path.join("pyconv", "_kernels")
# Every .pyx under pyconv/_kernels is one extension module (the generated *_avx2 and
# *_avx512 copies below excepted).
KERNELS = sorted(os.path.splitext(os.path.basename(p))[0]
                 for p in glob.glob(os.path.join(KERNEL_DIR, "*.pyx"))
                 if not p.endswith(("_avx2.pyx", "_avx512.pyx")))
# Kernels that only talk to the OpenMP runtime gain nothing from a second build.
BASELINE_ONLY = {"_openmp_helpers"}
# Kernels built a third time, as <name>_avx512, for CPUs with AVX-512: their vector
# loops (the depthwise and grouped register blocks, written with GCC vector
# extensions; Winograd's compiler-vectorised passes) gain from 512-bit vectors
# throughout. The other kernels ran no faster so built (im2col, transposed and
# pooling within 4%, deformable convolution 10% slower: measured), or hold AVX-512
# copies of their hot loops already.
AVX512_KERNELS = ("_depthwise", "_winograd")

DEBUG = os.environ.get("PYCONV_DEBUG", "0") not in ("", "0")
REQUIRE_OPENMP = os.environ.get("PYCONV_REQUIRE_OPENMP", "0") not in ("", "0")

omp_compile, omp_link = openmp_flags()
if omp_compile is None:
    if REQUIRE_OPENMP:
        sys.exit("pyconv: PYCONV_REQUIRE_OPENMP=1 but the C compiler cannot build OpenMP code")
    print("pyconv: OpenMP not available, building serial kernels", file=sys.stderr)
    omp_compile, omp_link = [], []

# Portable code only: no -march=native (illegal instructions on older CPUs) and
# no -ffast-math (it sets flush-to-zero for the whole process and breaks NaN rules).
opt_flags = ["-O0", "-g"] if DEBUG else ["-O3"]


def avx2_flags():
    """Flags for the AVX2 copy of each kernel, or None where there is no such level.

    FMA contraction stays off so that both builds round identically wherever a kernel
    does not ask for FMA explicitly (the packed GEMM and the direct grouped kernel's
    register blocks do): the AVX2 copy gains its speed from 8-wide vectors.
    """
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64") or DEBUG:
        return None
    if sys.platform == "win32":
        return ["/arch:AVX2"]
    return ["-mavx2", "-mfma", "-ffp-contract=off"]


def avx512_flags():
    """Flags for the AVX-512 copy of the kernels in ``AVX512_KERNELS`` (the AVX2 flags
    plus AVX-512 F/VL/BW/DQ, what NumPy calls AVX512_SKX), or None."""
    flags = avx2_flags()
    if flags is None or sys.platform == "win32":
        return None
    return flags + ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq"]


def write_level_sources(name, level):
    """``_x_<level>.pyx`` includes ``_x.pyx``: the same code under another module name."""
    base = os.path.join(KERNEL_DIR, name)
    for ext in (".pyx", ".pxd"):
        if ext == ".pxd" and not os.path.exists(base + ext):
            continue
        target = f"{base}_{level}{ext}"
        text = f'include "{name}{ext}"\n' if ext == ".pyx" else open(base + ext).read()
        if not os.path.exists(target) or open(target).read() != text:
            with open(target, "w") as f:
                f.write(text)


directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}


def kernel_extension(module, level_flags):
    return Extension(
        f"pyconv._kernels.{module}",
        [os.path.join(KERNEL_DIR, f"{module}.pyx")],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=opt_flags + level_flags + omp_compile,
        extra_link_args=omp_link,
    )


# Each kernel is built for the x86-64 baseline and, where possible, again for
# AVX2 (and some for AVX-512); pyconv._kernels.load picks one at import time by
# asking the CPU.
extensions = [kernel_extension(name, []) for name in KERNELS]
if avx2_flags() is not None:
    for name in KERNELS:
        if name not in BASELINE_ONLY:
            write_level_sources(name, "avx2")
            extensions.append(kernel_extension(f"{name}_avx2", avx2_flags()))
if avx512_flags() is not None:
    for name in AVX512_KERNELS:
        write_level_sources(name, "avx512")
        extensions.append(kernel_extension(f"{name}_avx512", avx512_flags()))

JOBS = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else (os.cpu_count() or 1))

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        nthreads=JOBS if sys.platform != "win32" else 0,
    ),
    # compile the C files in parallel too (build_ext --parallel)
    options={"build_ext": {"parallel": JOBS}},
)
