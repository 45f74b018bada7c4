"""The demo: a set of ops run on the embedded sample image, timed and pictured."""
from __future__ import annotations

import os
import time

import numpy as np

from pyconv._conv import Conv
from pyconv._png import to_uint8, write_png
from pyconv._registry import available_ops
from pyconv._sample import sample_image

SOBEL_X = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def gaussian(size, sigma):
    """A normalised ``size x size`` Gaussian kernel (also used by the docs' gallery)."""
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-t**2 / (2 * sigma**2))
    k = np.outer(g, g)
    return k / k.sum()


def demo_cases():
    """``(title, Conv, input)`` triples; ops not registered in this build are skipped."""
    gray = sample_image(np.float32, gray=True)
    rgb = sample_image(np.float32)
    edges = np.stack([SOBEL_X, SOBEL_X.T])[:, None]
    cases = [
        ("Sobel edges (x, y), reflect padding",
         Conv({"op": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3,
               "padding": "same", "padding_mode": "reflect", "bias": False},
              params={"weight": edges}), gray),
        ("Laplacian, symmetric padding",
         Conv({"op": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3,
               "padding": 1, "padding_mode": "symmetric", "bias": False},
              params={"weight": LAPLACIAN[None, None]}), gray),
        ("Gaussian blur 9x9 per colour (groups=3)",
         Conv({"op": "conv2d", "in_channels": 3, "out_channels": 3, "kernel_size": 9,
               "groups": 3, "padding": "same", "padding_mode": "replicate", "bias": False},
              params={"weight": np.repeat(gaussian(9, 2.0)[None, None], 3, 0)}), rgb),
        ("Dilated 3x3 (dilation 4), zeros",
         Conv({"op": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3,
               "dilation": 4, "padding": "same", "bias": False},
              params={"weight": np.full((1, 1, 3, 3), 1 / 9)}), gray),
        ("Strided 'same' 5x5 stride 3, 3 -> 16, ReLU",
         Conv({"op": "conv2d", "in_channels": 3, "out_channels": 16, "kernel_size": 5,
               "stride": 3, "padding": "same", "activation": "relu"}, seed=0), rgb),
        ("conv1d over image rows, k7, circular",
         Conv({"op": "conv1d", "in_channels": 128, "out_channels": 32, "kernel_size": 7,
               "padding": "same", "padding_mode": "circular"}, seed=0), gray[0]),
        ("conv3d over (colour, H, W), 3x3x3",
         Conv({"op": "conv3d", "in_channels": 1, "out_channels": 4, "kernel_size": 3,
               "padding": 1}, seed=0), rgb[:, None]),
    ]
    extra = [
        ("max_pool2d 3x3 stride 2", {"op": "max_pool2d", "kernel_size": 3, "stride": 2,
                                     "padding": 1}, rgb),
        ("avg_pool2d 2x2", {"op": "avg_pool2d", "kernel_size": 2}, rgb),
        ("adaptive_avg_pool2d -> 7x7", {"op": "adaptive_avg_pool2d", "output_size": 7}, rgb),
        ("depthwise 3x3, multiplier 2", {"op": "depthwise_conv2d", "in_channels": 3,
                                         "depth_multiplier": 2, "kernel_size": 3,
                                         "padding": 1}, rgb),
        ("separable 3x3, 3 -> 16", {"op": "separable_conv2d", "in_channels": 3,
                                    "out_channels": 16, "kernel_size": 3, "padding": 1}, rgb),
        ("conv_transpose2d k4 s2 p1, 3 -> 3", {"op": "conv_transpose2d", "in_channels": 3,
                                               "out_channels": 3, "kernel_size": 4,
                                               "stride": 2, "padding": 1}, rgb),
        ("gelu", {"op": "gelu"}, rgb - 0.5),
    ]
    ops = set(available_ops())
    for title, spec, x in extra:
        if spec["op"] in ops:
            cases.append((title, Conv(spec, seed=0), x))
    return cases


def _picture(y):
    """One (H, W) or (H, W, 3) picture of an output batch."""
    y = np.asarray(y[0] if isinstance(y, tuple) else y)
    first = y[0]
    if first.ndim == 2:  # 1-D signals: one row per channel
        return to_uint8(first)
    while first.ndim > 3:
        first = first[first.shape[0] // 2]
    if first.shape[0] == 3:
        return np.moveaxis(to_uint8(first), 0, -1)
    return to_uint8(first[0])


def run_demo(out_dir="pyconv-demo", repeats=3, file=None):
    """Run every demo case, print a table and write one PNG per case to ``out_dir``.

    Returns the list of result rows (dicts).
    """
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_png(os.path.join(out_dir, "00_input.png"),
                  np.moveaxis(to_uint8(sample_image()[0]), 0, -1))
    rows = []
    header = f"{'op':<22} {'what':<44} {'output shape':<20} {'params':>7} {'ms':>8} {'GFLOP/s':>8}"
    print(header, file=file)
    print("-" * len(header), file=file)
    for i, (title, conv, x) in enumerate(demo_cases(), start=1):
        y = conv.apply(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            conv.apply(x)
            times.append(time.perf_counter() - t0)
        ms = float(np.median(times)) * 1e3
        flops = conv.flops(x.shape)
        gflops = flops / (ms * 1e6) if ms > 0 else float("nan")
        shape = conv.output_shape(x.shape)
        rows.append({"op": conv.op.name, "title": title, "output_shape": shape,
                     "params": conv.param_count, "ms": ms, "gflops": gflops})
        print(f"{conv.op.name:<22} {title[:44]:<44} {str(shape):<20} {conv.param_count:>7} "
              f"{ms:>8.3f} {gflops:>8.2f}", file=file)
        if out_dir:
            name = f"{i:02d}_{conv.op.name}.png"
            write_png(os.path.join(out_dir, name), _picture(y))
    if out_dir:
        print(f"\npictures written to {os.path.abspath(out_dir)}", file=file)
    return rows
