"""Time pyconv's activations against torch.nn.functional at equal thread counts.

Usage: ``python benchmarks/bench_activations.py --threads 2 [--shape 8 64 112 112]``

Each case: warm-up, then ``--repeats`` timed calls of each library in the same process,
median reported, ratio = torch / pyconv (above 1: pyconv is faster). Out-of-place
(fresh output) and in-place (``out=x`` / torch's ``inplace=True``) are both timed, and
every case checks that the two results agree.
"""
import argparse
import statistics
import time

import numpy as np

import pyconv

CASES = [
    ("relu", {"op": "relu"}, lambda F, t, ip: F.relu(t, inplace=ip)),
    ("gelu", {"op": "gelu"}, lambda F, t, ip: F.gelu(t)),
    ("gelu_tanh", {"op": "gelu", "approximate": "tanh"},
     lambda F, t, ip: F.gelu(t, approximate="tanh")),
    ("sigmoid", {"op": "sigmoid"}, lambda F, t, ip: t.sigmoid_() if ip else t.sigmoid()),
]


def median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shape", type=int, nargs="+", default=[8, 64, 112, 112])
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    shape = tuple(args.shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3
    tx = torch.from_numpy(x)
    mb = x.nbytes / 2**20
    print(f"shape {shape} float32 ({mb:.0f} MiB), threads {args.threads}, "
          f"median of {args.repeats}")
    print(f"{'op':<10} {'mode':<8} {'pyconv ms':>10} {'torch ms':>10} {'torch/pyconv':>13}"
          f" {'max|diff|':>10}")
    for name, spec, tfn in CASES:
        conv = pyconv.Conv(spec)
        y = conv.apply(x, n_threads=args.threads)
        with torch.no_grad():
            want = tfn(F, tx, False).numpy()
        # torch's float32 gelu is less accurate in the negative tail: compare absolutely.
        diff = float(np.max(np.abs(y - want)))
        assert diff < 1e-5, (name, diff)

        px = median_time(lambda: conv.apply(x, n_threads=args.threads), args.repeats)
        tt = median_time(lambda: tfn(F, tx, False), args.repeats)
        print(f"{name:<10} {'fresh':<8} {px * 1e3:10.2f} {tt * 1e3:10.2f} {tt / px:13.2f}"
              f" {diff:10.1e}")
        if name in ("relu", "sigmoid"):
            buf = x.copy()
            tbuf = torch.from_numpy(x.copy())
            px = median_time(lambda: conv.apply(buf, out=buf, n_threads=args.threads),
                             args.repeats)
            tt = median_time(lambda: tfn(F, tbuf, True), args.repeats)
            print(f"{name:<10} {'in place':<8} {px * 1e3:10.2f} {tt * 1e3:10.2f} "
                  f"{tt / px:13.2f}")


if __name__ == "__main__":
    main()
