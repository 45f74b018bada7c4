"""Dense convolution: pyconv vs torch.nn.functional.conv{1,2,3}d.

Run: ``python benchmarks/bench_conv.py --threads 1,2``
"""
import os
import sys

import numpy as np

if not __package__:  # run as a script: benchmarks.* from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import main_for, torch_conv_cases  # noqa: E402


CONFIGS = [
    # name, input shape, spec
    ("conv2d 3x3 p1", (8, 64, 56, 56),
     {"op": "conv2d", "in_channels": 64, "out_channels": 64, "kernel_size": 3, "padding": 1}),
    ("conv2d 1x1", (8, 256, 56, 56),
     {"op": "conv2d", "in_channels": 256, "out_channels": 64, "kernel_size": 1}),
    ("conv2d 7x7 s2 p3", (8, 3, 224, 224),
     {"op": "conv2d", "in_channels": 3, "out_channels": 64, "kernel_size": 7, "stride": 2,
      "padding": 3}),
    ("conv1d k3 d4", (16, 128, 4096),
     {"op": "conv1d", "in_channels": 128, "out_channels": 128, "kernel_size": 3,
      "dilation": 4}),
    ("conv1d k3 p1", (16, 64, 8192),
     {"op": "conv1d", "in_channels": 64, "out_channels": 64, "kernel_size": 3,
      "padding": 1}),
    ("conv3d 3x3x3 p1", (2, 32, 16, 56, 56),
     {"op": "conv3d", "in_channels": 32, "out_channels": 32, "kernel_size": 3, "padding": 1}),
]


def make_cases(dtypes=(np.float32, np.float64)):
    return torch_conv_cases(CONFIGS, ("stride", "padding", "dilation"), dtypes)


if __name__ == "__main__":
    main_for(make_cases, __doc__)
