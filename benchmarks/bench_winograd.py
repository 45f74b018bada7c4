"""3x3 stride-1 conv2d: Winograd F2 / F4 vs pyconv's im2col path vs torch.nn.functional.conv2d.

All four run in this one process at the same thread count (torch.set_num_threads(n),
pyconv n_threads=n), interleaved repeat by repeat so drifts in machine load hit all of
them; medians are reported with the ratio torch / method (> 1: faster than torch).
Every method's result is checked against torch's (largest difference relative to the
largest output). The transformed filters are computed once, outside the timing, as a
caller that caches them would.

Run: ``python benchmarks/bench_winograd.py --threads 2``
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import agreement  # noqa: E402

import pyconv  # noqa: E402
from pyconv.ops._winograd import winograd_conv2d, winograd_filter  # noqa: E402

SHAPES = [(8, 64, 56, 56, 64), (8, 128, 28, 28, 128), (1, 64, 224, 224, 64)]
TOL = {"float32": 1e-4, "float64": 1e-10}


def methods(shape, dtype, rng):
    import torch
    import torch.nn.functional as F

    N, C, H, W, C_out = shape
    spec = {"op": "conv2d", "in_channels": C, "out_channels": C_out, "kernel_size": 3,
            "padding": 1}
    conv = pyconv.Conv(spec, seed=0, dtype=dtype)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = np.array(conv.params["weight"])
    b = np.array(conv.params["bias"])
    out = np.empty((N, C_out, H, W), dtype)
    xt, wt, bt = (torch.from_numpy(a.copy()) for a in (x, w, b))
    u = {v: winograd_filter(w, v) for v in ("F2", "F4")}

    def peer(n):
        with torch.no_grad():
            return F.conv2d(xt, wt, bt, padding=1)

    def im2col(n):
        return conv.apply(x, out=out, n_threads=n)

    def wino(variant):
        def run(n):
            return winograd_conv2d(x, None, b, out, [(1, 1), (1, 1)], "zeros", 0.0, False,
                                   1, n_threads=n, variant=variant,
                                   filter_transform=u[variant])
        return run

    return {"torch": peer, "im2col": im2col, "F2": wino("F2"), "F4": wino("F4")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    import torch

    rng = np.random.default_rng(0)
    rows = []
    head = (f"{'shape':<22} {'dtype':<8} {'thr':>3} {'torch ms':>9} {'im2col':>8} "
            f"{'F2':>8} {'F4':>8} {'t/im2col':>8} {'t/F2':>6} {'t/F4':>6} {'err F4':>8}")
    print(head)
    print("-" * len(head))
    for shape in SHAPES:
        for dtype in ("float32", "float64"):
            fns = methods(shape, np.dtype(dtype), rng)
            for n in [int(t) for t in args.threads.split(",")]:
                torch.set_num_threads(n)
                ref = fns["torch"](n).numpy()
                errs = {}
                for name, fn in fns.items():   # warm-up and agreement
                    errs[name] = agreement(fn(n), ref)
                    if not errs[name] <= TOL[dtype]:
                        raise AssertionError(f"{name} {shape} {dtype}: relative error "
                                             f"{errs[name]:.2e} vs torch")
                times = {name: [] for name in fns}
                for _ in range(args.repeats):
                    for name, fn in fns.items():
                        t0 = time.perf_counter()
                        fn(n)
                        times[name].append(time.perf_counter() - t0)
                ms = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
                label = "{}x{}x{}x{}->{}".format(*shape)
                print(f"{label:<22} {dtype:<8} {n:>3} {ms['torch']:>9.1f} {ms['im2col']:>8.1f} "
                      f"{ms['F2']:>8.1f} {ms['F4']:>8.1f} "
                      f"{ms['torch'] / ms['im2col']:>8.2f} {ms['torch'] / ms['F2']:>6.2f} "
                      f"{ms['torch'] / ms['F4']:>6.2f} {errs['F4']:>8.1e}", flush=True)
                rows.append({"shape": label, "dtype": dtype, "threads": n, "ms": ms,
                             "ratio_vs_torch": {k: ms["torch"] / v for k, v in ms.items()},
                             "agreement": errs})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
