"""Plain float64 NumPy reference for deformable convolution in 1, 2 and 3 dimensions.

Written from the definition (SEMANTICS.md, torchvision's rules), one sample at a
time, independent of pyconv's kernels: for output position ``o`` and kernel tap
``k`` the sampling position along axis ``a`` is
``o[a]*stride[a] - pad_lo[a] + k[a]*dilation[a] + offset``; the sample is 0 if any
coordinate is ``<= -1`` or ``>= size``, otherwise the multilinear interpolation of the
``2**rank`` neighbours, a neighbour outside the image counting 0. Padding is therefore
only a shift of the sampling grid (the "zeros" of the padding are the zero samples).
Slow on purpose: use small shapes.
"""
import itertools
import math

import numpy as np


def sample(img, pos):
    """Interpolate ``img`` (C, *spatial) at real coordinates ``pos``; returns (C,)."""
    spatial = img.shape[1:]
    if any(p <= -1 or p >= n for p, n in zip(pos, spatial)):
        return np.zeros(img.shape[0])
    if any(math.isnan(p) for p in pos):
        return np.full(img.shape[0], np.nan)
    lows = [math.floor(p) for p in pos]
    fracs = [p - lo for p, lo in zip(pos, lows)]
    total = np.zeros(img.shape[0])
    for corner in itertools.product((0, 1), repeat=len(pos)):
        idx = tuple(lo + b for lo, b in zip(lows, corner))
        if all(0 <= i < n for i, n in zip(idx, spatial)):
            w = 1.0
            for b, f in zip(corner, fracs):
                w *= f if b else 1.0 - f
            total += w * img[(slice(None),) + idx]
    return total


def output_size(spatial, kernel, stride, pads, dilation):
    return [(n + lo + hi - d * (k - 1) - 1) // s + 1
            for n, k, s, (lo, hi), d in zip(spatial, kernel, stride, pads, dilation)]


def deform_conv_nd(x, offset, weight, bias=None, stride=None, pads=None, dilation=None,
                   groups=1, offset_groups=1, mask=None):
    """Deformable convolution (DCNv1, or DCNv2 with ``mask``) in float64.

    ``offset`` (N, rank*og*K, *out): channel ``g*rank*K + rank*t + a`` is the offset of
    tap ``t`` (row-major over the kernel) along axis ``a``; ``mask`` (N, og*K, *out).
    ``pads`` is a list of ``(lo, hi)`` per axis.
    """
    x = np.asarray(x, np.float64)
    offset = np.asarray(offset, np.float64)
    w = np.asarray(weight, np.float64)
    N, C = x.shape[:2]
    spatial = x.shape[2:]
    kernel = w.shape[2:]
    rank = len(kernel)
    stride = stride or [1] * rank
    dilation = dilation or [1] * rank
    pads = pads or [(0, 0)] * rank
    out_sp = output_size(spatial, kernel, stride, pads, dilation)
    K = math.prod(kernel)
    cpg = C // offset_groups
    assert offset.shape == (N, rank * offset_groups * K, *out_sp), offset.shape
    cols = np.zeros((N, C, K, *out_sp))
    for n in range(N):
        for g in range(offset_groups):
            img = x[n, g * cpg:(g + 1) * cpg]
            for t, tap in enumerate(itertools.product(*[range(k) for k in kernel])):
                for o in itertools.product(*[range(m) for m in out_sp]):
                    pos = [o[a] * stride[a] - pads[a][0] + tap[a] * dilation[a]
                           + offset[(n, g * rank * K + rank * t + a) + o]
                           for a in range(rank)]
                    v = sample(img, pos)
                    if mask is not None:
                        v = v * mask[(n, g * K + t) + o]
                    cols[(n, slice(g * cpg, (g + 1) * cpg), t) + o] = v
    C_out = w.shape[0]
    cin_g, cout_g = C // groups, C_out // groups
    y = np.zeros((N, C_out, *out_sp))
    for g in range(groups):
        cg = cols[:, g * cin_g:(g + 1) * cin_g].reshape(N, cin_g * K, -1)
        wg = w[g * cout_g:(g + 1) * cout_g].reshape(cout_g, cin_g * K)
        y[:, g * cout_g:(g + 1) * cout_g] = np.einsum("ok,nkp->nop", wg, cg).reshape(
            N, cout_g, *out_sp)
    if bias is not None:
        y += np.asarray(bias, np.float64).reshape((1, -1) + (1,) * rank)
    return y
