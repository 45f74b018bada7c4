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
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ci"))
from openmp_probe import openmp_flags  # noqa: E402

# Every .pyx under pyconv/_kernels is one extension module.
KERNELS = sorted(os.path.splitext(os.path.basename(p))[0]
                 for p in glob.glob(os.path.join("pyconv", "_kernels", "*.pyx")))

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

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

extensions = [
    Extension(
        f"pyconv._kernels.{name}",
        [f"pyconv/_kernels/{name}.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=opt_flags + omp_compile,
        extra_link_args=omp_link,
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
    ),
)
