"""Test configuration: tests import the *installed* pyconv, never the source tree."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # reference helpers


def pytest_report_header(config):
    import pyconv

    return [f"pyconv {pyconv.__version__} from {os.path.dirname(pyconv.__file__)}",
            f"openmp={pyconv.config()['openmp']} threads={pyconv.get_num_threads()}"]


@pytest.fixture(autouse=True)
def _outside_the_source_tree(tmp_path, monkeypatch):
    """Run every test from an empty folder, so subprocesses (``python -m pyconv``,
    ``python -c``) import the installed pyconv, never a source checkout in the cwd."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name, so every test is reproducible."""
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
