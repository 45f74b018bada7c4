"""Shape rules and per-axis window plans of the pooling ops.

One function per rule, used by ``output_shape`` (no computation) and by the callers of
the pooling kernels before they allocate, so the two can never disagree. A *plan* for
one spatial axis says, for every output position, which input indices its window reads
(after the padding mode has mapped positions outside the input back into it); the
kernels know nothing about padding or ceil mode.

Plan conventions (``int64`` tables of shape ``(out, taps)``):

* ``>= 0``: the input index the tap reads;
* ``PAD`` (-1): a padding cell with no source element (``neg_inf``, ``zeros`` or
  ``constant`` padding: the kernel uses -inf, 0 or the constant);
* ``SKIP`` (-2): not part of the window (past the padded extent in ceil mode, or an
  unused slot of a shorter adaptive window). ``SKIP`` entries only ever trail a row.
"""
from __future__ import annotations

import numpy as np

from pyconv._geometry import effective_kernel, tap_index_table

PAD = -1
SKIP = -2
#: Extra row-buffer entries per thread: the kernels' vector loads may read (never use)
#: a little past the padded row.
ROW_SLACK = 16


def thread_row_length(padded):
    """Entries per thread of a kernel's row buffer for a padded row of ``padded``.

    The row, its slack, rounded up to 16 entries, and 16 more: whatever the buffer's
    alignment, two threads' rows then never share a 64-byte cache line (measured:
    a shared line made 2 threads 3x slower than 1).
    """
    return -(-(padded + ROW_SLACK) // 16) * 16 + 16
#: Padding modes whose padded cells are copies of input elements.
DATA_MODES = ("reflect", "symmetric", "replicate", "circular")


def pool_output_length(op, axis, length, k, s, d, lo, hi, ceil_mode):
    """PyTorch's pooling output length, with ``(lo, hi)`` padding.

    ``out = floor((in + lo + hi - d*(k-1) - 1 + (ceil_mode ? s-1 : 0)) / s) + 1``; in
    ceil mode the last window must start inside the input or the left padding, so if
    ``(out-1)*s >= in + lo`` then ``out -= 1``. ``out < 1`` is an error.

    Examples
    --------
    >>> pool_output_length("max_pool1d", 0, 32, 1, 2, 1, 0, 0, True)
    16
    >>> pool_output_length("max_pool1d", 0, 9, 4, 4, 1, 2, 2, True)
    3
    >>> pool_output_length("max_pool1d", 0, 5, 2, 2, 1, 1, 1, False)
    3
    """
    ek = effective_kernel(k, d)
    padded = length + lo + hi
    out = (padded - ek + ((s - 1) if ceil_mode else 0)) // s + 1
    if ceil_mode and out >= 1 and (out - 1) * s >= length + lo:
        out -= 1
    if out < 1:
        raise ValueError(
            f"{op}: input too small along spatial axis {axis}: padded extent "
            f"{length} + {lo} + {hi} = {padded} is smaller than the effective kernel "
            f"d*(k-1)+1 = {ek}; the output would be empty")
    return out


def padding_limit_error(pads, kernel, dilation):
    """First axis whose padding exceeds half the effective kernel, as a message, or None.

    PyTorch's rule ``p <= (d*(k-1)+1) // 2`` applied to each side of a ``(lo, hi)``
    pair; it keeps every window's start inside the input or its padding.
    """
    for axis, ((lo, hi), k, d) in enumerate(zip(pads, kernel, dilation)):
        limit = effective_kernel(k, d) // 2
        if lo > limit or hi > limit:
            return (f"padding ({lo}, {hi}) along spatial axis {axis} exceeds half the "
                    f"effective kernel d*(k-1)+1 = {effective_kernel(k, d)}: each side "
                    f"must be <= {limit}")
    return None


def window_positions(out_len, k, s, d, lo):
    """Padded-coordinate position ``o*s - lo + t*d`` of tap ``t`` at output ``o``."""
    return (np.arange(out_len, dtype=np.int64)[:, None] * s - lo
            + np.arange(k, dtype=np.int64)[None, :] * d)


def pool_axis_table(length, out_len, k, s, d, lo, hi, mode):
    """Plan ``(out_len, k)`` of one axis of a sliding-window pool (see module doc)."""
    pos = window_positions(out_len, k, s, d, lo)
    if mode in DATA_MODES:
        table = tap_index_table(length, out_len, k, s, d, lo, mode).T.astype(np.int64)
    else:
        table = np.where((pos >= 0) & (pos < length), pos, PAD)
    table = np.where(pos >= length + hi, SKIP, table)
    return np.ascontiguousarray(table, dtype=np.int64)


def padded_sources(length, lo, hi, mode):
    """Source index of every position of the padded axis (``PAD`` for no source)."""
    if mode in DATA_MODES:
        table = tap_index_table(length, length + lo + hi, 1, 1, 1, lo, mode)[0]
    else:
        pos = np.arange(length + lo + hi, dtype=np.int64) - lo
        table = np.where((pos >= 0) & (pos < length), pos, PAD)
    return np.ascontiguousarray(table, dtype=np.int64)


def avg_divisor_factors(length, out_len, k, s, lo, hi, count_include_pad):
    """Per-output factor of PyTorch's avg-pool divisor along one axis.

    ``h0 = o*s - lo``, ``h1 = min(h0 + k, in + hi)``: the window clipped to the padded
    extent (so the ceil-mode overhang never counts); ``count_include_pad`` counts
    ``h1 - h0``, otherwise the part inside ``[0, in)``.
    """
    h0 = np.arange(out_len, dtype=np.int64) * s - lo
    h1 = np.minimum(h0 + k, length + hi)
    if count_include_pad:
        return np.ascontiguousarray(h1 - h0, dtype=np.int64)
    return np.ascontiguousarray(np.minimum(h1, length) - np.maximum(h0, 0),
                                dtype=np.int64)


def adaptive_bounds(length, out_len):
    """Adaptive windows: ``[floor(i*L/o), ceil((i+1)*L/o))`` for ``i < o``."""
    i = np.arange(out_len, dtype=np.int64)
    start = (i * length) // out_len
    end = -((-(i + 1) * length) // out_len)
    return start, end


def adaptive_axis_table(length, out_len):
    """Plan ``(out_len, max window)`` of one adaptive axis, ``SKIP``-padded."""
    start, end = adaptive_bounds(length, out_len)
    width = int((end - start).max())
    table = start[:, None] + np.arange(width, dtype=np.int64)[None, :]
    table = np.where(table < end[:, None], table, SKIP)
    return np.ascontiguousarray(table, dtype=np.int64)


class Plan:
    """Everything a pooling kernel call needs for one (spec, input shape), read-only.

    ``tab_d``, ``tab_h``, ``tab_w``: per-axis tap tables (3 axes, see the module doc);
    ``wsrc``: source index of each position of the padded W axis; ``lo_w``: left W
    padding; ``wstart``/``wcnt``/``dw``: each output column's taps in row-buffer
    coordinates, ``wstart + t*dw`` for ``t < wcnt``; the first ``n_uniform`` columns
    are full windows ``ow*sw + t``, ``t < kw``; ``divs``: per-axis divisor factors
    (float64), ``div_w_f32`` the W factors in float32 and ``div_f32_exact`` whether
    float32 holds every factor and product of them exactly (then a float32 kernel
    forms the divisors in float32 with the same result); ``pads_skipped``: padding
    cells never take part (-inf padding, or
    none), so max pooling with indices may use the order-free kernel. ``x4_shape``
    and ``out4_shape`` are the input and output seen as ``(planes, D, H, W)``;
    ``rows`` is the output rows per plane, ``units`` the output rows in all;
    ``prefetch`` is how far ahead (in values) the kernel prefetches the input rows.
    """

    __slots__ = ("in_shape", "out_shape", "x4_shape", "out4_shape", "rows", "units",
                 "prefetch", "tab_d", "tab_h", "tab_w", "wsrc", "lo_w", "wstart", "wcnt",
                 "dw", "n_uniform", "kw", "sw", "divs", "div_w_f32", "div_f32_exact",
                 "flops_per_output", "pads_skipped")

    def __init__(self, **fields):
        for name, value in fields.items():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
            setattr(self, name, value)
        self.divs = tuple(np.ascontiguousarray(d, dtype=np.float64) for d in self.divs)
        self.div_w_f32 = self.divs[2].astype(np.float32)
        self.div_w_f32.flags.writeable = False
        # whole numbers (window counts) whose products stay within float32's 2**24
        largest = [float(np.abs(d).max()) if d.size else 1.0 for d in self.divs]
        self.div_f32_exact = bool(largest[0] * largest[1] * largest[2] <= 2.0**24
                                  and all((d == np.round(d)).all() for d in self.divs))
        planes = self.in_shape[0] * self.in_shape[1]
        self.x4_shape = (planes, *(1,) * (5 - len(self.in_shape)), *self.in_shape[2:])
        self.out4_shape = (planes, *(1,) * (5 - len(self.out_shape)), *self.out_shape[2:])
        self.rows = self.out4_shape[1] * self.out4_shape[2]
        self.units = planes * self.rows
        # the kernel prefetches each input row it reads this far ahead (in values):
        # about where the same tap of the output row after next will read
        in_rows = self.x4_shape[1] * self.x4_shape[2]
        # (measured: 2 output rows ahead gives about 1.5x over none; farther is no
        # better, and at most 16 rows)
        # (3-D windows read many rows per output row: prefetching them was slower)
        self.prefetch = 0 if self.x4_shape[1] > 1 else (
            min(16, max(1, round(2 * in_rows / self.rows))) * self.x4_shape[3])
        for d in self.divs:
            d.flags.writeable = False
