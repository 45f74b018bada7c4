"""Dense convolution: pyconv vs torch.nn.functional.conv{1,2,3}d.

Run: ``python benchmarks/bench_conv.py --threads 1,2``
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import Case, main_for  # noqa: E402

import pyconv  # noqa: E402

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
    ("conv3d 3x3x3 p1", (2, 32, 16, 56, 56),
     {"op": "conv3d", "in_channels": 32, "out_channels": 32, "kernel_size": 3, "padding": 1}),
]


def make_cases(dtypes=(np.float32, np.float64)):
    import torch
    import torch.nn.functional as F

    cases = []
    rng = np.random.default_rng(0)
    for name, shape, spec in CONFIGS:
        for dtype in dtypes:
            conv = pyconv.Conv(spec, seed=0, dtype=dtype)
            x = rng.standard_normal(shape).astype(dtype)
            out = np.empty(conv.output_shape(shape), dtype)
            xt = torch.from_numpy(x)
            w = torch.from_numpy(np.array(conv.params["weight"]))
            b = torch.from_numpy(np.array(conv.params["bias"]))
            fn = getattr(F, spec["op"])
            kw = {k: spec[k] for k in ("stride", "padding", "dilation") if k in spec}

            def run(n, conv=conv, x=x, out=out):
                return conv.apply(x, out=out, n_threads=n)

            def peer(n, fn=fn, xt=xt, w=w, b=b, kw=kw):
                with torch.no_grad():
                    return fn(xt, w, b, **kw)

            cases.append(Case(name, "x".join(map(str, shape)), np.dtype(dtype).name, run,
                              peer, flops=conv.flops(shape),
                              rtol=1e-4 if dtype == np.float32 else 1e-10))
    return cases


if __name__ == "__main__":
    main_for(make_cases, __doc__)
