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


@pytest.fixture
def guarded_array():
    """``make(shape, dtype)``: a zeroed array whose last byte is followed by a page
    that cannot be read (Linux), so that a kernel reading past the end of its input
    crashes the test instead of reading whatever lies there."""
    import ctypes
    import mmap

    if not sys.platform.startswith("linux"):
        pytest.skip("the guard page is made with Linux's mprotect")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    maps = []

    def make(shape, dtype):
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        page = mmap.PAGESIZE
        size = -(-nbytes // page) * page + page
        buf = mmap.mmap(-1, size, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        start = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        if libc.mprotect(start + size - page, page, 0) != 0:
            pytest.skip(f"mprotect failed: errno {ctypes.get_errno()}")
        maps.append(buf)
        return np.frombuffer(buf, np.uint8, nbytes, size - page - nbytes).view(
            dtype).reshape(shape)

    return make
