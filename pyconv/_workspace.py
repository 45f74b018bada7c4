"""Scratch buffers reused across calls, one set per Python thread.

A fresh multi-megabyte buffer costs a page fault per 4 KiB on first touch (about
2.5 us each here), which is a sizeable share of a convolution; reusing the buffer
avoids it. Each Python thread keeps its own buffers, so concurrent ``apply`` calls never
share scratch memory. A buffer only grows; :func:`release_workspaces` frees them.

Buffers start on a cache line, and the per-thread scratch of the kernels
(``thread_workspace``) has rows of whole cache lines, so that each thread's
column buffer and panels do too: a 512-bit load from a row that is not 64-byte
aligned spans two lines (one thread, alternating in one process: conv1d 128 -> 128
k3 52.4-53.8 -> 47.1-48.2 ms, 7x7 stride 2 17.0-17.5 -> 15.3-15.6 ms, Winograd 3x3
5.7-5.9 -> 5.1-5.3 ms).
"""
import threading

import numpy as np

from pyconv._output_pool import release_free_outputs

_local = threading.local()
#: Buffers start on a cache line: a 512-bit load from a misaligned row spans two
#: lines.
ALIGN = 64


def workspace(shape, dtype, slot="kernel"):
    """An uninitialised C-contiguous array of ``shape``/``dtype`` backed by the cache.

    ``slot`` names independent buffers, for callers that need more than one at a time
    (a kernel's scratch and the operands prepared for it).
    """
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    # the view handed out last, reused for the same request (slicing, viewing and
    # reshaping took microseconds of a small call)
    last = buffers.get((slot, "view"))
    if last is not None and last[0] == shape and last[1] == dtype \
            and last[2] is buffers.get(slot):
        return last[3]
    dtype = np.dtype(dtype)
    count = 1
    for n in shape:
        count *= int(n)
    nbytes = max(count * dtype.itemsize, 1)
    buf = buffers.get(slot)
    if buf is None or buf.nbytes < nbytes + ALIGN:
        buf = np.empty(nbytes + ALIGN, dtype=np.uint8)
        buffers[slot] = buf
    start = -buf.ctypes.data % ALIGN
    view = buf[start:start + count * dtype.itemsize].view(dtype).reshape(shape)
    buffers[(slot, "view")] = (tuple(shape), dtype, buf, view)
    return view


def thread_workspace(rows, values, dtype, slot="kernel"):
    """Scratch of ``rows`` rows of at least ``values`` values (one row per thread),
    C-contiguous, from the cache as :func:`workspace`, each row starting on a cache
    line: the row length is rounded up to a multiple of :data:`ALIGN` bytes.

    Examples
    --------
    >>> import numpy as np
    >>> from pyconv._workspace import thread_workspace
    >>> w = thread_workspace(2, 10, np.float32)
    >>> w.shape, w.ctypes.data % 64
    ((2, 16), 0)
    """
    dtype = np.dtype(dtype)
    per = -(-max(values, 1) * dtype.itemsize // ALIGN) * ALIGN // dtype.itemsize
    return workspace((rows, per), dtype, slot)


def release_workspaces():
    """Free the scratch buffers of the calling Python thread, and the free output
    buffers kept for reuse (see :mod:`pyconv._output_pool`; outputs in use are not
    affected).

    Examples
    --------
    >>> import pyconv
    >>> pyconv.release_workspaces()
    """
    _local.buffers = {}
    release_free_outputs()
