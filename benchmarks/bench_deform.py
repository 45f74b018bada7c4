"""Deformable convolution: pyconv vs torchvision.ops.deform_conv2d (CPU).

Cases: DCNv2 (with mask) and DCNv1 on 4x64x56x56 -> 64, 3x3, pad 1, float32 and
float64; offset and weight groups; stride 2; the learned ("Pack") form against
torch's conv2d + torchvision. Both run in one process at the same thread count
(``torch.set_num_threads(n)``, ``n_threads=n``). torchvision is not a dependency of
pyconv: without it ``make_cases`` raises ImportError and the suite skips this file.
Run it with an interpreter that has torch, torchvision and pyconv's dependencies::

    PYTHONPATH=. python benchmarks/bench_deform.py --threads 1,2
"""
import os
import sys

import numpy as np

if not __package__:  # run as a script: benchmarks.* from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import Case, main_for  # noqa: E402

import pyconv  # noqa: E402

# name, N, C_in, C_out, H, W, k, stride, pad, groups, offset_groups, v2, learned, dtype
CONFIGS = [
    ("deform v2 3x3 p1", 4, 64, 64, 56, 56, 3, 1, 1, 1, 1, True, False, np.float32),
    ("deform v1 3x3 p1", 4, 64, 64, 56, 56, 3, 1, 1, 1, 1, False, False, np.float32),
    ("deform v2 3x3 p1", 4, 64, 64, 56, 56, 3, 1, 1, 1, 1, True, False, np.float64),
    ("deform v2 og4 g2", 1, 128, 128, 28, 28, 3, 1, 1, 2, 4, True, False, np.float32),
    ("deform v2 s2", 2, 64, 128, 56, 56, 3, 2, 1, 1, 1, True, False, np.float32),
    ("deform v2 learned (Pack)", 4, 64, 64, 56, 56, 3, 1, 1, 1, 1, True, True,
     np.float32),
]


def _case(cfg, torch, tv_deform):
    name, N, C, Co, H, W, k, s, p, g, og, v2, learned, dtype = cfg
    rng = np.random.default_rng(0)
    spec = {"op": "deform_conv2d", "in_channels": C, "out_channels": Co,
            "kernel_size": k, "stride": s, "padding": p, "groups": g,
            "offset_groups": og, "modulated": v2,
            "offsets": "learned" if learned else "input"}
    Ho = (H + 2 * p - k) // s + 1
    Wo = (W + 2 * p - k) // s + 1
    K = k * k
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    params = {"weight": rng.standard_normal((Co, C // g, k, k)) / np.sqrt(C // g * K),
              "bias": rng.standard_normal(Co)}
    inputs = {}
    if learned:
        M = (3 if v2 else 2) * og * K
        params["offset_weight"] = rng.standard_normal((M, C, k, k)) * 0.01
        params["offset_bias"] = rng.standard_normal(M) * 0.5
    else:
        inputs["offset"] = (rng.standard_normal((N, 2 * og * K, Ho, Wo)) * 2).astype(dtype)
        if v2:
            inputs["mask"] = rng.uniform(0, 1, (N, og * K, Ho, Wo)).astype(dtype)
    params = {n: a.astype(dtype) for n, a in params.items()}
    conv = pyconv.Conv(spec, params=params)
    out = np.empty(conv.output_shape(x.shape), dtype)

    def run(n):
        return conv.apply(x, out=out, n_threads=n, **inputs)

    tt = {n: torch.from_numpy(a.copy()) for n, a in params.items()}
    tx = torch.from_numpy(x)
    toff = torch.from_numpy(inputs["offset"]) if "offset" in inputs else None
    tmask = torch.from_numpy(inputs["mask"]) if "mask" in inputs else None

    def peer(n):
        with torch.no_grad():
            if not learned:
                return tv_deform(tx, toff, tt["weight"], tt["bias"], stride=s, padding=p,
                                 mask=tmask)
            o = torch.nn.functional.conv2d(tx, tt["offset_weight"], tt["offset_bias"],
                                           stride=s, padding=p)
            if v2:
                o1, o2, m = torch.chunk(o, 3, dim=1)
                return tv_deform(tx, torch.cat((o1, o2), dim=1), tt["weight"],
                                 tt["bias"], stride=s, padding=p, mask=torch.sigmoid(m))
            return tv_deform(tx, o, tt["weight"], tt["bias"], stride=s, padding=p)

    shape = f"{N}x{C}x{H}x{W}->{Co}"
    return Case(name, shape, np.dtype(dtype).name, run, peer,
                flops=conv.flops(x.shape), peer_name="torchvision",
                rtol=1e-4 if dtype == np.float32 else 1e-10)


def make_cases():
    import torch
    from torchvision.ops import deform_conv2d as tv_deform

    return [_case(cfg, torch, tv_deform) for cfg in CONFIGS]


if __name__ == "__main__":
    main_for(make_cases, __doc__)
