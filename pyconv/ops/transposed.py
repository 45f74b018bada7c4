"""Transposed convolution: ``conv_transpose1d``, ``conv_transpose2d``, ``conv_transpose3d``.

PyTorch semantics (``torch.nn.ConvTransposeNd``): the adjoint of a strided, dilated,
grouped cross-correlation. Weight ``(C_in, C_out/groups, *k)``; along each axis the
output length is::

    out = (in - 1)*stride - lo - hi + dilation*(k - 1) + output_padding + 1

Geometry
--------
Every case reduces to two numbers per axis, a crop ``lo`` and an output length ``L``:
the input is scattered into the "full" output of length ``F = (in-1)*s + d*(k-1) + 1``
(input ``i`` and tap ``t`` land at ``i*s + t*d``) and output ``j`` is full position
``j + lo``; full positions at or past ``F`` (``output_padding``, or a negative ``hi``)
receive nothing but the bias.

* explicit padding (an int, per-axis ints, or per-axis ``(lo, hi)`` pairs):
  ``lo = p_lo``, ``L = F - p_lo - p_hi + output_padding``.
* ``"same"`` (Keras/TF ``Conv*DTranspose(padding="same")``, ``tf.nn.conv*d_transpose``
  with ``padding="SAME"``): the op is the adjoint of a TF "same" convolution whose
  input has length ``L = in * stride``. That convolution pads
  ``total = max((in-1)*s + d*(k-1) + 1 - L, 0) = max(d*(k-1) + 1 - s, 0)``, with
  ``lo = total // 2`` at the start and the odd pixel at the end, so the transposed op
  crops ``lo`` at the start and ``total - lo`` at the end; when ``d*(k-1) + 1 < s``
  nothing is cropped and the last ``s - d*(k-1) - 1`` outputs get only the bias.
  ``"same_lower"`` puts the odd pixel first (ONNX ``SAME_LOWER``): ``lo = total - total//2``.
  ``output_padding`` must be 0 with these words.

``apply(x, output_size=...)`` (full ``(N, C_out, *spatial)`` shape or spatial sizes)
picks the output length per axis, replacing ``output_padding``:

* explicit padding: PyTorch's rule, any length in ``[m, m + stride - 1]`` with
  ``m = (in-1)*s - lo - hi + d*(k-1) + 1`` (``output_padding = L - m``);
* ``"same"``: TensorFlow's rule, any ``L`` with ``ceil(L / stride) == in``, i.e. in
  ``[(in-1)*s + 1, in*s]``, cropping ``lo`` from the "same" padding of ``L``.

Algorithms and memory
---------------------
``algorithm="subpixel"`` (what ``"auto"`` takes for 2-D and 3-D where pyconv's packed
GEMM runs, the AVX2 build, from :data:`SUBPIXEL_MIN_FLOPS` of work on) splits the op into ``prod(stride)`` ordinary stride-1 convolutions, one per
output phase, each written in place: see :mod:`pyconv.ops._subpixel`. Its GEMMs have
``C_out/groups`` rows where col2im's have ``C_out/groups * prod(k)``, and nothing is
scatter-added. Measured here on 8x128x32x32 -> 64, k4 s2 p1, float32, 2 threads:
44 ms with col2im, 39.5 ms phase by phase.

``algorithm="stacked"`` (what ``"auto"`` takes where it is expected to be fastest:
see :func:`stacked_preferred`) runs all the phases as ONE stride-1 convolution with
``prod(stride) * C_out`` output channels over the union of the phases' input windows,
each phase's sub-kernel at its offset in that window and zeros around it, through
``conv{rank}d``'s own dispatch; its output planes are then interleaved into the
output in parallel. For k4 s2 the window is 3x3 with 7 of 16 taps zero per phase,
and the 3x3 stride-1 convolution runs on Winograd F(4x4, 3x3), 4x fewer multiplies:
2.25x more taps, 1.8x less arithmetic than phase by phase. Measured here on
8x128x32x32 -> 64, k4 s2 p1, 2 threads: float32 39 -> 28 ms, float64 73 -> 55 ms.
float32 then carries Winograd's rounding (about 3e-6 of the output's magnitude, see
:mod:`pyconv.ops._winograd`); ``algorithm="subpixel"`` or ``"col2im"`` keeps the
direct rounding. Extra memory: the stacked output (``(N, prod(stride) * C_out,
*ceil(L / stride))``, about the size of the output; ``"auto"`` stacks only while it
is at most :data:`STACKED_MAX_BYTES`, 256 MiB), the stacked weight (cached; for k4 s2
2.25x the weight), the convolution's own workspace, and a cropped copy of the input
where the window starts inside it.

``algorithm="col2im"``: no zero insertion. For each image and group, a GEMM forms the column block
``cols[(co, tap), p] = sum_ci W[ci, co, tap] * x[ci, p]`` for a block of output
channels and a chunk of input positions, and col2im scatter-adds it into those output
channels' planes. One work unit is (image, group, output-channel block); it owns whole
output planes, initialises them with the bias, accumulates every input chunk in a fixed
order and applies the fused ReLU, so units run in parallel with no races and the
result is bit-identical for any thread count (the blocking depends only on the
problem's sizes). Extra memory: the transposed weight (a copy the size of the weight)
plus one column buffer per thread of ``cob * prod(k) * chunk`` values, at most
:data:`COLUMN_BYTES_PER_THREAD` bytes (1 MiB) or one input position's column
(``cob * prod(k)`` values, ``cob <= max(1, ceil(BLOCK_GEMM_ROWS / prod(k)))``) if that
is larger; chunks are whole input rows where the budget holds one, so a long 1-D signal
is cut into pieces and memory stays bounded for any input size.

Examples
--------
>>> import numpy as np, pyconv
>>> up = pyconv.Conv({"op": "conv_transpose2d", "in_channels": 4, "out_channels": 2,
...                   "kernel_size": 4, "stride": 2, "padding": 1}, seed=0)
>>> up.output_shape((1, 4, 8, 8))
(1, 2, 16, 16)
>>> up.param_count
130
>>> x = np.ones((1, 4, 8, 8), np.float32)
>>> up.apply(x, output_size=(17, 17)).shape
(1, 2, 17, 17)
>>> same = pyconv.Conv({"op": "conv_transpose1d", "in_channels": 1, "out_channels": 1,
...                     "kernel_size": 3, "stride": 3, "padding": "same"}, seed=0)
>>> same.output_shape((2, 1, 5))
(2, 1, 15)
"""
from __future__ import annotations

import functools

import numpy as np

from pyconv import _threads
from pyconv._dtypes import NATIVE_NAMES
from pyconv._errors import SpecError
from pyconv._geometry import as_3d, effective_kernel, same_padding
from pyconv._spec import boolean, choice, int_tuple, int_value, key, optional, padding
from pyconv._workspace import thread_workspace
from pyconv.ops._base import Op, kaiming_uniform, prod
from pyconv.ops import _subpixel
from pyconv.ops.conv import check_groups

#: Budget for one thread's column buffer (an output-channel block's taps for a chunk
#: of input positions): large enough for an efficient GEMM, small enough to stay in cache
#: for the col2im that follows.
COLUMN_BYTES_PER_THREAD = 1 << 20
#: A channel block aims at this many GEMM rows (channels * taps).
BLOCK_GEMM_ROWS = 256
#: The blocking aims at this many work units, so that small batches still run in
#: parallel; it is a constant, not the thread count, so results never depend on it.
TARGET_UNITS = 16
_INT32_MAX = 2**31 - 1


def _axis_name(rank, axis):
    return ("L",)[axis] if rank == 1 else ("H", "W")[axis] if rank == 2 else "DHW"[axis]


class ConvTransposeND(Op):
    """Transposed convolution over ``rank`` spatial axes (see the module docstring)."""

    inputs = ("output_size",)
    #: Inputs that decide the output shape (``Conv`` passes them to output_shape).
    shape_inputs = ("output_size",)

    def __init__(self, rank):
        self.rank = rank
        self.name = f"conv_transpose{rank}d"
        self.summary = (f"{rank}-D transposed convolution (PyTorch ConvTranspose{rank}d) "
                        "with stride, padding ('same' as Keras/TF), output_padding, "
                        "output_size, dilation, groups, bias, ReLU.")
        self.keys = (
            key("in_channels", int_value(1), doc="Input channels C_in."),
            key("out_channels", int_value(1), doc="Output channels C_out."),
            key("kernel_size", int_tuple(rank), doc="Kernel size per spatial axis."),
            key("stride", int_tuple(rank), 1, "Step between input positions in the output."),
            key("padding", padding(rank), 0,
                "Cropped from the output: an int, per-axis ints, per-axis (lo, hi) pairs, "
                "'valid' (none), 'same' (out = in*stride, Keras/TF), 'same_lower'."),
            key("output_padding", int_tuple(rank, minimum=0), 0,
                "Extra length at the end of each axis; < stride or < dilation per axis."),
            key("dilation", int_tuple(rank), 1, "Spacing between kernel taps."),
            key("groups", int_value(1), 1, "Channel groups; C_in and C_out divisible by it."),
            key("bias", boolean(), True, "Add a learned bias per output channel."),
            key("activation", optional(choice("relu")), None,
                "Activation fused into the kernel: None or 'relu'."),
            key("algorithm", choice(*ALGORITHMS), "auto",
                "Kernel: 'auto' (chosen by shape), 'col2im' (GEMM + col2im scatter), "
                "'subpixel' (one ordinary convolution per output phase), 'stacked' (the "
                "phases as one convolution with prod(stride) * C_out channels, Winograd "
                "for a 3x3 window; where the phases share no input grid, as "
                "'subpixel')."),
        )
        self.formulas = {
            "output": "out = (in-1)*stride - lo - hi + dilation*(k-1) + output_padding + 1; "
                      "'same': out = in*stride; output_size= picks out in "
                      "[min, min + stride - 1] (PyTorch)",
            "params": "C_in * (C_out/groups) * prod(k) (+ C_out with bias)",
            "macs": "N * C_in * prod(in) * (C_out/groups) * prod(k)",
            "flops": "2 * MACs (bias and activation not counted)",
        }

    # -- spec -------------------------------------------------------------------------
    def check(self, spec):
        check_groups(self.name, spec)
        for axis, (op, s, d) in enumerate(zip(spec["output_padding"], spec["stride"],
                                              spec["dilation"])):
            if op >= s and op >= d:
                raise SpecError(self.name, "output_padding",
                                "values smaller than stride or dilation on each axis",
                                spec["output_padding"],
                                detail=f"got {spec['output_padding']!r}: axis {axis} has "
                                f"output_padding {op}, stride {s}, dilation {d}")
        if isinstance(spec["padding"], str) and any(spec["output_padding"]):
            raise SpecError(self.name, "output_padding",
                            f"0 with padding={spec['padding']!r} (the output length is "
                            "in*stride; use output_size= for another length)",
                            spec["output_padding"])

    # -- shape rule ---------------------------------------------------------------------
    def _output_size(self, output_size, shape, out_channels):
        """Spatial sizes from ``output_size`` (full shape or spatial sizes)."""
        try:
            sizes = [int(v) for v in output_size]
            if any(int(v) != v for v in output_size):
                raise ValueError
        except (TypeError, ValueError):
            raise TypeError(f"{self.name}: output_size must be a sequence of ints; got "
                            f"{output_size!r}") from None
        if len(sizes) == self.rank + 2:
            if sizes[0] != shape[0] or sizes[1] != out_channels:
                raise ValueError(
                    f"{self.name}: output_size {tuple(sizes)} is a full shape whose batch "
                    f"and channels must be ({shape[0]}, {out_channels})")
            sizes = sizes[2:]
        if len(sizes) != self.rank:
            raise ValueError(f"{self.name}: output_size must have {self.rank} (spatial) or "
                             f"{self.rank + 2} (full shape) entries; got {tuple(sizes)}")
        return sizes

    def geometry(self, spec, input_shape, output_size=None):
        """``(shape, crops, lengths)``: input shape, per-axis crop ``lo`` and length."""
        shape = self.check_input_shape(input_shape, self.rank, spec["in_channels"])
        wanted = (None if output_size is None
                  else self._output_size(output_size, shape, spec["out_channels"]))
        word = spec["padding"] if isinstance(spec["padding"], str) else None
        crops, lengths = [], []
        for axis in range(self.rank):
            n = shape[2 + axis]
            k, s, d = (spec[name][axis] for name in ("kernel_size", "stride", "dilation"))
            full = (n - 1) * s + effective_kernel(k, d)
            if word is not None:
                lower = word == "same_lower"
                if wanted is None:
                    length = n * s
                else:
                    length = wanted[axis]
                    if not (n - 1) * s + 1 <= length <= n * s:
                        raise ValueError(
                            f"{self.name}: output_size {tuple(wanted)} is unreachable: with "
                            f"padding={word!r} axis {axis} ({_axis_name(self.rank, axis)}) "
                            f"of length {n} and stride {s} reaches lengths "
                            f"{(n - 1) * s + 1} to {n * s} (ceil(out/stride) == in)")
                lo = same_padding(length, k, s, d, lower)[0]
            else:
                lo, hi = spec["padding"][axis]
                low = full - lo - hi
                if wanted is None:
                    length = low + spec["output_padding"][axis]
                else:
                    length = wanted[axis]
                    if not (max(low, 1) <= length <= low + s - 1):
                        raise ValueError(
                            f"{self.name}: output_size {tuple(wanted)} is unreachable: axis "
                            f"{axis} ({_axis_name(self.rank, axis)}) reaches lengths "
                            f"{max(low, 1)} to {low + s - 1} (min + stride - 1) for an "
                            f"input of length {n}")
                if length < 1:
                    raise ValueError(
                        f"{self.name}: empty output along spatial axis {axis}: "
                        f"(in-1)*stride - lo - hi + dilation*(k-1) + output_padding + 1 = "
                        f"({n}-1)*{s} - {lo} - {hi} + {d}*({k}-1) + "
                        f"{spec['output_padding'][axis]} + 1 = {length} < 1")
            crops.append(lo)
            lengths.append(length)
        return shape, crops, lengths

    def output_shape(self, spec, input_shape, output_size=None):
        shape, _, lengths = self.geometry(spec, input_shape, output_size)
        return (shape[0], spec["out_channels"], *lengths)

    def param_shapes(self, spec):
        shapes = {"weight": (spec["in_channels"], spec["out_channels"] // spec["groups"],
                             *spec["kernel_size"])}
        if spec["bias"]:
            shapes["bias"] = (spec["out_channels"],)
        return shapes

    def macs(self, spec, input_shape):
        shape = self.check_input_shape(input_shape, self.rank, spec["in_channels"])
        return (shape[0] * spec["in_channels"] * prod(shape[2:])
                * (spec["out_channels"] // spec["groups"]) * prod(spec["kernel_size"]))

    def init_params(self, spec, rng):
        # torch's _ConvNd.reset_parameters: kaiming_uniform_(a=sqrt(5)) and the bias
        # bound both use fan_in = weight.shape[1] * prod(k) = (C_out/groups) * prod(k).
        shapes = self.param_shapes(spec)
        fan_in = prod(shapes["weight"][1:])
        params = {"weight": kaiming_uniform(rng, shapes["weight"], fan_in)}
        if spec["bias"]:
            params["bias"] = kaiming_uniform(rng, shapes["bias"], fan_in)
        return params

    # -- computation ------------------------------------------------------------------------
    def forward(self, spec, x, params, out, n_threads, output_size=None):
        shape, crops, lengths = self.geometry(spec, x.shape, output_size)
        flops = 2 * self.macs(spec, x.shape)
        if stacked_preferred(spec, self.rank, x.dtype, shape, crops, lengths, flops):
            y = _subpixel.stacked_forward(self.name, x, params["weight"],
                                          params.get("bias"), out, spec, crops, lengths,
                                          n_threads)
            if y is not None:
                return y
        if subpixel_preferred(spec, self.rank, x.dtype, flops):
            return _subpixel.subpixel_forward(
                self.name, x, params["weight"], params.get("bias"), out, spec, crops,
                lengths, n_threads)
        return conv_transpose_forward(self.name, x, params["weight"], params.get("bias"),
                                      out, spec, crops, lengths, n_threads)


ALGORITHMS = ("auto", "col2im", "subpixel", "stacked")

#: "auto" runs phase by phase from this much work on: each phase costs a convolution
#: call's Python (about 100 us), so small problems are faster with col2im (k4 s2, 2
#: threads: 2.1 MFLOP 0.40 ms col2im, 0.60 ms phase by phase; 34 MFLOP 1.39 / 1.33 ms;
#: 134 MFLOP 4.2 / 3.2 ms).
SUBPIXEL_MIN_FLOPS = 16_000_000

#: Multiply savings of the Winograd variants (multiplies per output of a direct 3x3
#: convolution over those of the variant).
WINOGRAD_GAIN = {"F2": 2.25, "F4": 4.0}
#: "auto" stacks the phases where the stacked convolution runs on Winograd and its
#: saving, discounted by the stacked kernel's zero taps, is at least this. Measured
#: here, 2 threads: 2-D k4 s2 (7 of 16 taps zero) on F4, 1.78: float32 39 -> 28 ms;
#: on F2, 1.0: no faster than phase by phase; 3-D k4 s2 (F4 on the 3x3 planes, 152
#: of 216 taps zero), 1.19: 2x32x8x16x16 14.8 -> 12.4 ms, float64 24.3 -> 22.0 ms.
STACKED_MIN_GAIN = 1.1
#: "auto" stacks only while the stacked output (``prod(stride) * C_out`` planes of
#: ``ceil(L / stride)`` positions, about the output's size, held beside it) is at
#: most this; beyond, phase by phase needs a ``1/prod(stride)`` share of it.
STACKED_MAX_BYTES = 256 << 20


def stacked_preferred(spec, rank, dtype, shape, crops, lengths, flops):
    """Whether ``spec`` runs as one stacked convolution (:func:`_subpixel.stacked_forward`).

    "auto" does so for 2-D and 3-D in two cases. (1) Where the stacked convolution's
    3x3 (or 3x3x3) window runs on Winograd (as ``conv{rank}d``'s "auto" would run it)
    and the saving net of its zero taps reaches :data:`STACKED_MIN_GAIN`: k4 s2, k5
    s2, k6 s2, k3 s1... Measured here, 2 threads, float32 / float64: 8x128x32x32 ->
    64 k4 s2 p1 39 -> 28 / 73 -> 55 ms phase by phase -> stacked; 8x64x32x32 -> 64
    k5 s2 31 -> 23 / 56 -> 35 ms. (2) A 1x1 window (kernel equal to the stride, no
    zero taps), from :data:`SUBPIXEL_MIN_FLOPS` on: one GEMM pass over the input
    instead of one per phase (k2 s2: 13.4 -> 10.8 / 26.6 -> 23.9 ms). Either way
    only while the stacked output is at most :data:`STACKED_MAX_BYTES`.
    """
    if spec["algorithm"] != "auto":
        return spec["algorithm"] == "stacked"
    if rank < 2:
        return False
    key = _subpixel.plan_key(spec, shape, crops, lengths)
    plan = _subpixel.stacked_plan(*key)
    if plan is None:
        return False
    axes, _, cspec, _ = plan
    if shape[0] * cspec["out_channels"] * prod(a[0] for a in axes) * dtype.itemsize \
            > STACKED_MAX_BYTES:
        return False
    if all(k == 1 for k in cspec["kernel_size"]):
        return flops >= SUBPIXEL_MIN_FLOPS
    return _winograd_pays(key, NATIVE_NAMES[dtype])


@functools.lru_cache(maxsize=256)
def _winograd_pays(key, dtype_name):
    """Whether the stacked convolution of ``stacked_plan(*key)`` runs on Winograd with
    a saving of :data:`STACKED_MIN_GAIN` net of its zero taps (cached: the checks
    cost about 75 us of Python, a quarter of a small call)."""
    from pyconv.ops import _winograd
    from pyconv.ops.conv import _winograd_shape
    _, combos, cspec, cropped = _subpixel.stacked_plan(*key)
    winograd = _winograd_shape(len(cropped) - 2, cspec, cropped)
    if winograd is None:
        return False
    variant = _winograd.winograd_preferred(*winograd, dtype_name)
    if variant is None:
        return False
    taps = sum(prod(len(c[2]) for c in combo) for combo in combos)
    useful = taps / (len(combos) * prod(cspec["kernel_size"]))
    return useful * WINOGRAD_GAIN[variant] >= STACKED_MIN_GAIN


def subpixel_preferred(spec, rank, dtype, flops):
    """Whether ``spec`` runs phase by phase (:mod:`pyconv.ops._subpixel`).

    "auto" does so for 2-D and 3-D where the phases run on the packed GEMM, from
    :data:`SUBPIXEL_MIN_FLOPS` of work on. Measured here (2 threads, float32): k4 s2
    2-D 44 -> 40 ms, 3-D 21.7 -> 17.9 ms; the 1-D k8 s4 case ran slower phase by
    phase (26 -> 30 ms: its phases' GEMMs are 128 deep). ``"stacked"``, asked of
    phases that share no input grid, runs phase by phase too.
    """
    if spec["algorithm"] != "auto":
        return spec["algorithm"] in ("subpixel", "stacked")
    from pyconv import _kernels
    from pyconv.ops.conv import PACKED_MAX_ROWS
    return (rank >= 2 and flops >= SUBPIXEL_MIN_FLOPS
            and _kernels.packed_gemm(spec["out_channels"] // spec["groups"])
            and spec["out_channels"] // spec["groups"] <= PACKED_MAX_ROWS[NATIVE_NAMES[dtype]])


def input_spans(n, out_len, k, s, d, lo):
    """Per tap ``t``: ``(i_lo, i_hi, o0)``, inputs ``i_lo <= i < i_hi`` land on output
    ``o0 + i*s`` inside ``[0, out_len)`` (``o0 = t*d - lo``)."""
    spans = np.empty((k, 3), dtype=np.intp)
    for t in range(k):
        o0 = t * d - lo
        i_lo = min(n, (-o0 + s - 1) // s) if o0 < 0 else 0
        i_hi = min(n, (out_len - 1 - o0) // s + 1) if out_len - 1 - o0 >= 0 else 0
        spans[t] = (i_lo, max(i_lo, i_hi), o0)
    return spans.ravel()


def conv_transpose_forward(op_name, x, weight, bias, out, spec, crops, lengths, n_threads):
    """Run the GEMM + col2im kernel for a validated transposed convolution."""
    from pyconv import _kernels
    _transposed = _kernels.load("_transposed")

    N, C_in = x.shape[:2]
    C_out = out.shape[1]
    groups = spec["groups"]
    cin_g, cout_g = C_in // groups, C_out // groups
    spatial = as_3d(x.shape[2:], 1)
    o3 = as_3d(lengths, 1)
    k3 = as_3d(spec["kernel_size"], 1)
    s3 = as_3d(spec["stride"], 1)
    d3 = as_3d(spec["dilation"], 1)
    c3 = as_3d(crops, 0)
    K = prod(k3)
    plane = prod(spatial)
    itemsize = x.dtype.itemsize
    if max(plane, cout_g * K, cin_g) > _INT32_MAX:
        raise ValueError(f"{op_name}: an input plane of {plane} values or {cout_g * K} "
                         "output taps exceeds the 2**31 - 1 limit of the BLAS interface")
    spans = [input_spans(n, o, k, s, d, lo)
             for n, o, k, s, d, lo in zip(spatial, o3, k3, s3, d3, c3)]

    # Output-channel blocks: about BLOCK_GEMM_ROWS GEMM rows, smaller when the batch
    # has too few (image, group) pairs to keep several threads busy.
    cob = min(cout_g, max(1, -(-BLOCK_GEMM_ROWS // K)))
    want_blocks = -(-TARGET_UNITS // (N * groups))
    cob = max(1, min(cob, -(-cout_g // want_blocks)))
    n_blocks = -(-cout_g // cob)
    # Input positions per GEMM: the budget's worth, rounded down to whole rows when it
    # holds at least one (a long 1-D signal is cut inside its single row).
    W = spatial[2]
    chunk = max(1, COLUMN_BYTES_PER_THREAD // (cob * K * itemsize))
    if chunk >= W:
        chunk = chunk // W * W
    chunk = min(chunk, plane)

    flops = 2 * N * C_in * plane * cout_g * K
    n_threads = _threads.resolve(n_threads, flops, N * groups * n_blocks)
    work = thread_workspace(n_threads, cob * K * chunk, x.dtype)
    wt = np.ascontiguousarray(
        weight.reshape(groups, cin_g, cout_g * K).transpose(0, 2, 1))
    bias_arr = np.zeros(1, dtype=x.dtype) if bias is None else bias
    with _threads.blas_pinned:
        _transposed.conv_transpose_nd(
            x.reshape(N, C_in, -1), wt, bias_arr, out.reshape(N, C_out, -1),
            spans[0], spans[1], spans[2], spatial[1], W, o3[1], o3[2],
            k3[0], k3[1], k3[2], s3[0], s3[1], s3[2], groups, cob, chunk,
            bias is not None, spec["activation"] == "relu", work, n_threads)
    return out


OPS = [ConvTransposeND(1), ConvTransposeND(2), ConvTransposeND(3)]
