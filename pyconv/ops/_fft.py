"""Dense N-D convolution by FFT: the ``"fft"`` algorithm of ``conv1d/2d/3d``.

A private helper of the conv ops (not an op module). Large kernels cost the direct
methods ``prod(k)`` multiply-adds per output and input channel; a transform costs
``O(log n)`` per value, whatever the kernel. :func:`fft_preferred` says when "auto"
takes this path.

Method
------
1. The input is padded once by the padding mode (``np.pad``: pyconv's modes are
   NumPy's ``constant``, ``reflect``, ``symmetric``, ``edge`` and ``wrap``).
2. Real FFTs of the padded input and of the (dilated) weight, both zero-extended to
   a fast length ``F >= padded`` per axis (:func:`scipy.fft.next_fast_len`).
   Outputs ``p`` with ``p + tap < padded`` never reach the wrap-around of a circular
   correlation, so no longer transform is needed.
3. Per frequency, the channel contraction ``Y[n, o] = sum_c X[n, c] conj(W[o, c])``
   (one batched complex matrix product, per group).
4. The inverse FFT gives the stride-1 correlation; the output takes every
   ``stride``-th value of it; bias and the fused ReLU follow.

Transforms use ``scipy.fft`` with ``workers=n_threads``; float32 stays in single
precision (complex64). Results do not depend on the thread count.

Numerics
--------
FFT rounding is spread over the whole output: errors are relative to the output's
largest magnitude, not to each value. Measured against a float64 loop, as the
largest error over ``max(conv(|x|, |w|))``: float32 ~1e-7 to 1e-6, float64 ~1e-16 to
1e-15 (15x15 to 31x31 kernels, 1024x1024 images). A NaN or inf anywhere in an input
plane spreads over every output of the planes it feeds (inherent to the transform).

Memory
------
Beyond the output: the weight's spectrum, ``C_out*C_in/groups * prod(F[:-1]) *
(F[-1]//2 + 1)`` complex values (cached by ``conv`` while the weight lives; "auto"
keeps it within :data:`AUTO_MAX_SPECTRUM_BYTES`), and per pass over a slice of the
batch the padded input, the input and output spectra (at most :data:`CHUNK_BYTES`,
or one image's) and the inverse transform of one group's output.

Examples
--------
>>> import numpy as np
>>> from pyconv.ops._fft import fft_conv
>>> x = np.random.default_rng(0).standard_normal((1, 1, 32, 32))
>>> w = np.ones((1, 1, 5, 5)) / 25
>>> out = np.empty((1, 1, 32, 32))
>>> y = fft_conv(x, w, None, out, [(2, 2), (2, 2)], (1, 1), (1, 1), 1, "reflect", 0.0,
...              False, n_threads=1)
>>> float(abs(y[0, 0, 10, 10] - x[0, 0, 8:13, 8:13].mean())) < 1e-12
True
"""
from __future__ import annotations

import contextlib
import math
import os
import threading

import numpy as np

#: pyconv padding mode -> np.pad mode
NP_PAD_MODES = {"zeros": "constant", "constant": "constant", "reflect": "reflect",
                "symmetric": "symmetric", "replicate": "edge", "circular": "wrap"}
#: "auto" takes the FFT when the direct method would do this many times more
#: arithmetic than the transforms (see :func:`fft_preferred`).
AUTO_ADVANTAGE = 1.5
#: ... and only from this many taps per output and input channel on (smaller kernels:
#: the direct kernels run near the machine's peak and FFT overheads dominate).
AUTO_MIN_TAPS = 100
#: Input and output spectra of one pass over a batch stay within this many bytes
#: (at least one image per pass).
CHUNK_BYTES = 64 << 20
#: "auto" does not take the FFT when the weight's spectrum (cached while the weight
#: lives) would exceed this many bytes, e.g. 64 -> 64 channels on 224x224 images.
AUTO_MAX_SPECTRUM_BYTES = 64 << 20
#: Up to this many (input, output) channel pairs per group the contraction runs as
#: whole-spectrum products; beyond, as one batched matrix product per frequency.
FEW_CHANNEL_PAIRS = 64


def fft_preferred(spec, input_shape, pads, dtype=np.float64):
    """Whether "auto" should run a normalised conv spec on ``input_shape`` by FFT.

    Chooses the FFT for stride-1 convolutions with at least :data:`AUTO_MIN_TAPS`
    kernel taps when the direct multiply-adds exceed :data:`AUTO_ADVANTAGE` times an
    estimate of the transforms' work (``2.5 n log2 n`` per real transform of ``n``
    values, the input's and the output's; 2 per complex multiply-add of the channel
    contraction), and when the weight's spectrum stays within
    :data:`AUTO_MAX_SPECTRUM_BYTES`. Calibrated on 1024x1024 single-channel images,
    float32, 2 threads: direct / FFT 13 / 20 ms at 11x11 (not taken), 25 / 18 ms at
    15x15 (taken).

    Examples
    --------
    >>> spec = {"kernel_size": [31, 31], "stride": [1, 1], "dilation": [1, 1],
    ...         "groups": 1, "in_channels": 1, "out_channels": 1}
    >>> fft_preferred(spec, (1, 1, 1024, 1024), [(15, 15), (15, 15)])
    True
    >>> fft_preferred({**spec, "kernel_size": [5, 5]}, (1, 1, 1024, 1024),
    ...               [(2, 2), (2, 2)])
    False
    """
    k = spec["kernel_size"]
    # (math.prod, and scipy imported past this test: most layers stop here, and
    # the two cost a small call several microseconds)
    if any(s != 1 for s in spec["stride"]) or math.prod(k) < AUTO_MIN_TAPS:
        return False
    from scipy import fft as sfft

    N, C_in = input_shape[:2]
    groups, C_out = spec["groups"], spec["out_channels"]
    ek = [d * (n - 1) + 1 for n, d in zip(k, spec["dilation"])]
    padded = [n + lo + hi for n, (lo, hi) in zip(input_shape[2:], pads)]
    outs = [p - e + 1 for p, e in zip(padded, ek)]
    if min(outs) < 1:
        return False
    fast = [sfft.next_fast_len(p, real=True) for p in padded]
    F = np.prod(fast)
    n_freq = np.prod(fast[:-1]) * (fast[-1] // 2 + 1)
    if C_out * (C_in // groups) * n_freq * 2 * np.dtype(dtype).itemsize > \
            AUTO_MAX_SPECTRUM_BYTES:
        return False
    direct = N * C_out * np.prod(outs) * (C_in // groups) * np.prod(k)
    # the weight's spectrum is cached across calls (see ops/conv.py), so two transforms
    transforms = 2.5 * (N * C_in + N * C_out) * F * np.log2(F)
    contraction = 2 * N * C_out * (C_in // groups) * F
    return bool(direct > AUTO_ADVANTAGE * (transforms + contraction))


_numpy_blas = None
_numpy_blas_lock = threading.Lock()


@contextlib.contextmanager
def _numpy_blas_limited(n):
    """Run the block with NumPy's BLAS limited to ``n`` threads.

    Only NumPy's own library is touched: SciPy's OpenBLAS stays pinned to one thread
    (see :class:`pyconv._threads._BlasPin`). A lock keeps two Python threads from
    interleaving their limit and restore (the later restore would otherwise keep the
    earlier limit).
    """
    global _numpy_blas
    with _numpy_blas_lock:
        if _numpy_blas is None:
            from threadpoolctl import ThreadpoolController

            numpy_dir = os.path.dirname(os.path.dirname(np.__file__))
            libs = [lib.filepath for lib in ThreadpoolController().lib_controllers
                    if lib.user_api == "blas" and lib.filepath.startswith(
                        os.path.join(numpy_dir, "numpy"))]
            _numpy_blas = ThreadpoolController().select(filepath=libs)
        with _numpy_blas.limit(limits=n):
            yield


def _fft_images(x, wf, out, pads, stride, groups, padding_mode, padding_value, shape,
                workers):
    """One pass of :func:`fft_conv` over the images of ``x`` (no bias, no ReLU)."""
    from scipy import fft as sfft

    N, C_in = x.shape[:2]
    C_out = out.shape[1]
    cin_g, cout_g = C_in // groups, C_out // groups
    axes = tuple(range(2, x.ndim))
    if any(lo or hi for lo, hi in pads):
        pad_width = [(0, 0), (0, 0)] + [tuple(p) for p in pads]
        mode = NP_PAD_MODES[padding_mode]
        kw = ({"constant_values": padding_value if padding_mode == "constant" else 0}
              if mode == "constant" else {})
        x = np.pad(x, pad_width, mode=mode, **kw)
    xf = sfft.rfftn(x, s=shape, axes=axes, workers=workers)
    n_freq = int(np.prod(xf.shape[2:]))
    crop = tuple(slice(0, o * s, s) for o, s in zip(out.shape[2:], stride))
    for g in range(groups):
        xg = xf[:, g * cin_g:(g + 1) * cin_g]
        wg = wf[g * cout_g:(g + 1) * cout_g]
        if cin_g * cout_g <= FEW_CHANNEL_PAIRS:
            # few channels: whole-spectrum products, accumulated over c
            yf = np.empty((N, cout_g) + xf.shape[2:], xf.dtype)
            for o in range(cout_g):
                np.multiply(xg[:, 0], wg[o, 0], out=yf[:, o])
                for c in range(1, cin_g):
                    yf[:, o] += xg[:, c] * wg[o, c]
        else:
            # (F, N, cin_g) @ (F, cin_g, cout_g) -> (F, N, cout_g)
            xm = xg.reshape(N, cin_g, n_freq).transpose(2, 0, 1)
            wm = wg.reshape(cout_g, cin_g, n_freq).transpose(2, 1, 0)
            with _numpy_blas_limited(workers):  # NumPy's BLAS obeys n_threads too
                ym = np.matmul(xm, wm)
            yf = ym.transpose(1, 2, 0).reshape((N, cout_g) + xf.shape[2:])
        y = sfft.irfftn(yf, s=shape, axes=axes, workers=workers, overwrite_x=True)
        out[:, g * cout_g:(g + 1) * cout_g] = y[(slice(None), slice(None)) + crop]


def transform_shape(padded):
    """FFT lengths for a padded input of spatial shape ``padded``."""
    from scipy import fft as sfft

    return tuple(sfft.next_fast_len(int(p), real=True) for p in padded)


def conj_weight_spectrum(weight, shape, dilation, workers=1):
    """``conj(rfftn(dilated weight, shape))``: ``(C_out, C_in/g, *shape[:-1],
    shape[-1]//2 + 1)`` complex, in the weight's precision."""
    from scipy import fft as sfft

    k = weight.shape[2:]
    ek = tuple(d * (n - 1) + 1 for n, d in zip(k, dilation))
    wd = np.zeros(weight.shape[:2] + ek, weight.dtype)  # taps d apart, zeros between
    wd[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in dilation)] = weight
    axes = tuple(range(2, weight.ndim))
    return np.conj(sfft.rfftn(wd, s=shape, axes=axes, workers=workers))


def fft_conv(x, weight, bias, out, pads, stride, dilation, groups, padding_mode,
             padding_value, relu, n_threads=None, weight_spectrum=None):
    """Convolution (cross-correlation) of ``x`` into ``out`` by FFT.

    Parameters
    ----------
    x : ndarray, (N, C_in, *spatial), float32 or float64
    weight : ndarray, (C_out, C_in/groups, *k), x's dtype
    bias : ndarray (C_out,) or None
    out : ndarray, (N, C_out, *out_spatial), x's dtype; written and returned.
    pads : sequence of (lo, hi) pairs per spatial axis, already resolved.
    stride, dilation : sequences of ints per spatial axis
    groups : int
    padding_mode : str
        Any of pyconv's modes; ``"constant"`` fills ``padding_value``.
    padding_value : float
    relu : bool
    n_threads : int or None
        Workers of ``scipy.fft``.
    weight_spectrum : callable, optional
        ``weight_spectrum(shape)`` returns :func:`conj_weight_spectrum` of ``weight``
        for the FFT lengths ``shape`` (so that a caller can cache it).

    Returns
    -------
    out : ndarray
    """
    from pyconv import _threads

    rank = x.ndim - 2
    N, C_in = x.shape[:2]
    C_out = weight.shape[0]
    workers = _threads.resolve(n_threads, float("inf"), 1 << 30)
    if N == 0 or C_out == 0 or out.size == 0:
        return out
    padded = [n + lo + hi for n, (lo, hi) in zip(x.shape[2:], pads)]
    shape = transform_shape(padded)
    if weight_spectrum is None:
        wf = conj_weight_spectrum(weight, shape, dilation, workers)
    else:
        wf = weight_spectrum(shape)
    n_freq = int(np.prod(wf.shape[2:]))
    # images per pass: their input and output spectra within CHUNK_BYTES
    per_image = (C_in + C_out) * n_freq * wf.dtype.itemsize
    step = max(1, min(N, CHUNK_BYTES // max(1, per_image)))
    for n0 in range(0, N, step):
        _fft_images(x[n0:n0 + step], wf, out[n0:n0 + step], pads, stride, groups,
                    padding_mode, padding_value, shape, workers)
    if bias is not None:
        out += bias.reshape((1, C_out) + (1,) * rank)
    if relu:
        np.maximum(out, 0, out=out)  # NaN stays NaN, as in torch.relu
    return out
