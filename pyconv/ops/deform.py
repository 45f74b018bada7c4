"""Deformable convolution: ``deform_conv1d``, ``deform_conv2d``, ``deform_conv3d``.

DCNv1 (Dai et al. 2017) and, with ``modulated=True``, DCNv2 (Zhu et al. 2019), with
torchvision's semantics in 2-D (``torchvision.ops.deform_conv2d``) extended with one
offset per spatial axis to 1-D and 3-D.

Every kernel tap reads the input at a learned fractional position: for output
position ``o`` and tap ``k`` the position along an axis is
``o*stride - pad_lo + k*dilation + offset``, sampled by linear (1-D), bilinear (2-D)
or trilinear (3-D) interpolation. The sample is 0 when the position is ``<= -1`` or
``>= size`` along any axis; inside, neighbours outside the image count as 0. DCNv2
multiplies each sample by its mask value. The samples then go through an ordinary
grouped convolution with ``weight`` ``(C_out, C_in/groups, *k)`` and ``bias``.

Where the offsets come from (spec key ``offsets``)
---------------------------------------------------
``"input"`` (torchvision's functional form)
    ``apply(x, offset=..., mask=...)``. ``offset`` has shape
    ``(N, rank*offset_groups*K, *out)`` and ``mask`` ``(N, offset_groups*K, *out)``
    (``K`` = product of the kernel sizes). ``mask`` is required exactly when
    ``modulated`` is true. Parameters: ``weight`` and ``bias``.
``"learned"`` (mmcv's ``DeformConv2dPack`` / ``ModulatedDeformConv2dPack``)
    An offset conv ``C_in -> (rank + modulated)*offset_groups*K`` channels with the
    same kernel, stride, padding and dilation, with bias (``offset_weight``,
    ``offset_bias``, counted in ``param_count``) computes the offsets from ``x``. Its
    first ``rank*og*K`` output channels are the offsets in the layout below; with
    ``modulated`` the remaining ``og*K`` channels, through a sigmoid, are the mask.
    That is exactly mmcv's ``o1, o2, mask = chunk(out, 3); offset = cat(o1, o2)``.
    The offset conv starts at zero, so the op starts as a plain convolution (with
    ``modulated``, the mask starts at ``sigmoid(0) = 0.5``: half a plain convolution
    plus the bias, as in mmcv).

Offset and mask layout
----------------------
Channel ``g*rank*K + rank*t + a`` holds offset group ``g``'s offset of tap ``t``
along axis ``a``; taps are numbered in row-major order (2-D: ``t = i*kw + j``) and
the axes go ``(dz, dy, dx)``: in 2-D channel ``2*t`` is the row offset ``dy`` and
``2*t + 1`` the column offset ``dx`` (torchvision's layout). Mask channel
``g*K + t``. Input channel ``c`` belongs to offset group ``c // (C_in/og)``; weight
groups are independent of offset groups.

Non-finite values: a NaN offset gives a NaN sample (torchvision reads garbage
there); an infinite offset puts the sample outside the image, so it is 0. Offsets
and mask are converted to the input's compute dtype.

Algorithm and memory
--------------------
A zero-bordered copy of the input (one element on each side of each axis, two
after the first: about ``(H+3)(W+2)/(HW)`` times the input's size in 2-D) makes every interpolation corner
readable without branches. A sampling plan (corner index and ``2**rank`` weights
with the mask folded in) is computed once per (image, offset group, tap, output
position) and shared by all channels of the group; the channels are gathered into a
column buffer for a chunk of output positions and multiplied by the weights (one
GEMM per weight group). Per thread, the column buffer holds
``C_in * K * chunk`` values, at most :data:`COLUMN_BYTES_PER_THREAD` (8 MiB) unless
one output position alone needs more, and the plan ``K * chunk`` indices plus
``K * chunk * 2**rank`` weights. The learned form also allocates the offset conv's
output, ``(rank + modulated)*og*K`` channels of the output size, computed by the
dense ``conv{rank}d`` op with its automatic algorithm choice (Winograd for large
enough 2-D 3x3 problems, plus that algorithm's own scratch).
Units of work are (image, chunk of output positions) with a chunk size that depends
on the problem only, so the output is bit-identical for any thread count.

Examples
--------
>>> import numpy as np, pyconv
>>> dcn = pyconv.Conv({"op": "deform_conv2d", "in_channels": 4, "out_channels": 8,
...                    "kernel_size": 3, "padding": 1}, seed=0)
>>> x = np.random.default_rng(0).random((2, 4, 16, 16), dtype=np.float32)
>>> offset = np.zeros((2, 2 * 9, 16, 16), np.float32)  # (N, 2*og*K, H_out, W_out)
>>> dcn.apply(x, offset=offset).shape
(2, 8, 16, 16)
>>> plain = pyconv.Conv({"op": "conv2d", "in_channels": 4, "out_channels": 8,
...                      "kernel_size": 3, "padding": 1}, params=dcn.params)
>>> bool(np.allclose(dcn.apply(x, offset=offset), plain.apply(x), atol=1e-5))
True
>>> pack = pyconv.Conv({"op": "deform_conv2d", "in_channels": 4, "out_channels": 8,
...                     "kernel_size": 3, "padding": 1, "offsets": "learned",
...                     "modulated": True}, seed=0)
>>> pack.param_shapes["offset_weight"], pack.param_count
((27, 4, 3, 3), 1295)
"""
from __future__ import annotations

import numpy as np

from pyconv import _geometry, _threads
from pyconv._errors import SpecError
from pyconv._spec import boolean, choice, int_tuple, int_value, key, optional, padding
from pyconv._workspace import workspace
from pyconv.ops._base import Op, kaiming_uniform, prod
from pyconv.ops.conv import OPS as _DENSE_OPS

#: A unit of work aims at a column buffer of about one core's L2 cache, within
#: MIN/MAX_COLUMNS output positions for the GEMM (measured on 4x64x56x56, 3x3:
#: 400-800 columns ran fastest; below 200 the GEMMs got markedly slower).
TARGET_COLUMN_BYTES = 1 << 20
TARGET_MIN_COLUMNS = 64
TARGET_MAX_COLUMNS = 1024
#: Hard cap on one thread's column buffer; a chunk holds at least one position.
COLUMN_BYTES_PER_THREAD = 8 << 20
#: A call is split into at least this many units (when chunks of at least
#: MIN_COLUMNS positions allow it) so that threads have work even for one image.
#: Both are independent of the thread count, which keeps results bit-identical.
MIN_UNITS = 16
MIN_COLUMNS = 32
_INT32_MAX = 2**31 - 1
_CONV_OPS = {op.rank: op for op in _DENSE_OPS}
_AXES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}
_OFFSET_AXES = {1: "dx", 2: "dy, dx", 3: "dz, dy, dx"}


class DeformConvND(Op):
    """Deformable convolution over ``rank`` spatial axes (see module docstring)."""

    inputs = ("offset", "mask")

    def __init__(self, rank):
        self.rank = rank
        self.name = f"deform_conv{rank}d"
        self.summary = (f"{rank}-D deformable convolution (DCNv1, DCNv2 with "
                        "modulated=True): offsets given or learned, offset groups, groups.")
        self.keys = (
            key("in_channels", int_value(1), doc="Input channels C_in."),
            key("out_channels", int_value(1), doc="Output channels C_out."),
            key("kernel_size", int_tuple(rank), doc="Kernel size per spatial axis."),
            key("stride", int_tuple(rank), 1, "Step between output positions."),
            key("padding", padding(rank), 0,
                "Zero padding amounts (samples outside the image are 0), or 'valid', "
                "'same' (TF rule, any stride), 'same_lower'."),
            key("dilation", int_tuple(rank), 1, "Spacing between kernel taps."),
            key("groups", int_value(1), 1,
                "Weight groups; C_in and C_out divisible by it."),
            key("offset_groups", int_value(1), 1,
                "Offset groups: channels c of group c // (C_in/offset_groups) share "
                "offsets (and mask); C_in divisible by it."),
            key("bias", boolean(), True, "Add a learned bias per output channel."),
            key("modulated", boolean(), False,
                "DCNv2: multiply each sample by a mask value."),
            key("offsets", choice("input", "learned"), "input",
                "'input': offset (and mask) given to apply(); 'learned': computed by "
                "an internal zero-initialised conv (mmcv's Pack form)."),
            key("activation", optional(choice("relu")), None,
                "Activation fused into the kernel's epilogue: None or 'relu'."),
        )
        axes = _AXES[rank]
        self.formulas = {
            "output": "out = floor((in + lo + hi - dilation*(k-1) - 1) / stride) + 1; "
                      "'same': out = ceil(in / stride)",
            "params": "C_out * (C_in/groups) * prod(k) (+ C_out with bias); learned: "
                      f"+ M * C_in * prod(k) + M, M = ({rank} + modulated) * "
                      "offset_groups * prod(k)",
            "macs": "N * C_out * prod(out) * (C_in/groups) * prod(k); learned: "
                    "+ N * M * prod(out) * C_in * prod(k)",
            "flops": f"2 * MACs + N * C_in * prod(k) * prod(out) * 2 * {2 ** rank} "
                     "(interpolation: one multiply-add per corner; bias, mask and "
                     "activation not counted)",
            "inputs": f"offset (N, {rank}*offset_groups*prod(k), {', '.join(axes)}_out) "
                      f"ordered ({_OFFSET_AXES[rank]}) per tap; mask (N, "
                      f"offset_groups*prod(k), {', '.join(axes)}_out)",
        }

    def check(self, spec):
        g = spec["groups"]
        for name in ("in_channels", "out_channels"):
            if spec[name] % g:
                raise SpecError(self.name, "groups", f"a divisor of {name} "
                                f"({spec[name]})", g)
        og = spec["offset_groups"]
        if spec["in_channels"] % og:
            raise SpecError(self.name, "offset_groups", "a divisor of in_channels "
                            f"({spec['in_channels']})", og)

    # -- declared rules ---------------------------------------------------------
    def geometry(self, spec, input_shape):
        """``(shape, pads, out_spatial)`` for an input shape; validates it."""
        return _geometry.window_geometry(self, spec, input_shape, spec["in_channels"])

    def output_shape(self, spec, input_shape):
        shape, _, out = self.geometry(spec, input_shape)
        return (shape[0], spec["out_channels"], *out)

    def offset_channels(self, spec):
        """Channels of the offset conv in the learned form (offsets, then mask)."""
        K = prod(spec["kernel_size"])
        return (self.rank + int(spec["modulated"])) * spec["offset_groups"] * K

    def param_shapes(self, spec):
        k = spec["kernel_size"]
        shapes = {"weight": (spec["out_channels"], spec["in_channels"] // spec["groups"],
                             *k)}
        if spec["bias"]:
            shapes["bias"] = (spec["out_channels"],)
        if spec["offsets"] == "learned":
            m = self.offset_channels(spec)
            shapes["offset_weight"] = (m, spec["in_channels"], *k)
            shapes["offset_bias"] = (m,)
        return shapes

    def macs(self, spec, input_shape):
        shape, _, out = self.geometry(spec, input_shape)
        K = prod(spec["kernel_size"])
        P = shape[0] * prod(out)
        total = P * spec["out_channels"] * (spec["in_channels"] // spec["groups"]) * K
        if spec["offsets"] == "learned":
            total += P * self.offset_channels(spec) * spec["in_channels"] * K
        return total

    def flops(self, spec, input_shape):
        shape, _, out = self.geometry(spec, input_shape)
        samples = shape[0] * spec["in_channels"] * prod(spec["kernel_size"]) * prod(out)
        return 2 * self.macs(spec, input_shape) + 2 * (2 ** self.rank) * samples

    def init_params(self, spec, rng):
        """torchvision's ``DeformConv2d`` init; the offset conv is zero (mmcv)."""
        shapes = self.param_shapes(spec)
        fan_in = prod(shapes["weight"][1:])
        params = {"weight": kaiming_uniform(rng, shapes["weight"], fan_in)}
        if spec["bias"]:
            params["bias"] = kaiming_uniform(rng, shapes["bias"], fan_in)
        if spec["offsets"] == "learned":
            params["offset_weight"] = np.zeros(shapes["offset_weight"])
            params["offset_bias"] = np.zeros(shapes["offset_bias"])
        return params

    # -- extra inputs ---------------------------------------------------------------
    def _extra(self, what, value, expected, dtype):
        arr = np.asarray(value)
        if arr.dtype.kind not in "iuf":
            raise TypeError(f"{self.name}: {what} must be a real numeric array; got "
                            f"dtype {arr.dtype}")
        if arr.shape != expected:
            raise ValueError(f"{self.name}: {what} must have shape {expected}; got "
                             f"{arr.shape}")
        return np.ascontiguousarray(arr, dtype=dtype)

    def check_inputs(self, spec, input_shape, dtype, offset=None, mask=None):
        _, _, out_spatial = self.geometry(spec, input_shape)
        self._inputs(spec, input_shape[0], dtype, out_spatial, offset, mask)

    def _inputs(self, spec, N, dtype, out_spatial, offset, mask):
        """Validated ``(offset, mask)`` as C-contiguous arrays of ``dtype``."""
        og = spec["offset_groups"]
        K = prod(spec["kernel_size"])
        axes = ", ".join(a + "_out" for a in _AXES[self.rank])
        if spec["offsets"] == "learned":
            if offset is not None or mask is not None:
                raise TypeError(f"{self.name}: offsets='learned' computes the offsets "
                                "(and mask) from x; do not pass offset= or mask=")
            return None, None
        if offset is None:
            raise TypeError(f"{self.name}: offsets='input' needs apply(x, offset=...) "
                            f"of shape (N, {self.rank}*offset_groups*K, {axes}) = "
                            f"{(N, self.rank * og * K, *out_spatial)}")
        off = self._extra(f"offset (N, {self.rank}*offset_groups*K, {axes})", offset,
                          (N, self.rank * og * K, *out_spatial), dtype)
        if spec["modulated"]:
            if mask is None:
                raise TypeError(f"{self.name}: modulated=True needs apply(..., mask=...) "
                                f"of shape (N, offset_groups*K, {axes}) = "
                                f"{(N, og * K, *out_spatial)}")
            msk = self._extra(f"mask (N, offset_groups*K, {axes})", mask,
                              (N, og * K, *out_spatial), dtype)
        else:
            if mask is not None:
                raise TypeError(f"{self.name}: got mask= but the spec has "
                                "modulated=False (DCNv1); set modulated=True to use a mask")
            msk = None
        return off, msk

    # -- computation --------------------------------------------------------------
    def forward(self, spec, x, params, out, n_threads, offset=None, mask=None):
        shape, pads, out_spatial = self.geometry(spec, x.shape)
        off, msk = self._inputs(spec, x.shape[0], x.dtype, out_spatial, offset, mask)
        N, C_in = shape[:2]
        rank = self.rank
        og = spec["offset_groups"]
        K = prod(spec["kernel_size"])
        P = prod(out_spatial)
        mask_mode = 1 if msk is not None else 0
        if spec["offsets"] == "learned":
            # mmcv's Pack: one dense conv gives the offsets, then the mask logits.
            # It goes through conv2d's own algorithm choice (Winograd where it pays);
            # every dense kernel tiles by the problem alone, so the result does not
            # depend on the thread count.
            m = self.offset_channels(spec)
            pred = np.empty((N, m, *out_spatial), dtype=x.dtype)
            conv_op = _CONV_OPS[rank]
            conv_spec = conv_op.normalize({
                "in_channels": C_in, "out_channels": m,
                "kernel_size": spec["kernel_size"], "stride": spec["stride"],
                "padding": spec["padding"], "dilation": spec["dilation"]})
            conv_op.forward(conv_spec, x, {"weight": params["offset_weight"],
                                           "bias": params["offset_bias"]}, pred, n_threads)
            pred = pred.reshape(N, m, P)
            off = pred[:, :rank * og * K]
            if spec["modulated"]:
                msk = pred[:, rank * og * K:]
                mask_mode = 2  # sigmoid inside the kernel
        return deform_forward(self.name, x, off, msk, mask_mode, params["weight"],
                              params.get("bias"), out, spec, pads, out_spatial,
                              n_threads)


def _chunk_size(N, P, per_position_bytes):
    """Output positions per unit of work; depends on the problem only, never on threads."""
    cap = max(1, COLUMN_BYTES_PER_THREAD // max(1, per_position_bytes))
    target = min(TARGET_MAX_COLUMNS,
                 max(TARGET_MIN_COLUMNS, TARGET_COLUMN_BYTES // max(1, per_position_bytes)))
    chunk = max(1, min(target, cap, P))
    n_chunks = -(-P // chunk)
    if N * n_chunks < MIN_UNITS:
        n_chunks = max(n_chunks, min(-(-MIN_UNITS // max(N, 1)), P // MIN_COLUMNS))
    chunk = -(-P // max(n_chunks, 1))
    return chunk, -(-P // chunk)


def deform_forward(op_name, x, offset, mask, mask_mode, weight, bias, out, spec, pads,
                   out_spatial, n_threads):
    """Run the deformable kernel on validated arrays (offset/mask: (N, C, *out))."""
    from pyconv import _kernels
    _deform = _kernels.load("_deform")

    rank = len(out_spatial)
    N, C_in = x.shape[:2]
    C_out = weight.shape[0]
    groups = spec["groups"]
    og = spec["offset_groups"]
    dtype = x.dtype
    itemsize = dtype.itemsize
    K = prod(spec["kernel_size"])
    P = prod(out_spatial)
    nc = 2 ** rank
    lead = 3 - rank
    size3 = [1] * lead + list(x.shape[2:])
    # Zero border of one element around each used axis, plus a second one after the
    # first used axis: its 2**rank-corner block of zeros is where samples outside the
    # image read (see _deform.pyx).
    border = [0] * lead + [1] * rank          # leading zeros per axis (D, H, W)
    bp = [n + 2 * b for n, b in zip(size3, border)]
    bp[lead] += 1
    plane = prod(bp)
    ck = (C_in // groups) * K
    if max(ck, P, plane, C_in * K) > _INT32_MAX:
        raise ValueError(f"{op_name}: a plane of {P} outputs or {ck} taps per output "
                         "exceeds the 2**31 - 1 limit of the BLAS interface")

    chunk, n_chunks = _chunk_size(N, P, C_in * K * itemsize)
    samples = N * C_in * K * P
    flops = 2 * N * C_out * P * ck + 2 * nc * samples
    n_threads = _threads.resolve(n_threads, flops, N * n_chunks)

    # One scratch allocation: bordered input, then per thread the column buffer and
    # the plan (indices, weights), each region 64-byte aligned.
    def aligned(nbytes):
        return -(-nbytes // 64) * 64

    sizes = [aligned(N * C_in * plane * itemsize),
             aligned(n_threads * C_in * K * chunk * itemsize),
             aligned(n_threads * K * chunk * 8),
             aligned(n_threads * K * chunk * nc * itemsize)]
    buf = workspace((sum(sizes) + 64,), np.uint8)
    start = (-buf.ctypes.data) % 64
    views = []
    for nbytes in sizes:
        views.append(buf[start:start + nbytes])
        start += nbytes
    xpad = views[0][:N * C_in * plane * itemsize].view(dtype).reshape(N * C_in, plane)
    col = views[1][:n_threads * C_in * K * chunk * itemsize].view(dtype).reshape(
        n_threads, C_in * K * chunk)
    pidx = views[2][:n_threads * K * chunk * 8].view(np.intp).reshape(
        n_threads, K * chunk)
    pw = views[3][:n_threads * K * chunk * nc * itemsize].view(dtype).reshape(
        n_threads, K * chunk * nc)

    _deform.pad_planes(x.reshape(N * C_in, -1), xpad, size3[0], size3[1], size3[2],
                       bp[0], bp[1], bp[2], border[0], border[1], n_threads)

    strides = [bp[1] * bp[2], bp[2], 1]
    zero_idx = (size3[lead] + 1) * strides[lead]
    geom = np.array(
        size3 + [1] * lead + list(out_spatial)
        + [1] * lead + list(spec["kernel_size"])
        + [1] * lead + list(spec["stride"])
        + [0] * lead + [lo for lo, _ in pads]
        + [1] * lead + list(spec["dilation"])
        + strides, dtype=np.intp)
    off3 = offset.reshape(N, offset.shape[1], P)
    if mask is None:
        msk3 = np.zeros((1, 1, 1), dtype=dtype)
    else:
        msk3 = mask.reshape(N, mask.shape[1], P)
    # The kernel walks positions with unit stride; channel strides may be anything
    # (the learned form passes channel slices of the offset conv's output).
    for arr in (off3, msk3):
        if arr.shape[2] > 1 and arr.strides[2] != itemsize:
            raise AssertionError("deform_forward: positions must be contiguous")
    bias_arr = bias if bias is not None else np.zeros(1, dtype=dtype)
    with _threads.blas_pinned:
        _deform.deform_nd(xpad, off3, msk3, weight.reshape(C_out, ck), bias_arr,
                          out.reshape(N, C_out, P), geom, rank, groups, og, mask_mode,
                          bias is not None, spec["activation"] == "relu", zero_idx, chunk,
                          col, pidx, pw, n_threads)
    return out


OPS = [DeformConvND(1), DeformConvND(2), DeformConvND(3)]
