"""A minimal PNG writer (8-bit grey or RGB) so the demo needs no imaging library."""
import struct
import zlib

import numpy as np


def _chunk(tag, data):
    body = tag + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def to_uint8(image):
    """Scale an array linearly to 0..255 (constant arrays become mid-grey)."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = np.nanmin(image), np.nanmax(image)
    if not np.isfinite(lo) or not np.isfinite(hi) or hi == lo:
        return np.full(image.shape, 128, np.uint8)
    return np.round((image - lo) / (hi - lo) * 255).astype(np.uint8)


def write_png(path, image):
    """Write ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8 data as a PNG file."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim == 2:
        color = 0
    elif image.ndim == 3 and image.shape[2] == 3:
        color = 2
    else:
        raise ValueError(f"write_png: expected (H, W) or (H, W, 3); got {image.shape}")
    h, w = image.shape[:2]
    rows = image.reshape(h, -1)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))
