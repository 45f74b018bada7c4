"""Generate golden reference data for deformable convolution.

This script produces ``tests/golden/deform_conv2d.npz``, a small set of
reference cases computed with :func:`torchvision.ops.deform_conv2d` (float64,
CPU).  pyconv's deformable convolution follows torchvision semantics, and its
test-suite compares against these stored outputs so that neither torch nor
torchvision is needed at test time: the ``.npz`` file is read with plain
NumPy (``np.load(path, allow_pickle=False)``).

What is generated
-----------------
Every case is stored under keys prefixed by its name (``case00`` ...):

``<case>/x``
    Input, shape ``(N, C_in, H, W)``.
``<case>/weight``
    Weight, shape ``(C_out, C_in // groups, kh, kw)``.  torchvision infers the
    weight groups as ``C_in // weight.shape[1]``.
``<case>/bias``
    Bias, shape ``(C_out,)``.  The key is *absent* when the case has no bias.
``<case>/offset``
    Offsets, shape ``(N, 2 * offset_groups * kh * kw, H_out, W_out)``.  For
    offset group ``g`` and kernel tap ``(i, j)`` channel
    ``g*2*kh*kw + 2*(i*kw + j)`` is the y (row) offset and the next channel
    the x (column) offset.
``<case>/mask``
    Modulation mask (DCNv2), shape ``(N, offset_groups * kh * kw, H_out,
    W_out)``.  The key is *absent* for DCNv1 cases.
``<case>/out``
    torchvision's output, shape ``(N, C_out, H_out, W_out)``.
``<case>/meta``
    0-d unicode array holding a JSON object with ``stride``, ``padding``,
    ``dilation`` (each ``[h, w]``), ``groups``, ``offset_groups``,
    ``modulated``, ``has_bias`` and ``description``.

Two top-level keys describe the file: ``cases`` (1-d unicode array of the case
names, in order) and ``versions`` (0-d unicode JSON string with the torch,
torchvision and numpy versions used).

All arrays are float64.  Inputs come from ``numpy.random.default_rng`` with a
fixed seed (and ``torch.manual_seed`` is fixed too, although no torch RNG is
used), so rerunning the script with the same versions reproduces the file.

How to regenerate
-----------------
From the repository root, in a virtual environment kept *outside* the
project (torch is large and is not a dependency of pyconv)::

    python3.11 -m venv /work/tv-venv
    /work/tv-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy
    /work/tv-venv/bin/python tests/golden/make_deform_golden.py

Then check the file independently of torchvision with the NumPy-only loop
reference::

    python tests/golden/check_golden_numpy.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.ops import deform_conv2d

SEED = 20240611
OUT_PATH = Path(__file__).resolve().parent / "deform_conv2d.npz"


def _pair(v):
    """Return ``v`` as an ``(h, w)`` tuple of ints."""
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def _out_size(size, k, s, p, d):
    """Output length along one axis (PyTorch convolution arithmetic)."""
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def _base_coords(h_out, w_out, kh, kw, stride, padding, dilation):
    """Undeformed sampling rows/columns for every (tap, out_y, out_x).

    Returns two float64 arrays of shape ``(kh*kw, h_out, w_out)``:
    ``oy*sh - ph + i*dh`` and ``ox*sw - pw + j*dw`` for tap ``k = i*kw + j``.
    """
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oy = np.arange(h_out)[:, None]
    ox = np.arange(w_out)[None, :]
    ys = np.empty((kh * kw, h_out, w_out))
    xs = np.empty((kh * kw, h_out, w_out))
    for i in range(kh):
        for j in range(kw):
            # Assignment broadcasts the (Ho, 1) / (1, Wo) vectors to (Ho, Wo).
            ys[i * kw + j] = oy * sh - ph + i * dh
            xs[i * kw + j] = ox * sw - pw + j * dw
    return ys, xs


# ---------------------------------------------------------------------------
# Offset generators.  Each takes (rng, shape, H, W, base_y, base_x) where shape
# is (N, offset_groups, kh*kw, H_out, W_out) and returns y/x offsets of that
# shape; they are interleaved into torchvision's layout by _pack_offsets.
# ---------------------------------------------------------------------------


def offsets_fractional(scale):
    """Gaussian offsets of standard deviation ``scale`` (mostly fractional)."""

    def gen(rng, shape, H, W, by, bx):
        return rng.normal(0.0, scale, shape), rng.normal(0.0, scale, shape)

    return gen


def offsets_zero(rng, shape, H, W, by, bx):
    """All-zero offsets: deform_conv2d must reduce to a plain convolution."""
    return np.zeros(shape), np.zeros(shape)


def offsets_large(rng, shape, H, W, by, bx):
    """Uniform offsets of magnitude up to ~1.3*H / 1.3*W.

    Most sampling points land far outside the image (value 0), some land
    inside or partly overlapping the border.
    """
    oy = rng.uniform(-1.3 * H, 1.3 * H, shape)
    ox = rng.uniform(-1.3 * W, 1.3 * W, shape)
    return oy, ox


def offsets_integer(rng, shape, H, W, by, bx):
    """Integer offsets in [-3, 3]: sampling points fall exactly on pixels."""
    oy = rng.integers(-3, 4, shape).astype(np.float64)
    ox = rng.integers(-3, 4, shape).astype(np.float64)
    return oy, ox


def offsets_boundary(rng, shape, H, W, by, bx):
    """Offsets chosen so the *absolute* sampling point hits edge values.

    Targets along each axis are drawn from a set containing the exact
    cut-off values ``-1`` and ``H`` (sampled value must be 0), the border
    pixels ``0`` and ``H-1``, half-pixel positions straddling the border
    (``-0.5``, ``H-0.5``: only one neighbour in range) and points just inside
    the cut-off (``-1 + 2**-10``, ``H - 2**-10``).  All targets and all base
    coordinates are dyadic, so ``base + (target - base)`` is exact in float64
    and the sampling point equals the target bit for bit.
    """
    eps = 2.0**-10

    def targets(n):
        return np.array(
            [-2.0, -1.0, -1.0 + eps, -0.5, 0.0, 0.5, n - 1.0, n - 0.5,
             n - eps, float(n), n + 1.0]
        )

    ty = rng.choice(targets(H), size=shape)
    tx = rng.choice(targets(W), size=shape)
    return ty - by, tx - bx


def _pack_offsets(oy, ox):
    """Interleave (N, G, K, Ho, Wo) y/x offsets into torchvision's layout.

    Result shape ``(N, 2*G*K, Ho, Wo)`` with channel ``g*2*K + 2*k`` = y and
    ``g*2*K + 2*k + 1`` = x.
    """
    n, g, k, ho, wo = oy.shape
    packed = np.stack([oy, ox], axis=3)  # (N, G, K, 2, Ho, Wo)
    return packed.reshape(n, 2 * g * k, ho, wo)


# ---------------------------------------------------------------------------
# Mask generators, shape (N, offset_groups*kh*kw, H_out, W_out).
# ---------------------------------------------------------------------------


def mask_unit(rng, shape):
    """Mask in [0, 1], as produced by a sigmoid in DCNv2."""
    return rng.uniform(0.0, 1.0, shape)


def mask_wide(rng, shape):
    """Mask outside [0, 1] (negative and > 1); torchvision does not clamp."""
    return rng.uniform(-1.5, 2.5, shape)


# ---------------------------------------------------------------------------
# Case table.
# ---------------------------------------------------------------------------

CASES = [
    dict(
        description="DCNv1 baseline: 3x3, pad 1, fractional offsets, odd 7x9 input",
        N=1, C_in=4, C_out=3, H=7, W=9, k=(3, 3), stride=1, padding=1,
        dilation=1, groups=1, offset_groups=1, bias=True,
        offsets=offsets_fractional(1.0), mask=None,
    ),
    dict(
        description="DCNv2 baseline: case00 geometry, mask in [0, 1]",
        N=1, C_in=4, C_out=3, H=7, W=9, k=(3, 3), stride=1, padding=1,
        dilation=1, groups=1, offset_groups=1, bias=True,
        offsets=offsets_fractional(1.0), mask=mask_unit,
    ),
    dict(
        description="DCNv2, offset_groups 2, weight groups 2, batch 2",
        N=2, C_in=4, C_out=4, H=6, W=7, k=(3, 3), stride=1, padding=1,
        dilation=1, groups=2, offset_groups=2, bias=True,
        offsets=offsets_fractional(1.5), mask=mask_unit,
    ),
    dict(
        description="DCNv2, offset_groups 4, weight groups 2, stride 2, batch 2",
        N=2, C_in=8, C_out=6, H=9, W=7, k=(3, 3), stride=2, padding=1,
        dilation=1, groups=2, offset_groups=4, bias=True,
        offsets=offsets_fractional(1.0), mask=mask_unit,
    ),
    dict(
        description="DCNv1, asymmetric stride (2,1), padding (1,0), dilation 2",
        N=1, C_in=3, C_out=2, H=9, W=8, k=(3, 3), stride=(2, 1),
        padding=(1, 0), dilation=2, groups=1, offset_groups=1, bias=True,
        offsets=offsets_fractional(0.8), mask=None,
    ),
    dict(
        description="DCNv1, 1x1 kernel, pad 0, no bias, offset_groups 2",
        N=2, C_in=4, C_out=3, H=5, W=7, k=(1, 1), stride=1, padding=0,
        dilation=1, groups=1, offset_groups=2, bias=False,
        offsets=offsets_fractional(1.2), mask=None,
    ),
    dict(
        description="DCNv2, non-square 2x3 kernel, dilation (2,1), padding (1,0)",
        N=1, C_in=2, C_out=4, H=7, W=9, k=(2, 3), stride=1, padding=(1, 0),
        dilation=(2, 1), groups=1, offset_groups=1, bias=True,
        offsets=offsets_fractional(1.0), mask=mask_unit,
    ),
    dict(
        description="DCNv1, large offsets (|off| up to ~1.3*H/W), most samples outside",
        N=1, C_in=3, C_out=2, H=7, W=9, k=(3, 3), stride=1, padding=1,
        dilation=1, groups=1, offset_groups=1, bias=True,
        offsets=offsets_large, mask=None,
    ),
    dict(
        description="DCNv2, large offsets, offset_groups 2, mask in [0, 1]",
        N=2, C_in=4, C_out=2, H=6, W=5, k=(3, 3), stride=1, padding=0,
        dilation=1, groups=1, offset_groups=2, bias=True,
        offsets=offsets_large, mask=mask_unit,
    ),
    dict(
        description="DCNv2, integer offsets (samples exactly on pixels), groups 2, pad 1",
        N=1, C_in=4, C_out=4, H=7, W=7, k=(3, 3), stride=1, padding=1,
        dilation=1, groups=2, offset_groups=1, bias=True,
        offsets=offsets_integer, mask=mask_unit,
    ),
    dict(
        description="DCNv1, sampling points exactly on -1, 0, H-1, H and half-/near-border",
        N=2, C_in=2, C_out=3, H=5, W=6, k=(3, 3), stride=1, padding=1,
        dilation=1, groups=1, offset_groups=1, bias=True,
        offsets=offsets_boundary, mask=None,
    ),
    dict(
        description="DCNv2, boundary sampling points, offset_groups 2, 2x3 kernel, no bias",
        N=1, C_in=4, C_out=2, H=6, W=7, k=(2, 3), stride=(1, 2), padding=(0, 1),
        dilation=1, groups=1, offset_groups=2, bias=False,
        offsets=offsets_boundary, mask=mask_unit,
    ),
    dict(
        description="DCNv1, all-zero offsets (= plain grouped conv), groups 2, stride 2",
        N=2, C_in=4, C_out=4, H=7, W=9, k=(3, 3), stride=2, padding=1,
        dilation=1, groups=2, offset_groups=2, bias=True,
        offsets=offsets_zero, mask=None,
    ),
    dict(
        description="DCNv2, all-zero offsets with mask in [0, 1], dilation 2, pad 2",
        N=1, C_in=3, C_out=2, H=7, W=7, k=(3, 3), stride=1, padding=2,
        dilation=2, groups=1, offset_groups=1, bias=True,
        offsets=offsets_zero, mask=mask_unit,
    ),
    dict(
        description="DCNv2, mask outside [0, 1] (in [-1.5, 2.5]), offset_groups 4",
        N=1, C_in=8, C_out=4, H=5, W=7, k=(3, 3), stride=1, padding=1,
        dilation=1, groups=1, offset_groups=4, bias=True,
        offsets=offsets_fractional(1.0), mask=mask_wide,
    ),
    dict(
        description="DCNv2, batch 2, 2x3 kernel, stride 2, dilation 2, pad 2, groups 2, og 2",
        N=2, C_in=4, C_out=6, H=9, W=11, k=(2, 3), stride=2, padding=2,
        dilation=2, groups=2, offset_groups=2, bias=True,
        offsets=offsets_fractional(2.0), mask=mask_wide,
    ),
]


def make_case(rng, spec):
    """Build inputs for one case spec and run torchvision on them.

    Returns a dict ``{name: ndarray}`` without the case prefix.
    """
    N, C_in, C_out, H, W = (spec[k] for k in ("N", "C_in", "C_out", "H", "W"))
    kh, kw = spec["k"]
    stride, padding, dilation = (
        _pair(spec["stride"]), _pair(spec["padding"]), _pair(spec["dilation"])
    )
    groups, og = spec["groups"], spec["offset_groups"]
    assert C_in % groups == 0 and C_out % groups == 0 and C_in % og == 0

    h_out = _out_size(H, kh, stride[0], padding[0], dilation[0])
    w_out = _out_size(W, kw, stride[1], padding[1], dilation[1])
    K = kh * kw

    x = rng.normal(size=(N, C_in, H, W))
    weight = rng.normal(size=(C_out, C_in // groups, kh, kw)) / np.sqrt(C_in // groups * K)
    bias = rng.normal(size=(C_out,)) if spec["bias"] else None

    by, bx = _base_coords(h_out, w_out, kh, kw, stride, padding, dilation)
    # Broadcast the base coordinates to (N, G, K, Ho, Wo) for the generators.
    shape = (N, og, K, h_out, w_out)
    oy, ox = spec["offsets"](rng, shape, H, W, by[None, None], bx[None, None])
    offset = _pack_offsets(np.asarray(oy, float), np.asarray(ox, float))
    mask = spec["mask"](rng, (N, og * K, h_out, w_out)) if spec["mask"] else None

    t = torch.from_numpy
    out = deform_conv2d(
        t(x), t(offset), t(weight),
        bias=None if bias is None else t(bias),
        stride=stride, padding=padding, dilation=dilation,
        mask=None if mask is None else t(mask),
    ).numpy()
    assert out.dtype == np.float64 and out.shape == (N, C_out, h_out, w_out)

    # Sanity check: with zero offsets and no mask, deform_conv2d is conv2d.
    if spec["offsets"] is offsets_zero and mask is None:
        ref = torch.nn.functional.conv2d(
            t(x), t(weight), None if bias is None else t(bias),
            stride=stride, padding=padding, dilation=dilation, groups=groups,
        ).numpy()
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)

    arrays = dict(x=x, weight=weight, offset=offset, out=out)
    if bias is not None:
        arrays["bias"] = bias
    if mask is not None:
        arrays["mask"] = mask
    meta = dict(
        stride=list(stride), padding=list(padding), dilation=list(dilation),
        groups=groups, offset_groups=og, modulated=mask is not None,
        has_bias=bias is not None, description=spec["description"],
    )
    arrays["meta"] = np.array(json.dumps(meta))
    return arrays


def main():
    torch.manual_seed(SEED)
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(SEED)

    payload = {}
    names = []
    for idx, spec in enumerate(CASES):
        name = f"case{idx:02d}"
        names.append(name)
        for key, arr in make_case(rng, spec).items():
            # np.array(order="C") keeps 0-d arrays 0-d (ascontiguousarray would not).
            payload[f"{name}/{key}"] = np.array(arr, order="C")
        print(f"{name}: {spec['description']}")

    payload["cases"] = np.array(names)
    payload["versions"] = np.array(json.dumps(dict(
        torch=torch.__version__, torchvision=torchvision.__version__,
        numpy=np.__version__, seed=SEED,
    )))
    np.savez_compressed(OUT_PATH, **payload)
    print(f"wrote {OUT_PATH} ({OUT_PATH.stat().st_size} bytes, {len(names)} cases)")


if __name__ == "__main__":
    main()
