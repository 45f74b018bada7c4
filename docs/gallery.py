"""The docs' gallery: pictures of registered ops on the embedded sample image.

Run by the docs build (``docs/_ext/pyconv_docs.py``), or by hand::

    python docs/gallery.py OUTDIR

Each picture is made only if the ops it shows are registered, so the gallery grows
with the registry. Matplotlib (in the ``docs`` extra) draws titled panels; without it
the panels are written side by side with pyconv's own PNG writer.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

import pyconv
from pyconv._demo import LAPLACIAN, SOBEL_X, gaussian
from pyconv._png import to_uint8, write_png
from pyconv._sample import sample_image


def have(*ops):
    names = set(pyconv.available_ops())
    return all(op in names for op in ops)


# -- drawing -----------------------------------------------------------------------------
def _as_picture(a):
    """(C, H, W) with C = 3 -> (H, W, 3) in [0, 1]; (1, H, W) or (H, W) -> (H, W)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 3:
        return np.clip(np.moveaxis(a, 0, -1), 0.0, 1.0)
    return a[0] if a.ndim == 3 else a


def save_panels(path, panels, extent=None, points=None, cmap="gray"):
    """Draw ``[(title, array), ...]`` in one row; ``extent`` fixes a common pixel scale.

    ``points``: ``{panel index: [(ys, xs, style), ...]}`` drawn over a panel.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _save_plain(path, panels, points)
    n = len(panels)
    size = 2.6 if n > 2 else 3.6
    fig, axes = plt.subplots(1, n, figsize=(size * n, size + 0.4), squeeze=False)
    for i, (ax, (title, a)) in enumerate(zip(axes[0], panels)):
        pic = _as_picture(a)
        h, w = pic.shape[:2]
        kwargs = {} if pic.ndim == 3 else {"cmap": cmap}
        ax.imshow(pic, interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                  **kwargs)
        for ys, xs, style in (points or {}).get(i, []):
            ax.plot(xs, ys, **style)
        if extent is not None:
            ax.set_xlim(-0.5, extent[1] - 0.5)
            ax.set_ylim(extent[0] - 0.5, -0.5)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _save_plain(path, panels, points):
    pics = []
    for i, (_, a) in enumerate(panels):
        pic = _as_picture(a)
        img = to_uint8(pic) if pic.ndim == 2 else np.round(pic * 255).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        for ys, xs, _ in (points or {}).get(i, []):
            yi = np.clip(np.round(ys).astype(int), 0, img.shape[0] - 1)
            xi = np.clip(np.round(xs).astype(int), 0, img.shape[1] - 1)
            img[yi, xi] = (255, 0, 0)
        pics.append(img)
    height = max(p.shape[0] for p in pics)
    row = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0)), constant_values=255)
           for p in pics]
    write_png(path, np.concatenate(row, axis=1))


# -- the pictures ----------------------------------------------------------------------------
def fig_edges(path):
    gray = sample_image(np.float64, gray=True)
    spec = {"op": "conv2d", "in_channels": 1, "out_channels": 3, "kernel_size": 3,
            "padding": "same", "padding_mode": "reflect", "bias": False}
    weight = np.stack([SOBEL_X, SOBEL_X.T, LAPLACIAN])[:, None]
    y = pyconv.Conv(spec, params={"weight": weight}).apply(gray)[0]
    mag = np.hypot(y[0], y[1])
    save_panels(path, [("input", gray[0]), ("Sobel x", y[0]), ("Sobel y", y[1]),
                       ("|gradient|", mag), ("Laplacian", y[2])])
    return spec, ("Edge filters: one ``conv2d`` with three output channels (Sobel x, "
                  "Sobel y, Laplacian), ``'same'`` padding in ``reflect`` mode so the "
                  "border shows no false edges.")


def fig_blur(path):
    rgb = sample_image(np.float64)
    spec = {"op": "conv2d", "in_channels": 3, "out_channels": 3, "kernel_size": 9,
            "groups": 3, "padding": "same", "padding_mode": "replicate", "bias": False}
    blur = pyconv.Conv(spec, params={"weight": np.repeat(gaussian(9, 2.0)[None, None], 3,
                                                         0)}).apply(rgb)[0]
    box = pyconv.Conv(dict(spec, kernel_size=7),
                      params={"weight": np.full((3, 1, 7, 7), 1 / 49)}).apply(rgb)[0]
    sharp = np.clip(rgb[0] + 1.5 * (rgb[0] - blur), 0, 1)
    save_panels(path, [("input", rgb[0]), ("Gaussian 9x9, sigma 2", blur),
                       ("box 7x7", box), ("unsharp mask", sharp)])
    return spec, ("Blur per colour channel: ``groups=3`` keeps the channels apart; "
                  "``replicate`` padding keeps the border from darkening.")


def fig_dilation(path):
    size = 33
    delta = np.zeros((1, 1, size, size))
    delta[0, 0, size // 2, size // 2] = 1.0
    panels = []
    last = None
    for d in (1, 2, 4):
        spec = {"op": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3,
                "dilation": d, "padding": "same", "bias": False}
        conv = pyconv.Conv(spec, params={"weight": np.ones((1, 1, 3, 3))})
        y = conv.apply(delta)[0, 0]
        panels.append((f"3x3, dilation {d}: field {2 * d + 1}", y > 0))
        last = spec
    stack = delta
    for d in (1, 2, 4):
        stack = pyconv.Conv(dict(last, dilation=d),
                            params={"weight": np.ones((1, 1, 3, 3))}).apply(stack)
    panels.append(("stack d = 1, 2, 4: field 15", stack[0, 0] > 0))
    save_panels(path, panels, cmap="viridis")
    return last, ("Receptive field of one output pixel (the input pixels it reads), "
                  "found by convolving an impulse with an all-ones kernel. Dilation "
                  "spreads the 3x3 taps; a stack of dilations 1, 2, 4 covers a dense "
                  "15x15 field with 27 taps (each layer adds ``d*(k-1)`` times the "
                  "product of the earlier strides).")


def fig_shapes(path):
    gray = sample_image(np.float64, gray=True)
    h = gray.shape[2]
    panels = [(f"input {gray.shape[2:]}", gray[0])]
    spec = {"op": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3,
            "stride": 2, "padding": "same", "bias": False}
    down = pyconv.Conv(spec, params={"weight": np.full((1, 1, 3, 3), 1 / 9)}).apply(gray)
    panels.append((f"stride 2 'same' {down.shape[2:]}", down[0]))
    s3 = pyconv.Conv(dict(spec, kernel_size=5, stride=3, padding="valid"),
                     params={"weight": np.full((1, 1, 5, 5), 1 / 25)}).apply(gray)
    panels.append((f"5x5 stride 3 'valid' {s3.shape[2:]}", s3[0]))
    shown = [spec]
    if have("conv_transpose2d"):
        tspec = {"op": "conv_transpose2d", "in_channels": 1, "out_channels": 1,
                 "kernel_size": 4, "stride": 2, "padding": 1, "bias": False}
        bil = np.array([0.25, 0.75, 0.75, 0.25])
        up = pyconv.Conv(tspec, params={"weight": np.outer(bil, bil)[None, None]}).apply(
            down)
        panels.append((f"transposed k4 s2 p1 {up.shape[2:]}", up[0]))
        shown.append(tspec)
    save_panels(path, panels, extent=(h, h))
    text = ("Output shapes at a common pixel scale: a stride-2 ``'same'`` convolution "
            "gives ``ceil(128 / 2) = 64``; a 5x5 stride-3 ``'valid'`` one "
            "``floor((128 - 5) / 3) + 1 = 42``")
    if len(shown) > 1:
        text += ("; a transposed convolution (kernel 4, stride 2, padding 1, bilinear "
                 "weights) brings 64 back to ``(64 - 1)*2 - 2 + 4 = 128``")
    return shown, text + "."


def fig_pooling(path):
    rgb = sample_image(np.float64)
    panels = [("input", rgb[0])]
    shown = []
    for op, label in (("max_pool2d", "max"), ("avg_pool2d", "avg")):
        if have(op):
            spec = {"op": op, "kernel_size": 4, "stride": 4}
            y = pyconv.Conv(spec).apply(rgb)
            y = y[0] if isinstance(y, tuple) else y
            panels.append((f"{label} pool 4x4 s4 {y.shape[2:]}", y[0]))
            shown.append(spec)
    if have("max_pool2d"):
        spec = {"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1}
        y = pyconv.Conv(spec).apply(rgb)
        y = y[0] if isinstance(y, tuple) else y
        panels.append((f"max 3x3 s2 p1 {y.shape[2:]}", y[0]))
        shown.append(spec)
    if have("adaptive_avg_pool2d"):
        spec = {"op": "adaptive_avg_pool2d", "output_size": 8}
        y = pyconv.Conv(spec).apply(rgb)
        panels.append((f"adaptive avg {y.shape[2:]}", y[0]))
        shown.append(spec)
    save_panels(path, panels)
    return shown, ("Pooling, each output drawn at full size so its windows show as "
                   "blocks: max pooling keeps the brightest pixel of each window "
                   "(highlights grow), average pooling the mean.")


def deform_offsets(out_h, out_w, k=3):
    """Offsets that stretch the 3x3 grid by a factor growing from 1 (left) to 5 (right)."""
    scale = np.linspace(0.0, 4.0, out_w)[None, :].repeat(out_h, 0)
    off = np.zeros((1, 2 * k * k, out_h, out_w))
    for i in range(k):
        for j in range(k):
            t = i * k + j
            off[0, 2 * t] = (i - k // 2) * scale      # dy (row offset): channel 2t
            off[0, 2 * t + 1] = (j - k // 2) * scale  # dx (column offset): channel 2t+1
    return off


def fig_deform(path):
    gray = sample_image(np.float64, gray=True)
    h, w = gray.shape[2:]
    spec = {"op": "deform_conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3,
            "padding": 1, "bias": False}
    conv = pyconv.Conv(spec, params={"weight": np.full((1, 1, 3, 3), 1 / 9)})
    off = deform_offsets(h, w)
    y = conv.apply(gray, offset=off)
    points = []
    for oy, ox, colour in ((64, 12, "#ff3b30"), (64, 64, "#ffcc00"), (64, 116, "#34c759")):
        ys = [oy - 1 + i + off[0, 2 * (i * 3 + j), oy, ox] for i in range(3) for j in range(3)]
        xs = [ox - 1 + j + off[0, 2 * (i * 3 + j) + 1, oy, ox] for i in range(3)
              for j in range(3)]
        points.append((np.array(ys), np.array(xs),
                       {"marker": "o", "linestyle": "none", "markersize": 3,
                        "color": colour}))
    save_panels(path, [("sampling points of 3 outputs", gray[0]),
                       ("deformable 3x3 mean", y[0])], points={0: points})
    return spec, ("Deformable convolution: tap ``t = i*3 + j`` of output ``(oy, ox)`` "
                  "reads the input at ``(oy - 1 + i + dy, ox - 1 + j + dx)`` with ``dy`` "
                  "in offset channel ``2t`` and ``dx`` in ``2t + 1``. Here the offsets "
                  "stretch the grid from 1x (left) to 5x (right), so the 3x3 mean blurs "
                  "more and more towards the right; the dots are the sampling points of "
                  "three output pixels.")


FIGURES = [
    ("edges", "Edge detection", ("conv2d",), fig_edges),
    ("blur", "Blur and sharpen", ("conv2d",), fig_blur),
    ("dilation", "Dilation and the receptive field", ("conv2d",), fig_dilation),
    ("shapes", "Strided and transposed shapes", ("conv2d",), fig_shapes),
    ("pooling", "Pooling", ("max_pool2d",), fig_pooling),
    ("deform", "Deformable sampling points", ("deform_conv2d",), fig_deform),
]


def build(outdir):
    """Write every picture whose ops are registered; return the gallery's rst body."""
    os.makedirs(outdir, exist_ok=True)
    parts = []
    for stem, title, needs, make in FIGURES:
        png = os.path.join(outdir, f"{stem}.png")
        if not have(*needs):
            if os.path.exists(png):
                os.remove(png)
            continue
        specs, text = make(png)
        specs = specs if isinstance(specs, list) else [specs]
        parts.append(f"{title}\n{'-' * len(title)}\n\n{text}\n\n"
                     f".. image:: /generated/gallery/{stem}.png\n   :alt: {title}\n")
        code = "\n".join("   " + json.dumps(s) for s in specs)
        parts.append(f"Spec{'s' if len(specs) > 1 else ''}:\n\n.. code-block:: json\n\n"
                     f"{code}\n" if len(specs) == 1 else
                     "Specs (one per line):\n\n.. code-block:: text\n\n" + code + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "gallery-out"
    print(build(out))
