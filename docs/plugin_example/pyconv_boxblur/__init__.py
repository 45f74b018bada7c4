"""A box-blur op for pyconv: the complete source of an example plugin.

Examples
--------
>>> import numpy as np, pyconv
>>> blur = pyconv.Conv({"op": "box_blur2d", "size": 3})
>>> blur.apply(np.arange(9.0).reshape(1, 1, 3, 3))[0, 0]
array([[1.33333333, 2.        , 2.66666667],
       [3.33333333, 4.        , 4.66666667],
       [5.33333333, 6.        , 6.66666667]])
"""
import numpy as np

import pyconv
from pyconv.ops import Op


def odd_size(value):
    """Spec-key check: return the normal form of ``value`` or raise SpecError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise pyconv.SpecError("box_blur2d", "size", "a positive odd int", value)
    return int(value)


class BoxBlur2d(Op):
    """Mean over a ``size x size`` window per channel, edges replicated."""

    name = "box_blur2d"
    summary = "Mean over a square window per channel; edges replicated; same-size output."
    keys = (pyconv.Key("size", odd_size, 3, "Window side, an odd number of pixels.",
                       "a positive odd int"),)
    formulas = {
        "output": "out = in (every axis)",
        "params": "none",
        "macs": "0",
        "flops": "N * C * H * W * size**2 (one add per window cell)",
    }
    # What the generated op reference runs as this op's example.
    example = {"spec": {"size": 5}, "input_shape": (1, 3, 16, 16)}

    def output_shape(self, spec, input_shape):
        return self.check_input_shape(input_shape, rank=2)

    def flops(self, spec, input_shape):
        n, c, h, w = self.output_shape(spec, input_shape)
        return n * c * h * w * spec["size"] ** 2

    def forward(self, spec, x, params, out, n_threads):
        # x is C-contiguous float32/float64; out is preallocated with the output shape.
        r = spec["size"] // 2
        padded = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(
            padded, (spec["size"], spec["size"]), axis=(2, 3))
        np.mean(windows, axis=(-2, -1), out=out)
        return out
