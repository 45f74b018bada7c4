"""Pooling: pyconv vs torch.nn.functional (max/avg/lp/adaptive pools, with indices).

Pooling is memory-bound: every case counts bytes moved (input read + output written,
plus the int64 indices where returned), so the table shows GB/s and the fraction of
the measured copy bandwidth. Outputs are preallocated (``out=``) on pyconv's side,
except in the cases named "new output", where both sides allocate theirs on every
call (PyTorch always does).

Run: ``python benchmarks/bench_pooling.py --threads 1,2``
"""
import os
import sys

import numpy as np

if not __package__:  # run as a script: benchmarks.* from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import Case, main_for  # noqa: E402

import pyconv  # noqa: E402

CONFIGS = [
    # name, input shape, pyconv spec, torch.nn.functional call
    ("max_pool2d k3 s2 p1", (8, 64, 112, 112),
     {"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1},
     lambda F, t: F.max_pool2d(t, 3, 2, 1)),
    ("max_pool2d k3 s2 p1, new output", (8, 64, 112, 112),
     {"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1},
     lambda F, t: F.max_pool2d(t, 3, 2, 1)),
    ("max_pool2d k3 s2 p1 +indices", (8, 64, 112, 112),
     {"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1,
      "return_indices": True},
     lambda F, t: F.max_pool2d(t, 3, 2, 1, return_indices=True)),
    ("max_pool2d k2 s2", (8, 64, 56, 56),
     {"op": "max_pool2d", "kernel_size": 2}, lambda F, t: F.max_pool2d(t, 2)),
    ("avg_pool2d k2 s2", (8, 64, 112, 112),
     {"op": "avg_pool2d", "kernel_size": 2}, lambda F, t: F.avg_pool2d(t, 2)),
    ("avg_pool2d k3 s1 p1", (8, 64, 56, 56),
     {"op": "avg_pool2d", "kernel_size": 3, "stride": 1, "padding": 1},
     lambda F, t: F.avg_pool2d(t, 3, 1, 1)),
    ("lp_pool2d p2 k2", (8, 64, 56, 56),
     {"op": "lp_pool2d", "norm_type": 2.0, "kernel_size": 2},
     lambda F, t: F.lp_pool2d(t, 2.0, 2)),
    ("adaptive_avg_pool2d ->7x7", (8, 64, 112, 112),
     {"op": "adaptive_avg_pool2d", "output_size": 7},
     lambda F, t: F.adaptive_avg_pool2d(t, 7)),
    ("adaptive_max_pool2d ->7x7", (8, 64, 112, 112),
     {"op": "adaptive_max_pool2d", "output_size": 7},
     lambda F, t: F.adaptive_max_pool2d(t, 7)),
    ("global_avg_pool", (32, 512, 7, 7),
     {"op": "global_avg_pool"}, lambda F, t: F.adaptive_avg_pool2d(t, 1)),
    # classifier heads written as adaptive or whole-input pools
    ("adaptive_avg_pool2d ->1x1", (32, 512, 14, 14),
     {"op": "adaptive_avg_pool2d", "output_size": 1},
     lambda F, t: F.adaptive_avg_pool2d(t, 1)),
    ("avg_pool2d k7 (whole plane)", (32, 512, 7, 7),
     {"op": "avg_pool2d", "kernel_size": 7}, lambda F, t: F.avg_pool2d(t, 7)),
    ("max_pool3d k3 s2 p1", (2, 32, 32, 56, 56),
     {"op": "max_pool3d", "kernel_size": 3, "stride": 2, "padding": 1},
     lambda F, t: F.max_pool3d(t, 3, 2, 1)),
    ("avg_pool3d k2 s2", (2, 32, 32, 56, 56),
     {"op": "avg_pool3d", "kernel_size": 2}, lambda F, t: F.avg_pool3d(t, 2)),
    ("avg_pool1d k4 s4", (64, 64, 4096),
     {"op": "avg_pool1d", "kernel_size": 4}, lambda F, t: F.avg_pool1d(t, 4)),
    ("max_pool2d k2 tiny (call overhead)", (1, 1, 4, 4),
     {"op": "max_pool2d", "kernel_size": 2}, lambda F, t: F.max_pool2d(t, 2)),
]


def make_cases(dtypes=(np.float32,)):
    import torch
    import torch.nn.functional as F

    cases = []
    rng = np.random.default_rng(0)
    for name, shape, spec, peer_fn in CONFIGS:
        for dtype in dtypes:
            pool = pyconv.Conv(spec)
            x = rng.standard_normal(shape).astype(dtype)
            out = np.empty(pool.output_shape(shape), dtype)
            xt = torch.from_numpy(x)
            nbytes = x.nbytes + out.nbytes
            if spec.get("return_indices"):
                nbytes += out.size * 8
                # the harness compares values; the indices are checked here
                with torch.no_grad():
                    expected = peer_fn(F, xt)[1].numpy()
                if not np.array_equal(pool.apply(x)[1], expected):
                    raise AssertionError(f"{name}: indices differ from torch")

            def run(n, pool=pool, x=x, out=None if "new output" in name else out):
                return pool.apply(x, out=out, n_threads=n)

            def peer(n, peer_fn=peer_fn, xt=xt):
                with torch.no_grad():
                    return peer_fn(F, xt)

            cases.append(Case(name, "x".join(map(str, shape)), np.dtype(dtype).name, run,
                              peer, nbytes=nbytes,
                              rtol=1e-5 if dtype == np.float32 else 1e-12))
    return cases


if __name__ == "__main__":
    main_for(make_cases, __doc__)
