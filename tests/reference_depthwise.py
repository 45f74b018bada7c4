"""Float64 NumPy references for depthwise, pointwise and separable convolution.

Written from the definitions, independent of pyconv's kernels: padding through
``np.pad`` (via ``reference.pad_input``), then explicit loops over kernel taps.
"""
import itertools

import numpy as np

from reference import pad_input


def depthwise_nd(x, weight, bias, stride, pads, dilation, multiplier, mode="zeros",
                 value=0.0):
    """Output channel ``c*m + j`` = input channel ``c`` cross-correlated with filter
    ``weight[c*m + j, 0]`` (plus ``bias[c*m + j]``)."""
    xp = pad_input(np.asarray(x, np.float64), pads, mode, value)
    w = np.asarray(weight, np.float64)
    N, C = xp.shape[:2]
    k = w.shape[2:]
    rank = len(k)
    out_sp = [(xp.shape[2 + a] - dilation[a] * (k[a] - 1) - 1) // stride[a] + 1
              for a in range(rank)]
    y = np.zeros((N, C * multiplier, *out_sp))
    for c in range(C):
        for j in range(multiplier):
            co = c * multiplier + j
            for tap in itertools.product(*[range(n) for n in k]):
                window = tuple(slice(tap[a] * dilation[a],
                                     tap[a] * dilation[a] + (out_sp[a] - 1) * stride[a] + 1,
                                     stride[a]) for a in range(rank))
                y[:, co] += w[(co, 0) + tap] * xp[(slice(None), c) + window]
            if bias is not None:
                y[:, co] += float(bias[co])
    return y


def pointwise_nd(x, weight, bias, stride, groups=1):
    """1x1 convolution: subsample by ``stride``, then a per-position channel mix."""
    x = np.asarray(x, np.float64)
    rank = x.ndim - 2
    xs = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)]
    w = np.asarray(weight, np.float64).reshape(weight.shape[0], -1)
    C_in, C_out = x.shape[1], w.shape[0]
    cin_g, cout_g = C_in // groups, C_out // groups
    y = np.zeros((x.shape[0], C_out) + xs.shape[2:])
    for g in range(groups):
        for o in range(cout_g):
            co = g * cout_g + o
            for i in range(cin_g):
                y[:, co] += w[co, i] * xs[:, g * cin_g + i]
    if bias is not None:
        y += np.asarray(bias, np.float64).reshape((1, -1) + (1,) * rank)
    return y


def separable_nd(x, params, stride, pads, dilation, multiplier, mode="zeros", value=0.0):
    """Depthwise (with ``depthwise_bias`` if present) then pointwise."""
    mid = depthwise_nd(x, params["depthwise_weight"], params.get("depthwise_bias"),
                       stride, pads, dilation, multiplier, mode, value)
    return pointwise_nd(mid, params["pointwise_weight"], params.get("pointwise_bias"),
                        [1] * (np.ndim(x) - 2))
