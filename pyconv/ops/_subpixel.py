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

:func:`stacked_forward` runs all the phases as one convolution instead (``"stacked"``):
along each axis every phase is computed at ``ceil(L / s)`` positions from a common
window, the union of the phases' windows, so ``P`` phases become ``P * C_out`` output
channels of one stride-1 convolution (zeros where a phase has no tap), whose output
planes are then interleaved into the output.
"""
from __future__ import annotations

import functools
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


def stacked_axis(n, length, k, s, d, lo):
    """One axis of the stacked form (see :func:`stacked_forward`), or None.

    Returns ``(Q, window, dilation, (start, stop), (pad_lo, pad_hi), phases)``: every
    phase is computed at ``Q = ceil(length / s)`` positions by one cross-correlation of
    ``x[start:stop]``, zero-padded, with a ``window``-tap kernel at ``dilation``;
    ``phases`` lists ``(phi, q, taps, offset)``, the phase's ``taps`` sitting at window
    positions ``offset, offset + 1, ...`` (a phase with fewer than ``Q`` outputs
    computes one more, which is dropped). None when no phase reads the input, or when
    the phases read it on different grids (possible when ``d`` and ``s`` share a
    factor).

    Examples
    --------
    A 4-tap, stride-2 upsampler of 8 inputs: both phases as one 3-tap window from
    input ``q - 1`` (one zero of padding at each end), phase 0's taps (3, 1) at
    window positions 0-1, phase 1's (2, 0) at 1-2:

    >>> stacked_axis(8, 16, 4, 2, 1, 1)
    (8, 3, 1, (0, 8), (1, 1), [(0, 8, (3, 1), 0), (1, 8, (2, 0), 1)])
    """
    dilation = d // gcd(d, s)
    Q = -(-length // s)
    phases = axis_phases(n, length, k, s, d, lo)
    # the input a phase's first tap reads at q = 0: its window start less its padding
    first = {p[0]: p[4][0] - p[5][0] for p in phases if p[2]}
    if not first:
        return None
    e = min(first.values())
    if any((f - e) % dilation for f in first.values()):
        return None
    placed = [(phi, q, taps, (first[phi] - e) // dilation if taps else 0)
              for phi, q, taps, *_ in phases]
    window = max(off + len(taps) for _, _, taps, off in placed)
    end = e + Q + (window - 1) * dilation        # one past the last input read
    start, stop = max(0, e), min(n, end)
    if stop <= start:
        return None
    return Q, window, dilation, (start, stop), (start - e, end - stop), placed


def stacked_weight(weight, groups, combos, window):
    """The stacked convolution's weight ``(groups * P * C_out/groups, C_in/groups,
    *window)``: phase ``p``'s sub-kernel (:func:`subpixel_weight`) at its offsets in
    output channels ``(g, p, :)``, zeros around it."""
    c_in, cout_g = weight.shape[:2]
    cin_g = c_in // groups
    stacked = np.zeros((groups, len(combos), cout_g, cin_g) + window, dtype=weight.dtype)
    for p, combo in enumerate(combos):
        taps = tuple(c[2] for c in combo)
        if not all(taps):
            continue
        sub = subpixel_weight(weight, groups, taps)
        place = tuple(slice(c[3], c[3] + len(c[2])) for c in combo)
        stacked[(slice(None), p, slice(None), slice(None)) + place] = sub.reshape(
            (groups, cout_g, cin_g) + sub.shape[2:])
    stacked = stacked.reshape((-1, cin_g) + window)
    stacked.setflags(write=False)   # lets the convolution cache its transforms of it
    return stacked


@functools.lru_cache(maxsize=256)
def stacked_plan(shape, lengths, kernel, stride, dilation, crops, groups, c_out, bias,
                 activation):
    """``(axes, combos, spec, cropped_shape)`` of the stacked convolution, or None.

    ``axes``: :func:`stacked_axis` per axis; ``combos``: the phases, one per output
    channel block; ``spec``: the normalised ``conv{rank}d`` spec that runs them.
    """
    from pyconv._registry import get_op

    axes = tuple(stacked_axis(*a) for a in zip(shape[2:], lengths, kernel, stride,
                                               dilation, crops))
    if any(a is None for a in axes):
        return None
    rank = len(axes)
    combos = tuple(itertools.product(*(a[5] for a in axes)))
    spec = get_op(f"conv{rank}d").normalize({
        "in_channels": shape[1], "out_channels": len(combos) * c_out,
        "kernel_size": [a[1] for a in axes], "stride": [1] * rank,
        "dilation": [a[2] for a in axes], "padding": [list(a[4]) for a in axes],
        "groups": groups, "bias": bias, "activation": activation})
    cropped = shape[:2] + tuple(a[3][1] - a[3][0] for a in axes)
    return axes, combos, spec, cropped


def plan_key(spec, shape, crops, lengths):
    """The arguments of :func:`stacked_plan` for a validated transposed-convolution
    spec and input (hashable: callers cache on it too)."""
    return (tuple(shape), tuple(lengths), tuple(spec["kernel_size"]),
            tuple(spec["stride"]), tuple(spec["dilation"]), tuple(crops),
            spec["groups"], spec["out_channels"], spec["bias"], spec["activation"])


def plan_for(spec, shape, crops, lengths):
    """:func:`stacked_plan` of a validated transposed-convolution spec and input."""
    return stacked_plan(*plan_key(spec, shape, crops, lengths))


def stacked_forward(op_name, x, weight, bias, out, spec, crops, lengths, n_threads):
    """Run a validated transposed convolution as one stacked convolution.

    The ``P = prod(stride)`` phases become one stride-1 convolution with ``P * C_out``
    output channels over the union of the phases' windows (each phase's sub-kernel at
    its offset, zeros around it), run by ``conv{rank}d``'s own dispatch: a 3x3 window
    runs on Winograd. Its output is then interleaved into ``out``. Returns None where
    :func:`stacked_axis` finds no common grid.
    """
    from pyconv import _kernels, _threads
    from pyconv._registry import get_op
    from pyconv._workspace import workspace
    from pyconv.ops.conv import cached_transform

    plan = plan_for(spec, x.shape, crops, lengths)
    if plan is None:
        return None
    axes, combos, cspec, _ = plan
    rank = x.ndim - 2
    N, C_out = out.shape[:2]
    groups = spec["groups"]
    cout_g = C_out // groups
    P = len(combos)
    window = tuple(cspec["kernel_size"])
    w3 = cached_transform(weight, ("stacked", groups, window, tuple(
        tuple((c[2], c[3]) for c in combo) for combo in combos)),
        lambda: stacked_weight(weight, groups, combos, window))
    params = {"weight": w3}
    if bias is not None:
        params["bias"] = np.ascontiguousarray(np.broadcast_to(
            bias.reshape(groups, 1, cout_g), (groups, P, cout_g))).reshape(-1)
    xs = x[(slice(None), slice(None)) + tuple(slice(*a[3]) for a in axes)]
    if xs.shape != x.shape:
        xs = np.ascontiguousarray(xs)
    Q = tuple(a[0] for a in axes)
    stacked = workspace((N, P * C_out) + Q, x.dtype, slot="stacked")
    get_op(f"conv{rank}d").forward(cspec, xs, params, stacked, n_threads)
    # outputs (q_d, q_h, q_w) of phase (phi_d, phi_h, phi_w) land at q * s + phi
    lead = 3 - rank
    table = np.array([[0] * lead + [c[0] for c in combo] + [1] * lead + [c[1] for c in combo]
                      for combo in combos], dtype=np.intp)
    q3 = (1,) * lead + Q
    l3 = (1,) * lead + tuple(lengths)
    s3 = (1,) * lead + tuple(spec["stride"])
    _kernels.load("_transposed").interleave_phases(
        stacked.reshape(N * groups, P, cout_g, -1), out.reshape(N * groups, cout_g, -1),
        table, q3[1], q3[2], l3[1], l3[2], *s3,
        _threads.resolve(n_threads, 0, N * C_out, 2 * out.nbytes))
    return out
