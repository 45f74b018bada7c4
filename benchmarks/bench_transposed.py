"""Transposed convolution: pyconv vs torch.nn.functional.conv_transpose{1,2,3}d.

Both run in this process at the same thread count (``torch.set_num_threads(n)``,
``n_threads=n``): warm-up, then timed runs alternating pyconv and torch so that load
drifts hit both; medians and the ratio torch / pyconv (> 1: pyconv is faster). Every
case checks that the two agree.

Run: ``python benchmarks/bench_transposed.py --threads 2``
"""
import argparse
import time

import numpy as np

import pyconv

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


def median_pair(run_a, run_b, repeats):
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_a()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_b()
        tb.append(time.perf_counter() - t0)
    return float(np.median(ta)), float(np.median(tb))


def main(argv=None):
    import torch
    import torch.nn.functional as F

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="first case only")
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    configs = CONFIGS[:1] if args.quick else CONFIGS

    header = (f"{'case':<34} {'shape':<16} {'dtype':<8} {'thr':>3} {'pyconv ms':>10} "
              f"{'torch ms':>9} {'ratio':>6} {'GFLOP/s':>8} {'agree':>8}")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for name, shape, spec in configs:
        for dtype in (np.float32, np.float64):
            conv = pyconv.Conv(spec, seed=0, dtype=dtype)
            x = rng.standard_normal(shape).astype(dtype)
            out = np.empty(conv.output_shape(shape), dtype)
            xt = torch.from_numpy(x)
            w = torch.from_numpy(np.array(conv.params["weight"]))
            b = torch.from_numpy(np.array(conv.params["bias"]))
            fn = getattr(F, spec["op"])
            kw = {k: spec[k] for k in ("stride", "padding", "output_padding", "groups")
                  if k in spec}
            for n in threads:
                torch.set_num_threads(n)

                def mine(n=n):
                    return conv.apply(x, out=out, n_threads=n)

                def peer():
                    with torch.no_grad():
                        return fn(xt, w, b, **kw)

                a, p = mine(), peer().numpy()  # warm-up and agreement
                err = float(np.abs(a - p).max() / max(np.abs(p).max(), 1e-30))
                tol = 1e-4 if dtype == np.float32 else 1e-10
                mine(), peer()
                t_mine, t_peer = median_pair(mine, peer, args.repeats)
                gflops = conv.flops(shape) / t_mine / 1e9
                flag = "" if err <= tol else "  MISMATCH"
                print(f"{name:<34} {'x'.join(map(str, shape)):<16} "
                      f"{np.dtype(dtype).name:<8} {n:>3} {t_mine * 1e3:>10.2f} "
                      f"{t_peer * 1e3:>9.2f} {t_peer / t_mine:>6.2f} {gflops:>8.1f} "
                      f"{err:>8.1e}{flag}")


if __name__ == "__main__":
    main()
