"""Depthwise, pointwise and depthwise-separable convolution (1-D, 2-D, 3-D).

``depthwise_conv{1,2,3}d``
    Every input channel ``c`` is convolved with its own ``m`` filters
    (``depth_multiplier``); output channel ``c*m + j`` reads input channel ``c`` only.
    This is PyTorch's ``conv2d(groups=C_in)`` with ``C_out = m*C_in``: weight
    ``(m*C_in, 1, *k)``, bias ``(m*C_in,)``. Padding as for ``conv``: ints, per-axis
    ints, ``(lo, hi)`` pairs, ``"valid"``, ``"same"`` (TF rule, any stride),
    ``"same_lower"``, and every padding mode.
``pointwise_conv{1,2,3}d``
    A 1x1 convolution (optionally strided and grouped): weight ``(C_out, C_in/g, 1, ...)``.
    It is a GEMM and runs on the dense convolution's kernel.
``separable_conv{1,2,3}d``
    Depthwise (multiplier ``m``) followed by pointwise, as one op. Parameters
    ``depthwise_weight`` ``(m*C_in, 1, *k)`` and ``pointwise_weight``
    ``(C_out, m*C_in, 1, ...)``. The ``bias`` key chooses the bias convention:

    * ``"pointwise"`` (default, as Keras' ``SeparableConv``): one bias
      ``pointwise_bias`` ``(C_out,)`` after the pointwise step;
    * ``"both"`` (two PyTorch convolutions with their default biases):
      ``depthwise_bias`` ``(m*C_in,)`` and ``pointwise_bias`` ``(C_out,)``;
    * ``"none"``.

    Example, 3x3, 32 -> 64: 288 + 2,048 = 2,336 parameters with ``"none"``, 2,400 with
    ``"pointwise"``, 2,432 with ``"both"`` (a dense 3x3 conv without bias: 18,432).
    The activation (None or ``"relu"``) is applied once, at the end.

Computation and memory
----------------------
Depthwise convolution (and grouped convolution with few channels per group, see
:func:`prefers_direct`, unless ``conv2d``'s "auto" takes Winograd for a 3x3 stride-1
layer with more than 8 of them) runs on direct kernels
(``pyconv._kernels._depthwise``):

* one input channel per group, 2-D, 3x3, 5x5 or 7x7, stride 1 or 2 on both axes,
  dilation 1 (the common depthwise layers, any padding and mode, any multiplier): the
  plane kernel, over units of (image, output channel, band of rows), one contiguous
  run of units per thread. A band is swept in strips one vector wide, down the rows,
  each input row loaded once and feeding the output rows that read it through running
  partial sums (3x3 at stride 1: 3 loads, 9 multiplies, 9 adds per output vector,
  each kernel row's sum formed with FMA in the AVX2 build; at stride 2, two input
  rows per output row, each loaded as pairs of vectors split into their even and odd
  lanes). Strips whose taps stay inside the input rows read them in place (padding
  rows come from a row of pad values), and so do the edge strips of a 3x3 stride-1
  layer that reach one column past the row, with that lane replaced by the padding's
  value (8x256x56x56, one thread, against padded copies: float32 7.6 -> 7.3 ms,
  float64 15.2 -> 14.9 ms), except on the input's first and last planes, where that
  column lies outside the array; other edge strips read small padded copies of their
  columns, so there are no scalar edge columns for any padding mode. Outputs of
  :data:`STREAM_MIN_BYTES` or more are computed into scratch and copied out with
  non-temporal stores, which skip reading the output's lines into the cache first;
  the copy of one band is done while the next band computes, a vector per output row
  of each strip, so that the stores drain between the rows' arithmetic (8x256x56x56,
  2 threads, against a share in one burst at the start of each strip: float32 1.66 ->
  1.33 ms, float64 3.97 -> 3.41 ms; an older AVX2 machine had favoured the burst),
  and the next band's input is prefetched meanwhile into L2 (a line per output vector,
  two at stride 2; into L2 rather than L1, where the band's own rows and scratch
  already are: float32, 2 threads, 1.23 -> 1.13 ms, float64 2.79 -> 2.67 ms, medians
  of 21 alternating calls), so that memory traffic and arithmetic overlap. Measured on 8x256x56x56
  (medians of 25 alternating calls in one process, two runs), against the earlier
  version of this kernel that copied every band padded into scratch and streamed it
  out at once: one thread, float32 8.9-9.0 ->
  8.0-8.2 ms, float64 16.1-17.5 -> 14.9-15.0 ms; 2 threads, float32 4.7-5.7 -> 4.5-5.4
  ms, float64 8.7-8.9 -> 7.7-8.4 ms. At stride 2 (same shape, medians of 15
  alternating calls in one process, two runs), against the row kernel it replaced:
  one thread, float32 8.7-8.9 -> 5.0 ms, float64 11.4-12.9 -> 8.2 ms; 2 threads,
  float32 4.6-4.8 -> 2.8 ms, float64 6.8-8.0 -> 4.5-4.6 ms. 5x5 and 7x7, against the
  row kernel (one run, medians of 9 calls; float32, 2 threads): 5x5 stride 1 28.2 ->
  8.8 ms, stride 2 15.0 -> 4.4 ms; 7x7 stride 1 55.9 -> 15.5 ms, stride 2 28.8 ->
  6.9 ms. Extra memory per thread, for a K x K kernel at stride ``s``, with ``R =
  s*(band - 1) + K`` (the input rows of a band): ``1 + max(W + 1, L, R) + R * L``
  values with ``L = s*v + K - 1`` (``v``: values per vector, 8 or 4 with AVX2), plus
  ``2 * band * OW`` when streaming (a band is a whole plane unless there are fewer
  planes than threads), and ``2 * R`` row pointers.
* other plain depthwise (one input and one output channel per group): the row kernel,
  parallel over (image, channel) planes, each output row accumulated in place from the
  input rows with vectorised interior loops and table-driven edges (3x3 fused into one
  pass, two output rows at a time at stride 1). No extra memory.
* other 1-D and 2-D layers at stride 1: the flat kernel, over units of (image, group,
  band of output rows). The padded input rows of a band (pad value, mirrored, clamped
  or wrapped pixels) are laid end to end, ``Wp = OW + (KW-1)*dw`` values each, channel
  after channel, so that output ``(oh, ow)`` at ``f = oh*Wp + ow`` reads tap ``(kh,
  kw)`` at ``f + kh*dh*Wp + kw*dw``: the rows and the seams between them are one run
  of unit-stride loads, swept by register blocks of 8 output channels x 3 vectors
  (AVX-512; 4 x 3 with AVX2) that compute the ``Wp - OW`` positions at the end of
  each row too and drop them (2 of 58 on a 3x3 layer 56 wide, where the padded-row
  kernel's row blocks compute 80 columns for 56). In the AVX-512 build the blocks
  store straight into the output rows (:data:`FLAT_DIRECT_WRITES`), a vector that
  spans two rows as one masked store per row, leaving out the dropped positions;
  elsewhere their outputs go to scratch, then to the output rows, outputs of
  :data:`STREAM_MIN_BYTES` or more by non-temporal stores, a few vectors between
  each of the next unit's blocks. The next unit's input is prefetched meanwhile. The
  sums run in the same order as the padded-row kernel's: the same bits.
  8x256x56x56, 8 per group, float32, 2 threads: 5.2-6.0 ms against 6.7-9.2 ms for
  Winograd F4 and 6.5-7.4 ms for the padded-row kernel; 16 per group 8.8 against
  13.2 ms; 8 per group at 7x7 0.57 against 2.84 ms (medians of 7 alternating
  calls), before the direct stores, which took the first layer from 5.0-5.3 to
  4.4-4.7 ms (float64 9.9 -> 8.3 ms; 1.96 -> 1.78 ms on 8x1024x14x14, 128
  groups), and the inline copy of rows whose edges are all padding (zeros and
  constant modes; the other modes map their edge columns), 4.3-4.6 -> 3.9-4.1 ms.
  Extra memory per thread: the padded rows of a band, ``C_in/groups *
  (band + (KH-1)*dh) * Wp`` values (bands sized to :data:`FLAT_BAND_BYTES`), and
  without the direct stores one (two when streaming) output scratch of
  ``C_out/groups * band * Wp`` values rounded up to a block, plus ``C_in/groups *
  KH`` row offsets; layers whose one-row band would take more than
  :data:`FLAT_MAX_BYTES` (long rows with many channels) run on the padded-row kernel.
* everything else: the padded-row kernel, parallel over (image, group). The input
  rows a group reads are copied once into per-thread scratch as the padded rows the
  taps see (pad value, mirrored/clamped/wrapped pixels; split into stride phases), so
  every tap of every column is a unit-stride vector load; blocks of 4 output channels
  x 16 or 24 columns (float32, AVX2) stay in registers over all input channels and
  taps, updated by FMA in the AVX2 build (one rounding per tap; the baseline build
  multiplies and adds, so the two builds differ in the last bits here). Measured on
  8x256x56x56, 8 channels per group, one thread: 46.9 ms with a multiply and an add
  per tap, 33.6 ms with FMA, 32.1 ms with the 24-column block first on rows of an odd
  number of vectors (7 here).
  Extra memory per thread: the group's padded input rows, ``(C_in/groups * D * H + 1)
  * QS`` values where ``QS`` is the padded row length (while that is at most
  ``ROW_SCRATCH_BYTES``; otherwise only the rows of one output row, at most
  ``ROW_SCRATCH_BYTES`` or one row), plus ``C_in/groups * KD * KH`` row offsets.

A depth multiplier above ``DIRECT_MAX_CHANNELS_PER_GROUP`` runs on the dense
convolution's im2col + GEMM path instead (faster there; its column buffer is bounded
as documented in :mod:`pyconv.ops.conv`).

The separable op never materialises the whole depthwise result: it works on bands of
output rows of one image. Each thread computes the depthwise output of its band
(``m*C_in * rows * OW`` values, at most ``BAND_BYTES`` unless a single output row of all
``m*C_in`` channels is larger; on the plane kernel for 2-D 5x5 and 7x7 and for stride
2, one channel's band at a time, else on the row or padded-row kernel) and multiplies
it at once by the pointwise weight into the output: on the packed GEMM tiles of
:mod:`pyconv.ops.conv` in the AVX2 build (up to ``PACKED_MAX_ROWS`` output channels;
the weight packed once per parameter array), else on BLAS. On 8x32x112x112 -> 64, 3x3
(medians of 11 alternating calls in one process, two runs), the packed tiles against
OpenBLAS: float32 1 thread 22.3-23.1 -> 18.1 ms, 2
threads 11.8-12.3 -> 9.8-10.0 ms; float64 58.6-59.5 -> 34.2-34.5 ms and 30.5-31.2 ->
18.2-18.6 ms. Extra memory: one such band per thread, reused across calls, and on the
packed tiles one column panel (``k_block * 24`` or ``* 12`` values) per thread (on the
plane kernel also its scratch for one band, as above; on the padded-row kernel the
padded rows of one input channel).

Examples
--------
>>> import numpy as np, pyconv
>>> sep = pyconv.Conv({"op": "separable_conv2d", "in_channels": 32, "out_channels": 64,
...                    "kernel_size": 3, "padding": "same"}, seed=0)
>>> sep.param_count
2400
>>> x = np.random.default_rng(0).random((2, 32, 16, 16), dtype=np.float32)
>>> sep.apply(x).shape
(2, 64, 16, 16)
>>> dw = pyconv.Conv({"op": "depthwise_conv2d", "in_channels": 32, "depth_multiplier": 2,
...                   "kernel_size": 3, "stride": 2, "padding": "same",
...                   "padding_mode": "reflect"}, seed=0)
>>> dw.param_shapes
{'weight': (64, 1, 3, 3), 'bias': (64,)}
>>> dw.apply(x).shape
(2, 64, 8, 8)
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np

from pyconv import _geometry, _threads
from pyconv._errors import SpecError
from pyconv._spec import boolean, choice, int_tuple, int_value, key, optional
from pyconv._workspace import thread_workspace
from pyconv.ops._base import Op, kaiming_uniform, prod
from pyconv.ops.conv import check_padding_value, conv_forward, window_keys

#: The 3x3 plane kernel writes outputs of at least this size with non-temporal stores
#: (they would not stay in the cache; measured on 8x256x56x56 float64, 2 threads:
#: 13.2 -> 10.8 ms); smaller ones stay in the cache for the next layer.
STREAM_MIN_BYTES = 8 << 20
#: Upper bound on one thread's depthwise band in the separable op (it stays in L2).
BAND_BYTES = 256 << 10
#: A band aims at this many output columns, enough for an efficient pointwise GEMM.
BAND_COLUMNS = 512
#: Upper bound on one thread's padded input rows in the direct kernels (L2-resident).
ROW_SCRATCH_BYTES = 128 << 10
#: The flat kernel's padded input rows per thread: bands of output rows are sized so
#: that their rows take at most this (a whole 56x56 plane of 8 float32 channels).
FLAT_BAND_BYTES = 128 << 10
#: 1-D and 2-D layers at stride 1 on the flat kernel (False: the padded-row kernel,
#: which gives the same bits; for comparisons).
FLAT_KERNEL = True
#: The flat kernel takes a layer while one output row's band (its padded input rows and
#: two output scratches) takes at most this per thread.
FLAT_MAX_BYTES = 4 << 20
#: The flat kernel's register blocks store into the output rows (where the build
#: has masked vector stores), with no output scratch to copy or stream out (False:
#: the scratch, for comparisons; the same bits).
FLAT_DIRECT_WRITES = True
#: conv2d's "auto" leaves Winograd to the flat kernel for groups of at most this many
#: input and output channels (2-D 3x3 stride 1: layers the flat kernel takes).
#: Measured at 8 per group, 8 images, 2 threads, its time over F4's (best of two
#: medians of 7 calls): AVX-512 build, float32 256x56x56 0.69, 512x28x28 0.78,
#: 1024x14x14 0.69, 256x7x7 0.36, float64 0.60-0.72; AVX2 build on the same CPU,
#: float32 0.84-0.95, float64 0.86-0.91 but 1.14 at 14x14. At 16 per group F4 is
#: ahead where the planes are large (float32 1.27 at 56x56, 1.19 at 28x28).
FLAT_MAX_CHANNELS = 8
#: The direct grouped kernel beats im2col + GEMM while a group has at most this many
#: input and at most this many output channels (1x1 kernels: at most
#: ``DIRECT_MAX_CHANNELS_1X1``). Measured (2x(C)x56x56, 3x3 pad 1, one thread,
#: im2col time / direct time, float32 / float64): 1 in / 1 out 6.1 / 3.2, 8/8 1.9 / 1.2,
#: 1/16 1.4 / 1.4, 16/8 1.6 / 1.2, 16/16 1.6 / 0.96, 8/32 0.96 / 1.0, 64/64 1.0 / 0.84;
#: 5x5 8/8 1.9 / 1.3; 1x1 4/4 1.4 / 1.4, 8/8 1.15 / 0.95, 16/16 0.88 / 0.78. The GEMM's
#: efficiency grows with both dimensions while the direct kernel's cost per
#: multiply-add does not.
DIRECT_MAX_CHANNELS_PER_GROUP = 16
DIRECT_MAX_CHANNELS_1X1 = 8
#: float32 output rows narrower than this (one AVX2 vector) leave the direct kernel's
#: column blocks to its scalar edge loop; from ``DIRECT_MIN_CHANNELS_NARROW`` channels
#: per group im2col is then faster. Measured (8x256, 2 threads, direct / im2col):
#: output width 6-7, 8 per group 1.43-1.63, 16 per group 2.2-2.5, 4 per group
#: 0.81-1.09; width 14, 8 per group 0.45-0.88. float64 (4-value vectors): direct
#: faster at width 6-7 (0.44-1.07). Not for the flat kernel (1-D and 2-D layers at
#: stride 1), whose blocks run along the rows end to end: 8x256x7x7, 8 per group, 2
#: threads, 0.27 ms against im2col's 0.64.
DIRECT_MIN_WIDTH_FLOAT32 = 8
DIRECT_MIN_CHANNELS_NARROW = 8
_INT32_MAX = 2**31 - 1


def _kernels_for(width, itemsize):
    """The kernel module for output rows of ``width`` values: on a CPU with AVX-512
    its AVX-512 build, unless a row is narrower than one 512-bit vector (16 float32
    values, 8 float64): that build leaves such rows to scalar loops, the AVX2 build
    still vectorises rows from 8 (4) values. Both give the same bits."""
    from pyconv import _kernels
    return _kernels.load("_depthwise", wide=width * itemsize >= 64)


def _activation_key():
    return key("activation", optional(choice("relu")), None,
               "Activation fused into the kernel's epilogue: None or 'relu'.")


class _Plan:
    """Index tables and 3-D geometry for the direct kernels (1-D/2-D: unit leading axes).

    Besides the depth and height tap tables, the kernels get the padded row the
    width taps see: padded column ``j = ow*sw + kw*dw`` holds input column
    ``jmap[j]`` (-1: the pad value; columns no tap reads are -1 too), columns
    ``[jl, jr)`` are input columns ``j - lo`` (copied in one piece). A padded row is
    stored split into ``sw`` phases of ``Mq`` values, so tap ``kw`` of column ``ow``
    sits at ``qoff[kw] + ow``: unit stride for any stride and dilation.
    """

    def __init__(self, spatial, spec, pads, out_spatial):
        self.spatial = _geometry.as_3d(spatial, 1)
        self.k = _geometry.as_3d(spec["kernel_size"], 1)
        s3 = _geometry.as_3d(spec["stride"], 1)
        d3 = _geometry.as_3d(spec["dilation"], 1)
        p3 = [(0, 0)] * (3 - len(pads)) + [tuple(p) for p in pads]
        self.out = _geometry.as_3d(out_spatial, 1)
        mode = spec["padding_mode"]
        tables = [_geometry.tap_index_table(n, o, k, s, d, lo, mode)
                  for n, o, k, s, d, (lo, _) in zip(self.spatial, self.out, self.k, s3,
                                                     d3, p3)]
        self.idx_d, self.idx_h, self.idx_w = (t.ravel() for t in tables)
        W, OW, KW = self.spatial[2], self.out[2], self.k[2]
        sw, dw, lo = s3[2], d3[2], p3[2][0]
        # The row kernel's width geometry: per-tap interior spans and their common
        # interior [L, R), where every tap lands inside the image.
        self.span = _geometry.interior_spans(W, OW, KW, sw, dw, lo)
        spans = self.span.reshape(-1, 3)
        self.L = int(spans[:, 0].max())
        self.R = int(spans[:, 1].min())
        self.dw = dw
        # Padded width read by the taps, and its phase-split layout.
        self.Wp = Wp = max(1, (OW - 1) * sw + (KW - 1) * dw + 1) if OW else 1
        Mq = -(-Wp // sw)
        self.qoff = np.array([(kw * dw) % sw * Mq + (kw * dw) // sw for kw in range(KW)],
                             dtype=np.intp)
        jmap = np.full(Wp, -1, dtype=np.intp)
        if OW:
            j = (np.arange(OW)[None, :] * sw + np.arange(KW)[:, None] * dw).ravel()
            jmap[j] = tables[2].ravel()
        jl = min(max(lo, 0), Wp)
        jr = max(min(lo + W, Wp), jl)
        # Inside the image every padding mode reads the pixel itself.
        inside = jmap[jl:jr]
        assert ((inside == np.arange(jl, jr) - lo) | (inside < 0)).all()
        self.jmap = jmap
        # Per phase r: padded columns m*sw + r for m in [ma, mb) are inside the image.
        self.phase = np.array([(min(max(-(-(jl - r) // sw), 0), Mq),
                                min(max(-(-(jr - r) // sw), 0), Mq),
                                min(max(-(-(Wp - r) // sw), 0), Mq)) for r in range(sw)],
                              dtype=np.intp).ravel()
        self.phase[1::3] = np.maximum(self.phase[1::3], self.phase[0::3])
        self.QS = -(-(sw * Mq) // 8) * 8  # rows 32/64-byte aligned relative to each other
        self.sw = sw
        self.pad_value = spec["padding_value"]
        self.rows = self.out[0] * self.out[1]
        self.P = self.rows * OW
        self.plane = prod(self.spatial)
        self._dims = [*self.spatial, *self.out, *self.k, sw, Wp, Mq, self.QS, lo]
        # 2-D 3x3, 5x5 or 7x7, dilation 1, stride 1 or 2 on both axes: the plane
        # kernel's tables of padded positions (at stride 2 its strips read one column
        # more than the taps)
        self.plane_conv = None
        K = self.k[2]
        if (self.spatial[0] == 1 and self.out[0] == 1 and tuple(p3[0]) == (0, 0)
                and tuple(self.k) in ((1, 3, 3), (1, 5, 5), (1, 7, 7))
                and tuple(s3[1:]) in ((1, 1), (2, 2)) and tuple(d3[1:]) == (1, 1)):
            (lo_h, _), (lo_w, _) = p3[1], p3[2]
            s = s3[1]
            rowidx, colidx = (_geometry.tap_index_table(n, 1, count, 1, 1, lo, mode)[:, 0]
                              for n, count, lo in ((self.spatial[1],
                                                    s * (self.out[1] - 1) + K, lo_h),
                                                   (W, s * OW + K - 1, lo_w)))
            self.plane_conv = (rowidx, colidx, lo_w, s, K)
        # 1-D/2-D at stride 1: the flat kernel's map of padded rows to input rows
        # (output row oh, tap kh reads padded row oh + kh*dh)
        self.flat = None
        if (self.spatial[0] == 1 and self.out[0] == 1 and self.k[0] == 1
                and tuple(s3[1:]) == (1, 1) and OW > 0):
            dh, OH, KH = d3[1], self.out[1], self.k[1]
            # (-1: rows no tap reads, where OH < dh, are filled with the pad value)
            hmap = np.full(OH + (KH - 1) * dh, -1, dtype=np.intp)
            for kh, row in enumerate(self.idx_h.reshape(KH, OH)):
                hmap[kh * dh:kh * dh + OH] = row
            self.flat = (hmap, dh)
        for table in (self.idx_d, self.idx_h, self.idx_w, self.span, self.jmap,
                      self.qoff, self.phase, *(self.plane_conv or ())[:2],
                      *(self.flat or ())[:1]):
            table.flags.writeable = False  # plans are cached and shared

    def scratch(self, cin_g, itemsize):
        """``(cached, batch, values, ints)``: how the kernels hold padded rows.

        Cached: every input row of a group has a slot (``cin_g*D*H + 1`` rows of
        ``QS`` values, the last one padding), the rows a unit reads filled once at its
        start; used while that is at most ``ROW_SCRATCH_BYTES``. Otherwise the rows of
        one output row are filled for it, ``batch`` at a time (as many as fit, at
        least one). ``values``/``ints``: scratch per thread in the compute dtype and
        in intp (row offsets).
        """
        nrows = cin_g * self.k[0] * self.k[1]
        slots = cin_g * self.spatial[0] * self.spatial[1]
        if (slots + 1) * self.QS * itemsize <= ROW_SCRATCH_BYTES:
            return True, nrows, (slots + 1) * self.QS, nrows
        batch = min(nrows, max(1, ROW_SCRATCH_BYTES // (self.QS * itemsize)))
        return False, batch, batch * self.QS, nrows

    def row_kernel_args(self):
        """Geometry arguments of the row kernels (``rows_direct``, ``separable_rows``)."""
        return (self.idx_d, self.idx_h, self.idx_w, self.span, self.L, self.R,
                self.spatial[1], self.spatial[2], *self.out, *self.k, self.sw, self.dw)

    def args(self, cached, batch):
        """Geometry arguments shared by the kernels, in their order."""
        dims = np.array(self._dims + [batch, int(cached)], dtype=np.intp)
        return self.idx_d, self.idx_h, self.jmap, self.qoff, self.phase, dims


@functools.lru_cache(maxsize=64)
def _cached_plan(spatial, kernel_size, stride, dilation, pads, out_spatial, mode,
                 pad_value):
    spec = {"kernel_size": kernel_size, "stride": stride, "dilation": dilation,
            "padding_mode": mode, "padding_value": pad_value}
    return _Plan(spatial, spec, pads, out_spatial)


def _plan(spatial, spec, pads, out_spatial):
    """The :class:`_Plan` of a geometry, built once (its tables are read-only)."""
    return _cached_plan(tuple(spatial), tuple(spec["kernel_size"]), tuple(spec["stride"]),
                        tuple(spec["dilation"]), tuple(tuple(p) for p in pads),
                        tuple(out_spatial), spec["padding_mode"],
                        float(spec["padding_value"]))


def _bias_or_dummy(bias, dtype):
    return np.zeros(1, dtype=dtype) if bias is None else bias


def grouped_direct_forward(op_name, x, weight, bias, out, spec, pads, out_spatial,
                           n_threads):
    """Grouped convolution on the direct kernel; same signature as ``conv_forward``.

    ``spec`` needs ``groups``, ``kernel_size``, ``stride``, ``dilation``,
    ``padding_mode``, ``padding_value`` and ``activation``; ``x`` and ``out`` are
    C-contiguous in the compute dtype, ``weight`` is ``(C_out, C_in/groups, *k)``.
    Extra memory as in the module docstring. Depthwise convolution is the case
    ``groups == C_in``.
    """
    N, C_in = x.shape[:2]
    C_out = weight.shape[0]
    groups = spec["groups"]
    plan = _plan(x.shape[2:], spec, pads, out_spatial)
    _depthwise = _kernels_for(plan.out[2], x.dtype.itemsize)
    cin_g = C_in // groups
    cout_g = C_out // groups
    flops = 2 * N * C_out * plan.P * cin_g * prod(plan.k)
    relu = spec["activation"] == "relu"
    bias_arg = _bias_or_dummy(bias, x.dtype)
    if cin_g == 1 and plan.plane_conv is not None and plan.out[2] > 0:
        # 3x3, 5x5, 7x7 at stride 1 or 2: vector strips down the rows, the input read
        # in place
        rowidx, colidx, lo_w, stride, ksize = plan.plane_conv
        OH, OW = plan.out[1], plan.out[2]
        n_threads = _threads.resolve(n_threads, flops, N * C_out * OH)
        band = _rows_per_tile(OH, N * C_out, n_threads)
        stream = out.nbytes >= STREAM_MIN_BYTES
        values, pointers = _depthwise.plane_conv_workspace(
            band, plan.spatial[2], OW, stream, x.dtype.itemsize, stride, ksize)
        work = thread_workspace(n_threads, values, x.dtype)
        row_work = np.empty((n_threads, pointers), dtype=np.intp)
        _depthwise.plane_conv(
            x.reshape(N, C_in, -1), weight.reshape(C_out, -1), bias_arg,
            out.reshape(N, C_out, -1), rowidx, colidx, plan.spatial[1], plan.spatial[2],
            OH, OW, lo_w, plan.pad_value, bias is not None, relu, band, stream, work,
            row_work, n_threads, stride, ksize)
        return out
    if _row_kernel_wins(cin_g, cout_g):
        n_threads = _threads.resolve(n_threads, flops, N * C_out * plan.rows)
        _depthwise.rows_direct(
            x.reshape(N, C_in, -1), weight.reshape(C_out, -1), bias_arg,
            out.reshape(N, C_out, -1), *plan.row_kernel_args(), groups, plan.pad_value,
            bias is not None, relu, _rows_per_tile(plan.rows, N * C_out, n_threads),
            n_threads)
        return out
    if plan.flat is not None and FLAT_KERNEL and _flat_fits(plan, cin_g, cout_g,
                                                            x.dtype.itemsize):
        # stride 1: the padded rows laid end to end, whole bands in register blocks
        from pyconv import _kernels
        hmap, dh = plan.flat
        # widest build: rows are not its vectors' unit here, their runs are
        _depthwise = _kernels.load("_depthwise")
        Wp, OH, KH = plan.Wp, plan.out[1], plan.k[1]
        band = max(1, min(OH, FLAT_BAND_BYTES // (cin_g * Wp * x.dtype.itemsize)
                          - (KH - 1) * dh))
        n_threads = _threads.resolve(n_threads, flops, N * groups * -(-OH // band))
        band = min(band, _rows_per_tile(OH, N * groups, n_threads))
        direct = FLAT_DIRECT_WRITES and _depthwise.FLAT_MASKED_STORES
        stream = not direct and out.nbytes >= STREAM_MIN_BYTES
        values, ints = _depthwise.flat_workspace(cin_g, cout_g, band, KH, dh, Wp,
                                                 x.dtype.itemsize, stream, direct)
        work = thread_workspace(n_threads, values, x.dtype)
        iwork = np.empty((n_threads, ints), dtype=np.intp)
        _depthwise.grouped_flat(
            x.reshape(N, C_in, -1), weight.reshape(C_out, -1), bias_arg,
            out.reshape(N, C_out, -1), *plan.args(False, 1), hmap, dh, groups,
            plan.pad_value, bias is not None, relu, band, stream, work, iwork, n_threads,
            direct=direct)
        return out
    n_threads = _threads.resolve(n_threads, flops, N * groups * plan.rows)
    cached, batch, values, ints = plan.scratch(cin_g, x.dtype.itemsize)
    work = thread_workspace(n_threads, values, x.dtype)
    iwork = np.empty((n_threads, ints), dtype=np.intp)
    _depthwise.grouped_direct(
        x.reshape(N, C_in, -1), weight.reshape(C_out, -1), bias_arg,
        out.reshape(N, C_out, -1), *plan.args(cached, batch), groups, plan.pad_value,
        bias is not None, relu, _rows_per_tile(plan.rows, N * groups, n_threads), work,
        iwork, n_threads)
    return out


def _flat_fits(plan, cin_g, cout_g, itemsize):
    # A band of one output row (its padded input rows, two output scratches) within
    # FLAT_MAX_BYTES: long rows with many channels go to the padded-row kernel, whose
    # scratch is bounded by ROW_SCRATCH_BYTES.
    dh = plan.flat[1]
    return (cin_g * (1 + (plan.k[1] - 1) * dh) + 2 * cout_g) * plan.Wp * itemsize \
        <= FLAT_MAX_BYTES


def _rows_per_tile(rows, planes, n_threads):
    """Whole planes per unit, unless there are fewer planes than threads."""
    if planes >= n_threads:
        return max(rows, 1)
    split = -(-n_threads // planes)
    return max(1, -(-rows // split))


def _row_kernel_wins(cin_g, cout_g):
    # One input and one output channel per group: the row kernel reads the input in
    # place (and pairs output rows at stride 1). Measured, 8x256x56x56 3x3, one
    # thread, row / padded-row kernel: float32 9.9 / 14.1 ms at stride 1, 8.9 / 9.7 ms
    # at stride 2; float64 within noise of each other. With more channels per group
    # the padded-row kernel's register blocking wins.
    return cin_g == 1 and cout_g == 1


def _direct_wins(cin_g, cout_g, kernel_size=(3,)):
    limit = (DIRECT_MAX_CHANNELS_1X1 if prod(kernel_size) == 1
             else DIRECT_MAX_CHANNELS_PER_GROUP)
    return max(cin_g, cout_g) <= limit


def flat_beats_winograd(spec):
    """Whether a 2-D ``conv2d`` spec that Winograd could run goes faster on the flat
    kernel: groups of at most :data:`FLAT_MAX_CHANNELS` input and output channels.

    Examples
    --------
    >>> flat_beats_winograd({"in_channels": 256, "out_channels": 256, "groups": 32})
    True
    >>> flat_beats_winograd({"in_channels": 256, "out_channels": 256, "groups": 16})
    False
    """
    groups = spec["groups"]
    return FLAT_KERNEL and max(spec["in_channels"] // groups,
                               spec["out_channels"] // groups) <= FLAT_MAX_CHANNELS


def prefers_direct(spec, input_shape, dtype=None, out_width=None):
    """Whether a ``conv`` spec runs faster on the direct grouped kernel than im2col+GEMM.

    True for convolutions, grouped or not, with at most
    ``DIRECT_MAX_CHANNELS_PER_GROUP`` input and output channels per group
    (``DIRECT_MAX_CHANNELS_1X1`` for 1x1 kernels; depthwise with a small multiplier
    and single-channel image filtering included): the
    GEMM's dimensions ``C_out/groups`` and ``C_in/groups * prod(k)`` are then too small
    for it to pay for the column copy. The exception: float32 output rows
    (``out_width``, the last output axis) narrower than ``DIRECT_MIN_WIDTH_FLOAT32``
    with ``DIRECT_MIN_CHANNELS_NARROW`` or more channels per group, unless the layer
    runs on the flat kernel (more than one input channel per group, 1-D or 2-D,
    stride 1 on every axis; a spec without ``stride`` counts as strided).
    ``input_shape`` is accepted for further size-dependent rules.

    Examples
    --------
    >>> spec = {"in_channels": 256, "out_channels": 256, "groups": 32,
    ...         "kernel_size": (3, 3), "stride": (2, 2)}
    >>> prefers_direct(spec, (8, 256, 56, 56), "float32", out_width=28)
    True
    >>> prefers_direct(spec, (8, 256, 14, 14), "float32", out_width=7)
    False
    >>> prefers_direct({**spec, "stride": (1, 1)}, (8, 256, 7, 7), "float32", out_width=7)
    True
    """
    groups = spec["groups"]
    cin_g, cout_g = spec["in_channels"] // groups, spec["out_channels"] // groups
    stride = spec.get("stride", (2,))
    # (one input channel per group goes to the plane or row kernels instead)
    flat = (FLAT_KERNEL and cin_g > 1 and len(stride) <= 2
            and all(s == 1 for s in stride))
    if (out_width is not None and dtype is not None and np.dtype(dtype) == np.float32
            and not flat and out_width < DIRECT_MIN_WIDTH_FLOAT32
            and max(cin_g, cout_g) >= DIRECT_MIN_CHANNELS_NARROW):
        return False
    return _direct_wins(cin_g, cout_g, spec["kernel_size"])


# -- depthwise ------------------------------------------------------------------------------
class DepthwiseConvND(Op):
    """Depthwise convolution over ``rank`` spatial axes (see the module docstring)."""

    def __init__(self, rank):
        self.rank = rank
        self.name = f"depthwise_conv{rank}d"
        self.summary = (f"{rank}-D depthwise convolution: each input channel convolved "
                        "with its own depth_multiplier filters (groups = C_in).")
        self.keys = (
            key("in_channels", int_value(1), doc="Input channels C_in."),
            key("depth_multiplier", int_value(1), 1,
                "Filters per input channel m; C_out = m * C_in."),
            *window_keys(rank),
            key("bias", boolean(), True, "Add a learned bias per output channel."),
            _activation_key(),
        )
        self.formulas = {
            "output": "C_out = m*C_in; out = floor((in + lo + hi - dilation*(k-1) - 1) "
                      "/ stride) + 1; 'same': out = ceil(in / stride)",
            "params": "m*C_in * prod(k) (+ m*C_in with bias)",
            "macs": "N * m*C_in * prod(out) * prod(k)",
            "flops": "2 * MACs (bias and activation not counted)",
        }

    def check(self, spec):
        check_padding_value(self.name, spec)

    def out_channels(self, spec):
        return spec["in_channels"] * spec["depth_multiplier"]

    def geometry(self, spec, input_shape):
        return _geometry.window_geometry(self, spec, input_shape, spec["in_channels"])

    def output_shape(self, spec, input_shape):
        shape, _, out = self.geometry(spec, input_shape)
        return (shape[0], self.out_channels(spec), *out)

    def param_shapes(self, spec):
        c = self.out_channels(spec)
        shapes = {"weight": (c, 1, *spec["kernel_size"])}
        if spec["bias"]:
            shapes["bias"] = (c,)
        return shapes

    def macs(self, spec, input_shape):
        shape, _, out = self.geometry(spec, input_shape)
        return shape[0] * self.out_channels(spec) * prod(out) * prod(spec["kernel_size"])

    def init_params(self, spec, rng):
        shapes = self.param_shapes(spec)
        fan_in = prod(spec["kernel_size"])
        params = {"weight": kaiming_uniform(rng, shapes["weight"], fan_in)}
        if spec["bias"]:
            params["bias"] = kaiming_uniform(rng, shapes["bias"], fan_in)
        return params

    def forward(self, spec, x, params, out, n_threads):
        _, pads, out_spatial = self.geometry(spec, x.shape)
        conv_spec = dict(spec, groups=spec["in_channels"])
        if not _direct_wins(1, spec["depth_multiplier"], spec["kernel_size"]):
            # Many filters per channel: a (multiplier x K) GEMM per channel is faster.
            return conv_forward(self.name, x, params["weight"], params.get("bias"), out,
                                conv_spec, pads, out_spatial, n_threads)
        return grouped_direct_forward(self.name, x, params["weight"], params.get("bias"),
                                      out, conv_spec, pads, out_spatial, n_threads)


# -- pointwise ------------------------------------------------------------------------------
class PointwiseConvND(Op):
    """1x1 convolution over ``rank`` spatial axes (see the module docstring)."""

    def __init__(self, rank):
        self.rank = rank
        self.name = f"pointwise_conv{rank}d"
        self.summary = (f"{rank}-D pointwise (1x1) convolution: a per-position channel "
                        "mix, optionally strided and grouped.")
        self.keys = (
            key("in_channels", int_value(1), doc="Input channels C_in."),
            key("out_channels", int_value(1), doc="Output channels C_out."),
            key("stride", int_tuple(rank), 1, "Step between output positions."),
            key("groups", int_value(1), 1, "Channel groups; C_in and C_out divisible by it."),
            key("bias", boolean(), True, "Add a learned bias per output channel."),
            _activation_key(),
        )
        self.formulas = {
            "output": "out = floor((in - 1) / stride) + 1",
            "params": "C_out * C_in/groups (+ C_out with bias)",
            "macs": "N * C_out * prod(out) * C_in/groups",
            "flops": "2 * MACs (bias and activation not counted)",
        }

    def check(self, spec):
        g = spec["groups"]
        for name in ("in_channels", "out_channels"):
            if spec[name] % g:
                raise SpecError(self.name, "groups", f"a divisor of {name} "
                                f"({spec[name]})", g)

    def geometry(self, spec, input_shape):
        shape = self.check_input_shape(input_shape, self.rank, spec["in_channels"])
        out = tuple((n - 1) // s + 1 for n, s in zip(shape[2:], spec["stride"]))
        return shape, out

    def output_shape(self, spec, input_shape):
        shape, out = self.geometry(spec, input_shape)
        return (shape[0], spec["out_channels"], *out)

    def param_shapes(self, spec):
        shapes = {"weight": (spec["out_channels"], spec["in_channels"] // spec["groups"],
                             *([1] * self.rank))}
        if spec["bias"]:
            shapes["bias"] = (spec["out_channels"],)
        return shapes

    def macs(self, spec, input_shape):
        shape, out = self.geometry(spec, input_shape)
        return (shape[0] * spec["out_channels"] * prod(out)
                * (spec["in_channels"] // spec["groups"]))

    def init_params(self, spec, rng):
        shapes = self.param_shapes(spec)
        fan_in = spec["in_channels"] // spec["groups"]
        params = {"weight": kaiming_uniform(rng, shapes["weight"], fan_in)}
        if spec["bias"]:
            params["bias"] = kaiming_uniform(rng, shapes["bias"], fan_in)
        return params

    def forward(self, spec, x, params, out, n_threads):
        _, out_spatial = self.geometry(spec, x.shape)
        conv_spec = {"groups": spec["groups"], "kernel_size": [1] * self.rank,
                     "stride": spec["stride"], "dilation": [1] * self.rank,
                     "padding_mode": "zeros", "padding_value": 0.0,
                     "activation": spec["activation"]}
        return conv_forward(self.name, x, params["weight"], params.get("bias"), out,
                            conv_spec, [(0, 0)] * self.rank, out_spatial, n_threads)


# -- separable ------------------------------------------------------------------------------
SEPARABLE_BIAS = ("pointwise", "both", "none")


class SeparableConvND(Op):
    """Depthwise then pointwise convolution as one op (see the module docstring)."""

    def __init__(self, rank):
        self.rank = rank
        self.name = f"separable_conv{rank}d"
        self.summary = (f"{rank}-D depthwise-separable convolution: depthwise (multiplier "
                        "m) then pointwise, fused per band of rows.")
        self.keys = (
            key("in_channels", int_value(1), doc="Input channels C_in."),
            key("out_channels", int_value(1), doc="Output channels C_out."),
            key("depth_multiplier", int_value(1), 1,
                "Depthwise filters per input channel m (m*C_in intermediate channels)."),
            *window_keys(rank),
            key("bias", choice(*SEPARABLE_BIAS), "pointwise",
                "'pointwise': one bias after the pointwise step (Keras); 'both': a bias "
                "after each step (two PyTorch convs); 'none'."),
            _activation_key(),
        )
        self.formulas = {
            "output": "C_out channels; out = floor((in + lo + hi - dilation*(k-1) - 1) "
                      "/ stride) + 1; 'same': out = ceil(in / stride)",
            "params": "m*C_in * prod(k) + C_out * m*C_in, plus C_out with bias "
                      "'pointwise' (the default), m*C_in + C_out with 'both'",
            "macs": "N * prod(out) * m*C_in * (prod(k) + C_out)",
            "flops": "2 * MACs (biases and activation not counted)",
        }

    def check(self, spec):
        check_padding_value(self.name, spec)

    def mid_channels(self, spec):
        return spec["in_channels"] * spec["depth_multiplier"]

    def geometry(self, spec, input_shape):
        return _geometry.window_geometry(self, spec, input_shape, spec["in_channels"])

    def output_shape(self, spec, input_shape):
        shape, _, out = self.geometry(spec, input_shape)
        return (shape[0], spec["out_channels"], *out)

    def param_shapes(self, spec):
        mid, c_out = self.mid_channels(spec), spec["out_channels"]
        shapes = {"depthwise_weight": (mid, 1, *spec["kernel_size"])}
        if spec["bias"] == "both":
            shapes["depthwise_bias"] = (mid,)
        shapes["pointwise_weight"] = (c_out, mid, *([1] * self.rank))
        if spec["bias"] != "none":
            shapes["pointwise_bias"] = (c_out,)
        return shapes

    def macs(self, spec, input_shape):
        shape, _, out = self.geometry(spec, input_shape)
        return (shape[0] * prod(out) * self.mid_channels(spec)
                * (prod(spec["kernel_size"]) + spec["out_channels"]))

    def init_params(self, spec, rng):
        shapes = self.param_shapes(spec)
        dw_fan, pw_fan = prod(spec["kernel_size"]), self.mid_channels(spec)
        params = {}
        for name, shape in shapes.items():  # declared order: reproducible draws
            params[name] = kaiming_uniform(rng, shape,
                                           dw_fan if name.startswith("depthwise") else pw_fan)
        return params

    def forward(self, spec, x, params, out, n_threads):
        _, pads, out_spatial = self.geometry(spec, x.shape)
        plan = _plan(x.shape[2:], spec, pads, out_spatial)
        _depthwise = _kernels_for(plan.out[2], x.dtype.itemsize)
        N, C_in = x.shape[:2]
        mid, c_out = self.mid_channels(spec), spec["out_channels"]
        OW = plan.out[2]
        if max(plan.P, mid) > _INT32_MAX:
            raise ValueError(f"{self.name}: a plane of {plan.P} outputs or {mid} "
                             "intermediate channels exceeds the 2**31 - 1 limit of the "
                             "BLAS interface")
        flops = 2 * self.macs(spec, x.shape)
        n_threads = _threads.resolve(n_threads, flops, N * plan.rows)
        itemsize = x.dtype.itemsize
        rows_per_band = min(-(-BAND_COLUMNS // max(OW, 1)),
                            max(1, BAND_BYTES // (mid * max(OW, 1) * itemsize)))
        if N < n_threads:
            rows_per_band = min(rows_per_band, -(-plan.rows // -(-n_threads // N)))
        rows_per_band = max(1, min(rows_per_band, plan.rows))
        band = mid * rows_per_band * OW
        dw_bias = params.get("depthwise_bias")
        pw_bias = params.get("pointwise_bias")
        common = (x.reshape(N, C_in, -1), params["depthwise_weight"].reshape(mid, -1),
                  _bias_or_dummy(dw_bias, x.dtype),
                  params["pointwise_weight"].reshape(c_out, mid),
                  _bias_or_dummy(pw_bias, x.dtype), out.reshape(N, c_out, -1))
        flags = (dw_bias is not None, pw_bias is not None, spec["activation"] == "relu",
                 rows_per_band)
        packed = _pointwise_packed(params["pointwise_weight"], x.dtype, n_threads)
        # OpenBLAS is pinned to one thread only where it runs
        with contextlib.nullcontext() if packed else _threads.blas_pinned:
            # the plane kernel where it gains (float32, one thread: 8x64x56x56 -> 128
            # 5x5 24 -> 15.5 ms, 8x64x112x112 -> 128 3x3 stride 2 18 -> 14.7 ms; on
            # 8x32x112x112 -> 64 3x3 stride 1 it was 5 % ahead in float32 and 6 %
            # behind the row kernel in float64)
            if plan.plane_conv is not None and plan.plane_conv[3:] != (1, 3) and OW > 0:
                rowidx, colidx, lo_w, stride, ksize = plan.plane_conv
                values, pointers = _depthwise.plane_conv_workspace(
                    rows_per_band, plan.spatial[2], OW, False, itemsize, stride, ksize)
                work = thread_workspace(n_threads, band + values, x.dtype)
                row_work = np.empty((n_threads, pointers), dtype=np.intp)
                _depthwise.separable_plane(
                    *common, rowidx, colidx, plan.spatial[1], plan.spatial[2],
                    plan.out[1], OW, lo_w, stride, ksize, plan.pad_value, *flags[:3],
                    rows_per_band, work, row_work, n_threads, *packed)
            elif _row_kernel_wins(1, spec["depth_multiplier"]):
                work = thread_workspace(n_threads, band, x.dtype)
                _depthwise.separable_rows(*common, *plan.row_kernel_args(),
                                          spec["depth_multiplier"], plan.pad_value,
                                          *flags, work, n_threads, *packed)
            else:
                cached, batch, values, ints = plan.scratch(1, itemsize)
                work = thread_workspace(n_threads, band + values, x.dtype)
                iwork = np.empty((n_threads, ints), dtype=np.intp)
                _depthwise.separable(*common, *plan.args(cached, batch),
                                     spec["depth_multiplier"], plan.pad_value, *flags,
                                     work, iwork, n_threads, *packed)
        return out


def _pointwise_packed(weight, dtype, n_threads):
    """``(packed weight, k_block, panel workspace)`` for the separable op's pointwise
    step on the packed GEMM tiles (as a 1x1 convolution runs), or ``()`` for BLAS
    (a build without vector tiles, or more output channels than they serve)."""
    from pyconv import _kernels
    from pyconv.ops.conv import PACKED_MAX_ROWS, packed_tiling, packed_weight

    _conv = _kernels.load("_conv")
    c_out, mid = weight.shape[:2]
    # the tiles also on AVX-512 CPUs (unless PYCONV_GEMM=openblas): a band's GEMM has
    # a few thousand columns, where OpenBLAS's packing per call cost more (8x32x112x112
    # -> 64, 2 threads: 4.5 ms on the tiles, 5.2 on OpenBLAS)
    if (not _conv.PACKED_VECTOR or _kernels.GEMM == "openblas"
            or c_out > PACKED_MAX_ROWS[np.dtype(dtype).name]):
        return ()
    rows = _conv.PACKED_ROWS
    panel = _conv.PACKED_COLUMNS[np.dtype(dtype).name]
    _, k_block = packed_tiling(1, mid, -(-c_out // rows), rows, np.dtype(dtype).itemsize,
                               panel, 1, True)
    packed = packed_weight(weight.reshape(c_out, mid), 1, rows, k_block).reshape(-1)
    panels = thread_workspace(n_threads, k_block * panel, dtype, slot="pointwise panel")
    return packed, k_block, panels


OPS = [
    *(DepthwiseConvND(r) for r in (1, 2, 3)),
    *(PointwiseConvND(r) for r in (1, 2, 3)),
    *(SeparableConvND(r) for r in (1, 2, 3)),
]
