"""Time pyconv's activations against torch.nn.functional at equal thread counts.

Usage: ``python benchmarks/bench_activations.py --threads 1,2``

Timed with :mod:`benchmarks.harness` (one process, equal threads, medians, ratio
torch / pyconv, agreement check); in place means ``out=x`` / torch's ``inplace=True``.
"""
import os
import sys

import numpy as np

if not __package__:  # run as a script: benchmarks.* from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import Case, main_for  # noqa: E402

import pyconv  # noqa: E402

CASES = [
    ("relu", {"op": "relu"}, lambda F, t, ip: F.relu(t, inplace=ip)),
    ("gelu", {"op": "gelu"}, lambda F, t, ip: F.gelu(t)),
    ("gelu_tanh", {"op": "gelu", "approximate": "tanh"},
     lambda F, t, ip: F.gelu(t, approximate="tanh")),
    ("sigmoid", {"op": "sigmoid"}, lambda F, t, ip: t.sigmoid_() if ip else t.sigmoid()),
]


def make_cases(shape=(8, 64, 112, 112)):
    import torch
    import torch.nn.functional as F

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3
    tx = torch.from_numpy(x)
    label = "x".join(map(str, shape))
    cases = []
    for name, spec, tfn in CASES:
        conv = pyconv.Conv(spec)
        out = np.empty_like(x)

        def run(n, conv=conv, out=out):
            return conv.apply(x, out=out, n_threads=n)

        def peer(n, tfn=tfn):
            with torch.no_grad():
                return tfn(F, tx, False)

        # torch's float32 gelu is less accurate in the negative tail: loose tolerance
        cases.append(Case(name, label, "float32", run, peer, nbytes=2 * x.nbytes,
                          rtol=2e-6))
    buf, tbuf = x.copy(), torch.from_numpy(x.copy())
    relu = pyconv.Conv({"op": "relu"})
    cases.append(Case("relu in place", label, "float32",
                      lambda n: relu.apply(buf, out=buf, n_threads=n),
                      lambda n: F.relu(tbuf, inplace=True), nbytes=2 * x.nbytes))
    return cases


if __name__ == "__main__":
    main_for(make_cases, __doc__)
