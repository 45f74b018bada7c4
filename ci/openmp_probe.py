"""Find out at build time whether the C compiler can build and link OpenMP code."""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

_PROGRAM = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d\n", n > 0);
    return 0;
}
"""


def _candidate_flags():
    if sys.platform == "win32":
        return [(["/openmp"], [])]
    if sys.platform == "darwin":
        # Apple clang needs the preprocessor flag and Homebrew's libomp.
        return [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    return [(["-fopenmp"], ["-fopenmp"])]


def openmp_flags():
    """Return ``(compile_args, link_args)`` that build OpenMP code, or ``(None, None)``."""
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    compiler = compiler.split()
    if shutil.which(compiler[0]) is None:
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as f:
            f.write(_PROGRAM)
        for compile_args, link_args in _candidate_flags():
            try:
                subprocess.run(compiler + compile_args + [src, "-o", exe] + link_args,
                               check=True, capture_output=True, timeout=120)
                result = subprocess.run([exe], check=True, capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            if result.stdout.strip() == b"1":
                return compile_args, link_args
    return None, None
