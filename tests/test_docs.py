"""Documentation that runs: docstring examples of the installed package, the examples of
the narrative pages and of every generated op page, and the example plugin package.

The docstring tests need only pyconv. The others need the ``docs/`` folder beside
``tests/`` (a source checkout) and are skipped, saying so, when it is not there (as
when the suite runs against an installed wheel from a copy of ``tests/``).
"""
import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys

import numpy as np
import pytest

import pyconv

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
PLUGIN = os.path.join(DOCS, "plugin_example")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def pyconv_modules():
    names = ["pyconv"]
    for info in pkgutil.walk_packages(pyconv.__path__, "pyconv."):
        if not info.name.startswith("pyconv._kernels"):  # compiled: no doctests
            names.append(info.name)
    return names


def run_examples(tests):
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test, out=lambda text: sys.stdout.write(text))
    return runner.summarize(verbose=False)


@pytest.fixture
def docs():
    if not os.path.isdir(DOCS):
        pytest.skip("docs/ is not beside tests/ (installed-package run)")
    return DOCS


@pytest.fixture
def generator(docs):
    sys.path.insert(0, os.path.join(docs, "_ext"))
    try:
        yield importlib.import_module("pyconv_docs")
    finally:
        sys.path.remove(os.path.join(docs, "_ext"))


def test_docstring_examples_of_every_module_pass():
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for name in pyconv_modules():
        module = importlib.import_module(name)
        tests += [t for t in finder.find(module, name) if t.examples]
    result = run_examples(tests)
    assert result.failed == 0
    assert result.attempted >= 20  # the public API is documented with examples


def _rst_examples(path):
    """The rst text with ``.. doctest::`` blocks whose ``:skipif:`` holds removed."""
    text = open(path, encoding="utf-8").read()
    env = {"np": np, "pyconv": pyconv}

    def keep(match):
        return "" if eval(match.group(1), env) else match.group(0)  # noqa: S307

    block = r"\.\. doctest::\n   :skipif: ([^\n]+)\n(?:\n|   [^\n]*\n)*"
    return re.sub(block, keep, text)


def _globs():
    if PLUGIN not in sys.path:
        sys.path.insert(0, PLUGIN)
    return {"np": np, "pyconv": pyconv}


def test_narrative_pages_examples_pass(docs):
    parser = doctest.DocTestParser()
    tests = []
    for name in sorted(os.listdir(docs)):
        if name.endswith(".rst"):
            path = os.path.join(docs, name)
            tests.append(parser.get_doctest(_rst_examples(path), _globs(), name, path, 0))
    result = run_examples(tests)
    assert result.failed == 0
    assert result.attempted >= 30


def test_every_registered_op_gets_a_reference_page_whose_examples_pass(generator):
    parser = doctest.DocTestParser()
    tests = []
    for name in pyconv.available_ops():
        page = generator.op_page(pyconv.get_op(name))
        assert page.startswith(f".. _op-{name}:")
        for section in ("Spec keys", "Inputs", "Rules", "Example"):
            assert f"\n{section}\n" in page, (name, section)
        tests.append(parser.get_doctest(page, _globs(), name, name, 0))
    result = run_examples(tests)
    assert result.failed == 0
    assert result.attempted >= 5 * len(tests)


def test_plugin_op_page_uses_the_declared_example(generator):
    sys.path.insert(0, PLUGIN)
    try:
        from pyconv_boxblur import BoxBlur2d
    finally:
        sys.path.remove(PLUGIN)
    page = generator.op_page(BoxBlur2d())
    assert "defined in a plugin" in page
    assert "(declared by the op)" in page and "(1, 3, 16, 16)" in page
    assert '"size": 5' in page and "a positive odd int" in page
    assert "N * C * H * W * size**2" in page
    result = run_examples([doctest.DocTestParser().get_doctest(page, _globs(), "p", "p", 0)])
    assert result.failed == 0 and result.attempted >= 6


def test_derived_example_for_an_op_without_one(generator):
    from pyconv.ops import Op

    class Scale(Op):
        name = "scale_docs_test"
        summary = "Multiply by a factor."
        keys = (pyconv.Key("factor", lambda v: float(v), doc="The factor.",
                           type_doc="a number"),
                pyconv.Key("in_channels", lambda v: int(v), doc="Channels.",
                           type_doc="an int"))

        def output_shape(self, spec, input_shape):
            return self.check_input_shape(input_shape, 1, spec["in_channels"])

        def forward(self, spec, x, params, out, n_threads):
            return np.multiply(x, spec["factor"], out=out)

    pyconv.register_op(Scale, replace=True)
    ex = generator.build_example(Scale())
    assert ex["source"] == "derived from the op's required keys"
    assert ex["given_spec"] == {"op": "scale_docs_test", "factor": 3, "in_channels": 4}
    assert ex["shape"] == (1, 4, 8)  # no rank in the name: found by trying
    assert ex["result"] == ("y.shape, y.dtype", "((1, 4, 8), dtype('float32'))")
    page = generator.op_page(Scale())
    assert "Family notes" not in page  # defined outside pyconv: no module notes
    result = run_examples([doctest.DocTestParser().get_doctest(page, _globs(), "s", "s", 0)])
    assert result.failed == 0 and result.attempted >= 6


def test_rst_escaping_and_wrapping(generator):
    assert generator.rst_text("reflect (cb|abcd), C_in * 2") == \
        "reflect (cb\\|abcd), C\\_in \\* 2"
    lines = generator.wrap_call("conv = pyconv.Conv(", [f'"k{i}": {i}' for i in range(30)],
                                ", seed=0)")
    assert all(len(line) <= 88 for line in lines)
    assert lines[0].startswith(">>> conv = pyconv.Conv({") and lines[-1].endswith(
        "}, seed=0)")


def test_example_plugin_is_found_through_its_entry_point(docs, tmp_path):
    """Install the example package's metadata by hand; the CLI must then see the op."""
    import tomllib

    with open(os.path.join(PLUGIN, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    eps = project["entry-points"]["pyconv.ops"]
    info = tmp_path / "pyconv_boxblur-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n")
    (info / "entry_points.txt").write_text(
        "[pyconv.ops]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    # Keep the caller's PYTHONPATH (if any) but add nothing from this process's
    # sys.path, which may hold the source checkout.
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), PLUGIN] + inherited))
    r = subprocess.run([sys.executable, "-m", "pyconv", "describe", "box_blur2d"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("box_blur2d: Mean over a square window")
    assert "PluginWarning" not in r.stderr


def test_gallery_pictures_are_made_for_registered_ops(docs, tmp_path):
    sys.path.insert(0, docs)
    try:
        gallery = importlib.import_module("gallery")
    finally:
        sys.path.remove(docs)
    body = gallery.build(str(tmp_path))
    made = sorted(os.listdir(tmp_path))
    for stem, title, needs, _ in gallery.FIGURES:
        expected = all(op in pyconv.available_ops() for op in needs)
        assert (f"{stem}.png" in made) == expected, stem
        assert (title in body) == expected
    for name in made:
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
