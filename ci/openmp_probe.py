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


def _msvc_flags():
    """Windows: compile and run the probe with the MSVC that setuptools finds."""
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(_PROGRAM)
        try:
            objects = compiler.compile([src], output_dir=tmp, extra_postargs=["/openmp"])
            compiler.link_executable(objects, "probe", output_dir=tmp)
            result = subprocess.run([os.path.join(tmp, "probe.exe")], check=True,
                                    capture_output=True, timeout=60)
        except Exception:  # no compiler, or no OpenMP
            return None, None
    return (["/openmp"], []) if result.stdout.strip() == b"1" else (None, None)


def openmp_flags():
    """Return ``(compile_args, link_args)`` that build OpenMP code, or ``(None, None)``."""
    if sys.platform == "win32":
        return _msvc_flags()
    # The same CPPFLAGS/CFLAGS/LDFLAGS the extension build will use (e.g. the include
    # and library folders of Homebrew's keg-only libomp on macOS).
    env_compile = (os.environ.get("CPPFLAGS", "") + " " + os.environ.get("CFLAGS", "")).split()
    env_link = os.environ.get("LDFLAGS", "").split()
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
                subprocess.run(compiler + env_compile + compile_args + [src, "-o", exe]
                               + env_link + link_args,
                               check=True, capture_output=True, timeout=120)
                result = subprocess.run([exe], check=True, capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            if result.stdout.strip() == b"1":
                return compile_args, link_args
    return None, None
