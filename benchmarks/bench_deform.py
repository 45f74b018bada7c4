"""Benchmark pyconv's deformable convolution against torchvision's CPU kernel.

Both run in this process at the same thread count (``torch.set_num_threads(n)``,
``n_threads=n``), after a warm-up; the script prints medians of several repeats,
the ratio torchvision/pyconv (above 1: pyconv is faster) and the largest difference
between the two outputs relative to the output's magnitude.

torchvision is not a dependency of pyconv; run this with an interpreter that has
torch, torchvision and pyconv's runtime dependencies (numpy, scipy, threadpoolctl)::

    PYTHONPATH=. python benchmarks/bench_deform.py --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import pyconv


def median_time(fn, repeats):
    fn()  # warm-up (workspaces, thread pools, BLAS packing buffers)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# (label, N, C_in, C_out, H, W, k, stride, pad, groups, offset_groups, v2, learned, dtype)
CASES = [
    ("v2 4x64x56x56->64 3x3", 4, 64, 64, 56, 56, 3, 1, 1, 1, 1, True, False, "float32"),
    ("v1 4x64x56x56->64 3x3", 4, 64, 64, 56, 56, 3, 1, 1, 1, 1, False, False, "float32"),
    ("v2 float64", 4, 64, 64, 56, 56, 3, 1, 1, 1, 1, True, False, "float64"),
    ("v2 og4 g2 1x128x28x28->128", 1, 128, 128, 28, 28, 3, 1, 1, 2, 4, True, False,
     "float32"),
    ("v2 stride 2 2x64x56x56->128", 2, 64, 128, 56, 56, 3, 2, 1, 1, 1, True, False,
     "float32"),
    ("v2 learned (Pack) 4x64x56x56", 4, 64, 64, 56, 56, 3, 1, 1, 1, 1, True, True,
     "float32"),
]


def run_case(case, threads, repeats, torch, tv_deform):
    label, N, C, Co, H, W, k, s, p, g, og, v2, learned, dtype = case
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
        M = 3 * og * K if v2 else 2 * og * K
        params["offset_weight"] = rng.standard_normal((M, C, k, k)) * 0.01
        params["offset_bias"] = rng.standard_normal(M) * 0.5
    else:
        inputs["offset"] = (rng.standard_normal((N, 2 * og * K, Ho, Wo)) * 2).astype(dtype)
        if v2:
            inputs["mask"] = rng.uniform(0, 1, (N, og * K, Ho, Wo)).astype(dtype)
    conv = pyconv.Conv(spec, params={n: a.astype(dtype) for n, a in params.items()})
    out = np.empty(conv.output_shape(x.shape), dtype)
    t_pc = median_time(lambda: conv.apply(x, out=out, n_threads=threads, **inputs),
                       repeats)
    y = conv.apply(x, n_threads=threads, **inputs)
    line = f"{label:32s} {dtype:8s} pyconv {t_pc * 1e3:8.2f} ms"
    if tv_deform is None:
        return line + "   (torchvision not available)"

    tt = {n: torch.from_numpy(np.ascontiguousarray(a, dtype)) for n, a in params.items()}
    tx = torch.from_numpy(x)
    if learned:
        def peer():
            o = torch.nn.functional.conv2d(tx, tt["offset_weight"], tt["offset_bias"],
                                           stride=s, padding=p)
            if v2:
                o1, o2, m = torch.chunk(o, 3, dim=1)
                return tv_deform(tx, torch.cat((o1, o2), dim=1), tt["weight"],
                                 tt["bias"], stride=s, padding=p, mask=torch.sigmoid(m))
            return tv_deform(tx, o, tt["weight"], tt["bias"], stride=s, padding=p)
    else:
        toff = torch.from_numpy(inputs["offset"])
        tmask = torch.from_numpy(inputs["mask"]) if v2 else None

        def peer():
            return tv_deform(tx, toff, tt["weight"], tt["bias"], stride=s, padding=p,
                             mask=tmask)
    with torch.no_grad():
        t_tv = median_time(peer, repeats)
        ref = peer().numpy()
    err = float(np.max(np.abs(y.astype(np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))
    tol = 1e-4 if dtype == "float32" else 1e-10
    status = "ok" if err <= tol else "MISMATCH"
    return (line + f"  torchvision {t_tv * 1e3:8.2f} ms  ratio {t_tv / t_pc:6.2f}x"
            f"  rel.err {err:.1e} {status}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    try:
        import torch
        from torchvision.ops import deform_conv2d as tv_deform
        torch.set_num_threads(args.threads)
        peer = f"torch {torch.__version__}"
    except ImportError:
        torch = tv_deform = None
        peer = "no torchvision"
    print(f"pyconv {pyconv.__version__}, {peer}, threads={args.threads}, "
          f"median of {args.repeats}")
    for case in CASES:
        print(run_case(case, args.threads, args.repeats, torch, tv_deform), flush=True)


if __name__ == "__main__":
    main()
