"""The "fft" algorithm of conv1d/2d/3d against the float64 NumPy loop reference."""
import numpy as np
import pytest

import pyconv
from pyconv.ops import _fft
from reference import conv_nd

MODES = ("zeros", "constant", "reflect", "symmetric", "replicate", "circular")
#: Largest error relative to max(conv(|x|, |w|)): FFT rounding is spread over a plane.
TOL = {np.float32: 2e-6, np.float64: 1e-13}


def check(spec, x, n_threads=1):
    conv = pyconv.Conv({**spec, "algorithm": "fft"}, seed=0, dtype=x.dtype)
    y = conv.apply(x, n_threads=n_threads)
    _, pads, _ = conv.op.geometry(conv.spec, x.shape)
    w, b = conv.params["weight"], conv.params.get("bias")
    sp = conv.spec
    value = sp["padding_value"]
    ref = conv_nd(x, w, b, sp["stride"], pads, sp["dilation"], sp["groups"],
                  sp["padding_mode"], value)
    mag = conv_nd(np.abs(x), np.abs(w), None if b is None else np.abs(b), sp["stride"],
                  pads, sp["dilation"], sp["groups"], sp["padding_mode"], abs(value))
    if sp["activation"] == "relu":
        ref = np.maximum(ref, 0)
    assert y.dtype == x.dtype and y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=0, atol=TOL[x.dtype.type] * mag.max())
    return conv, y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_stride_dilation_and_group(rng, mode, dtype):
    cases = [
        ({"op": "conv1d", "in_channels": 4, "out_channels": 6, "kernel_size": 7,
          "groups": 2, "padding": "same", "activation": "relu"}, (3, 4, 40)),
        ({"op": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": [5, 4],
          "padding": [[2, 1], [0, 3]], "stride": [2, 1], "dilation": [1, 2]}, (2, 3, 17, 19)),
        ({"op": "conv2d", "in_channels": 2, "out_channels": 2, "kernel_size": 3,
          "padding": "same", "stride": 3, "bias": False}, (1, 2, 10, 11)),
        ({"op": "conv3d", "in_channels": 2, "out_channels": 3, "kernel_size": 3,
          "padding": 1, "stride": [1, 2, 1]}, (1, 2, 7, 8, 9)),
    ]
    for spec, shape in cases:
        spec = {**spec, "padding_mode": mode}
        if mode == "constant":
            spec["padding_value"] = -0.5
        check(spec, rng.standard_normal(shape).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_many_channels_use_the_batched_product(rng, dtype):
    # 16 x 16 channel pairs per group: the per-frequency matrix product path
    spec = {"op": "conv2d", "in_channels": 32, "out_channels": 32, "kernel_size": 5,
            "groups": 2, "padding": 2, "padding_mode": "reflect"}
    assert 16 * 16 > _fft.FEW_CHANNEL_PAIRS
    check(spec, rng.standard_normal((2, 32, 12, 13)).astype(dtype))


def test_thread_count_does_not_change_the_result(rng):
    spec = {"op": "conv2d", "in_channels": 3, "out_channels": 20, "kernel_size": 9,
            "padding": "same"}
    x = rng.standard_normal((2, 3, 40, 50)).astype(np.float32)
    conv, y1 = check(spec, x, n_threads=1)
    np.testing.assert_array_equal(y1, conv.apply(x, n_threads=2))
    np.testing.assert_array_equal(y1, conv.apply(x, n_threads=3))


def test_weight_spectrum_cache_follows_the_input_size(rng):
    # The cached spectrum depends on the FFT lengths: a second size must not reuse it.
    spec = {"op": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 11,
            "padding": "same", "algorithm": "fft"}
    conv = pyconv.Conv(spec, seed=1)
    im2col = pyconv.Conv({**spec, "algorithm": "im2col"}, params=conv.params)
    for shape in [(1, 1, 30, 30), (1, 1, 45, 31), (1, 1, 30, 30)]:
        x = rng.standard_normal(shape)
        np.testing.assert_allclose(conv.apply(x), im2col.apply(x), rtol=0, atol=1e-12)


def test_auto_takes_fft_for_large_kernels_and_keeps_nan_local(rng):
    spec = {"op": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 31,
            "padding": "same"}
    conv = pyconv.Conv(spec, seed=0)
    _, pads, _ = conv.op.geometry(conv.spec, (1, 1, 256, 256))
    assert _fft.fft_preferred(conv.spec, (1, 1, 256, 256), pads)
    small = pyconv.Conv({**spec, "kernel_size": 3})
    assert not _fft.fft_preferred(small.spec, (1, 1, 256, 256), [(1, 1), (1, 1)])
    assert not _fft.fft_preferred({**conv.spec, "stride": [2, 2]}, (1, 1, 256, 256), pads)
    x = rng.standard_normal((1, 1, 256, 256))
    direct = pyconv.Conv({**spec, "algorithm": "direct"}, params=conv.params)
    np.testing.assert_allclose(conv.apply(x), direct.apply(x), rtol=0, atol=1e-11)
    x[0, 0, 100, 100] = np.nan
    y = conv.apply(x)
    assert np.isnan(y).sum() == 31 * 31           # only the windows that hold it
    forced = pyconv.Conv({**spec, "algorithm": "fft"}, params=conv.params)
    assert np.isnan(forced.apply(x)).all()         # the transform spreads it


def test_relu_keeps_nan_and_bias_is_added():
    conv = pyconv.Conv({"op": "conv1d", "in_channels": 1, "out_channels": 1,
                        "kernel_size": 1, "activation": "relu", "algorithm": "fft"},
                       params={"weight": np.ones((1, 1, 1)), "bias": np.array([-1.0])})
    y = conv.apply(np.array([[[0.5, 3.0, 0.25, -2.0]]]))
    np.testing.assert_allclose(y, [[[0.0, 2.0, 0.0, 0.0]]], atol=1e-15)
    # a NaN spreads over its plane under "fft", and the ReLU keeps it NaN
    assert np.isnan(conv.apply(np.array([[[0.5, 3.0, np.nan, -2.0]]]))).all()


def test_fft_is_a_valid_algorithm_name():
    spec = {"op": "conv3d", "in_channels": 1, "out_channels": 1, "kernel_size": 2,
            "algorithm": "fft"}
    assert pyconv.Conv(spec).spec["algorithm"] == "fft"
    with pytest.raises(pyconv.SpecError, match="fft"):
        pyconv.Conv({**spec, "algorithm": "fourier"})


@pytest.mark.parametrize("mode", MODES)
def test_pads_wider_than_the_input_match_im2col(rng, mode):
    # np.pad (the FFT path) against pyconv's own tap tables (im2col): one-pixel axes
    # and pads wider than the input, where the mirrored modes repeat their pattern
    for shape, pads in [((1, 2, 1, 5), [[2, 2], [3, 1]]), ((1, 2, 2, 3), [[5, 4], [4, 6]])]:
        spec = {"op": "conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3,
                "padding": pads, "padding_mode": mode}
        if mode == "constant":
            spec["padding_value"] = 0.25
        im2col = pyconv.Conv({**spec, "algorithm": "im2col"}, seed=0)
        fft = pyconv.Conv({**spec, "algorithm": "fft"}, params=im2col.params)
        x = rng.standard_normal(shape)
        np.testing.assert_allclose(fft.apply(x), im2col.apply(x), rtol=0, atol=1e-13)


def test_batch_runs_in_passes_within_the_chunk_budget(rng, monkeypatch):
    # A tiny budget forces one image per pass; results equal the one-pass run.
    spec = {"op": "conv2d", "in_channels": 3, "out_channels": 5, "kernel_size": 7,
            "padding": 3, "padding_mode": "symmetric", "algorithm": "fft"}
    conv = pyconv.Conv(spec, seed=2)
    x = rng.standard_normal((5, 3, 20, 23))
    whole = conv.apply(x)
    monkeypatch.setattr(_fft, "CHUNK_BYTES", 1)
    np.testing.assert_array_equal(conv.apply(x), whole)


def test_auto_keeps_big_weight_spectra_out():
    # 64 -> 64 channels, 11x11 on 224x224: the spectrum would be ~0.9 GB in float64
    spec = {"kernel_size": [11, 11], "stride": [1, 1], "dilation": [1, 1], "groups": 1,
            "in_channels": 64, "out_channels": 64}
    pads = [(5, 5), (5, 5)]
    assert not _fft.fft_preferred(spec, (2, 64, 224, 224), pads, np.float64)
    assert _fft.fft_preferred(spec, (2, 64, 32, 32), pads, np.float32)


def test_many_channel_contraction_leaves_scipys_blas_pinned(rng):
    # The per-frequency matrix product limits NumPy's BLAS to n_threads, and only it:
    # SciPy's OpenBLAS stays at the one thread pyconv pinned it to, and NumPy's returns
    # to its setting.
    from threadpoolctl import threadpool_info

    def blas_threads():
        return {i["filepath"]: i["num_threads"] for i in threadpool_info()
                if i["user_api"] == "blas"}

    spec = {"op": "conv2d", "in_channels": 16, "out_channels": 16, "kernel_size": 5,
            "padding": 2, "algorithm": "fft"}
    pyconv.Conv({**spec, "algorithm": "im2col"}, seed=0).apply(np.ones((1, 16, 8, 8)))
    before = blas_threads()
    pyconv.Conv(spec, seed=0).apply(rng.standard_normal((2, 16, 12, 12)), n_threads=2)
    after = blas_threads()
    assert after == before
    assert all(n == 1 for path, n in after.items() if "scipy.libs" in path)
    # what the limit acts on: NumPy's BLAS alone, never SciPy's
    limited = [lib.filepath for lib in _fft._numpy_blas.lib_controllers]
    assert limited and not any("scipy.libs" in path for path in limited)
