"""Plain float64 NumPy references for transposed convolution, from the definitions.

``conv_transpose_nd`` scatters: every input value ``x[n, ci, i]`` times every tap
``w[ci, co, t]`` is added at full position ``i*s + t*d``; the output is the window
``[lo, lo + L)`` of that full result, zero-extended past its end. Slow on purpose:
use small shapes.
"""
import itertools

import numpy as np


def torch_style_geometry(in_sizes, kernel, stride, dilation, pads, output_padding):
    """``(crops, lengths)`` for explicit ``(lo, hi)`` pads, from PyTorch's formula."""
    crops, lengths = [], []
    for n, k, s, d, (lo, hi), op in zip(in_sizes, kernel, stride, dilation, pads,
                                        output_padding):
        crops.append(lo)
        lengths.append((n - 1) * s - lo - hi + d * (k - 1) + op + 1)
    return crops, lengths


def tf_same_geometry(in_sizes, kernel, stride, dilation, out_sizes=None, lower=False):
    """``(crops, lengths)`` for TF's SAME transposed conv: the adjoint of a SAME conv
    whose input has the output's length (``in*s`` unless ``out_sizes`` says)."""
    crops, lengths = [], []
    for a, (n, k, s, d) in enumerate(zip(in_sizes, kernel, stride, dilation)):
        length = n * s if out_sizes is None else out_sizes[a]
        assert int(np.ceil(length / s)) == n
        total = max((n - 1) * s + d * (k - 1) + 1 - length, 0)
        crops.append(total - total // 2 if lower else total // 2)
        lengths.append(length)
    return crops, lengths


def conv_transpose_nd(x, weight, bias, stride, dilation, groups, crops, lengths):
    """Grouped N-D transposed convolution in float64 by an explicit scatter loop."""
    x = np.asarray(x, np.float64)
    w = np.asarray(weight, np.float64)
    N, C_in = x.shape[:2]
    sp = x.shape[2:]
    k = w.shape[2:]
    rank = len(k)
    cin_g, cout_g = C_in // groups, w.shape[1]
    C_out = cout_g * groups
    full = [max((sp[a] - 1) * stride[a] + dilation[a] * (k[a] - 1) + 1,
                crops[a] + lengths[a]) for a in range(rank)]
    y = np.zeros((N, C_out, *full))
    for ci in range(C_in):
        g = ci // cin_g
        for pos in itertools.product(*[range(n) for n in sp]):
            v = x[(slice(None), ci) + pos]  # (N,)
            for tap in itertools.product(*[range(kk) for kk in k]):
                at = tuple(pos[a] * stride[a] + tap[a] * dilation[a] for a in range(rank))
                y[(slice(None), slice(g * cout_g, (g + 1) * cout_g)) + at] += (
                    v[:, None] * w[(ci, slice(None)) + tap][None, :])
    window = tuple(slice(crops[a], crops[a] + lengths[a]) for a in range(rank))
    y = y[(slice(None), slice(None)) + window]
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape((1, -1) + (1,) * rank)
    return y
