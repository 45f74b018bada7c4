"""Shape rules and padding maps shared by every windowed op.

One function per rule, used both by ``output_shape`` (no computation) and by the
kernels' callers before they allocate, so the two can never disagree.
"""
from __future__ import annotations

import functools

import numpy as np

from pyconv._memo import cached, spec_key

PADDING_MODES = ("zeros", "constant", "reflect", "symmetric", "replicate", "circular")


def effective_kernel(k, d):
    """Extent covered by a kernel of size ``k`` at dilation ``d``."""
    return d * (k - 1) + 1


def same_padding(length, k, s, d, lower=False):
    """TF/Keras/JAX "same" padding at any stride: ``out = ceil(in / s)``.

    Returns ``(lo, hi)``; the odd pixel goes at the end (``lower=True``: at the start,
    ONNX ``SAME_LOWER``).

    Examples
    --------
    >>> same_padding(5, 4, 2, 1)
    (1, 2)
    """
    out = -(-length // s)
    total = max((out - 1) * s + effective_kernel(k, d) - length, 0)
    small, large = total // 2, total - total // 2
    return (large, small) if lower else (small, large)


def resolve_padding(padding, spatial, kernel, stride, dilation):
    """Per-axis ``(lo, hi)`` pairs for a normalised ``padding`` spec value."""
    if isinstance(padding, str):
        lower = padding == "same_lower"
        return [same_padding(n, k, s, d, lower)
                for n, k, s, d in zip(spatial, kernel, stride, dilation)]
    return [tuple(p) for p in padding]


def as_3d(values, fill):
    """Per-axis values padded in front to three axes (1-D/2-D as 3-D problems)."""
    values = list(values)
    return [fill] * (3 - len(values)) + values


def window_geometry(op, spec, input_shape, channels):
    """``(shape, pads, out_spatial)`` of a convolution-like op; validates the input.

    ``spec`` has ``kernel_size``, ``stride``, ``dilation`` and ``padding``; the input
    must be ``(N, channels, *spatial)`` with ``op.rank`` spatial axes.
    """
    shape, pads, out = cached(
        ("window_geometry", op, spec_key(spec), input_shape, channels),
        lambda: _window_geometry(op, spec, input_shape, channels))
    return shape, list(pads), out


def _window_geometry(op, spec, input_shape, channels):
    shape = op.check_input_shape(input_shape, op.rank, channels)
    spatial = shape[2:]
    pads = resolve_padding(spec["padding"], spatial, spec["kernel_size"], spec["stride"],
                           spec["dilation"])
    out = tuple(
        conv_output_length(op.name, axis, n, k, s, d, lo, hi)
        for axis, (n, k, s, d, (lo, hi)) in enumerate(zip(
            spatial, spec["kernel_size"], spec["stride"], spec["dilation"], pads)))
    return shape, tuple(pads), out


def conv_output_length(op, axis, length, k, s, d, lo, hi):
    """``floor((in + lo + hi - d*(k-1) - 1) / s) + 1``, refusing results below 1."""
    padded = length + lo + hi
    ek = effective_kernel(k, d)
    if padded < ek:
        raise ValueError(
            f"{op}: input too small along spatial axis {axis}: padded extent "
            f"{length} + {lo} + {hi} = {padded} is smaller than the effective kernel "
            f"d*(k-1)+1 = {ek}; the output would be empty")
    return (padded - ek) // s + 1


#: Tables of up to this many entries are cached (at most 128 of them, 16 MiB).
CACHED_TABLE_ENTRIES = 1 << 14


def tap_index_table(length, out_len, k, s, d, lo, mode):
    """Input index read by tap ``t`` at output ``o``: ``table[t, o]``, -1 for a pad.

    ``mode`` maps positions outside ``[0, length)`` back into the input:
    ``zeros``/``constant`` give -1 (the caller writes the pad value); ``reflect``
    mirrors without repeating the edge (``cb|abcd``), ``symmetric`` repeats it
    (``ba|abcd``), ``replicate`` clamps (``aa|abcd``), ``circular`` wraps
    (``cd|abcd``). Paddings wider than the input repeat the pattern, as ``np.pad``.
    The table is read-only; small ones are cached, so that a small convolution does
    not recompute its geometry on every call (that was most of its 250 us of Python).
    """
    if k * out_len <= CACHED_TABLE_ENTRIES:
        return _cached_tap_index_table(length, out_len, k, s, d, lo, mode)
    return _tap_index_table(length, out_len, k, s, d, lo, mode)


@functools.lru_cache(maxsize=128)
def _cached_tap_index_table(length, out_len, k, s, d, lo, mode):
    return _tap_index_table(length, out_len, k, s, d, lo, mode)


def _tap_index_table(length, out_len, k, s, d, lo, mode):
    pos = (np.arange(out_len, dtype=np.intp)[None, :] * s - lo
           + np.arange(k, dtype=np.intp)[:, None] * d)
    if mode in ("zeros", "constant"):
        table = np.where((pos >= 0) & (pos < length), pos, -1)
    elif mode == "replicate":
        table = np.clip(pos, 0, length - 1)
    elif mode == "circular":
        table = np.mod(pos, length)
    elif mode == "symmetric":
        m = np.mod(pos, 2 * length)
        table = np.where(m < length, m, 2 * length - 1 - m)
    elif mode == "reflect":
        if length == 1:
            table = np.zeros_like(pos)
        else:
            period = 2 * (length - 1)
            m = np.mod(pos, period)
            table = np.where(m < length, m, period - m)
    else:  # pragma: no cover - specs are validated before this point
        raise ValueError(f"unknown padding mode {mode!r}")
    table = np.ascontiguousarray(table, dtype=np.intp)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=512)
def interior_spans(length, out_len, k, s, d, lo):
    """For each tap, the output range where the input index is inside the image.

    Returns an array ``(k, 3)`` of ``(o_lo, o_hi, start)``: for ``o_lo <= o < o_hi``
    the index is ``start + o*s`` with no padding involved.
    """
    spans = np.empty((k, 3), dtype=np.intp)
    for t in range(k):
        start = t * d - lo
        first = (-start + s - 1) // s if start < 0 else 0
        last = (length - 1 - start) // s + 1 if start <= length - 1 else 0
        o_lo = min(first, out_len)
        o_hi = min(max(last, o_lo), out_len)
        spans[t] = (o_lo, o_hi, start)
    spans = spans.ravel()
    spans.setflags(write=False)     # cached, as tap_index_table
    return spans
