"""conv2d on the packed GEMM with the im2col matrix left implicit (pyconv.ops._phased).

Every case is run both ways, here and on the explicit column buffer, and must give
the same bits (the same sums in the same order), and agree with the float64 NumPy
loop. Random geometries cover strides 1-3 on each axis, dilations, every padding
mode and amount, groups, output channels that leave a partial weight panel, rows
that end in a partial vector, several k blocks, one-row bands and several threads.
"""
import json

import numpy as np
import pytest

import pyconv
from pyconv import _kernels
from pyconv.ops import _phased
from pyconv.ops import conv as conv_module
from reference import conv_nd
from test_conv import MODES, random_config, reference
from test_packed_gemm import force


def spy_phased(monkeypatch):
    """A list that gets True for each conv2d_phased call."""
    calls = []
    _conv = _kernels.load("_conv")
    real = _conv.conv2d_phased

    def spy(*args):
        calls.append(True)
        return real(*args)

    monkeypatch.setattr(_conv, "conv2d_phased", spy)
    return calls


def both_ways(conv, x, n_threads, monkeypatch):
    """(implicit, explicit) results of one conv, the implicit one checked to run."""
    calls = spy_phased(monkeypatch)
    monkeypatch.setattr(_phased, "MIN_VECTOR_FILL", 0.0)
    implicit = conv.apply(x, n_threads=n_threads)
    assert calls, "conv2d_phased did not run"
    monkeypatch.setattr(_phased, "ENABLED", False)
    explicit = conv.apply(x, n_threads=n_threads)
    monkeypatch.setattr(_phased, "ENABLED", True)
    assert len(calls) == 1
    return implicit, explicit


@pytest.fixture(params=["packed", "packed_portable"])
def tiles(request, monkeypatch):
    return force(request.param, monkeypatch)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_geometries_give_the_im2col_bits(tiles, monkeypatch, dtype):
    rng = np.random.default_rng(900 if dtype == np.float32 else 901)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    ran = 0
    for i in range(40):
        spec, shape = random_config(rng, 2, small=False)
        if spec["kernel_size"] == [1, 1]:
            continue   # 1x1 layers stay on the explicit path
        spec["out_channels"] = spec["groups"] * int(rng.choice([1, 3, 4, 5, 8, 9, 13]))
        spec["algorithm"] = "im2col"
        conv = pyconv.Conv(spec, seed=i, dtype=dtype)
        x = rng.standard_normal(shape).astype(dtype)
        if i % 4 == 0:   # one-row bands
            monkeypatch.setattr(_phased, "BAND_BYTES", 1)
        implicit, explicit = both_ways(conv, x, 1 + i % 3, monkeypatch)
        monkeypatch.setattr(_phased, "BAND_BYTES", 512 << 10)
        assert implicit.tobytes() == explicit.tobytes(), json.dumps(spec)
        np.testing.assert_allclose(implicit, reference(conv, x.astype(np.float64)),
                                   rtol=tol, atol=tol, err_msg=json.dumps(spec))
        ran += 1
    assert ran >= 25


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_layers_with_k_blocks_and_partial_vectors(tiles, monkeypatch, mode,
                                                          dtype):
    """7x7 stride 2 and 3x3 stride (2, 3), dilated: sums continued over k blocks of
    5 taps, 8 and 4 weight rows a tile and a partial panel, rows of 1-3 vectors with a
    partial last one (and rows a whole number of vectors)."""
    monkeypatch.setattr(conv_module, "PACKED_WEIGHT_BLOCK_BYTES", 1)
    monkeypatch.setattr(conv_module, "PACKED_MIN_K_BLOCK", 5)
    rng = np.random.default_rng(7)
    value = {"padding_value": -0.75} if mode == "constant" else {}
    for spec, shape in [
            ({"op": "conv2d", "in_channels": 3, "out_channels": 14, "kernel_size": 7,
              "stride": 2, "padding": 3}, (2, 3, 30, 64)),
            ({"op": "conv2d", "in_channels": 4, "out_channels": 18, "kernel_size": 3,
              "stride": [2, 3], "dilation": [2, 1], "padding": [[2, 1], [3, 2]],
              "groups": 2, "activation": "relu"}, (2, 4, 19, 101))]:
        spec = {**spec, "padding_mode": mode, **value, "algorithm": "im2col"}
        conv = pyconv.Conv(spec, seed=3, dtype=dtype)
        x = rng.standard_normal(shape).astype(dtype)
        implicit, explicit = both_ways(conv, x, 2, monkeypatch)
        assert implicit.tobytes() == explicit.tobytes(), json.dumps(spec)
        tol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(implicit, reference(conv, x.astype(np.float64)),
                                   rtol=tol, atol=tol)


def test_the_stem_layer_runs_here_and_narrow_rows_do_not(monkeypatch):
    """"auto" takes this path for 7x7 s2 on 224x224 (rows of 112) where the packed GEMM
    runs; not for rows that would leave most of a vector empty, 1x1 kernels, or
    strided 3x3 layers of many channels."""
    if not _kernels.packed_gemm(64, wide_wins=True):
        pytest.skip("the packed GEMM does not run on this machine")
    calls = spy_phased(monkeypatch)
    rng = np.random.default_rng(2)
    stem = pyconv.Conv({"op": "conv2d", "in_channels": 3, "out_channels": 64,
                        "kernel_size": 7, "stride": 2, "padding": 3}, seed=0)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    y = stem.apply(x)
    assert calls == [True]
    np.testing.assert_allclose(y, reference(stem, x.astype(np.float64)), rtol=1e-4,
                               atol=1e-4)
    for spec, shape in [({"kernel_size": 3, "stride": 2, "padding": 1}, (1, 3, 14, 14)),
                        ({"kernel_size": 1, "stride": 2}, (1, 3, 64, 64)),
                        # strided, many channels, a small kernel: the column buffer
                        ({"kernel_size": 3, "stride": 2, "padding": 1}, (1, 16, 64, 64))]:
        conv = pyconv.Conv({"op": "conv2d", "in_channels": shape[1], "out_channels": 64,
                            **spec}, seed=0)
        conv.apply(rng.standard_normal(shape).astype(np.float32))
    assert calls == [True]
    # strided with a large kernel, and stride 1 with many channels: here
    for spec, shape in [({"kernel_size": 5, "stride": 2, "padding": 2}, (1, 16, 64, 64)),
                        ({"kernel_size": 3, "padding": 1, "algorithm": "im2col"},
                         (1, 16, 32, 32))]:
        conv = pyconv.Conv({"op": "conv2d", "in_channels": shape[1], "out_channels": 64,
                            **spec}, seed=0)
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(conv.apply(x), reference(conv, x.astype(np.float64)),
                                   rtol=1e-4, atol=1e-4)
    assert calls == [True] * 3


def test_the_kernel_refuses_inconsistent_arguments():
    """Offsets, maps and workspace are checked against the geometry: a wrong one is a
    ValueError, never a read outside the arrays. The consistent call (a 3x3 layer,
    zero padding 1, on a 6x7 input of 2 channels) matches the NumPy loop."""
    _conv = _kernels.load("_conv")
    f = np.float32
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 2, 6, 7)).astype(f)
    w = rng.standard_normal((4, 2, 3, 3)).astype(f)
    weight = np.ascontiguousarray(w.reshape(4, 18).T.reshape(1, 72))   # one 4-row panel
    out = np.zeros((1, 4, 6 * 7), f)
    rows = np.arange(-1, 7)                     # padded row p is input row p - 1
    good_hmap = np.where(rows < 6, rows, -1).astype(np.intp)
    cols = np.arange(-1, 8)
    good_wmap = np.where(cols < 7, cols, -1).astype(np.intp)
    # tap (c, kh, kw) at c*72 + kh*PW + kw: one phase plane of R = 8 rows of PW = 9
    b_off = (np.arange(2)[:, None, None] * 72 + np.arange(3)[:, None] * 9
             + np.arange(3)).ravel().astype(np.intp)
    ph = np.zeros(1, np.intp)
    work = np.zeros((1, 1000), f)

    def call(hmap, wmap, b_off, work=work, PW=9):
        # H, W, OH, OW, sh, sw, QH, PW, lo_w, band, groups, pad, bias, relu, k_block
        _conv.conv2d_phased(x.reshape(1, 2, -1), weight, np.zeros(1, f), out, hmap, wmap,
                            b_off, ph, ph, 6, 7, 6, 7, 1, 1, 2, PW, 1, 6, 1, 0.0, False,
                            False, 18, work, 1)

    call(good_hmap, good_wmap, b_off)
    want = conv_nd(x, w, None, (1, 1), [(1, 1), (1, 1)], (1, 1), 1)
    np.testing.assert_allclose(out.reshape(1, 4, 6, 7), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="row index"):
        call(np.arange(-1, 7).astype(np.intp), good_wmap, b_off)    # row 6 of 6
    with pytest.raises(ValueError, match="column index"):
        call(good_hmap, np.arange(-1, 8).astype(np.intp), b_off)    # column 7 of 7
    with pytest.raises(ValueError, match="tap offset"):
        call(good_hmap, good_wmap, np.full(18, 10**6, np.intp))
    with pytest.raises(ValueError, match="wrong size"):
        call(good_hmap, good_wmap, b_off, work=np.zeros((1, 10), f))
    with pytest.raises(ValueError, match="wrong size"):
        call(good_hmap, good_wmap, b_off, PW=6)
