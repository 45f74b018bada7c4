"""Check the deformable-convolution golden file against a NumPy-only loop.

``deform_conv2d.npz`` is produced by ``make_deform_golden.py`` with
torchvision.  This script re-derives every stored output with
:func:`deform_conv2d_loop`, a deliberately naive float64 implementation that
spells out torchvision's rules one sample at a time, and reports the maximum
absolute error per case.  It needs NumPy only::

    python tests/golden/check_golden_numpy.py [path/to/deform_conv2d.npz]

It exits non-zero if any case differs by more than ``TOL``.

Rules implemented (torchvision ``deform_conv2d``)
-------------------------------------------------
For output pixel ``(oy, ox)``, kernel tap ``(i, j)`` (``k = i*kw + j``,
``K = kh*kw``) and offset group ``g``, the sampling point is::

    y = oy*sh - ph + i*dh + offset[n, g*2*K + 2*k,     oy, ox]
    x = ox*sw - pw + j*dw + offset[n, g*2*K + 2*k + 1, oy, ox]

The sampled value is 0 if ``y <= -1 or y >= H or x <= -1 or x >= W``;
otherwise it is the bilinear interpolation of the four neighbours
``floor(y) + {0,1}``, ``floor(x) + {0,1}``, a neighbour outside the image
contributing 0.  For DCNv2 it is multiplied by ``mask[n, g*K + k, oy, ox]``.
Input channel ``c`` uses offset group ``c // (C_in // offset_groups)``.  The
sampled values then go through an ordinary grouped convolution (weight
groups ``C_in // weight.shape[1]``) plus bias.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

TOL = 1e-10
DEFAULT_PATH = Path(__file__).resolve().parent / "deform_conv2d.npz"


def bilinear(img, y, x):
    """Sample 2-D ``img`` at real coordinates ``(y, x)``, zero outside."""
    H, W = img.shape
    if y <= -1 or y >= H or x <= -1 or x >= W:
        return 0.0
    y0 = math.floor(y)
    x0 = math.floor(x)
    ly = y - y0
    lx = x - x0
    total = 0.0
    for yy, wy in ((y0, 1.0 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1.0 - lx), (x0 + 1, lx)):
            if 0 <= yy < H and 0 <= xx < W:
                total += wy * wx * img[yy, xx]
    return total


def deform_conv2d_loop(x, offset, weight, bias=None, stride=(1, 1),
                       padding=(0, 0), dilation=(1, 1), mask=None):
    """Naive deformable convolution with torchvision semantics (float64)."""
    N, C_in, H, W = x.shape
    C_out, cin_per_group, kh, kw = weight.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    K = kh * kw
    groups = C_in // cin_per_group
    offset_groups = offset.shape[1] // (2 * K)
    ch_per_og = C_in // offset_groups
    cout_per_group = C_out // groups
    Ho = (H + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    Wo = (W + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    assert offset.shape == (N, 2 * offset_groups * K, Ho, Wo)
    if mask is not None:
        assert mask.shape == (N, offset_groups * K, Ho, Wo)

    # Step 1: sampled "columns" cols[n, c, i, j, oy, ox].
    cols = np.zeros((N, C_in, kh, kw, Ho, Wo))
    for n in range(N):
        for c in range(C_in):
            g = c // ch_per_og
            for i in range(kh):
                for j in range(kw):
                    k = i * kw + j
                    for oy in range(Ho):
                        for ox in range(Wo):
                            y = oy * sh - ph + i * dh + offset[n, g * 2 * K + 2 * k, oy, ox]
                            xx = ox * sw - pw + j * dw + offset[n, g * 2 * K + 2 * k + 1, oy, ox]
                            v = bilinear(x[n, c], y, xx)
                            if mask is not None:
                                v *= mask[n, g * K + k, oy, ox]
                            cols[n, c, i, j, oy, ox] = v

    # Step 2: grouped convolution over the sampled values, plus bias.
    out = np.zeros((N, C_out, Ho, Wo))
    for n in range(N):
        for co in range(C_out):
            gw = co // cout_per_group
            acc = np.zeros((Ho, Wo))
            for cl in range(cin_per_group):
                c = gw * cin_per_group + cl
                for i in range(kh):
                    for j in range(kw):
                        acc += weight[co, cl, i, j] * cols[n, c, i, j]
            if bias is not None:
                acc += bias[co]
            out[n, co] = acc
    return out


def main(path=DEFAULT_PATH):
    data = np.load(path, allow_pickle=False)
    print("versions:", str(data["versions"]))
    worst = 0.0
    failed = []
    for name in data["cases"]:
        name = str(name)
        meta = json.loads(str(data[f"{name}/meta"]))
        got = deform_conv2d_loop(
            data[f"{name}/x"], data[f"{name}/offset"], data[f"{name}/weight"],
            bias=data[f"{name}/bias"] if f"{name}/bias" in data else None,
            stride=tuple(meta["stride"]), padding=tuple(meta["padding"]),
            dilation=tuple(meta["dilation"]),
            mask=data[f"{name}/mask"] if f"{name}/mask" in data else None,
        )
        ref = data[f"{name}/out"]
        err = float(np.max(np.abs(got - ref)))
        worst = max(worst, err)
        status = "ok" if err <= TOL else "FAIL"
        if err > TOL:
            failed.append(name)
        print(f"{name} {status} max_abs_err={err:.3e} out{ref.shape} "
              f"(max |out|={np.max(np.abs(ref)):.3g}): {meta['description']}")
    print(f"overall max abs error {worst:.3e}; {len(failed)} case(s) above {TOL:g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH))
