"""Reading and writing arrays and images for the command line.

Arrays: ``.npy`` (one array) and ``.npz`` (named arrays), loaded without pickle.
Images (PNG, JPEG, BMP, TIFF, WebP, GIF) go through Pillow, the optional ``image``
extra (``pip install "pyconv[image]"``): an image reads as a ``(1, C, H, W)`` float32
batch scaled to ``[0, 1]`` and a ``(1, C, H, W)`` output with 1, 3 or 4 channels writes
as an 8-bit image.
"""
from __future__ import annotations

import os

import numpy as np

ARRAY_SUFFIXES = (".npy", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


class UserError(Exception):
    """A mistake in what the user asked for; the message is shown as is."""


def suffix(path):
    return os.path.splitext(str(path))[1].lower()


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise UserError("reading and writing images needs Pillow: "
                        'pip install "pyconv[image]"') from None
    return Image


def _check_readable(path):
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a folder, not a file")


def read_arrays(path, key=None, gray=False):
    """``[(name, array), ...]`` from an ``.npy``, ``.npz`` or image file.

    ``key`` picks one array of an ``.npz``; ``gray`` converts an image to luminance.
    """
    path = str(path)
    _check_readable(path)
    ext = suffix(path)
    if ext == ".npy":
        try:
            return [("y", np.load(path, allow_pickle=False))]
        except ValueError as e:
            raise UserError(f"{path}: not a readable .npy file ({e})") from None
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                names = list(data.files)
                if key is not None:
                    if key not in names:
                        raise UserError(f"{path}: has no array named {key!r}; it has "
                                        f"{', '.join(map(repr, names)) or 'none'}")
                    names = [key]
                arrays = [(name, data[name]) for name in names]
        except (ValueError, OSError) as e:  # not a zip, or an object array
            raise UserError(f"{path}: not a readable .npz file ({e})") from None
        if not arrays:
            raise UserError(f"{path}: the .npz file holds no arrays")
        return arrays
    if ext in IMAGE_SUFFIXES:
        return [("y", read_image(path, gray=gray))]
    raise UserError(f"{path}: unsupported input format {ext or '(no suffix)'!r}; expected "
                    f"{', '.join(ARRAY_SUFFIXES + IMAGE_SUFFIXES)}")


def read_image(path, gray=False):
    """An image file as a ``(1, C, H, W)`` float32 batch in ``[0, 1]``."""
    Image = _pillow()
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                data = np.asarray(im, dtype=np.float64) / 65535.0
                data = data[..., None]
            elif im.mode == "F":
                data = np.asarray(im, dtype=np.float64)[..., None]
            else:
                if gray:
                    im = im.convert("L")
                elif im.mode in ("1", "P", "CMYK", "YCbCr", "LAB", "HSV"):
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                data = np.asarray(im, dtype=np.float64) / 255.0
                if data.ndim == 2:
                    data = data[..., None]
    except OSError as e:
        raise UserError(f"{path}: cannot read the image ({e})") from None
    if gray and data.shape[-1] != 1:
        data = data[..., :1]
    return np.ascontiguousarray(np.moveaxis(data, -1, 0)[None], dtype=np.float32)


def check_output_path(path):
    """Refuse an output path of an unknown format or in a missing folder, before work."""
    path = str(path)
    ext = suffix(path)
    if ext not in ARRAY_SUFFIXES + IMAGE_SUFFIXES:
        raise UserError(f"{path}: unsupported output format {ext or '(no suffix)'!r}; "
                        f"expected {', '.join(ARRAY_SUFFIXES + IMAGE_SUFFIXES)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"{path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a folder, not a file")
    if ext in IMAGE_SUFFIXES:
        _pillow()


def write_arrays(path, arrays, scale="auto"):
    """Write ``[(name, array), ...]`` to ``.npy`` (exactly one), ``.npz`` or an image."""
    path = str(path)
    ext = suffix(path)
    check_output_path(path)
    if ext == ".npz":
        np.savez(path, **dict(arrays))
    elif ext == ".npy":
        if len(arrays) != 1:
            names = ", ".join(name for name, _ in arrays)
            raise UserError(f"{path}: {len(arrays)} output arrays ({names}) do not fit in "
                            "one .npy file; write a .npz")
        np.save(path, arrays[0][1])
    elif ext in IMAGE_SUFFIXES:
        if len(arrays) != 1:
            raise UserError(f"{path}: {len(arrays)} output arrays do not fit in one image; "
                            "write a .npz")
        write_image(path, arrays[0][1], scale=scale)


def to_image_data(y, scale="auto"):
    """``(1, C, H, W)`` with C in 1, 3, 4 -> ``(H, W)`` or ``(H, W, C)`` uint8.

    ``scale``: ``"clip"`` maps ``[0, 1]`` to ``0..255`` and clips; ``"minmax"`` stretches
    the range of the data to ``0..255``; ``"auto"`` clips when the data lies in
    ``[0, 1]`` and stretches otherwise (filter outputs such as edges are signed).
    """
    y = np.asarray(y)
    if y.ndim != 4 or y.shape[0] != 1 or y.shape[1] not in (1, 3, 4):
        raise UserError(f"an output of shape {y.shape} cannot be written as an image: "
                        "expected (1, C, H, W) with C = 1, 3 or 4; write a .npy instead")
    data = np.moveaxis(y[0].astype(np.float64), 0, -1)
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if scale == "auto":
        scale = "clip" if lo >= 0.0 and hi <= 1.0 else "minmax"
    if scale == "minmax":
        data = (data - lo) / (hi - lo) if hi > lo else np.full_like(data, 0.5)
    elif scale != "clip":
        raise UserError(f"unknown scale {scale!r}; expected auto, clip or minmax")
    data = np.nan_to_num(data, nan=0.0)
    out = np.round(np.clip(data, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def write_image(path, y, scale="auto"):
    Image = _pillow()
    data = to_image_data(y, scale)
    im = Image.fromarray(data)
    if suffix(path) in (".jpg", ".jpeg") and im.mode == "RGBA":
        im = im.convert("RGB")  # JPEG has no alpha channel
    try:
        im.save(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot write the image ({e})") from None
