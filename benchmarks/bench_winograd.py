"""3x3 stride-1 conv2d by algorithm: Winograd F4 / F2 and im2col vs torch.nn.functional.conv2d.

Each case is a ``conv2d`` spec with the ``algorithm`` key pinned ("winograd_f4",
"winograd_f2" or "im2col"), timed with :mod:`benchmarks.harness` against PyTorch on
the same input (one process, equal threads, alternating runs, medians, ratio
torch / pyconv, agreement check); also part of ``benchmarks.run``. The Winograd
filter transform is computed by the first (untimed) call and cached with the
read-only weight, as for any ``Conv`` object used more than once. GFLOP/s counts
2 * MACs of the direct convolution whichever algorithm runs, so the rates of the
three algorithms compare as speeds.

Run: ``python benchmarks/bench_winograd.py --threads 2``
"""
import os
import sys

import numpy as np

if not __package__:  # run as a script: benchmarks.* from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import Case, main_for  # noqa: E402

import pyconv  # noqa: E402

SHAPES = [(8, 64, 56, 56, 64), (8, 128, 28, 28, 128)]  # N, C_in, H, W, C_out
ALGORITHMS = ("winograd_f4", "winograd_f2", "im2col")
#: Largest difference relative to the largest output. F4's transforms cost float32
#: about 1e-6 (see pyconv.ops._winograd, "Numerics").
TOL = {"float32": 1e-4, "float64": 1e-10}


def make_cases(dtypes=(np.float32, np.float64)):
    import torch
    import torch.nn.functional as F

    cases = []
    rng = np.random.default_rng(0)
    for N, C, H, W, C_out in SHAPES:
        shape = (N, C, H, W)
        for dtype in dtypes:
            x = rng.standard_normal(shape).astype(dtype)
            out = np.empty((N, C_out, H, W), dtype)
            base = {"op": "conv2d", "in_channels": C, "out_channels": C_out,
                    "kernel_size": 3, "padding": 1}
            params = pyconv.Conv(base, seed=0, dtype=dtype).params
            xt = torch.from_numpy(x)
            w = torch.from_numpy(np.array(params["weight"]))
            b = torch.from_numpy(np.array(params["bias"]))

            def peer(n, xt=xt, w=w, b=b):
                with torch.no_grad():
                    return F.conv2d(xt, w, b, padding=1)

            for algorithm in ALGORITHMS:
                conv = pyconv.Conv({**base, "algorithm": algorithm}, params=params,
                                   dtype=dtype)

                def run(n, conv=conv, x=x, out=out):
                    return conv.apply(x, out=out, n_threads=n)

                name = f"conv2d 3x3 p1 {algorithm}"
                cases.append(Case(name, f"{N}x{C}x{H}x{W}->{C_out}", np.dtype(dtype).name,
                                  run, peer, flops=conv.flops(shape),
                                  rtol=TOL[np.dtype(dtype).name]))
    return cases


if __name__ == "__main__":
    main_for(make_cases, __doc__)
