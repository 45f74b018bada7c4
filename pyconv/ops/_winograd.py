"""Winograd convolution: 2-D F(2x2, 3x3) and F(4x4, 3x3), 1-D F(2, 3) and F(4, 3).

A private helper of ``conv1d``, ``conv2d`` and ``conv3d`` (not an op module):
:func:`winograd_supported` says when the 2-D algorithm applies (3x3 kernel, stride 1,
dilation 1), :func:`winograd_preferred` when it is expected to beat im2col + GEMM,
:func:`winograd_filter` transforms a weight once (callers cache the result), and
:func:`winograd_conv2d` runs the kernel. The 1-D counterparts (3 taps, stride 1, any
dilation) are :func:`winograd_preferred_1d`, :func:`winograd_filter_1d` and
:func:`winograd_conv1d`; their tiling is described there.

Winograd minimal filtering computes an ``m x m`` output tile from an
``(m+2) x (m+2)`` input tile with ``(m+2)**2`` multiplies per (input, output) channel
pair instead of ``9 m**2``: 2.25x fewer for F(2x2, 3x3) ("F2"), 4x fewer for
F(4x4, 3x3) ("F4"). The multiplies become ``(m+2)**2`` independent GEMMs
``M[a] = U[a] @ V[a]`` between the transformed filter ``U = G g G^T`` and the
transformed input tiles ``V = B^T d B``; the output transform ``A^T M A`` adds the
bias and applies the fused ReLU.

Input tiles are read through per-axis index tables giving the input row / column at
each padded position (:func:`pyconv._geometry.tap_index_table`), so every padding
mode works without a padded copy of the input; stretches of consecutive columns are
read in place. Output tiles that hang over the bottom/right edge are computed whole
and only their valid outputs written. Work units are chunks of tiles numbered image
after image, so the tiles of small images share GEMMs.

Numerics
--------
The transforms add rounding on top of the GEMM's. Measured in float32 against a
float64 reference, as the largest error relative to ``max(conv(|x|, |w|))``, on
8x64x56x56, 2x256x28x28 and 1x512x14x14 layers: im2col 0.3-1.6e-7, torch 2.3-2.7e-7,
F2 0.5-1.0e-7, F4 0.9-2.2e-6 (RMS error relative to RMS output: torch 0.4-1.2e-6,
F4 1.6-4.1e-6). float64: F2 ~5e-16, F4 1.4-3.9e-15. float32 transforms run in
float32: on the same layers with one seed, max errors 1.7-1.9e-6 against 1.3-1.8e-6
with the transforms in double, RMS errors alike (1.7-4.1e-6). A non-finite input value turns
the whole output tile(s) that read it into NaN (inherent to the transform), where a
direct convolution gives inf or NaN only at the outputs whose window holds it.

The 1-D F(4, 3) in float32 has a max error of about 2.5e-6 of the output's magnitude
on 16x128x4096 -> 128 (dilations 1 to 16; im2col about 6e-7), float64 about 4.5e-15.

Memory
------
Beyond the output, one workspace row per thread of
``(m+2)**2 * (chunk * (C_in + C_out) / groups + 32)`` values (the transformed input V
and the GEMM result M of one chunk of ``chunk`` tiles), plus ~64 KiB of stack
scratch per thread. ``chunk`` is at most :data:`TILES_PER_CHUNK` (64) and is cut so
that a row stays within :data:`BYTES_PER_THREAD` (it holds at least one tile). The
transformed filter adds ``(m+2)**2 * C_out * C_in / groups`` values (1.8x / 4x the
weight), the index tables ``O(H + W)`` integers and the plane tables ``O(N * C_in)``
integers (``O(N * OD * kd * C_in)`` for a stacked conv3d). The 1-D kernel's row per
thread holds V and M of one unit of about :data:`TILES_PER_CHUNK_1D` tiles,
``(m+2) * (C_in + C_out) / groups`` values per tile (1.5 MiB for 128 -> 128 in
float32), and one channel's padded input segment; its edge tables hold
``O(padding + dilation)`` integers, whatever the input's length.

Examples
--------
>>> import numpy as np
>>> from pyconv.ops._winograd import winograd_conv2d
>>> x = np.random.default_rng(0).standard_normal((1, 4, 9, 9))
>>> w = np.random.default_rng(1).standard_normal((8, 4, 3, 3))
>>> out = np.empty((1, 8, 9, 9))
>>> y = winograd_conv2d(x, w, None, out, [(1, 1), (1, 1)], "zeros", 0.0, False, 1,
...                     n_threads=1, variant="F4")
>>> y.shape
(1, 8, 9, 9)
"""
from __future__ import annotations

import contextlib
import functools
import math

import numpy as np

from pyconv import _geometry, _memo, _threads
from pyconv._dtypes import NATIVE_NAMES
from pyconv._workspace import thread_workspace

#: Output tile size per variant name.
VARIANTS = {"F2": 2, "F4": 4}
#: Tiles per work unit: enough columns for an efficient GEMM, small enough that V and
#: M of one unit stay in the per-core cache while the output transform reads them.
TILES_PER_CHUNK = 64
#: Hard cap on one thread's workspace row (V and M of one chunk).
BYTES_PER_THREAD = 4 << 20
#: Below this many units the tiles of an image are split further (fixed, so the
#: split does not depend on the thread count and results stay bit-identical).
MIN_UNITS = 8
#: Unit counts are rounded up to a multiple of this (see :func:`chunk_tiles`) ...
BALANCE_UNITS = 16
#: ... unless that would make chunks smaller than this many tiles (measured: 16-tile
#: chunks run 5% slower than 64-tile ones on one thread, 32 to 48 as fast).
MIN_BALANCED_CHUNK = 24
_INT32_MAX = 2**31 - 1

# Filter transforms G (alpha x 3) of the Cook-Toom / Lavin construction.
_G = {
    2: np.array([[1.0, 0.0, 0.0],
                 [0.5, 0.5, 0.5],
                 [0.5, -0.5, 0.5],
                 [0.0, 0.0, 1.0]]),
    4: np.array([[1 / 4, 0.0, 0.0],
                 [-1 / 6, -1 / 6, -1 / 6],
                 [-1 / 6, 1 / 6, -1 / 6],
                 [1 / 24, 1 / 12, 1 / 6],
                 [1 / 24, -1 / 12, 1 / 6],
                 [0.0, 0.0, 1.0]]),
}


def _tile_size(variant):
    try:
        return VARIANTS[variant]
    except (KeyError, TypeError):
        raise ValueError(f"winograd: variant must be one of {sorted(VARIANTS)}; "
                         f"got {variant!r}") from None


def winograd_supported(spec, input_shape):
    """Whether a normalised ``conv2d`` spec on ``input_shape`` can run as Winograd.

    Needs a 3x3 kernel, stride 1 and dilation 1 (any padding, mode, groups, bias).

    Examples
    --------
    >>> winograd_supported({"kernel_size": (3, 3), "stride": (1, 1),
    ...                     "dilation": (1, 1)}, (1, 8, 16, 16))
    True
    """
    if tuple(spec["kernel_size"]) != (3, 3) or tuple(spec["stride"]) != (1, 1):
        return False
    if tuple(spec["dilation"]) != (1, 1) or len(input_shape) != 4:
        return False
    return all(n >= 1 for n in input_shape[2:])


def winograd_preferred(spec, input_shape, dtype):
    """Best algorithm for a normalised ``conv2d`` spec by this machine's measurements.

    Returns ``"F4"``, ``"F2"`` or ``None`` (im2col + GEMM is expected to be as fast).
    Winograd pays once the GEMMs are large enough for their savings to outweigh the
    transforms: at least :data:`MIN_CHANNELS` input channels per group and
    :data:`MIN_OUT_CHANNELS` output channels per group; and enough tiles over the
    whole batch (:data:`MIN_TILES`) that each GEMM
    has columns to amortise reading the transformed filter, which is 1.8x (F2) or 4x
    (F4) the weight. F4 is used where it has enough tiles, else F2; float32 uses
    :data:`FLOAT32_VARIANT` at most (see the Numerics section).

    Examples
    --------
    >>> spec = {"kernel_size": (3, 3), "stride": (1, 1), "dilation": (1, 1),
    ...         "groups": 1, "in_channels": 64, "out_channels": 64, "padding": 1}
    >>> winograd_preferred(spec, (8, 64, 56, 56), "float64")
    'F4'
    >>> winograd_preferred({**spec, "in_channels": 3}, (8, 3, 56, 56), "float32") is None
    True
    """
    dtype = np.dtype(dtype)
    # (the thresholds below are constants, fixed at import)
    return _memo.cached(("winograd_preferred", _memo.spec_key(spec), input_shape,
                         dtype.char), lambda: _preferred(spec, input_shape, dtype))


def _preferred(spec, input_shape, dtype):
    if not winograd_supported(spec, input_shape):
        return None
    groups = spec["groups"]
    cin_g = spec["in_channels"] // groups
    cout_g = spec["out_channels"] // groups
    if cin_g < MIN_CHANNELS.get(dtype.name, 16) or cout_g < MIN_OUT_CHANNELS:
        return None
    padding = spec["padding"]
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    pads = _geometry.resolve_padding(padding, input_shape[2:], (3, 3), (1, 1), (1, 1))
    oh, ow = (n + lo + hi - 2 for n, (lo, hi) in zip(input_shape[2:], pads))
    if oh < 1 or ow < 1:
        return None
    order = ("F4", "F2") if dtype == np.float64 or FLOAT32_VARIANT == "F4" else ("F2",)
    for variant in order:
        m = VARIANTS[variant]
        if input_shape[0] * -(-oh // m) * -(-ow // m) >= MIN_TILES:
            return variant
    return None


#: Input channels per group below which the direct kernel or im2col is as fast. At 8
#: input and output channels per group, float32, 2 threads, F4 against the direct
#: kernel's padded-row form (medians of 9 alternating calls; its flat form since
#: took these 2-D layers, see pyconv.ops.depthwise.FLAT_MAX_CHANNELS):
#: 8x256x56x56 15.5 / 17.1 ms, 8x512x28x28
#: 10.0 / 12.6, 8x1024x14x14 7.1 / 8.3, 8x256x7x7 1.5 / 5.1 (im2col 1.5); dense
#: 8 -> 64 on 8x8x56x56 2.5 / 3.7. float64 F4 gains 1.2-1.4x at 8 channels; at 3
#: im2col wins by 1.3x.
MIN_CHANNELS = {"float32": 8, "float64": 8}
#: Output channels per group below which the input transform dominates.
MIN_OUT_CHANNELS = 8
#: Tiles over the batch below which the GEMMs are too thin (measured: one 4x4 image
#: with 512 channels, a single F4 tile, runs at 0.6x im2col; 4 F2 tiles at 1.1x).
MIN_TILES = 16
#: The variant "auto" may use for float32: "F4" (error ~1e-6 of the magnitude,
#: 1.3-1.8x faster than F2) or "F2" (error at direct-convolution level).
FLOAT32_VARIANT = "F4"


def winograd_filter(weight, variant="F2"):
    """The transformed filter ``U[a] = (G g G^T)[a]``: shape ``((m+2)**2, C_out, C_in/g)``.

    Computed in float64 and rounded once to ``weight``'s dtype (float32 or float64).
    Pass it to :func:`winograd_conv2d` as ``filter_transform`` to skip the transform.

    Examples
    --------
    >>> import numpy as np
    >>> winograd_filter(np.ones((8, 4, 3, 3), np.float32), "F4").shape
    (36, 8, 4)
    """
    m = _tile_size(variant)
    w = np.asarray(weight)
    if w.ndim != 4 or w.shape[2:] != (3, 3):
        raise ValueError(f"winograd: weight must have shape (C_out, C_in/groups, 3, 3); "
                         f"got {w.shape}")
    if w.dtype not in (np.float32, np.float64):
        raise TypeError(f"winograd: weight dtype must be float32 or float64; got {w.dtype}")
    g = _G[m]
    alpha = m + 2
    # U[a*alpha + b, o, i] = sum_{k,l} G[a,k] G[b,l] w[o,i,k,l]: the Kronecker product
    # times the taps, straight into the (alpha**2, C_out, C_in/g) layout. Nine
    # multiply-adds of outer products rather than a matrix product: NumPy would hand
    # that to its multi-threaded BLAS, whose threads then spin for a while on the
    # cores that pyconv's next calls run on (measured: the eleven 8x64x56x56 3x3 calls
    # after transforming a 64x64 filter took 10.7 ms each instead of 2.7).
    w9 = w.reshape(-1, 9).astype(np.float64)
    kg = np.kron(g, g)
    u = np.multiply.outer(kg[:, 0], w9[:, 0])
    for k in range(1, 9):
        u += np.multiply.outer(kg[:, k], w9[:, k])
    return np.ascontiguousarray(u, dtype=w.dtype).reshape(alpha * alpha, *w.shape[:2])


def _axis_index(length, n_virtual, lo, hi, mode):
    """Input index at each padded position ``0 .. n_virtual-1`` of one axis.

    -1 marks a pad (``padding_value``), -2 a position past the padded extent, which
    only feeds outputs that are never written (read as 0, so that a huge pad value
    cannot leak rounding error into valid outputs).
    """
    table = _geometry.tap_index_table(length, 1, n_virtual, 1, 1, lo, mode)[:, 0].copy()
    table[np.arange(n_virtual) - lo >= length + hi] = -2
    return table


def _runs(idx):
    """``run[j]``: how many positions from ``j`` on read consecutive input indices."""
    run = np.zeros(len(idx), dtype=np.intp)
    for j in range(len(idx) - 1, -1, -1):
        if idx[j] >= 0:
            run[j] = 1
            if j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
                run[j] += run[j + 1]
    return run


def chunk_tiles(n_tiles, units_outside, cin_g, cout_g, m, itemsize, multiple=1):
    """Tiles per work unit for ``n_tiles`` tiles (all images) per group.

    About :data:`TILES_PER_CHUNK` (measured best: GEMMs of 64 columns re-pack the
    filter often enough to matter below, and V/M outgrow the cache above), balanced
    so that the last chunk is not a sliver, within :data:`BYTES_PER_THREAD`, and split
    further when there are fewer than :data:`MIN_UNITS` units. The unit count is then
    raised to a multiple of :data:`BALANCE_UNITS` where chunks keep at least
    :data:`MIN_BALANCED_CHUNK` tiles, so that 2, 4, 8 or 16 threads get equal shares
    (49 units on 16 threads would leave them idle a quarter of the time). Depends on
    the shape only, never on the thread count.

    With ``multiple`` (the packed GEMM's panel width) the chunk is a multiple of it: a
    49-tile chunk leaves a 1-column panel, and its GEMMs ran 30% slower than 48-tile
    ones. Of the multiples from :data:`MIN_BALANCED_CHUNK` up to the nearest one, the
    chunk is the one whose busiest thread (of 2, 4, 8 or 16) has the least work beyond
    an even share: 3136 tiles in 66 units of 48 give two of 16 threads a fifth unit
    (22% over an even share), 131 units of 24 give three a ninth (10%). One thread
    runs 24- to 72-tile chunks of the packed GEMM equally fast (16x64x56x56, float32).

    Examples
    --------
    >>> chunk_tiles(3136, 1, 64, 64, 4, 4)   # 64 units of 49 tiles, not 49 of 64
    49
    >>> chunk_tiles(3136, 1, 64, 64, 4, 4, multiple=24)   # 131 units, not 66 of 48
    24
    >>> chunk_tiles(12544, 2, 64, 64, 4, 4, multiple=24)  # 24, 48, 72 balance alike
    72
    """
    # remembered: the search costs more than a small convolution (the tunables are in
    # the key, so that a changed one takes effect)
    return _memo.cached(
        ("winograd_chunk_tiles", n_tiles, units_outside, cin_g, cout_g, m, itemsize,
         multiple, TILES_PER_CHUNK, BYTES_PER_THREAD, MIN_UNITS, BALANCE_UNITS,
         MIN_BALANCED_CHUNK),
        lambda: _chunk_tiles(n_tiles, units_outside, cin_g, cout_g, m, itemsize, multiple))


def _chunk_tiles(n_tiles, units_outside, cin_g, cout_g, m, itemsize, multiple):
    chunk = _balanced_chunk(n_tiles, units_outside, cin_g, cout_g, m, itemsize)
    if multiple <= 1:
        return chunk
    nearest = max(multiple, round(chunk / multiple) * multiple)
    smallest = max(multiple, -(-MIN_BALANCED_CHUNK // multiple) * multiple)
    candidates = range(min(smallest, nearest), nearest + 1, multiple)
    # The largest chunk among the best balanced (fewer units: fewer GEMM calls and
    # packed column panels); shares within 1% of each other count as a tie, since
    # that is below what timing them could tell apart.
    return min(candidates, key=lambda c: (round(_busiest_share(n_tiles, units_outside, c),
                                                2), -c))


def _busiest_share(n_tiles, units_outside, chunk):
    """The busiest thread's tiles over an even share (>= 1), the worst of 2, 4, 8 and
    16 threads: a static schedule gives a thread ceil(units / threads) units, each
    counted as a full chunk (at most ``n_tiles``)."""
    units = units_outside * -(-n_tiles // chunk)
    full = min(chunk, n_tiles)
    total = units_outside * n_tiles
    return max(-(-units // t) * full * t / total for t in (2, 4, 8, BALANCE_UNITS))


def _balanced_chunk(n_tiles, units_outside, cin_g, cout_g, m, itemsize):
    per_tile = (m + 2) ** 2 * (cin_g + cout_g) * itemsize
    target = max(1, min(TILES_PER_CHUNK, BYTES_PER_THREAD // per_tile))
    n_chunks = -(-n_tiles // target)
    if units_outside * n_chunks < MIN_UNITS:
        n_chunks = max(n_chunks, min(-(-MIN_UNITS // units_outside), -(-n_tiles // 16)))
    chunk = max(1, -(-n_tiles // n_chunks))
    units = units_outside * -(-n_tiles // chunk)
    if units % BALANCE_UNITS:
        # the fewest extra chunks per group that make the unit count a multiple
        step = BALANCE_UNITS // math.gcd(units_outside, BALANCE_UNITS)
        candidate = -(-n_chunks // step) * step
        while -(-n_tiles // candidate) >= MIN_BALANCED_CHUNK:
            even = -(-n_tiles // candidate)
            if (units_outside * -(-n_tiles // even)) % BALANCE_UNITS == 0:
                return even
            candidate += step
    return chunk


@functools.lru_cache(maxsize=64)
def tile_tables(H, W, TH, TW, m, pads, padding_mode):
    """Row table, column table and column runs of one geometry (read-only, cached).

    Building them costs ~0.3 ms of Python per call, which is serial time that a
    16-thread convolution of a few milliseconds cannot afford.
    """
    (lo_h, hi_h), (lo_w, hi_w) = pads
    rowidx = _axis_index(H, TH * m + 2, lo_h, hi_h, padding_mode)
    colidx = _axis_index(W, TW * m + 2, lo_w, hi_w, padding_mode)
    colrun = _runs(colidx)
    for table in (rowidx, colidx, colrun):
        table.flags.writeable = False
    return rowidx, colidx, colrun


class NonFiniteTiles(ArithmeticError):
    """Raised by :func:`winograd_conv2d` with ``check_finite=True`` when a computed
    output is NaN or inf: a non-finite input (or an overflow) that the transforms
    spread over whole tiles. ``out`` then holds partial results."""


@functools.lru_cache(maxsize=64)
def _plane_tables(N, C_in, plane, out_image):
    """Read-only plane tables of the (N, C, H, W) layout: ``in_off`` (N, C_in) and
    ``out_off`` (N,), for ``plane = H*W`` input and ``out_image = C_out*OH*OW`` output
    values per image."""
    in_off = (np.arange(N, dtype=np.intp)[:, None] * (C_in * plane)
              + np.arange(C_in, dtype=np.intp)[None, :] * plane)
    out_off = np.arange(N, dtype=np.intp) * out_image
    in_off.setflags(write=False)
    out_off.setflags(write=False)
    return in_off, out_off


def winograd_conv2d(x, weight, bias, out, pads, padding_mode, padding_value, relu,
                    groups, n_threads=None, variant="F2", filter_transform=None,
                    check_finite=False):
    """3x3 stride-1 dilation-1 convolution of ``x`` into ``out`` by Winograd.

    Parameters
    ----------
    x : ndarray, (N, C_in, H, W), C-contiguous float32 or float64
    weight : ndarray, (C_out, C_in/groups, 3, 3), x's dtype
        Unused (may be None) when ``filter_transform`` is given.
    bias : ndarray (C_out,) or None
    out : ndarray, (N, C_out, OH, OW), C-contiguous, x's dtype; written and returned.
    pads : sequence of two (lo, hi) pairs, already resolved ("same" included).
    padding_mode : str
        Any of pyconv's modes; ``"constant"`` fills ``padding_value``.
    padding_value : float
    relu : bool
        Fused ReLU after the bias.
    groups : int
    n_threads : int or None
        Resolved by :func:`pyconv._threads.resolve`; results are bit-identical for
        any value.
    variant : {"F2", "F4"}
        Output tile 2x2 or 4x4.
    filter_transform : ndarray, optional
        ``winograd_filter(weight, variant)`` in x's dtype, to skip the filter transform.
    check_finite : bool
        Raise :class:`NonFiniteTiles` if any computed output is NaN or inf. The check
        rides on the output transform (no pass over the input), so a caller can run a
        direct method instead, which confines a NaN or inf to the outputs whose
        window holds it.

    Returns
    -------
    out : ndarray
    """
    m = _tile_size(variant)
    alpha = m + 2
    N, C_in, H, W = x.shape
    C_out, OH, OW = out.shape[1:]
    cin_g = C_in // groups
    (lo_h, hi_h), (lo_w, hi_w) = pads
    if OH != H + lo_h + hi_h - 2 or OW != W + lo_w + hi_w - 2:
        raise ValueError(f"winograd: out spatial shape {(OH, OW)} does not match a 3x3 "
                         f"stride-1 convolution of {(H, W)} with pads {pads}")
    u = _checked_filter(x, out, filter_transform, (alpha * alpha, C_out, cin_g),
                        lambda: winograd_filter(weight, variant))
    if N == 0 or C_out == 0:
        return out
    in_off, out_off = _plane_tables(N, C_in, H * W, C_out * OH * OW)
    _run(x.reshape(-1), in_off, None, u, bias, out.reshape(-1), out_off, OH * OW,
         (H, W), (OH, OW), pads, padding_mode, padding_value, relu, groups, n_threads,
         m, check_finite)
    return out


def winograd_conv3d_stacked(x, u, bias, out, depth_table, pads, padding_mode,
                            padding_value, relu, groups, n_threads=None, variant="F2",
                            check_finite=False):
    """conv3d with a ``(kd, 3, 3)`` kernel (H/W stride and dilation 1) by 2-D Winograd.

    Output depth slice ``od`` of image ``n`` is a conv2d over ``kd * C_in/groups``
    stacked channels per group, channel ``(t, ci)`` being input slice
    ``depth_table[t, od]`` of channel ``ci`` (-1: a plane of padding). The kernel reads
    those planes where they lie, through its plane tables, so nothing is copied.

    Parameters
    ----------
    x : ndarray, (N, C_in, D, H, W), C-contiguous float32 or float64
    u : ndarray
        ``winograd_filter`` of the weight ``(C_out, C_in/groups, kd, 3, 3)`` transposed
        to ``(C_out, kd * C_in/groups, 3, 3)`` (depth tap major), x's dtype.
    bias : ndarray (C_out,) or None
    out : ndarray, (N, C_out, OD, OH, OW), C-contiguous, x's dtype; written and returned.
    depth_table : ndarray of intp, (kd, OD)
        Input depth read by tap ``t`` at output depth ``od`` (-1 for a pad).
    pads : the (lo, hi) pairs of H and W, resolved.
    padding_mode, padding_value, relu, groups, n_threads, variant, check_finite
        As :func:`winograd_conv2d`.
    """
    m = _tile_size(variant)
    if not (x.flags.c_contiguous and out.flags.c_contiguous and out.dtype == x.dtype):
        raise ValueError("winograd: x and out must be C-contiguous arrays of one dtype")
    N, C_in, D, H, W = x.shape
    C_out, OD, OH, OW = out.shape[1:]
    kd = depth_table.shape[0]
    cin_g = C_in // groups
    if depth_table.shape != (kd, OD) or u.shape != ((m + 2) ** 2, C_out, kd * cin_g):
        raise ValueError(f"winograd: depth table {depth_table.shape} or filter transform "
                         f"{u.shape} does not fit kd={kd}, OD={OD}, C_out={C_out}")
    if N == 0 or C_out == 0 or OD == 0:
        return out
    plane, oplane = H * W, OH * OW
    # in_off[(n, od), (g, t, ci)]: the plane of channel g*cin_g + ci at depth
    # depth_table[t, od] of image n
    n_ = np.arange(N, dtype=np.intp)[:, None, None, None, None]
    ids = depth_table.T[None, :, None, :, None]                  # (1, OD, 1, kd, 1)
    ch = (np.arange(groups, dtype=np.intp)[:, None] * cin_g
          + np.arange(cin_g, dtype=np.intp)[None, :])[None, None, :, None, :]
    in_off = (n_ * (C_in * D * plane) + ch * (D * plane) + ids * plane)
    in_off = np.where(ids >= 0, in_off, -1).reshape(N * OD, groups * kd * cin_g)
    out_off = (np.arange(N, dtype=np.intp)[:, None] * (C_out * OD * oplane)
               + np.arange(OD, dtype=np.intp)[None, :] * oplane).reshape(-1)
    fill = padding_value if padding_mode == "constant" else 0.0
    pad_plane = np.full(plane, fill, x.dtype) if (depth_table < 0).any() else None
    _run(x.reshape(-1), np.ascontiguousarray(in_off), pad_plane, u, bias,
         out.reshape(-1), out_off, OD * oplane, (H, W), (OH, OW), pads, padding_mode,
         padding_value, relu, groups, n_threads, m, check_finite)
    return out


def packed_filter(u, groups, rows):
    """The transformed filter as the packed GEMM reads it: ``(groups, A2 * ld)``.

    For each group and each ``U[a]`` (``C_out/groups`` x ``C_in/groups``), the layout
    of :func:`pyconv.ops.conv.pack_panels` in one block of taps; ``ld`` is
    ``ceil(C_out/groups / rows) * rows * C_in/groups``.
    """
    from pyconv.ops.conv import pack_panels
    a2, c_out, cin_g = u.shape
    per_group = u.reshape(a2, groups, c_out // groups, cin_g).swapaxes(0, 1)
    return pack_panels(per_group.reshape(groups * a2, -1, cin_g), rows,
                       cin_g).reshape(groups, -1)


def _checked_filter(x, out, filter_transform, shape, make):
    """The transformed filter, ``make()`` in x's dtype or the caller's
    ``filter_transform`` checked against ``shape``; x and out checked for the kernel."""
    if filter_transform is None:
        u = make().astype(x.dtype, copy=False)
    else:
        u = filter_transform
        if u.shape != shape or u.dtype != x.dtype:
            raise ValueError(f"winograd: filter_transform must be a {shape} {x.dtype} "
                             f"array; got {u.shape} {u.dtype}")
        u = np.ascontiguousarray(u)
    if not (x.flags.c_contiguous and out.flags.c_contiguous and out.dtype == x.dtype):
        raise ValueError("winograd: x and out must be C-contiguous arrays of one dtype")
    return u


def _run_arguments(n_threads, flops, n_units, work_values, dtype, padding_mode,
                   padding_value, bias, u, groups, packed):
    """What the 1-D and 2-D kernels take alike: ``(n_threads, work, pad_value, bias,
    u_packed)``, the thread count resolved, one workspace row of ``work_values`` per
    thread, and the filter in the packed GEMM's layout where it runs (else None)."""
    from pyconv import _kernels
    n_threads = _threads.resolve(n_threads, flops, n_units)
    work = thread_workspace(n_threads, work_values, dtype)
    pad_value = padding_value if padding_mode == "constant" else 0.0
    bias_arr = np.zeros(1, dtype) if bias is None else np.ascontiguousarray(bias)
    u_packed = None
    if packed:
        from pyconv.ops.conv import cached_transform
        rows = _kernels.load("_winograd").PACKED_ROWS
        u_packed = cached_transform(u, ("winograd_packed", groups),
                                    lambda: packed_filter(u, groups, rows))
    return n_threads, work, pad_value, bias_arr, u_packed


def _run(x_flat, in_off, pad_plane, u, bias, out_flat, out_off, out_ch, hw, ohw, pads,
         padding_mode, padding_value, relu, groups, n_threads, m, check_finite):
    """Tile, pick threads and workspace, and call the kernel on plane tables."""
    from pyconv import _kernels
    _winograd = _kernels.load("_winograd")

    (H, W), (OH, OW) = hw, ohw
    N, C_in = in_off.shape
    C_out = u.shape[1]
    cin_g, cout_g = C_in // groups, C_out // groups
    alpha = m + 2
    if max(C_in, C_out, H * W) > _INT32_MAX:
        raise ValueError("winograd: sizes exceed the 2**31 - 1 limit of the BLAS interface")
    TH, TW = -(-OH // m), -(-OW // m)
    rowidx, colidx, colrun = tile_tables(H, W, TH, TW, m, tuple(map(tuple, pads)),
                                         padding_mode)
    n_tiles = TH * TW
    dtype = x_flat.dtype
    packed = _kernels.packed_gemm(cout_g, wide_wins=True)
    # chunks of whole tiles: pairs of panels where the AVX-512 tiles take two at a
    # time (F4 8x64x56x56 -> 64, 2 threads: 4.4 ms in chunks of 24-tile multiples,
    # 3.2 in multiples of 48)
    chunk = chunk_tiles(N * n_tiles, groups, cin_g, cout_g, m, dtype.itemsize,
                        _winograd.PACKED_COLUMNS[NATIVE_NAMES[dtype]]
                        * _kernels.packed_panel_multiple() if packed else 1)
    n_units = groups * -(-(N * n_tiles) // chunk)
    flops = 2 * N * n_tiles * alpha * alpha * C_out * cin_g
    n_threads, work, pad_value, bias_arr, u_packed = _run_arguments(
        n_threads, flops, n_units, _winograd.workspace_row(m, cin_g, cout_g, chunk), dtype,
        padding_mode, padding_value, bias, u, groups, packed)
    if pad_plane is None:
        pad_plane = np.zeros(1, dtype)  # no -1 offsets: never read
    # the packed GEMM leaves OpenBLAS alone (no pinning, no warm-up)
    with contextlib.nullcontext() if packed else _threads.blas_pinned:
        finite = _winograd.winograd_2d(
            x_flat, in_off, pad_plane, u, bias_arr, out_flat, out_off, out_ch, H, W, OH,
            OW, rowidx, colidx, colrun, TH, TW, m, groups, pad_value, bias is not None,
            bool(relu), chunk, work, n_threads, u_packed)
    if check_finite and not finite:
        raise NonFiniteTiles("winograd: non-finite outputs")


# ---- 1-D: conv1d with 3 taps, stride 1, any dilation ---------------------------------

#: Tiles per 1-D work unit (super-tiles of ``m * dilation`` outputs, ``dilation`` tiles
#: each, are kept whole): V and M of a unit, ``(m+2) * (C_in + C_out) / groups``
#: values per tile, stay in L2 while the output transform reads them. Measured at 2
#: threads in whole pairs of packed panels (16x128x4096 -> 128, dilation 4 and 1,
#: 16x64x8192 -> 64; float32 and float64): units of 144 to 480 tiles within 5 % of
#: each other, 144-192 the fastest; units of 256 tiles, which end in a partial panel,
#: 16.3 ms against 15.5 for 192 (dilation 4, float32).
TILES_PER_CHUNK_1D = 192


def winograd_filter_1d(weight, variant="F4"):
    """The transformed 1-D filter ``U[a] = (G g)[a]``: shape ``(m+2, C_out, C_in/g)``.

    Computed in float64 and rounded once to ``weight``'s dtype.

    Examples
    --------
    >>> import numpy as np
    >>> winograd_filter_1d(np.ones((8, 4, 3), np.float32), "F4").shape
    (6, 8, 4)
    """
    m = _tile_size(variant)
    w = np.asarray(weight)
    if w.ndim != 3 or w.shape[2] != 3:
        raise ValueError(f"winograd: weight must have shape (C_out, C_in/groups, 3); "
                         f"got {w.shape}")
    if w.dtype not in (np.float32, np.float64):
        raise TypeError(f"winograd: weight dtype must be float32 or float64; got {w.dtype}")
    g = _G[m]
    w3 = w.astype(np.float64)
    # three multiply-adds of outer products, not a matrix product (see winograd_filter)
    u = np.multiply.outer(g[:, 0], w3[..., 0])
    for k in (1, 2):
        u += np.multiply.outer(g[:, k], w3[..., k])
    return np.ascontiguousarray(u, dtype=w.dtype)


#: Channels per group (the fewer of input and output) from which "auto" takes the 1-D
#: Winograd F(4, 3), by (dtype, lanes of the build's transform steps) and by the
#: waste of those steps; absent: never. The waste is 1 where the dilation is at
#: least the lanes or (AVX2 and AVX-512 builds) divides them, else lanes / dilation
#: rounded up to a power of 2: each step then computes that many times the tiles it
#: keeps, and the transforms cost as much as the GEMMs save unless the channels are
#: many. Measured against im2col + GEMM at 2 threads, on conv1d C -> C of (16, 128,
#: 4096), (8, 64, 4096), (8, 32, 8192), (8, 16, 8192) and (32, 256, 512), dilations 1,
#: 2, 3, 4, 8 and 16, each build on its own (``PYCONV_KERNELS``). AVX-512, float32:
#: 1.11-1.42x from 64 channels without waste (0.90-1.09 at 32), dilation 3 1.07-1.13
#: from 128 (0.80 at 64); float64: 1.37-2.13x from 32 channels (0.60-1.03 at 16).
#: AVX2, float32: 1.06-1.25x at 16 channels without waste, 1.32-3.15 from 32
#: (dilation 3, waste 4: 0.73 at 16, 1.32-2.40 from 32); float64 1.32-2.03 from 32
#: (0.82-1.22 at 16). Baseline (SSE, no permuted steps): float32 dilation 1 1.14 at
#: 128 (0.98 at 64), 1.35-1.74 at 64 otherwise; float64 1.40-1.81 from 32 with
#: dilation 2 or more, dilation 1 1.13 at 128 (0.90 at 64).
MIN_CHANNELS_1D = {("float32", 16): {1: 64, 2: 64, 4: 128, 8: 128},
                   ("float64", 8): {1: 32, 2: 32, 4: 32},
                   ("float32", 8): {1: 16, 2: 32, 4: 32},
                   ("float64", 4): {1: 32, 2: 32},
                   ("float32", 4): {1: 64, 2: 64, 4: 128},
                   ("float64", 2): {1: 32, 2: 128}}
#: The thresholds of builds not measured above.
MIN_CHANNELS_1D_OTHER = {1: 64, 2: 64, 4: 128}
#: Output length below which the GEMMs of one unit are too thin for Winograd to pay.
MIN_LENGTH_1D = 128


def winograd_preferred_1d(spec, out_length, dtype):
    """``"F4"`` where the 1-D Winograd is expected to beat im2col + GEMM, else None
    (see :data:`MIN_CHANNELS_1D`), for a normalised ``conv1d`` spec with 3 taps and
    stride 1 and its output length.

    Examples
    --------
    >>> spec = {"dilation": [4], "groups": 1, "in_channels": 128, "out_channels": 128}
    >>> winograd_preferred_1d(spec, 4088, "float64")
    'F4'
    >>> winograd_preferred_1d({**spec, "in_channels": 8}, 4088, "float64") is None
    True
    """
    from pyconv import _kernels
    dtype = np.dtype(dtype)
    kernels = _kernels.load("_winograd")
    lanes = kernels.TRANSFORM_LANES_1D.get(dtype.name, 1)
    return _memo.cached(("winograd_preferred_1d", _memo.spec_key(spec), out_length,
                         dtype.char, lanes, kernels.PERMUTED_STEPS_1D),
                        lambda: _preferred_1d(spec, out_length, dtype, lanes,
                                              kernels.PERMUTED_STEPS_1D))


def _preferred_1d(spec, out_length, dtype, lanes, permuted):
    d = spec["dilation"][0]
    waste = 1
    if not (permuted and lanes % d == 0):
        while waste * d < lanes:
            waste *= 2
    need = MIN_CHANNELS_1D.get((dtype.name, lanes), MIN_CHANNELS_1D_OTHER).get(waste)
    groups = spec["groups"]
    channels = min(spec["in_channels"], spec["out_channels"]) // groups
    if need is None or channels < need or out_length < MIN_LENGTH_1D:
        return None
    # tiles computed, the last super-tile's up to the last output: with a dilation
    # near the output length, tiles hold fewer than 4 valid outputs
    md = 4 * d
    S = -(-out_length // md)
    tiles = (S - 1) * d + min(d, out_length - (S - 1) * md)
    if 4 * tiles > 1.25 * out_length:
        return None
    return "F4"


def chunk_super_tiles(S, d, multiple=1):
    """Super-tiles per 1-D work unit, for ``S`` super-tiles of ``d`` tiles per image.

    Units of about :data:`TILES_PER_CHUNK_1D` tiles. With ``multiple`` (the packed
    GEMM's panels per step times their width) a unit's tiles are a multiple of it
    where that keeps units below twice the target, so that only an image's last unit
    ends its GEMMs in a partial panel (packed, and run on narrower tiles).

    Examples
    --------
    >>> chunk_super_tiles(256, 4, 48)    # 192 tiles: 4 whole pairs of panels
    48
    >>> chunk_super_tiles(1000, 5, 48)   # 240 tiles
    48
    >>> chunk_super_tiles(1000, 5)       # no panels: about 192 tiles
    38
    """
    target = max(1, TILES_PER_CHUNK_1D // d)
    step = multiple // math.gcd(multiple, d) if multiple > 1 else 1
    chunk = max(step, target // step * step) if step * d < 2 * TILES_PER_CHUNK_1D else target
    return min(S, chunk)


@functools.lru_cache(maxsize=64)
def edge_tables(L, n_positions, pads, padding_mode):
    """Input index at the padded positions before a 1-D input (``lo`` of them) and
    after it (``n_positions - lo - L``): -1 for a pad, -2 past the padded extent (read
    as 0); read-only, cached. Positions inside the input need no table, so the tables
    stay small however long the input.

    Examples
    --------
    >>> edge_tables(5, 12, (2, 3), "reflect")
    (array([2, 1]), array([ 3,  2,  1, -2, -2]))
    """
    lo, hi = pads
    left = _geometry.tap_index_table(L, 1, lo, 1, 1, lo, padding_mode)[:, 0].copy()
    n_right = n_positions - lo - L
    right = _geometry.tap_index_table(L, 1, n_right, 1, 1, -L, padding_mode)[:, 0].copy()
    right[hi:] = -2
    for table in (left, right):
        table.flags.writeable = False
    return left, right


def winograd_conv1d(x, weight, bias, out, pads, padding_mode, padding_value, relu,
                    groups, dilation=1, n_threads=None, variant="F4",
                    filter_transform=None, check_finite=False, stages=7):
    """conv1d with a 3-tap kernel, stride 1 and any dilation by Winograd F(m, 3).

    The output is tiled in super-tiles of ``m * dilation`` consecutive outputs, each
    holding ``dilation`` interleaved tiles of ``m`` outputs whose ``m + 2`` inputs lie
    ``dilation`` apart; the transforms run across the tiles of a super-tile in vector
    steps. Per tile and channel pair: ``m + 2`` multiplies instead of ``3 m`` (1.5x
    fewer for F(2, 3), 2x for F(4, 3)), as ``m + 2`` GEMMs of the transformed filter
    and inputs.

    Parameters
    ----------
    x : ndarray, (N, C_in, L), C-contiguous float32 or float64
    weight : ndarray, (C_out, C_in/groups, 3)
    bias : ndarray (C_out,) or None
    out : ndarray, (N, C_out, OL), C-contiguous, x's dtype; written and returned.
    pads : (lo, hi), resolved; ``OL = L + lo + hi - 2 * dilation``.
    padding_mode, padding_value, relu, groups, n_threads, check_finite
        As :func:`winograd_conv2d`.
    dilation : int
    variant : "F2" or "F4"
    filter_transform : ndarray, optional
        ``winograd_filter_1d(weight, variant)`` in x's dtype.

    Returns
    -------
    out : ndarray

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((2, 4, 50))
    >>> w = np.random.default_rng(1).standard_normal((8, 4, 3))
    >>> y = winograd_conv1d(x, w, None, np.empty((2, 8, 42)), (0, 0), "zeros", 0.0,
    ...                     False, 1, dilation=4, n_threads=1)
    >>> ref = sum(np.einsum("oi,nil->nol", w[:, :, k], x[:, :, 4 * k:4 * k + 42])
    ...           for k in range(3))
    >>> bool(np.allclose(y, ref))
    True
    """
    from pyconv import _kernels
    _winograd = _kernels.load("_winograd")

    m = _tile_size(variant)
    alpha = m + 2
    N, C_in, L = x.shape
    C_out, OL = out.shape[1:]
    cin_g, cout_g = C_in // groups, C_out // groups
    lo, hi = pads
    d = int(dilation)
    if d < 1 or OL != L + lo + hi - 2 * d:
        raise ValueError(f"winograd: out length {OL} does not match a 3-tap stride-1 "
                         f"convolution of length {L} with pads {tuple(pads)} and "
                         f"dilation {dilation}")
    u = _checked_filter(x, out, filter_transform, (alpha, C_out, cin_g),
                        lambda: winograd_filter_1d(weight, variant))
    if N == 0 or C_out == 0 or OL <= 0:
        return out
    if max(C_in, C_out) > _INT32_MAX:
        raise ValueError("winograd: sizes exceed the 2**31 - 1 limit of the BLAS interface")
    md = m * d
    S = -(-OL // md)
    left, right = edge_tables(L, S * md + 2 * d, (lo, hi), padding_mode)
    dtype = x.dtype
    packed = _kernels.packed_gemm(cout_g, wide_wins=True)
    multiple = (_winograd.PACKED_COLUMNS[NATIVE_NAMES[dtype]]
                * _kernels.packed_panel_multiple() if packed else 1)
    chunk = chunk_super_tiles(S, d, multiple)
    n_units = N * groups * -(-S // chunk)
    flops = 2 * N * S * d * alpha * C_out * cin_g
    n_threads, work, pad_value, bias_arr, u_packed = _run_arguments(
        n_threads, flops, n_units, _winograd.workspace_row_1d(m, d, cin_g, cout_g, chunk),
        dtype, padding_mode, padding_value, bias, u, groups, packed)
    with contextlib.nullcontext() if packed else _threads.blas_pinned:
        finite = _winograd.winograd_1d(
            x.reshape(-1), u, bias_arr, out.reshape(-1), N, C_in, L, OL, lo, left, right,
            d, m, groups, pad_value, bias is not None, bool(relu), chunk, work, n_threads,
            u_packed, stages)
    if check_finite and not finite:
        raise NonFiniteTiles("winograd: non-finite outputs")
    return out
