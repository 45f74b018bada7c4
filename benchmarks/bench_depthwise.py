"""Depthwise, separable and grouped convolution: pyconv vs torch.nn.functional.conv2d.

Run: ``python benchmarks/bench_depthwise.py --threads 1,2``

Timed with :mod:`benchmarks.harness` (one process, equal threads, medians, ratio
torch / pyconv, agreement check). The peer is ``conv2d(groups=...)`` (two convs for
separable). The grouped case runs through ``conv2d``'s "auto" dispatch, which sends
8 channels per group at stride 1 to the direct kernel's flat form, not to Winograd
F(4x4, 3x3), which would take the layer otherwise (checked below). pyconv writes into a
preallocated output (``out=``), except in the cases named "new output", where both
sides allocate theirs on every call (PyTorch always does).
"""
import os
import sys

import numpy as np

if not __package__:  # run as a script: benchmarks.* from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import Case, main_for  # noqa: E402

import pyconv  # noqa: E402

DW = {"op": "depthwise_conv2d", "in_channels": 256, "kernel_size": 3, "padding": 1}
CONFIGS = [
    # name, input shape, spec, dtypes
    ("depthwise 3x3 p1", (8, 256, 56, 56), DW, (np.float32, np.float64)),
    ("depthwise 3x3 p1, new output", (8, 256, 56, 56), DW, (np.float32, np.float64)),
    ("depthwise 3x3 s2 p1", (8, 256, 56, 56), dict(DW, stride=2), (np.float32, np.float64)),
    # EfficientNet / MobileNetV3 (5x5) and ConvNeXt (7x7) depthwise layers
    ("depthwise 5x5 p2", (8, 256, 56, 56), dict(DW, kernel_size=5, padding=2),
     (np.float32, np.float64)),
    ("depthwise 5x5 s2 p2", (8, 256, 56, 56), dict(DW, kernel_size=5, padding=2, stride=2),
     (np.float32, np.float64)),
    ("depthwise 7x7 p3", (8, 256, 56, 56), dict(DW, kernel_size=7, padding=3),
     (np.float32, np.float64)),
    ("separable 32->64 3x3 p1", (8, 32, 112, 112),
     {"op": "separable_conv2d", "in_channels": 32, "out_channels": 64, "kernel_size": 3,
      "padding": 1}, (np.float32,)),
    ("grouped g32 (8/group) 3x3 p1", (8, 256, 56, 56),
     {"op": "conv2d", "in_channels": 256, "out_channels": 256, "kernel_size": 3,
      "padding": 1, "groups": 32}, (np.float32,)),
]


def _peer(torch, spec, params):
    F = torch.nn.functional
    t = {k: torch.from_numpy(np.array(v)) for k, v in params.items()}
    kw = {"stride": spec.get("stride", 1), "padding": spec["padding"]}
    if spec["op"] == "separable_conv2d":
        def peer(xt):
            mid = F.conv2d(xt, t["depthwise_weight"], groups=spec["in_channels"], **kw)
            return F.conv2d(mid, t["pointwise_weight"], t["pointwise_bias"])
        return peer
    groups = spec.get("groups", spec["in_channels"])
    return lambda xt: F.conv2d(xt, t["weight"], t["bias"], groups=groups, **kw)


def make_cases():
    import torch

    from pyconv.ops import _winograd, depthwise

    cases = []
    rng = np.random.default_rng(0)
    for name, shape, spec, dtypes in CONFIGS:
        for dtype in dtypes:
            conv = pyconv.Conv(spec, seed=0, dtype=dtype)
            if spec["op"] == "conv2d":
                assert _winograd.winograd_preferred(conv.spec, shape, dtype) == "F4"
                assert depthwise.flat_beats_winograd(conv.spec)
                assert depthwise.prefers_direct(conv.spec, shape, dtype, shape[-1])
            x = rng.standard_normal(shape).astype(dtype)
            out = np.empty(conv.output_shape(shape), dtype)
            xt = torch.from_numpy(x)
            peer_fn = _peer(torch, spec, conv.params)

            def run(n, conv=conv, x=x, out=None if "new output" in name else out):
                return conv.apply(x, out=out, n_threads=n)

            def peer(n, peer_fn=peer_fn, xt=xt):
                with torch.no_grad():
                    return peer_fn(xt)

            # plain depthwise moves more bytes than it does arithmetic: its ceiling is
            # the copy bandwidth (input read + output written), the others' the GEMM
            nbytes = x.nbytes + out.nbytes if spec["op"] == "depthwise_conv2d" else 0
            cases.append(Case(name, "x".join(map(str, shape)), np.dtype(dtype).name, run,
                              peer, flops=conv.flops(shape), nbytes=nbytes,
                              rtol=1e-5 if dtype == np.float32 else 1e-12))
    return cases


if __name__ == "__main__":
    main_for(make_cases, __doc__)
