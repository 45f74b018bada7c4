"""The worker of ``scaling.py``'s ``independent`` ceiling, in a module of its own.

A spawned process imports this module to find its target. It imports pyconv only
inside the worker, from the folder the parent names, so that the worker runs the
pyconv the parent runs (an installed one, say, with an unbuilt source checkout on the
``sys.path`` the parent hands down).
"""
import os
import sys
import threading
import traceback

import numpy as np


def batch(shape):
    """The layer's input: the same values in every process."""
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def worker(spec, shape, index, n, start, end, rounds, errors, pyconv_dir):
    """One of ``n`` processes: apply the layer single-threaded to share ``index`` of the
    batch, ``rounds`` times, each between the two barriers. ``pyconv_dir``: the folder
    holding the parent's ``pyconv`` package. A failure is reported on ``errors`` and
    breaks the barriers, so that the parent stops waiting at once."""
    try:
        sys.path.insert(0, pyconv_dir)
        import pyconv

        found = os.path.dirname(os.path.dirname(os.path.abspath(pyconv.__file__)))
        if found != pyconv_dir:
            raise RuntimeError(f"the worker runs the pyconv in {found}, the parent the "
                               f"one in {pyconv_dir}")

        layer = pyconv.Conv(spec, seed=0, dtype=np.float32)
        share = np.array_split(batch(shape), n)[index]
        out = np.empty(layer.output_shape(share.shape), np.float32)
        for _ in range(rounds):
            start.wait()
            layer.apply(share, out=out, n_threads=1)
            end.wait()
    except threading.BrokenBarrierError:
        pass  # another worker failed, or the parent gave up
    except BaseException:
        errors.put(traceback.format_exc())
        start.abort()
        end.abort()
