"""Output arrays whose memory is reused once the caller lets go of them.

A fresh multi-megabyte output costs a page fault per 4 KiB page on its first touch
(with transparent huge pages the kernel also zeroes each 2 MiB page first). For a
memory-bound op that is as much time as the op itself: an 8x256x56x56 float32
depthwise convolution took 5.5 ms into an existing array and 8.3-21 ms into a fresh
one, on 2 threads here. So an output of ``MIN_BYTES`` or more is carved from a
buffer that goes back to a small free list when the output and everything sharing its
memory (views, memoryviews, tensors made with ``torch.from_numpy``) are gone; the
next output of the same size reuses it, its pages already mapped.

Such an output is an ordinary writable array that does not own its memory
(``flags.owndata`` is False; ``resize`` refuses it). At most ``MAX_FREE_BYTES``
of free buffers are kept, and at most ``MAX_FREE_PER_SIZE`` of one size;
:func:`pyconv.release_workspaces` frees them.
"""
import threading
import weakref

import numpy as np

#: Outputs smaller than this are plain ``np.empty`` arrays (the C allocator already
#: reuses small blocks without new page faults).
MIN_BYTES = 1 << 20
#: Bound on the memory the free list keeps.
MAX_FREE_BYTES = 256 << 20
#: Free buffers kept per size: enough for a few alternating layers of one shape.
MAX_FREE_PER_SIZE = 4

# Re-entrant: a finalizer (``_give_back``) can run inside a garbage collection that
# an allocation made while the lock is held sets off, in the same thread.
_lock = threading.RLock()
_free = {}          # nbytes -> [uint8 buffers]
_free_bytes = 0


def new_output(shape, dtype):
    """An uninitialised C-contiguous array of ``shape``/``dtype``, reusing a free
    buffer of the same size when there is one.

    Examples
    --------
    >>> from pyconv._output_pool import new_output
    >>> new_output((2, 3), "float32").shape
    (2, 3)
    """
    global _free_bytes
    dtype = np.dtype(dtype)
    count = 1
    for n in shape:
        count *= int(n)
    nbytes = count * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    with _lock:
        stack = _free.get(nbytes)
        raw = stack.pop() if stack else None
        if raw is not None:
            _free_bytes -= nbytes
    if raw is None:
        raw = np.empty(nbytes, dtype=np.uint8)
    # Views of ``flat`` (reshapes, slices) keep ``flat`` as their base: numpy stops
    # collapsing bases at an array whose base is not an array (here a memoryview).
    # So ``flat`` dies only when nothing shares the memory any more.
    flat = np.frombuffer(memoryview(raw), dtype=dtype, count=count)
    weakref.finalize(flat, _give_back, raw).atexit = False
    return flat.reshape(shape)


def _give_back(raw):
    global _free_bytes
    with _lock:
        stack = _free.setdefault(raw.nbytes, [])
        if len(stack) < MAX_FREE_PER_SIZE and _free_bytes + raw.nbytes <= MAX_FREE_BYTES:
            stack.append(raw)
            _free_bytes += raw.nbytes


def release_free_outputs():
    """Drop the free buffers (outputs still in use are not affected)."""
    global _free_bytes
    with _lock:
        _free.clear()
        _free_bytes = 0


def free_bytes():
    """Bytes held by free buffers now."""
    return _free_bytes
