"""Sphinx configuration for pyconv's documentation.

Build (from the repository root, with pyconv installed or built in place)::

    pip install ".[docs]"
    sphinx-build -W --keep-going -n -b html docs docs/_build/html
    sphinx-build -W --keep-going -n -b doctest docs docs/_build/doctest

The op reference, the API page and the gallery are generated at build time from the
pyconv that is imported (``_ext/pyconv_docs.py``), so they list every registered op.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

import pyconv  # noqa: E402

project = "pyconv"
author = "pyconv developers"
copyright = "pyconv developers"
release = pyconv.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "pyconv_docs",
]

exclude_patterns = ["_build", "plugin_example", "generated/gallery.rst", "generated/api.rst",
                    "generated/ops/index.rst", "Thumbs.db", ".DS_Store"]
templates_path = []
html_theme = "alabaster"
html_static_path = []
html_title = f"pyconv {release}"
html_theme_options = {"description": "CNN convolution and pooling ops as OpenMP kernels",
                      "fixed_sidebar": True}

# Every reference must resolve (-n); these name things outside any inventory here.
nitpicky = True
nitpick_ignore_regex = [
    ("py:class", r"(numpy\.)?(ndarray|dtype|random\.Generator)"),
    ("py:class", r"array_like|optional|callable|object|sequence of .*|dict of .*|"
                 r"tuple of .*|list of .*|int or .*|str or .*|dict or .*|.* or None"),
    ("py:class", r"(typing\.)?(Any|Callable.*)"),
    # Names that docstrings of private modules give relative to their own module.
    ("py:class", r"Invalid|_BlasPin|SpecError"),
    ("py:func", r"release_workspaces"),
]
intersphinx_mapping = {}  # no network at build time: keep the build self-contained

autodoc_member_order = "bysource"
autodoc_typehints = "none"
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# The example plugin of plugins.rst is importable in the doctests (not installed).
_PLUGIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugin_example")
doctest_global_setup = f"""
import sys
import numpy as np
import pyconv
if {_PLUGIN!r} not in sys.path:
    sys.path.insert(0, {_PLUGIN!r})
"""
doctest_test_doctest_blocks = "default"
