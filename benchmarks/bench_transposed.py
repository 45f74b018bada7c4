"""Transposed convolution: pyconv vs torch.nn.functional.conv_transpose{1,2,3}d.

Timed with :mod:`benchmarks.harness` (one process, equal threads, alternating runs,
medians, ratio torch / pyconv, agreement check); also part of ``benchmarks.run``.

Run: ``python benchmarks/bench_transposed.py --threads 2``
"""
import os
import sys

import numpy as np

if not __package__:  # run as a script: benchmarks.* from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import main_for, torch_conv_cases  # noqa: E402


CONFIGS = [
    # name, input shape, spec
    ("conv_transpose2d k4 s2 p1", (8, 128, 32, 32),
     {"op": "conv_transpose2d", "in_channels": 128, "out_channels": 64, "kernel_size": 4,
      "stride": 2, "padding": 1}),
    ("conv_transpose2d k3 s2 p1 op1 g4", (8, 64, 32, 32),
     {"op": "conv_transpose2d", "in_channels": 64, "out_channels": 64, "kernel_size": 3,
      "stride": 2, "padding": 1, "output_padding": 1, "groups": 4}),
    ("conv_transpose1d k8 s4 p2", (16, 64, 1024),
     {"op": "conv_transpose1d", "in_channels": 64, "out_channels": 32, "kernel_size": 8,
      "stride": 4, "padding": 2}),
    ("conv_transpose3d k4 s2 p1", (2, 32, 8, 16, 16),
     {"op": "conv_transpose3d", "in_channels": 32, "out_channels": 16, "kernel_size": 4,
      "stride": 2, "padding": 1}),
]


def make_cases(dtypes=(np.float32, np.float64)):
    return torch_conv_cases(CONFIGS, ("stride", "padding", "output_padding", "groups"), dtypes)


if __name__ == "__main__":
    main_for(make_cases, __doc__)
