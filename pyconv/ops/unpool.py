"""Max unpooling: ``max_unpool1d``, ``max_unpool2d``, ``max_unpool3d`` (PyTorch semantics).

``apply(x, indices=..., output_size=None)`` scatters every value of ``x`` to the place
``indices`` names (flattened per (n, c) plane, as ``max_pool*d(return_indices=True)``
gives them) in a zero output of the pooled op's input size. That size is, per axis,
``(in - 1)*s - lo - hi + k`` (PyTorch: ``(in - 1)*s - 2p + k``), or ``output_size``
(the spatial sizes, or a full ``(N, C, *spatial)`` shape), which must lie strictly
between that default minus and plus the stride, as in PyTorch. Where two values go to
the same place the later one (in row-major order of ``x``) wins, as in PyTorch's CPU
kernel.

``indices`` must be an integer array of ``x``'s shape with every entry in ``[0,
prod(output spatial size))``; anything else raises before anything is written. No
parameters; ``macs`` and ``flops`` are 0 (data movement only). Memory: the output only
(plus an int64 copy of ``indices`` if they are not already C-contiguous int64).

Examples
--------
>>> import numpy as np, pyconv
>>> pool = pyconv.Conv({"op": "max_pool1d", "kernel_size": 2, "return_indices": True})
>>> values, indices = pool.apply(np.array([[[1.0, 3.0, 2.0, 0.0]]]))
>>> unpool = pyconv.Conv({"op": "max_unpool1d", "kernel_size": 2})
>>> unpool.apply(values, indices=indices)
array([[[0., 3., 2., 0.]]])
"""
from __future__ import annotations

import numbers

import numpy as np

from pyconv import _threads
from pyconv._spec import int_tuple, key, optional, padding
from pyconv.ops._base import Op, prod


class MaxUnpoolND(Op):
    """Inverse of max pooling over ``rank`` spatial axes (see module docstring)."""

    inputs = ("indices", "output_size")
    shape_inputs = ("output_size",)

    def __init__(self, rank):
        self.rank = rank
        self.name = f"max_unpool{rank}d"
        self.summary = (f"{rank}-D max unpooling: scatter values to max-pool indices in a "
                        "zero output of the pooled input's size.")
        self.keys = (
            key("kernel_size", int_tuple(rank), doc="Kernel size of the max pool."),
            key("stride", optional(int_tuple(rank)), None,
                "Stride of the max pool; None means the kernel size."),
            key("padding", padding(rank, ("valid",)), 0,
                "Padding of the max pool: int, per axis, or (lo, hi) pairs."),
        )
        self.formulas = {
            "output": "out = (in - 1)*stride - lo - hi + k, or output_size "
                      "(default - stride < output_size < default + stride)",
            "params": "0",
            "macs": "0",
            "flops": "0 (data movement only)",
        }

    def normalize(self, spec):
        out = super().normalize(spec)
        if out["stride"] is None:
            out["stride"] = list(out["kernel_size"])
        return out

    def default_size(self, spec, spatial):
        sizes = []
        for axis, (n, k, s, (lo, hi)) in enumerate(zip(
                spatial, spec["kernel_size"], spec["stride"], spec["padding"])):
            size = (n - 1) * s - lo - hi + k
            if size < 1:
                raise ValueError(f"{self.name}: output length along spatial axis {axis} "
                                 f"would be (in-1)*s - lo - hi + k = ({n}-1)*{s} - {lo} - "
                                 f"{hi} + {k} = {size} < 1")
            sizes.append(size)
        return sizes

    def _output_size(self, spec, shape, output_size):
        default = self.default_size(spec, shape[2:])
        if output_size is None:
            return tuple(default)
        try:
            sizes = [int(n) for n in output_size]
            ok = all(isinstance(n, numbers.Integral) and not isinstance(n, bool)
                     for n in output_size)
        except TypeError:
            ok = False
        if not ok:
            raise TypeError(f"{self.name}: output_size must be a sequence of ints; got "
                            f"{output_size!r}")
        if len(sizes) == self.rank + 2:
            sizes = sizes[2:]
        if len(sizes) != self.rank:
            raise ValueError(f"{self.name}: output_size must have {self.rank} (or "
                             f"{self.rank + 2}) entries; got {output_size!r}")
        for axis, (n, d, s) in enumerate(zip(sizes, default, spec["stride"])):
            if not d - s < n < d + s:
                raise ValueError(f"{self.name}: output_size {n} along spatial axis "
                                 f"{axis} must lie strictly between {d - s} and {d + s} "
                                 f"(the default {d} minus and plus the stride {s})")
        return tuple(sizes)

    def _check_indices(self, indices, shape):
        if indices is None:
            raise TypeError(f"{self.name}: apply() needs indices= (the int64 indices "
                            "returned by max_pool with return_indices=True)")
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"{self.name}: indices must be an integer array; got dtype "
                            f"{idx.dtype}")
        if idx.shape != tuple(shape):
            raise ValueError(f"{self.name}: indices must have the input's shape "
                             f"{tuple(shape)}; got {idx.shape}")
        return idx

    def check_inputs(self, spec, input_shape, dtype, indices=None, output_size=None):
        self._check_indices(indices, tuple(input_shape))

    def output_shape(self, spec, input_shape, indices=None, output_size=None):
        shape = self.check_input_shape(input_shape, self.rank)
        if indices is not None:
            self._check_indices(indices, shape)
        return (shape[0], shape[1], *self._output_size(spec, shape, output_size))

    def forward(self, spec, x, params, out, n_threads, indices=None, output_size=None):
        from pyconv.ops.pooling import kernel

        idx = self._check_indices(indices, x.shape)
        plane = prod(out.shape[2:])
        if idx.size:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= plane:
                bad = lo if lo < 0 else hi
                raise ValueError(f"{self.name}: index {bad} is out of range for an output "
                                 f"plane of {plane} elements (spatial size "
                                 f"{out.shape[2:]}); indices must lie in [0, {plane})")
        N, C = x.shape[:2]
        idx2 = np.ascontiguousarray(idx, dtype=np.int64).reshape(N * C, -1)
        if np.may_share_memory(idx2, out):  # never read indices the scatter overwrites
            idx2 = idx2.copy()
        n = _threads.resolve(n_threads, out.size, N * C,
                             out.nbytes + x.nbytes + idx2.nbytes)
        kernel().max_unpool(x.reshape(N * C, -1), idx2, out.reshape(N * C, plane), n)
        return out

    def macs(self, spec, input_shape):
        self.output_shape(spec, input_shape)
        return 0

    def flops(self, spec, input_shape):
        self.output_shape(spec, input_shape)
        return 0


OPS = [MaxUnpoolND(1), MaxUnpoolND(2), MaxUnpoolND(3)]
