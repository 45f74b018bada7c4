"""Plain, obviously-correct float64 NumPy references, independent of pyconv's kernels.

Padding goes through ``np.pad`` (not pyconv's index tables); the convolution is a
loop over output positions with the window summed explicitly. Slow on purpose: use
small shapes.
"""
import itertools

import numpy as np

#: pyconv padding mode -> np.pad mode
NP_PAD_MODE = {"zeros": "constant", "constant": "constant", "reflect": "reflect",
               "symmetric": "symmetric", "replicate": "edge", "circular": "wrap"}


def same_pads(length, k, s, d, lower=False):
    """TF "same" padding written out from its definition."""
    out = int(np.ceil(length / s))
    total = max((out - 1) * s + d * (k - 1) + 1 - length, 0)
    lo = total // 2
    hi = total - lo
    return (hi, lo) if lower else (lo, hi)


def pad_input(x, pads, mode="zeros", value=0.0):
    """Pad the spatial axes of ``(N, C, *spatial)`` with ``np.pad``."""
    width = [(0, 0), (0, 0)] + [tuple(p) for p in pads]
    if NP_PAD_MODE[mode] == "constant":
        return np.pad(x, width, mode="constant", constant_values=value)
    return np.pad(x, width, mode=NP_PAD_MODE[mode])


def conv_nd(x, weight, bias, stride, pads, dilation, groups, mode="zeros", value=0.0):
    """Grouped N-D cross-correlation in float64 by an explicit loop over outputs."""
    x = pad_input(np.asarray(x, np.float64), pads, mode, value)
    w = np.asarray(weight, np.float64)
    N, C_in = x.shape[:2]
    C_out = w.shape[0]
    k = w.shape[2:]
    rank = len(k)
    cin_g, cout_g = C_in // groups, C_out // groups
    out_sp = [(x.shape[2 + a] - dilation[a] * (k[a] - 1) - 1) // stride[a] + 1
              for a in range(rank)]
    y = np.zeros((N, C_out, *out_sp))
    for pos in itertools.product(*[range(o) for o in out_sp]):
        window = tuple(slice(pos[a] * stride[a],
                             pos[a] * stride[a] + dilation[a] * (k[a] - 1) + 1,
                             dilation[a]) for a in range(rank))
        patch = x[(slice(None), slice(None)) + window]  # (N, C_in, *k)
        for g in range(groups):
            pg = patch[:, g * cin_g:(g + 1) * cin_g].reshape(N, -1)
            wg = w[g * cout_g:(g + 1) * cout_g].reshape(cout_g, -1)
            y[(slice(None), slice(g * cout_g, (g + 1) * cout_g)) + pos] = pg @ wg.T
    if bias is not None:
        y += np.asarray(bias, np.float64).reshape((1, -1) + (1,) * rank)
    return y
