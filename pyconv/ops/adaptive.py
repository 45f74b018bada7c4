"""Adaptive and global pooling: ``adaptive_{avg,max}_pool{1,2,3}d``, ``global_{avg,max}_pool``.

Adaptive pooling (PyTorch semantics) picks the windows from the requested output size:
along an axis of length ``L`` pooled to ``o``, window ``i`` covers ``[floor(i*L/o),
ceil((i+1)*L/o))`` (windows may overlap, and ``o > L`` repeats elements). ``output_size``
is an int or one entry per axis, where ``None`` keeps that axis' length. The average
divides by the window's size; the max propagates NaN (``v > m || isnan(v)``) and
``return_indices`` returns ``(values, int64 indices)`` flattened per (n, c) plane as
PyTorch does.

Global pooling reduces every spatial axis of an input ``(N, C, *spatial)`` of any rank
``>= 1``; ``keepdims=True`` (the default, like ``AdaptiveAvgPool2d(1)``, so the result
feeds a 1x1 convolution) gives ``(N, C, 1, ..., 1)``, ``keepdims=False`` gives ``(N, C)``
(Keras' ``GlobalAveragePooling`` default).

Counts: ``macs`` is 0; ``flops`` is one operation per window cell, ``N*C*prod_axes(sum of
window lengths)`` (for global pooling ``N*C*prod(spatial)``). Memory: besides the
output, one input row per thread. The global pools, and adaptive pooling to size 1
on every axis (without indices), sum each plane with eight interleaved partial sums
(vectorised; the order is fixed, so results never depend on the thread count):
32x512x14x14 float32 to 1x1 took 1.79 ms through the general row and column passes,
0.35 ms so (PyTorch 0.36, 2 threads). The max rescans a plane whose result is a zero
or a NaN, so that among values that compare equal yet differ (+0.0 and -0.0, NaN
payloads) it returns the row-major scan's winner, as max pooling does.

Examples
--------
>>> import numpy as np, pyconv
>>> x = np.arange(10.0).reshape(1, 1, 10)
>>> pyconv.Conv({"op": "adaptive_avg_pool1d", "output_size": 3}).apply(x)
array([[[1.5, 4.5, 7.5]]])
>>> pyconv.Conv({"op": "global_max_pool", "keepdims": False}).apply(x)
array([[9.]])
"""
from __future__ import annotations

import numbers

import numpy as np

from pyconv import _memo
from pyconv import _pool_geometry as pg
from pyconv._geometry import as_3d
from pyconv._spec import Invalid, boolean, key
from pyconv.ops._base import Op, prod
from pyconv.ops.pooling import run_max_indices, run_separable, run_whole_planes


def output_size_value(rank):
    """An int >= 1 (every axis), or ``rank`` entries each an int >= 1 or None."""
    expected = (f"a positive int or a sequence of {rank} entries, each a positive int "
                "or None (keep the axis)")

    def ok(e):
        return isinstance(e, numbers.Integral) and not isinstance(e, bool) and e >= 1

    def check(v):
        if ok(v):
            return [int(v)] * rank
        if (isinstance(v, (list, tuple)) and len(v) == rank
                and all(e is None or ok(e) for e in v)):
            return [None if e is None else int(e) for e in v]
        raise Invalid(expected)

    check.expected = expected
    return check


def adaptive_plan(shape, out_spatial):
    """The kernel plan (``pg.Plan``) of an adaptive pool: tables for the three axes,
    the W-axis windows and the window lengths as divisor factors."""
    spatial = as_3d(shape[2:], 1)
    outs = as_3d(out_spatial, 1)
    tables = [pg.adaptive_axis_table(n, o) for n, o in zip(spatial, outs)]
    bounds = [pg.adaptive_bounds(n, o) for n, o in zip(spatial, outs)]
    lengths = [np.ascontiguousarray(e - s, dtype=np.int64) for s, e in bounds]
    W = spatial[2]
    flops = shape[0] * shape[1] * prod(int(n.sum()) for n in lengths)
    size = shape[0] * shape[1] * prod(outs)
    return pg.Plan(
        in_shape=tuple(shape), out_shape=(shape[0], shape[1], *out_spatial),
        tab_d=tables[0], tab_h=tables[1], tab_w=tables[2],
        wsrc=np.arange(W, dtype=np.int64), lo_w=0,
        wstart=np.ascontiguousarray(bounds[2][0], dtype=np.int64), wcnt=lengths[2], dw=1,
        n_uniform=0, kw=1, sw=1, divs=lengths,
        flops_per_output=max(1, flops // max(1, size)), pads_skipped=True)


class AdaptivePoolND(Op):
    """Adaptive average or max pooling over ``rank`` spatial axes."""

    inputs = ()

    def __init__(self, rank, kind):
        self.rank = rank
        self.kind = kind
        self.name = f"adaptive_{kind}_pool{rank}d"
        word = "average" if kind == "avg" else "max"
        self.summary = (f"{rank}-D adaptive {word} pooling to a given output size "
                        "(PyTorch windows [floor(i*L/o), ceil((i+1)*L/o))).")
        keys = [key("output_size", output_size_value(rank),
                    doc="Output length per axis; None keeps the axis.")]
        if kind == "max":
            keys.append(key("return_indices", boolean(), False,
                            "apply returns (values, int64 indices flattened per plane)."))
            self.forward_when_empty = True
        self.keys = tuple(keys)
        self.formulas = {
            "output": "out = output_size (None: the input's length)",
            "params": "0",
            "macs": "0",
            "flops": "N * C * prod over axes of the summed window lengths",
        }

    def geometry(self, spec, input_shape):
        """``(shape, out_spatial)`` for an input shape; validates it."""
        return _memo.cached(("geometry", self, _memo.spec_key(spec), tuple(input_shape)),
                            lambda: self._geometry(spec, input_shape))

    def _geometry(self, spec, input_shape):
        shape = self.check_input_shape(input_shape, self.rank)
        out = tuple(n if o is None else o for n, o in zip(shape[2:], spec["output_size"]))
        return shape, out

    def output_shape(self, spec, input_shape):
        shape, out = self.geometry(spec, input_shape)
        return (shape[0], shape[1], *out)

    def macs(self, spec, input_shape):
        self.geometry(spec, input_shape)
        return 0

    def flops(self, spec, input_shape):
        shape, out = self.geometry(spec, input_shape)
        total = shape[0] * shape[1]
        for n, o in zip(shape[2:], out):
            s, e = pg.adaptive_bounds(n, o)
            total *= int((e - s).sum())
        return total

    def forward(self, spec, x, params, out, n_threads):
        shape, out_spatial = self.geometry(spec, x.shape)
        plan = _memo.cached(("plan", self, out_spatial, shape),
                            lambda: adaptive_plan(shape, out_spatial))
        if self.kind == "max" and spec["return_indices"]:
            return run_max_indices(x, out, plan, n_threads)
        if all(o == 1 for o in out_spatial):   # AdaptiveAvgPool2d(1): the global pool
            return run_whole_planes(x, out, self.kind, n_threads)
        return run_separable(x, out, plan, self.kind, n_threads)


class GlobalPool(Op):
    """Average or max over every spatial axis, for inputs of any rank."""

    inputs = ()

    def __init__(self, kind):
        self.kind = kind
        self.name = f"global_{kind}_pool"
        word = "average" if kind == "avg" else "max (NaN-propagating)"
        self.summary = (f"Global {word} pooling over all spatial axes of any rank; "
                        "keepdims chooses (N, C, 1, ..., 1) or (N, C).")
        self.keys = (key("keepdims", boolean(), True,
                         "Keep the spatial axes with length 1 (else output (N, C))."),)
        self.formulas = {
            "output": "(N, C, 1, ..., 1) with keepdims, else (N, C)",
            "params": "0",
            "macs": "0",
            "flops": "N * C * prod(spatial)",
        }

    def check_shape(self, input_shape):
        shape = tuple(int(n) for n in input_shape)
        if len(shape) < 3:
            raise ValueError(f"{self.name}: expected an input (N, C, *spatial) with at "
                             f"least one spatial axis; got shape {shape}")
        if any(n < 0 for n in shape):
            raise ValueError(f"{self.name}: negative size in input shape {shape}")
        if any(n == 0 for n in shape[2:]):
            raise ValueError(f"{self.name}: zero-size spatial axis in input shape {shape}")
        return shape

    def output_shape(self, spec, input_shape):
        shape = self.check_shape(input_shape)
        if spec["keepdims"]:
            return (shape[0], shape[1], *([1] * (len(shape) - 2)))
        return shape[:2]

    def macs(self, spec, input_shape):
        self.check_shape(input_shape)
        return 0

    def flops(self, spec, input_shape):
        return prod(self.check_shape(input_shape))

    def forward(self, spec, x, params, out, n_threads):
        self.check_shape(x.shape)
        return run_whole_planes(x, out, self.kind, n_threads)


OPS = [*(AdaptivePoolND(r, "avg") for r in (1, 2, 3)),
       *(AdaptivePoolND(r, "max") for r in (1, 2, 3)),
       GlobalPool("avg"), GlobalPool("max")]
