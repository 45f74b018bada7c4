"""Transposed convolution as ``prod(stride)`` ordinary convolutions (sub-pixel).

Along one axis, output ``j`` is full position ``j + lo``, where input ``i`` and tap
``t`` land at ``i*s + t*d``. The outputs of one phase ``j = s*q + phi`` are reached
only by the taps with ``(phi + lo - t*d) % s == 0``, from input
``i = q + (phi + lo - t*d) // s``. Taken in decreasing ``t`` those inputs advance by
``d / gcd(d, s)``, so the phase is an ordinary stride-1 cross-correlation of the input
with a dilated sub-kernel, zero-padded (or cropped) so that it has exactly the
phase's ``ceil((L - phi) / s)`` outputs. A phase with no tap, or whose window never
meets the input, gets only the bias.

Each phase runs on the im2col + GEMM convolution with ``C_out/groups`` GEMM rows and
``C_in/groups * taps`` depth, where the col2im algorithm multiplies by
``C_out/groups * prod(k)`` rows and scatter-adds the result: no scatter, and the
GEMM shape that :mod:`pyconv.ops.conv`'s packed tiles serve best. Extra memory: one
phase's output (``1/prod(stride)`` of the output), the phase's sub-kernel, and the
convolution's own workspace; a cropped input (a phase whose window starts past the
input's start, e.g. ``padding > dilation*(k-1)``) is copied.
"""
from __future__ import annotations

import itertools
from math import gcd

import numpy as np

from pyconv.ops._base import prod



def axis_phases(n, length, k, s, d, lo):
    """The phases of one axis of ``n`` inputs and ``length`` outputs.

    Returns a list of ``(phi, q, taps, dilation, (start, stop), (pad_lo, pad_hi))``:
    outputs ``phi, phi + s, ...`` (``q`` of them) are the cross-correlation of
    ``x[start:stop]``, zero-padded by ``pad_lo``/``pad_hi``, with the kernel's taps
    ``taps`` (in that order) at ``dilation``. ``taps`` is empty when the phase gets
    only the bias.
    """
    phases = []
    for phi in range(min(s, length)):
        q = -(-(length - phi) // s)
        taps = tuple(t for t in range(k - 1, -1, -1) if (phi + lo - t * d) % s == 0)
        dilation = d // gcd(d, s)
        if taps:
            e0 = (phi + lo - taps[0] * d) // s          # input read by tap 0 at q = 0
            end = q + e0 + (len(taps) - 1) * dilation   # one past the last input read
            start, stop = max(0, e0), min(n, end)
            if stop > start:
                phases.append((phi, q, taps, dilation, (start, stop),
                               (start - e0, end - stop)))
                continue
        phases.append((phi, q, (), dilation, (0, 0), (0, 0)))
    return phases


def subpixel_weight(weight, groups, taps):
    """The ordinary convolution weight ``(C_out, C_in/groups, *len(taps))`` of a phase."""
    c_in, cout_g = weight.shape[:2]
    sub = weight[(slice(None), slice(None)) + np.ix_(*taps)]
    spatial = sub.shape[2:]
    sub = sub.reshape(groups, c_in // groups, cout_g, *spatial).swapaxes(1, 2)
    sub = np.ascontiguousarray(sub.reshape(groups * cout_g, c_in // groups, *spatial))
    sub.setflags(write=False)   # lets the packed GEMM cache its own layout of it
    return sub


def subpixel_forward(op_name, x, weight, bias, out, spec, crops, lengths, n_threads):
    """Run a validated transposed convolution phase by phase (see the module doc)."""
    from pyconv.ops.conv import cached_transform, conv_forward

    N, C_out = out.shape[:2]
    rank = x.ndim - 2
    groups = spec["groups"]
    relu = spec["activation"] == "relu"
    per_axis = [axis_phases(n, length, k, s, d, lo) for n, length, k, s, d, lo in zip(
        x.shape[2:], lengths, spec["kernel_size"], spec["stride"], spec["dilation"],
        crops)]
    combos = list(itertools.product(*per_axis))
    all_taps = tuple(tuple(p[2] for p in combo) for combo in combos)
    weights = cached_transform(weight, ("subpixel", groups, all_taps), lambda: {
        taps: subpixel_weight(weight, groups, taps) for taps in all_taps if all(taps)})
    for combo, taps in zip(combos, all_taps):
        phis = tuple(p[0] for p in combo)
        q = tuple(p[1] for p in combo)
        if not all(taps):
            target = out[(slice(None), slice(None)) + tuple(
                slice(phi, None, s) for phi, s in zip(phis, spec["stride"]))]
            target[...] = 0 if bias is None else bias.reshape((C_out,) + (1,) * rank)
            if relu:
                np.maximum(target, 0, out=target)   # keeps NaN, as torch.relu
            continue
        window = tuple(slice(*p[4]) for p in combo)
        xs = x[(slice(None), slice(None)) + window]
        if xs.shape != x.shape:
            xs = np.ascontiguousarray(xs)
        sub_spec = {"groups": groups, "kernel_size": [len(t) for t in taps],
                    "stride": [1] * rank, "dilation": [p[3] for p in combo],
                    "padding_mode": "zeros", "padding_value": 0.0,
                    "activation": spec["activation"]}
        # the phase's outputs, written straight to their places in out's planes
        places = np.arange(prod(lengths), dtype=np.intp).reshape(lengths)
        places = np.ascontiguousarray(places[tuple(
            slice(phi, None, s) for phi, s in zip(phis, spec["stride"]))]).ravel()
        conv_forward(op_name, xs, weights[taps], bias, out, sub_spec,
                     [p[5] for p in combo], q, n_threads, out_index=places)
    return out
