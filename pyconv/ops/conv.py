"""Dense N-D convolution: ``conv1d``, ``conv2d``, ``conv3d``.

Cross-correlation with stride, dilation, groups, any padding amount (including
TF-style "same" at any stride and asymmetric pairs), every padding mode, optional bias
and a fused ReLU. Weights use PyTorch's layout ``(C_out, C_in/groups, *k)``.

Extra memory: im2col on OpenBLAS, one column buffer per thread of about 256 output
columns (at most 8 MiB, at least one output row); on the packed GEMM (AVX2 builds),
one column buffer of about 256 KiB per thread (at least four 24-column panels), one
packed panel per thread, and the packed weights, cached per weight array (the
weights' size, rounded up to 4 rows per group). 2-D layers on the packed GEMM whose
output rows fill its vectors run without a column buffer (:mod:`pyconv.ops._phased`:
a strip of phase-split input rows per thread instead), and so do 1x1 layers and
unpadded stride-1 1-D layers there (the GEMM reads its rows from the input in place,
the 1-D taps through one offset per tap; two packed panels per thread). Winograd
and the FFT document theirs in :mod:`pyconv.ops._winograd` and :mod:`pyconv.ops._fft`.
"""
from __future__ import annotations

import contextlib
import weakref

import numpy as np

from pyconv import _geometry, _kernels, _memo, _threads
from pyconv._dtypes import NATIVE_NAMES
from pyconv._errors import SpecError
from pyconv._spec import boolean, choice, int_tuple, int_value, key, optional, padding, real
from pyconv._workspace import thread_workspace
from pyconv.ops import _phased
from pyconv.ops._base import Op, kaiming_uniform, prod

#: A tile aims at this many output columns (at least: whole rows): enough for an
#: efficient GEMM, small enough that the column buffer it fills, and OpenBLAS's packed
#: copy of it, stay in the core's L2 while the GEMM reads them. Measured on one core
#: against 1024: float64 5x5 32 -> 32 1.23x faster, float64 3x3x3 conv3d 1.1x, the
#: rest within noise; more tiles also balance threads better.
TILE_COLUMNS = 256
#: Hard cap on one thread's column buffer; a tile holds at least one output row.
COLUMN_BYTES_PER_THREAD = 8 << 20
#: Columns per tile where a 1x1 layer's GEMM reads its input in place (no column
#: buffer to keep in L2): fewer, wider GEMM calls, each packing the weights once.
#: OpenBLAS, 2 threads, float32, against 256 columns: 8x64x56x56 -> 256 4.5-4.7 ->
#: 4.2-4.4 ms, 8x128x28x28 -> 512 3.6 -> 3.2-3.3 ms, 8x1024x14x14 -> 256 unchanged.
DIRECT_TILE_COLUMNS = 1024
_INT32_MAX = 2**31 - 1


def window_keys(rank):
    """Keys shared by convolution-like ops: kernel, stride, padding, dilation, modes."""
    return (
        key("kernel_size", int_tuple(rank), doc="Kernel size per spatial axis."),
        key("stride", int_tuple(rank), 1, "Step between output positions."),
        key("padding", padding(rank), 0,
            "Zero-based padding amounts, or 'valid', 'same' (TF rule, any stride), "
            "'same_lower' (odd pixel first)."),
        key("dilation", int_tuple(rank), 1, "Spacing between kernel taps."),
        key("padding_mode", choice(*_geometry.PADDING_MODES), "zeros",
            "How the padding is filled: zeros, constant (padding_value), reflect "
            "(cb|abcd), symmetric (ba|abcd), replicate (aa|abcd), circular (cd|abcd)."),
        key("padding_value", real(), 0.0, "Fill value for padding_mode='constant'."),
    )


def check_groups(op, spec, keys=("in_channels", "out_channels")):
    """``groups`` must divide every channel count named in ``keys``."""
    g = spec["groups"]
    for name in keys:
        if spec[name] % g:
            raise SpecError(op, "groups", f"a divisor of {name} ({spec[name]})", g)


def check_padding_value(op, spec):
    if spec["padding_value"] != 0.0 and spec["padding_mode"] != "constant":
        raise SpecError(op, "padding_value", "0.0 unless padding_mode is 'constant'",
                        spec["padding_value"])


class ConvND(Op):
    """Standard convolution over ``rank`` spatial axes (see module docstring)."""

    inputs = ()

    def __init__(self, rank):
        self.rank = rank
        self.name = f"conv{rank}d"
        self.summary = (f"{rank}-D convolution (cross-correlation) with stride, padding "
                        "(any mode, 'same' at any stride), dilation, groups, bias, ReLU.")
        self.keys = (
            key("in_channels", int_value(1), doc="Input channels C_in."),
            key("out_channels", int_value(1), doc="Output channels C_out."),
            *window_keys(rank),
            key("groups", int_value(1), 1, "Channel groups; C_in and C_out divisible by it."),
            key("bias", boolean(), True, "Add a learned bias per output channel."),
            key("activation", optional(choice("relu")), None,
                "Activation fused into the kernel's epilogue: None or 'relu'."),
            key("algorithm", choice(*ALGORITHMS), "auto",
                "Kernel: 'auto' (chosen by shape and dtype), 'im2col' (im2col + GEMM), "
                "'direct' (direct loops, for few channels per group), 'winograd' / "
                "'winograd_f2' / 'winograd_f4' (conv1d with 3 taps and stride 1, any "
                "dilation; conv2d 3x3 stride 1 dilation 1; conv3d (kd, 3, 3) with H/W "
                "stride and dilation 1; 'winograd' picks F4 or F2 by shape), 'fft' (FFT "
                "convolution, for large kernels; 'auto' takes it for large stride-1 "
                "kernels)."),
        )
        self.formulas = {
            "output": "out = floor((in + lo + hi - dilation*(k-1) - 1) / stride) + 1; "
                      "'same': out = ceil(in / stride)",
            "params": "C_out * (C_in/groups) * prod(k) (+ C_out with bias)",
            "macs": "N * C_out * prod(out) * (C_in/groups) * prod(k)",
            "flops": "2 * MACs (bias and activation not counted)",
        }

    def check(self, spec):
        check_groups(self.name, spec)
        check_padding_value(self.name, spec)
        algo = spec["algorithm"]
        if algo.startswith("winograd") and not winograd_applies(self.rank, spec):
            raise SpecError(self.name, "algorithm", "'auto', 'im2col' or 'direct' unless "
                            "the op is conv1d with 3 taps and stride 1, conv2d with a 3x3 "
                            "kernel, stride 1 and dilation 1, or conv3d with a (kd, 3, 3) "
                            "kernel, H/W stride and dilation 1", algo)

    # -- declared rules ---------------------------------------------------------
    def geometry(self, spec, input_shape):
        """``(shape, pads, out_spatial)`` for an input shape; validates it."""
        return _geometry.window_geometry(self, spec, input_shape, spec["in_channels"])

    def output_shape(self, spec, input_shape):
        shape, _, out = self.geometry(spec, input_shape)
        return (shape[0], spec["out_channels"], *out)

    def param_shapes(self, spec):
        shapes = {"weight": (spec["out_channels"], spec["in_channels"] // spec["groups"],
                             *spec["kernel_size"])}
        if spec["bias"]:
            shapes["bias"] = (spec["out_channels"],)
        return shapes

    def macs(self, spec, input_shape):
        shape, _, out = self.geometry(spec, input_shape)
        return (shape[0] * spec["out_channels"] * prod(out)
                * (spec["in_channels"] // spec["groups"]) * prod(spec["kernel_size"]))

    def init_params(self, spec, rng):
        shapes = self.param_shapes(spec)
        fan_in = prod(shapes["weight"][1:])
        params = {"weight": kaiming_uniform(rng, shapes["weight"], fan_in)}
        if spec["bias"]:
            params["bias"] = kaiming_uniform(rng, shapes["bias"], fan_in)
        return params

    # -- computation --------------------------------------------------------------
    def _route(self, spec, shape, pads, out_spatial, dtype):
        """``(variant, fft, direct)``: the Winograd variant (or None), and whether the
        FFT and the direct kernel are to be taken, for one input shape and dtype."""
        from pyconv.ops import _fft, _winograd, depthwise

        algo = spec["algorithm"]
        winograd_shape = _winograd_shape(self.rank, spec, shape)
        variant = None

        def preferred():
            if self.rank == 1:
                return _winograd.winograd_preferred_1d(spec, out_spatial[0], dtype)
            return _winograd.winograd_preferred(*winograd_shape, dtype)

        if algo == "auto" and winograd_shape is not None:
            variant = preferred()
            if self.rank == 2 and variant and depthwise.flat_beats_winograd(spec):
                variant = None   # the direct kernel's flat form (prefers_direct)
        elif algo == "winograd":
            variant = (preferred()
                       or ("F4" if dtype == np.float64 else _winograd.FLOAT32_VARIANT))
        elif algo.startswith("winograd_"):
            variant = algo[-2:].upper()
        fft = algo == "fft" or (algo == "auto" and _fft.fft_preferred(spec, shape, pads,
                                                                      dtype))
        direct = algo == "direct" or (algo == "auto" and depthwise.prefers_direct(
            spec, shape, dtype, out_spatial[-1]))
        return variant, fft, direct

    def forward(self, spec, x, params, out, n_threads):
        shape, pads, out_spatial = self.geometry(spec, x.shape)
        from pyconv.ops import _fft, _winograd, depthwise

        weight, bias = params["weight"], params.get("bias")
        algo = spec["algorithm"]
        # the choice depends on the spec, shape and dtype alone: made once
        variant, use_fft, use_direct = _memo.cached(
            ("conv_route", self, _memo.spec_key(spec), shape, x.dtype.char),
            lambda: self._route(spec, shape, pads, out_spatial, x.dtype))
        # Winograd spreads one NaN or inf over its whole output tile; the direct
        # methods keep it to the outputs whose window holds it. Under "auto" the
        # kernel reports non-finite outputs (no serial pass over the input, which
        # cost a third of a 16-thread run) and im2col redoes the call: correct too
        # on the rare overflow that also trips it.
        check = algo == "auto"
        try:
            if variant is not None and self.rank == 1:
                return _winograd.winograd_conv1d(
                    x, weight, bias, out, pads[0], spec["padding_mode"],
                    spec["padding_value"], spec["activation"] == "relu", spec["groups"],
                    spec["dilation"][0], n_threads, variant=variant,
                    filter_transform=cached_winograd_filter(weight, variant),
                    check_finite=check)
            if variant is not None and self.rank == 3:
                return conv3d_stacked_winograd(x, weight, bias, out, spec, pads,
                                               out_spatial, variant, n_threads, check)
            if variant is not None:
                return _winograd.winograd_conv2d(
                    x, weight, bias, out, pads, spec["padding_mode"],
                    spec["padding_value"], spec["activation"] == "relu", spec["groups"],
                    n_threads, variant=variant,
                    filter_transform=cached_winograd_filter(weight, variant),
                    check_finite=check)
        except _winograd.NonFiniteTiles:
            return conv_forward(self.name, x, weight, bias, out, spec, pads, out_spatial,
                                n_threads)
        if use_fft:
            dilation = tuple(spec["dilation"])
            y = _fft.fft_conv(
                x, weight, bias, out, pads, spec["stride"], dilation, spec["groups"],
                spec["padding_mode"], spec["padding_value"], spec["activation"] == "relu",
                n_threads, weight_spectrum=lambda shape: cached_transform(
                    weight, ("fft", shape, dilation),
                    lambda: _fft.conj_weight_spectrum(weight, shape, dilation)))
            # As with Winograd: a NaN or inf spreads over whole planes here, so "auto"
            # redoes such a call with a direct method (a sum is non-finite whenever an
            # element is, or on overflow, where the direct result is right too).
            if algo == "fft" or np.isfinite(y.sum()):
                return y
        if use_direct:
            run = depthwise.grouped_direct_forward
        else:
            run = conv_forward
        return run(self.name, x, weight, bias, out, spec, pads, out_spatial, n_threads)


#: The packed GEMM serves layers of at most this many output channels per group, by
#: dtype; above it OpenBLAS was faster here. float32: 1x1 1024 -> 256 on 14x14 ran
#: 10% slower packed, 3x3 512 -> 512 on 7x7 25% (256 -> 64: 10-20% faster, 128 ->
#: 128: 10%); float64: 5-8% faster packed up to 512 channels (1x1 2048 -> 512).
PACKED_MAX_ROWS = {"float32": 128, "float64": 512}
#: The packed path's column buffer aims at this size (L2-resident while its panels
#: are packed from it); a tile holds at least PACKED_MIN_PANELS panels and at most
#: PACKED_MAX_PANELS (a 1x1 tile, without a column buffer, PACKED_DIRECT_PANELS:
#: 8 ran 7% faster than 64 on 1x1 256 -> 64 here).
PACKED_COLUMN_BYTES = 256 << 10
PACKED_MIN_PANELS = 4
PACKED_MAX_PANELS = 64
PACKED_DIRECT_PANELS = 8
#: Images are split into more tiles until there are this many units (threads of a
#: 16-core machine find work even for small batches).
PACKED_MIN_UNITS = 32
#: The weights' block of k_block taps aims at this size, so that it stays in L2
#: while every column panel of a tile streams past it.
PACKED_WEIGHT_BLOCK_BYTES = 256 << 10
PACKED_MIN_K_BLOCK = 64
#: Where the tiles take two column panels at a time (AVX-512), a k block of those
#: columns aims at this size, so that it stays in L1 (48 KiB) while every row panel
#: of the weights passes over it. float32, 2 threads, in one process against no such
#: limit (with 4-row tiles): 1x1 256 -> 64 on 8x56x56 4.9-5.3 -> 3.4-4.0 ms, conv1d
#: 128 -> 128 k3 d4 on 16x4096 31-38 -> 26-28 ms, 7x7 s2 3 -> 64 unchanged. With the
#: 8-row tiles, which read each k block half as often, 48 KiB against 24 (medians of
#: 21 alternating calls): 7x7 s2 7.03 -> 6.69 ms (one block of its 147 taps instead of
#: two; one thread 14.0 -> 13.4), conv1d 24.6 -> 24.1, 3x3 forced to im2col 7.15 ->
#: 6.98, 1x1 3.64 against 3.71 (one thread 7.12 against 7.10).
PACKED_PAIR_BYTES = 48 << 10
#: Tiles of whole pairs of panels where the tiles take two at a time (False: whole
#: panels; for comparisons).
PACKED_PAIRED_TILES = True
#: Unpadded stride-1 1-D layers on the packed tiles read their taps from the input in
#: place, with no column buffer (False: through the column buffer, for comparisons):
#: row (ci, k) of the GEMM's B is input row ci shifted by k * dilation, packed pair by
#: pair by the first 8-row tile that reads it, the next pair's rows prefetched. Medians
#: of alternating calls, 2 threads: 16x128x4096 -> 128 k3 d4 23.7-24.3 -> 23.0-23.2 ms
#: (one thread 48.3 -> 45.1), 8x64x8192 -> 64 k5 10.2 -> 9.6, 16x16x16384 -> 32 k9
#: 10.9 -> 9.2; float64 within noise; the same bits.
PACKED_ROW_TAPS = True


def packed_tiling(P, ck, m_panels, rows, itemsize, panel, pairs, direct):
    """``(tile_columns, k_block)`` on the packed GEMM, by the problem alone.

    Tiles are whole panels (only an image's last tile has a partial panel) of about
    equal width; see the ``PACKED_*`` constants for the sizes aimed at.
    """
    if direct:
        panels = PACKED_DIRECT_PANELS
    else:
        panels = max(PACKED_MIN_PANELS,
                     min(PACKED_MAX_PANELS, PACKED_COLUMN_BYTES // (ck * itemsize * panel)))
    tiles = -(-P // (panels * panel))
    if pairs * tiles < PACKED_MIN_UNITS:
        tiles = max(tiles, min(-(-PACKED_MIN_UNITS // pairs),
                               P // (PACKED_MIN_PANELS * panel)))
    tiles = max(tiles, 1)
    # whole pairs of panels where the tiles take two at a time: an odd panel runs
    # alone at half the pair's rate
    step = panel * (_kernels.packed_panel_multiple() if PACKED_PAIRED_TILES else 1)
    tile_columns = step * -(-(-(-P // tiles)) // step)
    k_block = PACKED_WEIGHT_BLOCK_BYTES // (m_panels * rows * itemsize)
    if _kernels.packed_panel_multiple() == 2:
        k_block = min(k_block, PACKED_PAIR_BYTES // (2 * panel * itemsize))
    return tile_columns, min(ck, max(PACKED_MIN_K_BLOCK, k_block))


_NO_INDEX = np.zeros(0, dtype=np.intp)


def pack_panels(w, rows, k_block):
    """``w`` (B, M, K) as the packed GEMM reads it: ``(B, panels * rows * K)``.

    Each of the B matrices' K columns is cut into blocks of ``k_block``; each block,
    contiguous, holds ``panels = ceil(M / rows)`` panels of ``rows`` rows stored
    k-major (``[k * rows + i]``), the last panel padded with zero rows.
    """
    n, m, k = w.shape
    panels = -(-m // rows)
    padded = np.zeros((n, panels * rows, k), dtype=w.dtype)
    padded[:, :m] = w
    blocks = [padded[:, :, k0:k0 + k_block].reshape(n, panels, rows, -1)
              .transpose(0, 1, 3, 2).reshape(n, -1) for k0 in range(0, k, k_block)]
    return np.ascontiguousarray(np.concatenate(blocks, axis=1))


def packed_weight(weight, groups, rows, k_block):
    """The weights as the packed GEMM reads them (:func:`pack_panels` of each group's
    ``C_out/groups`` x ``ck`` matrix), computed once per read-only array."""
    return cached_transform(weight, ("packed", groups, rows, k_block), lambda: pack_panels(
        weight.reshape(groups, weight.shape[0] // groups, -1), rows, k_block))


ALGORITHMS = ("auto", "im2col", "direct", "winograd", "winograd_f2", "winograd_f4",
              "fft")


def winograd_applies(rank, spec):
    """conv1d with 3 taps and stride 1 (any dilation), conv2d 3x3 stride 1 dilation 1,
    or conv3d (kd, 3, 3) with H/W stride and dilation 1 (any depth kernel, stride and
    dilation)."""
    if rank == 1:
        return spec["kernel_size"] == [3] and spec["stride"] == [1]
    if rank == 2:
        return (spec["kernel_size"] == [3, 3] and spec["stride"] == [1, 1]
                and spec["dilation"] == [1, 1])
    if rank == 3:
        return (spec["kernel_size"][1:] == [3, 3] and spec["stride"][1:] == [1, 1]
                and spec["dilation"][1:] == [1, 1])
    return False


def _winograd_shape(rank, spec, shape):
    """``(spec, input_shape)`` of the conv1d or conv2d that Winograd would run, or
    None."""
    if not winograd_applies(rank, spec):
        return None
    return (spec, shape) if rank < 3 else stacked_2d_spec(spec, shape)


_transforms = {}


def cached_transform(weight, tag, make):
    """``make()``, a transform of a read-only ``weight``, computed once per array.

    ``Conv`` keeps its parameters (and their dtype conversions) read-only, so an
    array's identity stands for its values; the entry goes when the array does. One
    entry per (array, kind of transform): a new ``tag`` of the same kind (``tag[0]``),
    e.g. FFT lengths for another input size, replaces the old one, so the cache holds
    at most one spectrum per weight.
    """
    if weight.flags.writeable:
        return make()
    key = (id(weight), tag[0])
    hit = _transforms.get(key)
    if hit is not None and hit[0]() is weight and hit[1] == tag:
        return hit[2]
    transform = make()
    # (the cache bound now: at interpreter exit the module's globals may be gone first)
    ref = weakref.ref(weight, lambda _, key=key, cache=_transforms: cache.pop(key, None))
    _transforms[key] = (ref, tag, transform)
    return transform


def cached_winograd_filter(weight, variant, depth_stacked=False):
    """The Winograd filter transform of a read-only weight (conv1d's or conv2d's),
    computed once per array.

    ``depth_stacked``: the weight is a conv3d ``(C_out, C_in/g, kd, 3, 3)`` weight,
    transformed as the conv2d weight of :func:`conv3d_stacked_winograd`.
    """
    from pyconv.ops import _winograd

    def make():
        w = weight
        if depth_stacked:
            co, cin_g, kd = w.shape[:3]
            w = w.transpose(0, 2, 1, 3, 4).reshape(co, kd * cin_g, 3, 3)
        u = (_winograd.winograd_filter_1d(w, variant) if w.ndim == 3
             else _winograd.winograd_filter(w, variant))
        u.setflags(write=False)   # read-only: its packed layout is cached in turn
        return u

    return cached_transform(weight, ("winograd_" + variant, depth_stacked), make)


def stacked_2d_spec(spec, input_shape):
    """The conv2d that one output depth slice of a (kd, 3, 3) conv3d amounts to."""
    kd = spec["kernel_size"][0]
    g = spec["groups"]
    return ({**spec, "kernel_size": [3, 3], "stride": [1, 1], "dilation": [1, 1],
             "padding": spec["padding"] if isinstance(spec["padding"], str)
             else spec["padding"][1:], "in_channels": kd * spec["in_channels"],
             "groups": g},
            (input_shape[0] * input_shape[2], kd * input_shape[1], *input_shape[3:]))


def conv3d_stacked_winograd(x, weight, bias, out, spec, pads, out_spatial, variant,
                            n_threads, check_finite=False):
    """conv3d with a ``(kd, 3, 3)`` kernel, H/W stride and dilation 1, by Winograd.

    Output depth slice ``od`` is a conv2d of the ``kd`` input slices it reads, stacked
    as ``kd * C_in`` channels (per group), with the weight reshaped to match: the depth
    taps become GEMM depth, so one Winograd conv2d over (image, output slice) pairs
    computes everything. The kernel reads each stacked plane where it lies in ``x``
    (depth padding through the same tap tables as im2col; a plane of padding where
    the mode pads with a value), so there is no stacked copy of the input and no
    reordering of the output. Extra memory: the Winograd workspace and plane tables.
    """
    from pyconv.ops import _winograd

    D = x.shape[2]
    kd = weight.shape[2]
    table = _geometry.tap_index_table(D, out_spatial[0], kd, spec["stride"][0],
                                      spec["dilation"][0], pads[0][0], spec["padding_mode"])
    u = cached_winograd_filter(weight, variant, depth_stacked=True)
    return _winograd.winograd_conv3d_stacked(
        x, u, bias, out, table, pads[1:], spec["padding_mode"], spec["padding_value"],
        spec["activation"] == "relu", spec["groups"], n_threads, variant=variant,
        check_finite=check_finite)


#: Fewer (image, group) pairs than this and each image is split into row tiles, so
#: that up to this many threads find work even for a single image.
MIN_UNITS = 8
#: A split never makes tiles narrower than this many output columns (GEMMs on
#: narrower column blocks ran at half speed here).
MIN_SPLIT_COLUMNS = 256


def tile_rows(rows, ow, bytes_per_column, pairs, columns=None):
    """Output rows per tile: decided by the problem alone, never by the thread count.

    GEMMs of different widths round differently, so a tiling that followed the
    thread count would make results depend on it. A tile aims at ``columns`` columns
    (default :data:`TILE_COLUMNS`), stays under ``COLUMN_BYTES_PER_THREAD`` (but holds
    at least one row), and when there are fewer than ``MIN_UNITS`` (image, group)
    pairs, images are split into enough tiles for ``MIN_UNITS`` units, down to
    ``MIN_SPLIT_COLUMNS`` columns.
    """
    columns = TILE_COLUMNS if columns is None else columns
    per_tile = min(-(-columns // ow),
                   max(1, COLUMN_BYTES_PER_THREAD // max(1, bytes_per_column * ow)))
    if pairs < MIN_UNITS:
        split = -(-MIN_UNITS // pairs)
        narrowest = -(-MIN_SPLIT_COLUMNS // ow)
        per_tile = min(per_tile, max(-(-rows // split), narrowest))
    return max(1, min(per_tile, rows))


#: An im2col plan is kept across calls only if its tap tables hold at most this many
#: entries in all (32 KiB).
PLAN_MAX_TABLE_ENTRIES = 4096


class _Im2colPlan:
    """What the im2col + GEMM kernel needs of one geometry, apart from the data:
    3-D shapes, tap tables, tiling and workspace size (see :func:`conv_forward`)."""

    def __init__(self, op_name, x_shape, itemsize, dtype_name, C_out, groups, kernel_size,
                 stride, dilation, pads, out_spatial, mode, scatter, vector, rows):
        N, C_in = x_shape[:2]
        self.spatial = spatial = _geometry.as_3d(x_shape[2:], 1)
        self.k3 = k3 = _geometry.as_3d(kernel_size, 1)
        s3 = _geometry.as_3d(stride, 1)
        self.sw = s3[2]
        d3 = _geometry.as_3d(dilation, 1)
        p3 = [(0, 0)] * (3 - len(pads)) + list(pads)
        self.o3 = o3 = _geometry.as_3d(out_spatial, 1)
        self.tables = tuple(
            _geometry.tap_index_table(n, o, k, s, d, lo, mode).ravel()
            for n, o, k, s, d, (lo, _) in zip(spatial, o3, k3, s3, d3, p3))
        # kept for later calls only with small tables, so that the cache of plans
        # (at most 256) stays within 8 MiB; a layer with larger ones (a long 1-D
        # signal) runs long enough that rebuilding its plan does not show
        self.small = sum(t.size for t in self.tables) <= PLAN_MAX_TABLE_ENTRIES
        self.span = _geometry.interior_spans(spatial[2], o3[2], k3[2], s3[2], d3[2],
                                             p3[2][0])
        self.ck = ck = (C_in // groups) * prod(k3)
        unit_stride = all(s == 1 for s in s3) and all(p == (0, 0) for p in p3)
        self.direct = direct = prod(k3) == 1 and unit_stride
        P = prod(o3)
        self.rows = rows
        m_panels = -(-(C_out // groups) // rows)
        self.packed = vector and C_out // groups <= PACKED_MAX_ROWS[dtype_name]
        # an unpadded stride-1 1-D layer on the packed tiles: the GEMM reads its taps
        # from the input in place, as a 1x1 layer's channels (no column buffer)
        self.b_off = None
        if (self.packed and PACKED_ROW_TAPS and unit_stride and not direct
                and not scatter and spatial[0] == spatial[1] == 1 and o3[0] == o3[1] == 1):
            self.direct = direct = True
            taps = np.arange(k3[2], dtype=np.intp) * d3[2]
            self.b_off = (np.arange(C_in // groups, dtype=np.intp)[:, None] * spatial[2]
                          + taps).ravel()
        if self.packed:
            panel = vector[dtype_name]
            tile_columns, k_block = packed_tiling(P, ck, m_panels, rows, itemsize, panel,
                                                  N * groups, direct)
            # one column panel; a pair of them where B is the input itself (1x1)
            extra = (2 if direct else 1) * k_block * panel
        else:
            if max(ck, P, prod(spatial)) > _INT32_MAX:
                raise ValueError(f"{op_name}: a plane of {P} outputs or {ck} taps per "
                                 "output exceeds the 2**31 - 1 limit of the BLAS interface")
            if direct:
                # no column buffer to keep in cache: wider tiles, fewer GEMM calls
                # (each packs the weights again)
                tile_columns = o3[2] * tile_rows(o3[0] * o3[1], o3[2], 0, N * groups,
                                                 DIRECT_TILE_COLUMNS)
            else:
                tile_columns = o3[2] * tile_rows(o3[0] * o3[1], o3[2], ck * itemsize,
                                                 N * groups)
            k_block = ck
            extra = 0
        if scatter:
            extra += m_panels * rows * tile_columns   # the tile scattered into out
        self.tile_columns, self.k_block = tile_columns, k_block
        self.flops = 2 * N * C_out * P * ck
        self.units = N * groups * -(-P // tile_columns)
        # at least one value per thread: the kernel takes each thread's row's address
        self.work_values = max(1, (0 if direct else ck * tile_columns) + extra)


def _tunables():
    """The module's tiling constants, as part of a cached plan's key (so that a changed
    one takes effect)."""
    return (tuple(PACKED_MAX_ROWS.items()), PACKED_COLUMN_BYTES, PACKED_MIN_PANELS,
            PACKED_MAX_PANELS, PACKED_DIRECT_PANELS, PACKED_MIN_UNITS,
            PACKED_WEIGHT_BLOCK_BYTES, PACKED_MIN_K_BLOCK, PACKED_PAIR_BYTES,
            PACKED_PAIRED_TILES, PACKED_ROW_TAPS, TILE_COLUMNS,
            COLUMN_BYTES_PER_THREAD, MIN_UNITS, MIN_SPLIT_COLUMNS, DIRECT_TILE_COLUMNS)


def conv_forward(op_name, x, weight, bias, out, spec, pads, out_spatial, n_threads,
                 out_index=None):
    """Run the im2col + GEMM kernel for a validated dense convolution.

    ``out_index`` (optional): the place of each of the ``prod(out_spatial)`` outputs
    in ``out``'s planes, when ``out`` is larger (a phase of a transposed convolution).
    The plan of a geometry is built once (it costs more than a small convolution).
    """
    _conv = _kernels.load("_conv")
    N, C_in = x.shape[:2]
    C_out = weight.shape[0]
    groups = spec["groups"]
    dtype_name = NATIVE_NAMES[x.dtype]
    packed = _kernels.packed_gemm(C_out // groups, wide_wins=x.dtype == np.float32)
    vector = _conv.PACKED_COLUMNS if packed else None
    kernel_size, stride, dilation = spec["kernel_size"], spec["stride"], spec["dilation"]
    mode = spec["padding_mode"]
    plan = _memo.cached(
        ("im2col", x.shape, dtype_name, C_out, groups, tuple(kernel_size), tuple(stride),
         tuple(dilation), tuple(map(tuple, pads)), tuple(out_spatial), mode,
         out_index is not None, vector is not None, _conv.PACKED_ROWS, _tunables()),
        lambda: _Im2colPlan(op_name, x.shape, x.dtype.itemsize, dtype_name, C_out, groups,
                            kernel_size, stride, dilation, pads, out_spatial, mode,
                            out_index is not None, vector, _conv.PACKED_ROWS),
        keep=lambda plan: plan.small)
    if plan.packed:
        weight_arg = packed_weight(weight, groups, plan.rows, plan.k_block)
    else:
        weight_arg = weight.reshape(C_out, plan.ck)
    if _phased.applies(x.shape, x.dtype.itemsize, spec, out_spatial, plan.packed,
                       out_index is not None):
        return _phased.phased_forward(x, weight_arg, bias, out, spec, pads, out_spatial,
                                      plan.k_block, n_threads, plan.flops)
    n_threads = _threads.resolve(n_threads, plan.flops, plan.units)
    work = thread_workspace(n_threads, plan.work_values, x.dtype)
    bias_arr = np.zeros(1, dtype=x.dtype) if bias is None else bias
    spatial, o3, k3 = plan.spatial, plan.o3, plan.k3
    # the packed GEMM leaves OpenBLAS alone (no pinning, no warm-up)
    with contextlib.nullcontext() if plan.packed else _threads.blas_pinned:
        _conv.conv_nd(x.reshape(N, C_in, -1), weight_arg, bias_arr,
                      out.reshape(N, C_out, -1), *plan.tables, plan.span, spatial[1],
                      spatial[2], o3[0], o3[1], o3[2], k3[0], k3[1], k3[2], plan.sw, groups,
                      spec["padding_value"], bias is not None,
                      spec["activation"] == "relu", plan.direct, plan.tile_columns,
                      plan.packed, plan.k_block,
                      _NO_INDEX if out_index is None else out_index, work, n_threads,
                      _NO_INDEX if plan.b_off is None else plan.b_off)
    return out


OPS = [ConvND(1), ConvND(2), ConvND(3)]
