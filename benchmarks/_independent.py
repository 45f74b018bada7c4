"""The worker of ``scaling.py``'s ``independent`` ceiling, in a module of its own.

A spawned process imports this module to find its target; the worker puts the folder
of the parent's pyconv first on ``sys.path`` before importing pyconv, so that it runs
the pyconv the parent runs (an installed one, say, where the ``sys.path`` handed down
also holds an unbuilt source checkout), and checks that it does. (Run as a script,
``scaling.py`` is re-run as the spawned process's main module and imports pyconv
first, from the same place as the parent.)
"""
import os
import sys
import threading
import time
import traceback

import numpy as np


def batch(shape):
    """The layer's input: the same values in every process."""
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def worker(spec, shape, index, n, start, end, rounds, reports, pyconv_dir):
    """One of ``n`` processes of ``scaling.independent_rounds``.

    Applies the layer single-threaded to share ``index`` of the batch
    (``np.array_split(batch(shape), n)``), ``rounds`` times, each between the two
    barriers, and times each call itself (``time.perf_counter``: one clock for every
    process). At the end it puts ``("done", index, share_shape, [(t0, t1), ...])`` on
    ``reports``; on failure, ``("error", index, traceback_text)`` before breaking the
    barriers, so that the parent stops waiting at once.
    """
    try:
        if sys.path[:1] != [pyconv_dir]:
            sys.path.insert(0, pyconv_dir)
        import pyconv

        found = os.path.dirname(os.path.dirname(os.path.abspath(pyconv.__file__)))
        if found != pyconv_dir:
            raise RuntimeError(f"the worker runs the pyconv in {found}, the parent the "
                               f"one in {pyconv_dir}")
        layer = pyconv.Conv(spec, seed=0, dtype=np.float32)
        share = np.array_split(batch(shape), n)[index]
        out = np.empty(layer.output_shape(share.shape), np.float32)
        spans = []
        for _ in range(rounds):
            start.wait()
            t0 = time.perf_counter()
            layer.apply(share, out=out, n_threads=1)
            spans.append((t0, time.perf_counter()))
            end.wait()
        reports.put(("done", index, share.shape, spans))
    except threading.BrokenBarrierError:
        pass  # another worker failed, or the parent gave up
    except BaseException:
        reports.put(("error", index, traceback.format_exc()))
        start.abort()
        end.abort()
