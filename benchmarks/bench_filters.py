"""Single-channel 2-D image filtering: pyconv conv2d (1 -> 1 channel) vs SciPy.

A 1024x1024 image filtered with a k x k kernel, output the size of the input
(``padding="same"``), edges filled by mirroring. pyconv's padding modes and SciPy's
modes name the two mirrorings differently (see the conventions page)::

    pyconv padding_mode   edge of abcd   scipy.ndimage mode   np.pad mode
    symmetric             ba|abcd        reflect              symmetric
    reflect               cb|abcd        mirror               reflect

Peers:

* ``scipy.ndimage`` -- :func:`scipy.ndimage.correlate` (pyconv's conv2d is a
  cross-correlation; ``ndimage.convolve`` would flip the kernel). It runs on one
  thread whatever the thread count, which the case names say ("scipy 1 thr").
* ``scipy fftconv`` / ``scipy oaconv`` -- :func:`scipy.signal.fftconvolve` /
  :func:`scipy.signal.oaconvolve` of the padded image (``np.pad``, timed) with the
  flipped kernel, ``mode="valid"``; their FFTs run on ``n`` threads
  (``scipy.fft.set_workers``). Their cost per pixel grows with the logarithm of
  the FFT length rather than with k^2, so they win for large kernels.

The pyconv spec is what a user writes (``algorithm="auto"``, which takes the FFT
for the 15x15 and 31x31 kernels) and, for comparison, ``algorithm="direct"`` (direct
loops rather than im2col + GEMM); the case name says which. pyconv's GFLOP/s counts 2 * k^2 per output pixel.

Run: ``python benchmarks/bench_filters.py --threads 1,2``
"""
import os
import sys

import numpy as np

if not __package__:  # run as a script: benchmarks.* from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import Case, main_for  # noqa: E402

import pyconv  # noqa: E402

SIZE = 1024
#: pyconv padding_mode -> (scipy.ndimage mode, np.pad mode)
MODES = {"symmetric": ("reflect", "symmetric"), "reflect": ("mirror", "reflect")}
CONFIGS = [
    # kernel size, pyconv padding_mode, pyconv algorithm, peer
    (3, "symmetric", "auto", "scipy.ndimage"),
    (3, "symmetric", "direct", "scipy.ndimage"),
    (5, "symmetric", "auto", "scipy.ndimage"),
    (5, "symmetric", "direct", "scipy.ndimage"),
    (5, "reflect", "direct", "scipy.ndimage"),
    (15, "symmetric", "auto", "scipy fftconv"),
    (15, "symmetric", "direct", "scipy fftconv"),
    (31, "reflect", "auto", "scipy oaconv"),
    (31, "reflect", "direct", "scipy oaconv"),
]
TOL = {"float32": 1e-4, "float64": 1e-10}


def _peer(name, image, kernel, mode):
    """``peer(n)`` computing the same filtering as pyconv with SciPy."""
    import scipy.fft
    import scipy.ndimage
    import scipy.signal

    ndimage_mode, pad_mode = MODES[mode]
    k = kernel.shape[0]
    if name == "scipy.ndimage":
        return lambda n: scipy.ndimage.correlate(image, kernel, mode=ndimage_mode)
    method = {"scipy fftconv": scipy.signal.fftconvolve,
              "scipy oaconv": scipy.signal.oaconvolve}[name]
    flipped = np.ascontiguousarray(kernel[::-1, ::-1])  # convolution of the flip

    def peer(n):
        with scipy.fft.set_workers(n):
            return method(np.pad(image, k // 2, mode=pad_mode), flipped, mode="valid")
    return peer


def make_cases(dtypes=(np.float32, np.float64)):
    import scipy  # noqa: F401  (the peer: skip the family cleanly without it)

    cases = []
    rng = np.random.default_rng(0)
    for k, mode, algorithm, peer_name in CONFIGS:
        for dtype in dtypes:
            image = rng.standard_normal((SIZE, SIZE)).astype(dtype)
            kernel = rng.standard_normal((k, k)).astype(dtype) / k
            spec = {"op": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": k,
                    "padding": "same", "padding_mode": mode, "bias": False,
                    "algorithm": algorithm}
            conv = pyconv.Conv(spec, params={"weight": kernel[None, None]}, dtype=dtype)
            x = image[None, None]
            out = np.empty_like(x)

            def run(n, conv=conv, x=x, out=out):
                return conv.apply(x, out=out, n_threads=n)[0, 0]

            note = ", scipy 1 thr" if peer_name == "scipy.ndimage" else ""
            name = f"image {k}x{k} {mode} {algorithm}{note}"
            cases.append(Case(name, f"{SIZE}x{SIZE}", np.dtype(dtype).name, run,
                              _peer(peer_name, image, kernel, mode),
                              flops=conv.flops(x.shape), peer_name=peer_name,
                              rtol=TOL[np.dtype(dtype).name]))
    return cases


if __name__ == "__main__":
    main_for(make_cases, __doc__)
