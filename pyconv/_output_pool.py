"""Output arrays whose memory is reused once the caller lets go of them.

A fresh output larger than the cache costs a page fault per 4 KiB page on its first
touch whenever the C allocator has given the memory back to the system (always above
its 32 MiB mapping threshold; below it, depending on what else the process allocates
and frees); with transparent huge pages the kernel also zeroes each 2 MiB page first.
Measured here, 2 threads, 3x3 depthwise float32, each call preceded by a PyTorch call
of the same layer as in the benchmarks: a 16 MiB output took 4.9-13.6 ms into fresh
memory against 2.9 ms into a reused buffer, 24.5 MiB 6.1-24 ms against 4.4-4.5, 49
MiB 10.8 against 7.7-8.1 (11.4-11.6 against 7.7-7.9 without PyTorch). Smaller
outputs gain nothing: at 8 MiB both took 1.6-1.7 ms, and at 2 MiB fresh memory was
faster (0.54-0.60 ms against 0.68: the allocator hands back the block just freed,
still in cache). So an output of ``MIN_BYTES`` or more is carved from a buffer that
goes back to a small free list when the output and everything sharing its memory
(views, memoryviews, tensors made with ``torch.from_numpy``) are gone; the next output
of the same size reuses it, its pages already mapped.

Such an output is an ordinary writable array that does not own its memory
(``flags.owndata`` is False; ``resize`` refuses it). The free list keeps at most
``MAX_FREE_PER_SIZE`` buffers of one size and ``MAX_FREE_BYTES`` in all, dropping the
buffers freed longest ago to make room; :func:`pyconv.release_workspaces` frees them.
"""
import math
import threading
import weakref

import numpy as np

#: Outputs smaller than this (they fit in the cache) are plain ``np.empty`` arrays.
MIN_BYTES = 8 << 20
#: Bound on the memory the free list keeps.
MAX_FREE_BYTES = 256 << 20
#: Free buffers kept per size: enough for a few alternating layers of one shape.
MAX_FREE_PER_SIZE = 4

# Re-entrant: a finalizer (``_give_back``) can run inside a garbage collection that
# an allocation made while the lock is held sets off, in the same thread.
_lock = threading.RLock()
_free = []          # uint8 buffers, freed longest ago first (at most a few dozen)
_free_bytes = 0


class _Block:
    """The one object through which an output's arrays reach its buffer.

    Arrays made from it (``np.asarray``) keep it as their base, and their views keep
    those arrays, so it lives exactly as long as anything can reach the memory; its
    finalizer returns the buffer to the free list.
    """

    __slots__ = ("__array_interface__", "_raw", "__weakref__")

    def __init__(self, raw, dtype, count):
        self._raw = raw
        self.__array_interface__ = {"data": (raw.__array_interface__["data"][0], False),
                                    "shape": (count,),
                                    "typestr": dtype.str, "version": 3}


def new_output(shape, dtype):
    """An uninitialised C-contiguous array of ``shape``/``dtype``, reusing a free
    buffer of the same size when there is one.

    Examples
    --------
    >>> from pyconv._output_pool import new_output
    >>> new_output((2, 3), "float32").shape
    (2, 3)
    """
    dtype = np.dtype(dtype)
    count = int(math.prod(shape))
    nbytes = count * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    raw = _take(nbytes)
    if raw is None:
        raw = np.empty(nbytes, dtype=np.uint8)
    block = _Block(raw, dtype, count)
    weakref.finalize(block, _give_back, raw).atexit = False
    return np.asarray(block).reshape(shape)


def _take(nbytes):
    """The free buffer of ``nbytes`` freed last, taken off the list, or None."""
    global _free_bytes
    with _lock:
        for i in range(len(_free) - 1, -1, -1):
            if _free[i].nbytes == nbytes:
                _free_bytes -= nbytes
                return _free.pop(i)
    return None


def _give_back(raw):
    global _free_bytes
    n = raw.nbytes
    with _lock:
        if n > MAX_FREE_BYTES or sum(b.nbytes == n for b in _free) >= MAX_FREE_PER_SIZE:
            return
        while _free_bytes + n > MAX_FREE_BYTES:
            _free_bytes -= _free.pop(0).nbytes
        _free.append(raw)
        _free_bytes += n


def release_free_outputs():
    """Drop the free buffers (outputs still in use are not affected)."""
    global _free_bytes
    with _lock:
        _free.clear()
        _free_bytes = 0


def free_bytes():
    """Bytes held by free buffers now."""
    return _free_bytes
