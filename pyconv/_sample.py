"""The embedded sample image used by the demo and the docs (no download needed).

A 128x128 RGB crop of the portrait of Rear Admiral Grace Hopper (U.S. Navy photo,
public domain), as shipped in Matplotlib's sample data, resized with Lanczos filtering.
"""
import os

import numpy as np

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sample.npz")


def sample_image(dtype=np.float32, gray=False):
    """The sample image as an ``(1, C, 128, 128)`` batch scaled to ``[0, 1]``.

    Parameters
    ----------
    dtype : dtype
        float32 or float64.
    gray : bool
        Return one luminance channel (ITU-R BT.601 weights) instead of RGB.

    Examples
    --------
    >>> from pyconv._sample import sample_image
    >>> sample_image().shape
    (1, 3, 128, 128)
    >>> sample_image(gray=True).shape
    (1, 1, 128, 128)
    """
    with np.load(_PATH) as data:
        image = data["image"].astype(np.float64) / 255.0
    if gray:
        image = np.tensordot([0.299, 0.587, 0.114], image, axes=1)[None]
    return image[None].astype(dtype)
