"""Pooling benchmarks: pyconv against PyTorch at equal thread counts.

Run: ``python benchmarks/bench_pooling.py --threads 2``. Prints, per case, the median
time of each library, the ratio torch/pyconv (> 1: pyconv faster) and the largest
difference between the two results.
"""
import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

import pyconv

CASES = [
    ("max_pool2d 8x64x112x112 k3 s2 p1", (8, 64, 112, 112),
     {"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1},
     lambda t: F.max_pool2d(t, 3, 2, 1)),
    ("max_pool2d 8x64x112x112 k3 s2 p1 +indices", (8, 64, 112, 112),
     {"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1,
      "return_indices": True},
     lambda t: F.max_pool2d(t, 3, 2, 1, return_indices=True)),
    ("max_pool2d 8x64x56x56 k2 s2", (8, 64, 56, 56),
     {"op": "max_pool2d", "kernel_size": 2}, lambda t: F.max_pool2d(t, 2)),
    ("avg_pool2d 8x64x112x112 k2 s2", (8, 64, 112, 112),
     {"op": "avg_pool2d", "kernel_size": 2}, lambda t: F.avg_pool2d(t, 2)),
    ("avg_pool2d 8x64x56x56 k3 s1 p1", (8, 64, 56, 56),
     {"op": "avg_pool2d", "kernel_size": 3, "stride": 1, "padding": 1},
     lambda t: F.avg_pool2d(t, 3, 1, 1)),
    ("lp_pool2d p=2 8x64x56x56 k2", (8, 64, 56, 56),
     {"op": "lp_pool2d", "norm_type": 2.0, "kernel_size": 2},
     lambda t: F.lp_pool2d(t, 2.0, 2)),
    ("adaptive_avg_pool2d 8x64x112x112 -> 7x7", (8, 64, 112, 112),
     {"op": "adaptive_avg_pool2d", "output_size": 7},
     lambda t: F.adaptive_avg_pool2d(t, 7)),
    ("adaptive_max_pool2d 8x64x112x112 -> 7x7", (8, 64, 112, 112),
     {"op": "adaptive_max_pool2d", "output_size": 7},
     lambda t: F.adaptive_max_pool2d(t, 7)),
    ("global_avg_pool 32x512x7x7", (32, 512, 7, 7),
     {"op": "global_avg_pool"}, lambda t: F.adaptive_avg_pool2d(t, 1)),
    ("max_pool3d 2x32x32x56x56 k3 s2 p1", (2, 32, 32, 56, 56),
     {"op": "max_pool3d", "kernel_size": 3, "stride": 2, "padding": 1},
     lambda t: F.max_pool3d(t, 3, 2, 1)),
    ("avg_pool1d 64x64x4096 k4 s4", (64, 64, 4096),
     {"op": "avg_pool1d", "kernel_size": 4}, lambda t: F.avg_pool1d(t, 4)),
]


def median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def first(r):
    return r[0] if isinstance(r, tuple) else r


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"threads={args.threads} dtype={args.dtype} repeats={args.repeats} "
          f"torch={torch.__version__} pyconv={pyconv.__version__}")
    print(f"{'case':44s} {'torch ms':>9s} {'pyconv ms':>9s} {'ratio':>6s} {'maxdiff':>9s}")
    for label, shape, spec, peer in CASES:
        x = rng.standard_normal(shape).astype(args.dtype)
        t = torch.from_numpy(x)
        op = pyconv.Conv(spec)
        ours = first(op.apply(x, n_threads=args.threads))
        theirs = first(peer(t)).numpy()
        diff = float(np.max(np.abs(ours - theirs)))
        t_torch = median_time(lambda: peer(t), args.repeats)
        t_ours = median_time(lambda: op.apply(x, n_threads=args.threads), args.repeats)
        print(f"{label:44s} {t_torch * 1e3:9.2f} {t_ours * 1e3:9.2f} "
              f"{t_torch / t_ours:6.1f} {diff:9.2e}")


if __name__ == "__main__":
    main()
