"""conv2d on the packed GEMM without a column buffer: the im2col matrix left implicit.

The im2col path (:func:`pyconv.ops.conv.conv_forward`) copies, for every tile of output
positions, ``C_in/groups * KH * KW`` rows of taps into a column buffer that the GEMM
then reads. Here each unit (image, group, band of output rows) copies only the input
rows its band reads, once, padded and split into the stride phases that taps read
(``_conv.conv2d_phased``): every row of the im2col matrix is then a run of that
strip, on the index ``oh*PW + ow`` (``PW = OW + (KW-1)*dw // sw``), found by one
offset per tap. The GEMM's tiles (``_phased_gemm.h``) read the strip in place, three
vectors of a row's outputs at a time, and write the output rows directly: the ``PW -
OW`` positions between rows are never computed, but a row's last vector may be
partial (masked), hence :data:`MIN_VECTOR_FILL`.

The sums are the packed GEMM's, with the same k blocks, in the same order: the same
bits as im2col (tested). Layers go here from :func:`applies`: 2-D, on the packed
GEMM, kernels other than 1x1, output rows that fill the tiles' vectors; strided
layers only with few input channels or large kernels.

Extra memory per thread: the strip, ``C_in/groups * py * px * (band + QH) * PW``
values, ``py`` and ``px`` the row and column stride phases that taps read (at most
the strides), ``QH = (KH-1)*dh // sh``; a band's strip and output rows take about
:data:`BAND_BYTES` (a band is at least one row).
"""
from __future__ import annotations

import numpy as np

from pyconv import _geometry, _kernels, _memo, _threads
from pyconv._workspace import thread_workspace

#: Layers whose output rows fill the tiles' vectors to at least this fraction take
#: this path (a row of OW values takes ceil(OW / v) vectors of v values; the im2col
#: path's tiles run across rows). Measured at 2 threads, float32, AVX-512 (v = 16),
#: this path's time against im2col's (medians of 11 alternating calls), by output row
#: length (fraction filled): 112 (1), 7x7 s2 3 -> 64 0.90; 64 (1), 5x5 16 -> 32 0.68;
#: 28 (0.88), 3x3 64 -> 64 0.87, 3x3 s2 64 -> 128 1.0; 13 (0.81), 3x3 64 -> 64 0.94,
#: 5x5 32 -> 32 0.67; 20 (0.62), 3x3 1.12; 7 (0.44), 3x3 1.19-1.40, 5x5 0.91.
MIN_VECTOR_FILL = 0.8
#: Strided layers take this path only with at most this many input channels per group
#: or kernels of at least ``STRIDED_MIN_AREA`` taps: where the column buffer costs
#: most. Measured as above (AVX-512 tiles; AVX2 tiles in brackets, forced on the same
#: CPU): 7x7 s2 3 -> 64 0.90 (0.93); 3x3 s2 3 -> 32 0.91-0.93 (1.02); 5x5 s2 16 -> 32
#: 0.80 (0.79); but 3x3 s2 16 -> 64 on 112x112 1.02-1.14 (0.92), 32 -> 64 0.99-1.20
#: (0.94), 64 -> 128 on 56x56 1.01-1.04 (1.10-1.16).
STRIDED_MAX_CHANNELS = 8
STRIDED_MIN_AREA = 25
#: A band's strip and output rows aim at this size (they stay in L2 while every k block
#: of the weights passes over them).
#: 8x3x224x224 -> 64, 7x7 s2, 2 threads, medians of 15 alternating calls: 256 KiB
#: 7.8 ms, 384 KiB 7.2, 512 KiB 7.1, 768 KiB 7.2; 3x3 s2 64 -> 128 on 56x56 4.5, 4.4,
#: 4.0, 4.0 ms; 5x5 16 -> 32 on 64x64 3.0 ms at each.
BAND_BYTES = 512 << 10
#: Bands are split until there are this many units (threads find work for one image).
MIN_UNITS = 32
#: Take this path where it applies (False: the explicit column buffer; for comparisons).
ENABLED = True


def applies(x_shape, itemsize, spec, out_spatial, packed, scatter):
    """Whether a 2-D layer on the packed GEMM runs here rather than on the explicit
    column buffer: not a 1x1 kernel (its im2col is a plain copy, at stride 1 none;
    1x1 stride 2 3 -> 64 on 224x224 ran 0.9x as fast here), strided layers as
    :data:`STRIDED_MAX_CHANNELS` says, and output rows that fill the tiles' vectors to
    at least :data:`MIN_VECTOR_FILL`."""
    if not (ENABLED and packed and not scatter and len(x_shape) == 4):
        return False
    kh, kw = spec["kernel_size"]
    if kh * kw == 1:
        return False
    if (spec["stride"] != [1, 1] and x_shape[1] // spec["groups"] > STRIDED_MAX_CHANNELS
            and kh * kw < STRIDED_MIN_AREA):
        return False
    ow = out_spatial[1]
    vector = _kernels.load("_conv").phased_vector(itemsize)
    return ow >= MIN_VECTOR_FILL * vector * -(-ow // vector)


class _Plan:
    """Phase maps, tap offsets, band and workspace of one geometry."""

    def __init__(self, x_shape, itemsize, C_out, groups, kernel_size, stride, dilation,
                 pads, out_spatial, mode):
        N, C_in, H, W = x_shape
        KH, KW = kernel_size
        sh, sw = stride
        dh, dw = dilation
        OH, OW = out_spatial
        self.sh, self.sw = sh, sw
        self.QH = QH = (KH - 1) * dh // sh
        self.PW = PW = OW + (KW - 1) * dw // sw
        cin_g, cout_g = C_in // groups, C_out // groups
        kh = np.arange(KH) * dh
        kw = np.arange(KW) * dw
        # only the phases that taps read (a 1x1 layer at stride 2 reads one of four)
        pys, iy = np.unique(kh % sh, return_inverse=True)
        pxs, ix = np.unique(kw % sw, return_inverse=True)
        self.pys, self.pxs = pys.astype(np.intp), pxs.astype(np.intp)
        # a band's strip and output rows (read again by each k block) stay in L2
        per_row = (cin_g * len(pys) * len(pxs) * PW + cout_g * OW) * itemsize
        band = max(1, BAND_BYTES // per_row)
        pairs = N * groups
        if pairs * -(-OH // band) < MIN_UNITS:
            band = min(band, max(1, -(-OH // -(-MIN_UNITS // pairs))))
        self.band = band = min(band, OH)
        R = band + QH
        # padded row sh*i + py (column sw*j + px) -> input row (column), -1 padding
        self.hmap = self._phase_map(H, OH, KH, sh, dh, pads[0][0], mode, OH + QH)
        self.wmap = self._phase_map(W, OW, KW, sw, dw, pads[1][0], mode, PW)
        # tap (c, kh, kw): its channel's planes, its phase plane, its row and column
        tap = ((iy[:, None] * len(pxs) + ix[None, :]) * R * PW
               + (kh // sh)[:, None] * PW + (kw // sw)[None, :])
        planes = len(pys) * len(pxs) * R * PW
        channel = np.arange(cin_g) * planes
        self.b_off = np.ascontiguousarray((channel[:, None, None] + tap).ravel(),
                                          dtype=np.intp)
        self.units = pairs * -(-OH // band)
        self.strip_values = cin_g * planes

    @staticmethod
    def _phase_map(length, out_len, k, s, d, lo, mode, n_phase):
        """``(s, n_phase)``: the input index of padded position ``s*i + p``."""
        table = _geometry.tap_index_table(length, out_len, k, s, d, lo, mode)
        padded = (np.arange(out_len)[None, :] * s + np.arange(k)[:, None] * d).ravel()
        phase_map = np.full(s * n_phase, -1, dtype=np.intp)
        phase_map[(padded % s) * n_phase + padded // s] = table.ravel()
        return phase_map


def phased_forward(x, weight_packed, bias, out, spec, pads, out_spatial, k_block,
                   n_threads, flops):
    """Run ``_conv.conv2d_phased`` for a validated conv2d on the packed GEMM.

    ``weight_packed``: the packed weights (``pyconv.ops.conv.packed_weight`` with
    ``k_block``, the im2col path's: the same sums).
    """
    _conv = _kernels.load("_conv")
    N, C_in, H, W = x.shape
    C_out = out.shape[1]
    groups = spec["groups"]
    plan = _memo.cached(
        ("phased", x.shape, x.dtype.itemsize, C_out, groups, tuple(spec["kernel_size"]),
         tuple(spec["stride"]), tuple(spec["dilation"]), tuple(map(tuple, pads)),
         tuple(out_spatial), spec["padding_mode"], BAND_BYTES, MIN_UNITS),
        lambda: _Plan(x.shape, x.dtype.itemsize, C_out, groups, spec["kernel_size"],
                      spec["stride"], spec["dilation"], pads, out_spatial,
                      spec["padding_mode"]))
    n_threads = _threads.resolve(n_threads, flops, plan.units)
    work = thread_workspace(n_threads, plan.strip_values + _conv.PHASED_STRIP_SLACK,
                            x.dtype)
    bias_arr = np.zeros(1, dtype=x.dtype) if bias is None else bias
    _conv.conv2d_phased(x.reshape(N, C_in, -1), weight_packed, bias_arr,
                        out.reshape(N, C_out, -1), plan.hmap, plan.wmap, plan.b_off,
                        plan.pys, plan.pxs, H, W,
                        out_spatial[0], out_spatial[1], plan.sh, plan.sw, plan.QH, plan.PW,
                        pads[1][0], plan.band, groups, spec["padding_value"], bias is not None,
                        spec["activation"] == "relu", k_block, work, n_threads)
    return out
