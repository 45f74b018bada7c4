"""Depthwise, separable and grouped convolution: pyconv vs PyTorch at equal threads.

Usage: ``python benchmarks/bench_depthwise.py --threads 2 [--repeats 7]``

Each case runs pyconv and ``torch.nn.functional.conv2d`` (two convs for separable) in
this process on the same data, with ``torch.set_num_threads(n)`` and
``n_threads=n``: warm-up, then ``repeats`` timed calls each; reports medians, the
ratio torch/pyconv (> 1: pyconv faster) and the largest difference between them
relative to the output's magnitude.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def median_ms(fn, repeats):
    fn()  # warm-up: workspaces, caches, thread pools
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def cases(torch):
    F = torch.nn.functional
    t = torch.from_numpy

    def depthwise(dtype):
        spec = {"op": "depthwise_conv2d", "in_channels": 256, "kernel_size": 3,
                "padding": 1}

        def peer(x, p):
            return F.conv2d(x, t(p["weight"]), t(p["bias"]), padding=1, groups=256)
        return f"depthwise 8x256x56x56 3x3 p1 {np.dtype(dtype).name}", spec, \
            (8, 256, 56, 56), dtype, peer

    def separable():
        spec = {"op": "separable_conv2d", "in_channels": 32, "out_channels": 64,
                "kernel_size": 3, "padding": 1}

        def peer(x, p):
            mid = F.conv2d(x, t(p["depthwise_weight"]), padding=1, groups=32)
            return F.conv2d(mid, t(p["pointwise_weight"]), t(p["pointwise_bias"]))
        return "separable 8x32x112x112 -> 64 3x3 p1 float32", spec, \
            (8, 32, 112, 112), np.float32, peer

    def grouped():
        spec = {"op": "conv2d", "in_channels": 256, "out_channels": 256,
                "kernel_size": 3, "padding": 1, "groups": 32}

        def peer(x, p):
            return F.conv2d(x, t(p["weight"]), t(p["bias"]), padding=1, groups=32)
        return "grouped conv2d 8x256x56x56 g32 (8/group) 3x3 p1 float32", spec, \
            (8, 256, 56, 56), np.float32, peer

    return [depthwise(np.float32), depthwise(np.float64), separable(), grouped()]


def grouped_runner(conv):
    """The direct grouped kernel called as conv.py would dispatch to it."""
    from pyconv.ops import depthwise

    op, spec, params = conv.op, conv.spec, conv.params

    def run(x, n_threads):
        _, pads, out_spatial = op.geometry(spec, x.shape)
        out = np.empty(conv.output_shape(x.shape), x.dtype)
        return depthwise.grouped_direct_forward(op.name, x, params["weight"],
                                                params["bias"], out, spec, pads,
                                                out_spatial, n_threads)
    return run


def main():
    import torch

    import pyconv
    from pyconv.ops import depthwise

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    n = args.threads
    torch.set_num_threads(n)
    rng = np.random.default_rng(0)
    print(f"threads={n} repeats={args.repeats} torch {torch.__version__} "
          f"pyconv {pyconv.__version__}")
    print(f"{'case':58s} {'pyconv ms':>10s} {'torch ms':>10s} {'ratio':>7s} {'max err':>9s}")
    for name, spec, shape, dtype, peer in cases(torch):
        conv = pyconv.Conv(spec, seed=0, dtype=dtype)
        x = rng.standard_normal(shape).astype(dtype)
        xt = torch.from_numpy(x)
        params = {k: v.copy() for k, v in conv.params.items()}  # writable for torch
        if spec["op"] == "conv2d":
            assert depthwise.prefers_direct(conv.spec, shape)
            run = grouped_runner(conv)
            ours = lambda: run(x, n)  # noqa: E731
            name += " [direct]"
        else:
            out = np.empty(conv.output_shape(shape), dtype)
            ours = lambda: conv.apply(x, out=out, n_threads=n)  # noqa: E731
        theirs = lambda: peer(xt, params)  # noqa: E731
        with torch.no_grad():
            err = float(np.abs(ours() - theirs().numpy()).max())
            scale = float(np.abs(theirs().numpy()).max())
            t_ours = median_ms(ours, args.repeats)
            t_theirs = median_ms(theirs, args.repeats)
        print(f"{name:58s} {t_ours:10.2f} {t_theirs:10.2f} {t_theirs / t_ours:7.2f} "
              f"{err / scale:9.1e}")
        if spec["op"] == "conv2d":  # the im2col + GEMM path it replaces, for reference
            out = np.empty(conv.output_shape(shape), dtype)
            t_gemm = median_ms(lambda: conv.apply(x, out=out, n_threads=n), args.repeats)
            print(f"{'  (same on conv2d im2col + GEMM)':58s} {t_gemm:10.2f}")


if __name__ == "__main__":
    main()
