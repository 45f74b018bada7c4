"""Small inputs, where the cost of a call is its Python overhead: pyconv vs torch.

Run: ``python benchmarks/bench_small.py --threads 1,2``

Batch-1 layers of a few thousand values, float32, each side allocating its output as
a user's code would. A timed run is ``CALLS`` calls in a row, so the milliseconds in
the table are microseconds per call times ``CALLS / 1000`` (with ``CALLS = 100``:
divide by 0.1, i.e. 5.00 ms is 50 us a call). Such calls run on one thread whatever
``--threads`` says (pyconv's small-input rule; PyTorch likewise stays serial), so
the thread column changes little. Timed with :mod:`benchmarks.harness` (one
process, medians, ratio torch / pyconv, agreement check on the last call).
"""
import os
import sys

import numpy as np

if not __package__:  # run as a script: benchmarks.* from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import Case, main_for  # noqa: E402

import pyconv  # noqa: E402

#: Calls per timed run.
CALLS = 100

CONFIGS = [
    # name, input shape, spec, torch call (F, x, params) -> tensor
    ("relu", (1, 16, 8, 8), {"op": "relu"}, lambda F, x, p: F.relu(x)),
    ("max_pool2d k2 s2", (1, 16, 16, 16), {"op": "max_pool2d", "kernel_size": 2, "stride": 2},
     lambda F, x, p: F.max_pool2d(x, 2, 2)),
    ("avg_pool2d k3 s1 p1", (1, 16, 16, 16),
     {"op": "avg_pool2d", "kernel_size": 3, "stride": 1, "padding": 1},
     lambda F, x, p: F.avg_pool2d(x, 3, 1, 1)),
    ("adaptive_avg_pool2d -> 1x1", (1, 64, 7, 7),
     {"op": "adaptive_avg_pool2d", "output_size": 1},
     lambda F, x, p: F.adaptive_avg_pool2d(x, 1)),
    ("conv1d 4->4 k3", (1, 4, 32),
     {"op": "conv1d", "in_channels": 4, "out_channels": 4, "kernel_size": 3},
     lambda F, x, p: F.conv1d(x, p["weight"], p["bias"])),
    ("conv2d 16->16 3x3 p1", (1, 16, 8, 8),
     {"op": "conv2d", "in_channels": 16, "out_channels": 16, "kernel_size": 3,
      "padding": 1},
     lambda F, x, p: F.conv2d(x, p["weight"], p["bias"], padding=1)),
    ("conv2d 32->32 1x1", (1, 32, 14, 14),
     {"op": "conv2d", "in_channels": 32, "out_channels": 32, "kernel_size": 1},
     lambda F, x, p: F.conv2d(x, p["weight"], p["bias"])),
    ("depthwise 3x3 p1", (1, 32, 14, 14),
     {"op": "depthwise_conv2d", "in_channels": 32, "kernel_size": 3, "padding": 1},
     lambda F, x, p: F.conv2d(x, p["weight"], p["bias"], padding=1, groups=32)),
]


def make_cases():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    cases = []
    for name, shape, spec, tfn in CONFIGS:
        conv = pyconv.Conv(spec, seed=0, dtype=np.float32)
        x = rng.standard_normal(shape).astype(np.float32)
        xt = torch.from_numpy(x)
        params = {k: torch.from_numpy(np.array(v)) for k, v in conv.params.items()}

        def run(n, conv=conv, x=x):
            for _ in range(CALLS - 1):
                conv.apply(x, n_threads=n)
            return conv.apply(x, n_threads=n)

        def peer(n, tfn=tfn, xt=xt, params=params):
            with torch.no_grad():
                for _ in range(CALLS - 1):
                    tfn(F, xt, params)
                return tfn(F, xt, params)

        cases.append(Case(f"{name} ({CALLS} calls)", "x".join(map(str, shape)), "float32",
                          run, peer, rtol=1e-5))
    return cases


if __name__ == "__main__":
    main_for(make_cases, __doc__)
