"""Sliding-window pooling: ``max_pool{1,2,3}d``, ``avg_pool{1,2,3}d``, ``lp_pool{1,2,3}d``.

PyTorch's semantics (``torch.nn.functional``), extended with asymmetric ``(lo, hi)``
padding, TF-style ``"same"`` padding at any stride, ``divisor_override`` in 1-D, and
padding modes PyTorch lacks. No parameters.

Output length (per axis, ``lo``/``hi`` the padding): ``out = floor((in + lo + hi -
d*(k-1) - 1 + (ceil_mode ? s-1 : 0)) / s) + 1``; in ceil mode, if ``(out-1)*s >= in +
lo`` then ``out -= 1`` (the last window starts inside the input or the left padding).
Each side of the padding must be ``<= (d*(k-1)+1) // 2`` (PyTorch checks ``k // 2``,
ignoring dilation; the two agree without dilation). The stride defaults to the kernel
size.

Padding modes
-------------
``neg_inf`` (max pool default)
    Padding cells are -inf: PyTorch's implicit padding.
``zeros`` (avg pool default)
    Padding cells are 0; ``count_include_pad`` chooses whether they count in the
    divisor (PyTorch).
``constant`` (+ ``padding_value``)
    Padding cells hold the value and take part like data.
``reflect`` ``cb|abcd``, ``symmetric`` ``ba|abcd``, ``replicate`` ``aa|abcd``,
``circular`` ``cd|abcd``
    The pool runs on ``np.pad(x, pads, mode)``: padding cells are copies of input
    elements.

With ``constant`` or a data mode the padding cells are values, so avg pool divides by
the number of cells of the window inside the padded extent: ``count_include_pad`` must
stay True (a spec with False is refused rather than silently averaging data over a
count that leaves some of it out). In ceil mode, window cells past the padded extent are
never read and never counted, in every mode.

Max pooling propagates NaN (``v > m || isnan(v)``: the first maximum wins ties, the
last NaN wins). ``return_indices`` makes ``apply`` return ``(values, indices)``; the
int64 indices are flattened per (n, c) plane (``h*W + w``, ``(d*H + h)*W + w``) as in
PyTorch. Under a data mode an index names the input element the winning padding cell
was copied from; a ``constant`` padding cell that wins has index -1, and so does a
window that holds no input element at all (possible only with dilation, value -inf).

``lp_pool`` matches ``F.lp_pool``: ``(avg_pool(x**p) * K) ** (1/p)`` with ``K`` the full
kernel size and no padding, so a ceil-mode window cut by the input's end is scaled up
to ``K`` cells, and a negative sum (odd or fractional ``p``) gives NaN as in PyTorch.
``norm_type=inf`` is the infinity norm ``max |x|`` over the window (what PyTorch
returns for ``p = inf``).

Counts: ``macs`` is 0; ``flops`` counts one operation (compare or add) per window cell
and output, ``N*C*prod(out)*K`` (``2*K`` for lp: the power and the add).

Memory: besides the output (and the indices), one padded input row per thread (with
``return_indices``, also one int32 row of indices per thread). Shape rules and kernel
plans (small per-axis tables) are cached per (spec, input shape), a few hundred
entries at most, so repeated calls skip rebuilding them.

Speed: each output row is computed rows first (the window's input rows combined
elementwise, in tap order) and then columns; the AVX2 build runs the float32 passes
8 wide (stride-2 windows through an even/odd split of the row, stride-4 windows
through a 4x4 transpose in each 128-bit lane), prefetches input rows ahead of use,
and splits the work over (n, c) planes. Max and average windows one input row high
without padding columns (1-D pooling, among others) read that row in place instead
of combining it into a copy: avg_pool1d kernel 4 stride 4 on 64x64x4096 float32
went from 11.2 to 6.2 ms at 2 threads (medians of 11 calls). Max and average pools
whose only window is each whole (n, c) plane (kernel = input size, no padding or
dilation; without indices or ``divisor_override``) run on the global-pool kernel, as
adaptive pooling to size 1 does: 32x512x7x7 float32, 0.87 -> 0.13 ms at 2 threads
(its max keeps the scan's winner among tied signed zeros and NaNs). With indices,
where padding cells never take part (-inf padding or none), the winner is computed
order-free (the NaN with the largest index, else the largest value with the smallest
index), which is the row-major scan's winner; other padding modes scan each window
in tap order. Average and lp pools divide each sum by its window's count; float32
kernels form that divisor in float32 when every count and product of counts is a
whole number float32 holds exactly (short of windows of 2**24 cells: always), which
gives the same divisor as forming it in double and saves a conversion per output
(avg_pool2d k3 s1 p1 on 8x64x56x56, one thread: 3.0-3.2 -> 2.7 ms).

Examples
--------
>>> import numpy as np, pyconv
>>> pool = pyconv.Conv({"op": "avg_pool2d", "kernel_size": 2, "stride": 3,
...                     "ceil_mode": True})
>>> pool.apply(np.arange(49.0).reshape(1, 1, 7, 7))[0, 0]
array([[ 4. ,  7. ,  9.5],
       [25. , 28. , 30.5],
       [42.5, 45.5, 48. ]])
>>> mp = pyconv.Conv({"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1,
...                   "return_indices": True})
>>> values, indices = mp.apply(np.arange(16.0).reshape(1, 1, 4, 4))
>>> indices[0, 0]
array([[ 5,  7],
       [13, 15]])
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from pyconv import _memo, _threads
from pyconv import _pool_geometry as pg
from pyconv._geometry import as_3d
from pyconv._errors import SpecError
from pyconv._spec import Invalid, boolean, choice, int_tuple, key, optional, padding, real
from pyconv._workspace import thread_workspace, workspace
from pyconv.ops._base import Op, prod

#: Reduction kinds understood by the kernel (``_pooling.pyx``).
KINDS = {"max": 0, "avg": 1, "lp": 2, "lpinf": 3}
MAX_MODES = ("neg_inf", "zeros", "constant", *pg.DATA_MODES)
AVG_MODES = ("zeros", "constant", *pg.DATA_MODES)
POOL_PADDING_WORDS = ("valid", "same", "same_lower")


def nonzero_int():
    expected = "a non-zero int"

    def check(v):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v == 0:
            raise Invalid(expected)
        return int(v)

    check.expected = expected
    return check


def positive_norm():
    expected = "a number > 0 (float('inf') for the max norm)"

    def check(v):
        if (not isinstance(v, numbers.Real) or isinstance(v, bool) or math.isnan(v)
                or v <= 0):
            raise Invalid(expected)
        return float(v)

    check.expected = expected
    return check


_KERNEL = None


def kernel():
    """The pooling kernel module (AVX2 build where the CPU has it), loaded once."""
    global _KERNEL
    if _KERNEL is None:
        from pyconv import _kernels
        _KERNEL = _kernels.load("_pooling")
    return _KERNEL


def unit_rows(planes, rows, n):
    """Output rows per parallel unit: whole planes when they split evenly or are many,
    else pieces of planes, so that every thread gets a near-equal share."""
    if n <= 1 or planes % n == 0 or planes >= 8 * n:
        return rows
    pieces = -(-8 * n // max(planes, 1))
    return max(1, -(-rows // pieces))


def run_separable(x, out, plan, kind, n_threads, *, pad_value=None, norm=1.0, scale=1.0,
                  divisor_override=None):
    """Call the separable kernel on ``x``/``out`` seen as 3-D planes (see ``pg.Plan``)."""
    x4 = x.reshape(plan.x4_shape)
    out4 = out.reshape(plan.out4_shape)
    n = _threads.resolve(n_threads, out.size * plan.flops_per_output, plan.units,
                         x.nbytes + out.nbytes)
    work = thread_workspace(n, pg.thread_row_length(plan.wsrc.shape[0]), x.dtype)
    d = plan.divs
    k = kernel()
    run = k.pool_separable_f32 if x.dtype == np.float32 else k.pool_separable_f64
    f32 = x.dtype == np.float32
    run(x4, out4, plan.tab_d, plan.tab_h, plan.wsrc, plan.lo_w, plan.wstart, plan.wcnt,
        plan.dw, plan.n_uniform, plan.kw, plan.sw, d[0], d[1], d[2],
        plan.div_w_f32 if f32 else d[2], plan.div_f32_exact or not f32, KINDS[kind],
        pad_value is not None, 0.0 if pad_value is None else pad_value, norm, scale,
        divisor_override is not None, 0.0 if divisor_override is None else divisor_override,
        work, unit_rows(x4.shape[0], plan.rows, n), plan.prefetch, n)
    return out


def whole_plane_window(spatial, kernel, dilation, pads, out_spatial):
    """Whether the only window is the whole (n, c) plane: one output per axis, its
    window the whole input axis, undilated, with no padding (``pads``: resolved
    ``(lo, hi)`` pairs)."""
    return all(o == 1 and k == n and d == 1 and tuple(p) == (0, 0)
               for n, k, d, p, o in zip(spatial, kernel, dilation, pads, out_spatial))


def run_whole_planes(x, out, kind, n_threads):
    """Max or mean of each (n, c) plane on the global-pool kernel (eight interleaved
    partial results, vectorised): where a window is the whole plane, the row and
    column passes would cost several times more on these short planes (ResNet's 7x7
    head: 32x512x7x7 float32 took 0.87 ms through them, PyTorch 0.40)."""
    planes, length = x.shape[0] * x.shape[1], prod(x.shape[2:])
    n = _threads.resolve(n_threads, planes * length, planes, x.nbytes)
    kernel().global_pool(x.reshape(planes, length), out.reshape(planes), kind == "max",
                         n)
    return out


def run_max_indices(x, out, plan, n_threads, *, pad_value=None):
    """Max pool with argmax indices; returns ``(out, indices)``.

    Where padding cells never take part (``plan.pads_skipped``) and plane indices fit
    in int32, the vectorised kernel runs; otherwise the general scan in tap order.
    """
    indices = np.empty(out.shape, dtype=np.int64)
    x4 = x.reshape(plan.x4_shape)
    out4 = out.reshape(plan.out4_shape)
    idx4 = indices.reshape(plan.out4_shape)
    n = _threads.resolve(n_threads, out.size * plan.flops_per_output, plan.units,
                         x.nbytes + out.nbytes + indices.nbytes)
    if plan.pads_skipped and prod(plan.x4_shape[1:]) < 2**31 - 1:
        length = pg.thread_row_length(plan.wsrc.shape[0])
        size = n * length * x.dtype.itemsize
        buf = workspace((size + n * length * 4,), np.uint8)
        work = buf[:size].view(x.dtype).reshape(n, length)
        iwork = buf[size:].view(np.int32).reshape(n, length)
        k = kernel()
        run = (k.max_pool_indices_fast_f32 if x.dtype == np.float32
               else k.max_pool_indices_fast_f64)
        run(x4, out4, idx4, plan.tab_d, plan.tab_h, plan.lo_w, plan.wsrc.shape[0],
            plan.wstart, plan.wcnt, plan.dw, plan.n_uniform, plan.kw, plan.sw, work, iwork,
            unit_rows(x4.shape[0], plan.rows, n), plan.prefetch, n)
        return out, indices
    kernel().max_pool_indices(x4, out4, idx4, plan.tab_d, plan.tab_h, plan.tab_w,
                              pad_value is not None,
                              0.0 if pad_value is None else pad_value, n)
    return out, indices


class SlidingPool(Op):
    """Shared spec handling and shape rule of the sliding-window pools."""

    inputs = ()
    kind = None
    has_dilation = False
    has_padding = True

    def __init__(self, rank):
        self.rank = rank

    def _window_keys(self, modes, default_mode):
        rank = self.rank
        keys = [
            key("kernel_size", int_tuple(rank), doc="Window size per spatial axis."),
            key("stride", optional(int_tuple(rank)), None,
                "Step between windows; None means the kernel size."),
        ]
        if self.has_padding:
            keys.append(key(
                "padding", padding(rank, POOL_PADDING_WORDS), 0,
                "Amounts (int, per axis, or (lo, hi) pairs), or 'valid', 'same' (TF "
                "rule, any stride), 'same_lower'; each side <= (d*(k-1)+1) // 2."))
        if self.has_dilation:
            keys.append(key("dilation", int_tuple(rank), 1, "Spacing between taps."))
        keys.append(key("ceil_mode", boolean(), False,
                        "Round the output length up (the last window must start "
                        "inside the input or the left padding)."))
        if modes:
            keys.append(key("padding_mode", choice(*modes), default_mode,
                            "What padding cells hold: " + ", ".join(modes) +
                            " (see the module docs)."))
            keys.append(key("padding_value", real(), 0.0,
                            "Fill value for padding_mode='constant'."))
        return keys

    def normalize(self, spec):
        out = super().normalize(spec)
        if out["stride"] is None:
            out["stride"] = list(out["kernel_size"])
        return out

    def check(self, spec):
        if "padding_mode" in spec and spec["padding_value"] != 0.0 \
                and spec["padding_mode"] != "constant":
            raise SpecError(self.name, "padding_value",
                            "0.0 unless padding_mode is 'constant'", spec["padding_value"])
        if self.has_padding and not isinstance(spec["padding"], str):
            msg = pg.padding_limit_error(spec["padding"], spec["kernel_size"],
                                         self._dilation(spec))
            if msg:
                raise SpecError(self.name, "padding",
                                "at most half the effective kernel on each side",
                                spec["padding"], detail=f"got {spec['padding']!r}: {msg}")

    def _dilation(self, spec):
        return spec["dilation"] if self.has_dilation else [1] * self.rank

    def _pads(self, spec, spatial):
        if not self.has_padding:
            return [(0, 0)] * self.rank
        from pyconv._geometry import resolve_padding

        return resolve_padding(spec["padding"], spatial, spec["kernel_size"],
                               spec["stride"], self._dilation(spec))

    def _geometry_key(self, spec, input_shape):
        return (self, _memo.spec_key(spec), tuple(input_shape))

    def geometry(self, spec, input_shape):
        """``(shape, pads, out_spatial)`` for an input shape; validates it."""
        return _memo.cached(("geometry", *self._geometry_key(spec, input_shape)),
                            lambda: self._geometry(spec, input_shape))

    def whole_plane(self, spec, x_shape):
        """Whether the only window of ``x_shape`` is each whole (n, c) plane."""
        return _memo.cached(("whole_plane", *self._geometry_key(spec, x_shape)),
                            lambda: self._whole_plane(spec, x_shape))

    def _whole_plane(self, spec, x_shape):
        _, pads, out_spatial = self.geometry(spec, x_shape)
        return whole_plane_window(x_shape[2:], spec["kernel_size"], self._dilation(spec),
                                  pads, out_spatial)

    def _geometry(self, spec, input_shape):
        shape = self.check_input_shape(input_shape, self.rank)
        spatial = shape[2:]
        pads = self._pads(spec, spatial)
        out = tuple(
            pg.pool_output_length(self.name, axis, n, k, s, d, lo, hi, spec["ceil_mode"])
            for axis, (n, k, s, d, (lo, hi)) in enumerate(zip(
                spatial, spec["kernel_size"], spec["stride"], self._dilation(spec), pads)))
        return shape, pads, out

    def output_shape(self, spec, input_shape):
        shape, _, out = self.geometry(spec, input_shape)
        return (shape[0], shape[1], *out)

    def flops_per_output(self, spec):
        return prod(spec["kernel_size"])

    def flops(self, spec, input_shape):
        return prod(self.output_shape(spec, input_shape)) * self.flops_per_output(spec)

    def macs(self, spec, input_shape):
        self.output_shape(spec, input_shape)
        return 0

    def padding_mode(self, spec):
        return spec["padding_mode"]

    def divisors(self, spec, spatial, outs, kernel, stride, pads3):
        """Per-axis divisor factors (3 axes); max pooling has none."""
        ones = np.ones(1, dtype=np.int64)
        return (ones, ones, ones)

    def plan(self, spec, x_shape):
        """The kernel plan (``pg.Plan``) for an input shape, cached."""
        key = ("plan", *self._geometry_key(spec, x_shape))
        return _memo.cached(key, lambda: self._build_plan(spec, x_shape))

    def _build_plan(self, spec, x_shape):
        """Per-axis tables (3 axes), W-axis row-buffer plan and divisor factors."""
        mode = self.padding_mode(spec)
        _, pads, out_spatial = self.geometry(spec, x_shape)
        spatial = as_3d(x_shape[2:], 1)
        kernel = as_3d(spec["kernel_size"], 1)
        stride = as_3d(spec["stride"], 1)
        dil = as_3d(self._dilation(spec), 1)
        pads3 = [(0, 0)] * (3 - self.rank) + list(pads)
        outs = as_3d(out_spatial, 1)
        tables = [pg.pool_axis_table(n, o, k, s, d, lo, hi, mode)
                  for n, o, k, s, d, (lo, hi) in zip(spatial, outs, kernel, stride, dil,
                                                     pads3)]
        W, OW, kw, sw, dw, (lo, hi) = (spatial[2], outs[2], kernel[2], stride[2], dil[2],
                                       pads3[2])
        wsrc = pg.padded_sources(W, lo, hi, mode)
        pos = pg.window_positions(OW, kw, sw, dw, 0)  # row-buffer coordinates
        wstart = np.ascontiguousarray(pos[:, 0])
        wcnt = np.ascontiguousarray((pos < W + lo + hi).sum(axis=1), dtype=np.int64)
        # full windows (W-axis stride and kernel, no dilation) take the kernel's fast
        # loops; they are a prefix: only the end of the axis is cut (ceil mode)
        n_uniform = int(np.count_nonzero(wcnt == kw)) if dw == 1 else 0
        no_padding = all(p == (0, 0) for p in map(tuple, pads3))
        return pg.Plan(
            in_shape=tuple(x_shape), out_shape=(x_shape[0], x_shape[1], *out_spatial),
            tab_d=tables[0], tab_h=tables[1], tab_w=tables[2], wsrc=wsrc, lo_w=lo,
            wstart=wstart, wcnt=wcnt, dw=dw, n_uniform=n_uniform, kw=kw, sw=sw,
            divs=self.divisors(spec, spatial, outs, kernel, stride, pads3),
            flops_per_output=self.flops_per_output(spec),
            pads_skipped=mode == "neg_inf" or no_padding)


class MaxPoolND(SlidingPool):
    """Max pooling over ``rank`` spatial axes (see module docstring)."""

    kind = "max"
    has_dilation = True
    #: Run ``forward`` on empty outputs too, so ``return_indices`` still gives a pair.
    forward_when_empty = True

    def __init__(self, rank):
        super().__init__(rank)
        self.name = f"max_pool{rank}d"
        self.summary = (f"{rank}-D max pooling (PyTorch semantics, NaN-propagating) with "
                        "dilation, ceil mode, indices and padding modes.")
        self.keys = (*self._window_keys(MAX_MODES, "neg_inf"),
                     key("return_indices", boolean(), False,
                         "apply returns (values, int64 indices flattened per plane)."))
        self.formulas = {
            "output": "out = floor((in + lo + hi - d*(k-1) - 1 [+ s-1 if ceil_mode]) / s) "
                      "+ 1, minus 1 in ceil mode if (out-1)*s >= in + lo",
            "params": "0",
            "macs": "0",
            "flops": "N * C * prod(out) * prod(k) (one comparison per window cell)",
        }

    def forward(self, spec, x, params, out, n_threads):
        plan = self.plan(spec, x.shape)
        mode = spec["padding_mode"]
        pad_value = spec["padding_value"] if mode == "constant" else (
            0.0 if mode == "zeros" else None)
        if not spec["return_indices"] and self.whole_plane(spec, x.shape):
            return run_whole_planes(x, out, "max", n_threads)
        if spec["return_indices"]:
            return run_max_indices(x, out, plan, n_threads, pad_value=pad_value)
        return run_separable(x, out, plan, "max", n_threads, pad_value=pad_value)


class AvgPoolND(SlidingPool):
    """Average pooling over ``rank`` spatial axes (see module docstring)."""

    kind = "avg"

    def __init__(self, rank):
        super().__init__(rank)
        self.name = f"avg_pool{rank}d"
        self.summary = (f"{rank}-D average pooling (PyTorch divisor rule) with ceil mode, "
                        "count_include_pad, divisor_override and padding modes.")
        self.keys = (*self._window_keys(AVG_MODES, "zeros"),
                     key("count_include_pad", boolean(), True,
                         "Count zero padding cells in the divisor (must stay True for "
                         "the other padding modes)."),
                     key("divisor_override", optional(nonzero_int()), None,
                         "Divide every window sum by this instead."))
        self.formulas = {
            "output": "out = floor((in + lo + hi - k + [s-1 if ceil_mode]) / s) + 1, minus "
                      "1 in ceil mode if (out-1)*s >= in + lo",
            "params": "0",
            "macs": "0",
            "flops": "N * C * prod(out) * prod(k) (adds and the division)",
        }

    def check(self, spec):
        super().check(spec)
        if not spec["count_include_pad"] and spec["padding_mode"] != "zeros":
            raise SpecError(self.name, "count_include_pad",
                            "True when padding_mode is not 'zeros' (padding cells then "
                            "hold values and are part of the average)",
                            spec["count_include_pad"])

    def divisors(self, spec, spatial, outs, kernel, stride, pads3):
        return [pg.avg_divisor_factors(n, o, k, s, plo, phi, spec["count_include_pad"])
                for n, o, k, s, (plo, phi) in zip(spatial, outs, kernel, stride, pads3)]

    def forward(self, spec, x, params, out, n_threads):
        plan = self.plan(spec, x.shape)
        mode = spec["padding_mode"]
        pad_value = spec["padding_value"] if mode == "constant" else None
        if spec["divisor_override"] is None and self.whole_plane(spec, x.shape):
            return run_whole_planes(x, out, "avg", n_threads)
        return run_separable(x, out, plan, "avg", n_threads, pad_value=pad_value,
                             divisor_override=spec["divisor_override"])


class LPPoolND(SlidingPool):
    """Power-average pooling over ``rank`` spatial axes (see module docstring)."""

    kind = "lp"
    has_padding = False

    def __init__(self, rank):
        super().__init__(rank)
        self.name = f"lp_pool{rank}d"
        self.summary = (f"{rank}-D power-average pooling (PyTorch F.lp_pool{rank}d: "
                        "(avg_pool(x**p) * K) ** (1/p)); norm_type=inf gives max |x|.")
        self.keys = (key("norm_type", positive_norm(), doc="The power p > 0, or inf."),
                     *self._window_keys((), None))
        self.formulas = {
            "output": "out = floor((in - k + [s-1 if ceil_mode]) / s) + 1, minus 1 in ceil "
                      "mode if (out-1)*s >= in",
            "params": "0",
            "macs": "0",
            "flops": "N * C * prod(out) * 2 * prod(k) (power and add per cell)",
        }

    def flops_per_output(self, spec):
        return 2 * prod(spec["kernel_size"])

    def padding_mode(self, spec):
        return "zeros"

    def divisors(self, spec, spatial, outs, kernel, stride, pads3):
        return [pg.avg_divisor_factors(n, o, k, s, 0, 0, True)
                for n, o, k, s in zip(spatial, outs, kernel, stride)]

    def forward(self, spec, x, params, out, n_threads):
        plan = self.plan(spec, x.shape)
        p = spec["norm_type"]
        if math.isinf(p):
            return run_separable(x, out, plan, "lpinf", n_threads)
        return run_separable(x, out, plan, "lp", n_threads, norm=p,
                             scale=float(prod(spec["kernel_size"])))


OPS = [*(MaxPoolND(r) for r in (1, 2, 3)), *(AvgPoolND(r) for r in (1, 2, 3)),
       *(LPPoolND(r) for r in (1, 2, 3))]
