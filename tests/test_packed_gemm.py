"""The two GEMMs behind im2col convolution: pyconv's packed tiles and OpenBLAS.

The default path is tested everywhere else; here each GEMM is forced in turn and
checked against the float64 NumPy loop, the packed path's blocking is shrunk until
every edge case (partial panels, partial row panels, tiles that start inside an
output row, several k-blocks) occurs, and its claim that the result does not depend
on the blocking is checked bit for bit.
"""
import json

import numpy as np
import pytest

import pyconv
from pyconv import _kernels
from pyconv.ops import conv as conv_module
from test_conv import random_config, reference


def vector_build_available():
    return _kernels.load("_conv", "avx2").PACKED_VECTOR


def force(kind, monkeypatch):
    """Make every im2col convolution of the test run on one GEMM."""
    if kind == "packed":
        if not vector_build_available():
            pytest.skip("no AVX2 build on this machine")
        monkeypatch.setattr(_kernels, "LEVEL", "avx2")
        monkeypatch.setattr(conv_module, "PACKED_MAX_ROWS",
                            {"float32": 10**9, "float64": 10**9})
    elif kind == "openblas":
        monkeypatch.setattr(_kernels, "LEVEL", "baseline")
    else:
        # the baseline build's tiles: the plain C loop the header falls back to
        monkeypatch.setattr(_kernels, "LEVEL", "baseline")
        monkeypatch.setattr(_kernels.load("_conv"), "PACKED_VECTOR", True)
        monkeypatch.setattr(conv_module, "PACKED_MAX_ROWS",
                            {"float32": 10**9, "float64": 10**9})
    return kind


@pytest.fixture(params=["packed", "openblas", "packed_portable"])
def gemm(request, monkeypatch):
    return force(request.param, monkeypatch)


@pytest.fixture(params=["packed", "packed_portable"])
def packed_gemm(request, monkeypatch):
    return force(request.param, monkeypatch)


def tiny_blocks(monkeypatch):
    """One panel per tile (two for 1x1), 5 taps per k-block."""
    monkeypatch.setattr(conv_module, "PACKED_COLUMN_BYTES", 1)
    monkeypatch.setattr(conv_module, "PACKED_MIN_PANELS", 1)
    monkeypatch.setattr(conv_module, "PACKED_MAX_PANELS", 1)
    monkeypatch.setattr(conv_module, "PACKED_DIRECT_PANELS", 2)
    monkeypatch.setattr(conv_module, "PACKED_WEIGHT_BLOCK_BYTES", 1)
    monkeypatch.setattr(conv_module, "PACKED_MIN_K_BLOCK", 5)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_each_gemm_matches_the_loop(gemm, rank):
    rng = np.random.default_rng(700 + rank)
    for _ in range(25 if rank < 3 else 12):
        spec, shape = random_config(rng, rank)
        spec["algorithm"] = "im2col"
        conv = pyconv.Conv(spec, seed=4, dtype=np.float64)
        x = rng.standard_normal(shape)
        np.testing.assert_allclose(conv.apply(x, n_threads=2), reference(conv, x),
                                   rtol=1e-12, atol=1e-12, err_msg=json.dumps(spec))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec, shape", [
    # 5 and 7 output channels: a partial panel of weight rows; 37 columns: partial
    # column panels (24 and 12 wide) and tiles that start inside an output row
    ({"op": "conv2d", "in_channels": 6, "out_channels": 7, "kernel_size": 3,
      "stride": 2, "padding": [[1, 2], [0, 1]], "padding_mode": "reflect",
      "activation": "relu"}, (2, 6, 29, 37)),
    ({"op": "conv2d", "in_channels": 8, "out_channels": 10, "kernel_size": 1,
      "groups": 2}, (3, 8, 13, 37)),
    ({"op": "conv1d", "in_channels": 9, "out_channels": 5, "kernel_size": 3,
      "dilation": 4, "padding": "same", "padding_mode": "circular"}, (2, 9, 301)),
    ({"op": "conv3d", "in_channels": 4, "out_channels": 6, "kernel_size": [2, 3, 3],
      "padding": 1, "padding_mode": "constant", "padding_value": -0.5,
      "groups": 2}, (1, 4, 5, 9, 11)),
])
def test_blocking_edges_and_blocking_independence(packed_gemm, monkeypatch, dtype,
                                                  spec, shape):
    rng = np.random.default_rng(11)
    spec = {**spec, "algorithm": "im2col"}
    conv = pyconv.Conv(spec, seed=5, dtype=dtype)
    x = rng.standard_normal(shape).astype(dtype)
    default = conv.apply(x, n_threads=1)
    tiny_blocks(monkeypatch)
    small = conv.apply(x, n_threads=2)
    # every output is one sum over the taps in order, whatever the blocking
    np.testing.assert_array_equal(small, default)
    ref = reference(conv, x.astype(np.float64))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(small, ref, rtol=tol, atol=tol)


def test_wide_layers_go_to_openblas(monkeypatch):
    """Above PACKED_MAX_ROWS output channels per group the OpenBLAS GEMM runs."""
    _conv = _kernels.load("_conv")
    calls = []
    real = _conv.conv_nd

    def spy(*args):
        calls.append("packed" if args[23] else "openblas")   # conv_nd's `packed`
        return real(*args)

    monkeypatch.setattr(_conv, "conv_nd", spy)
    rng = np.random.default_rng(3)
    wide = conv_module.PACKED_MAX_ROWS["float64"] + 1
    for cout, groups in ((wide, 1), (2 * wide, 2), (8, 1)):
        conv = pyconv.Conv({"op": "conv2d", "in_channels": 2 * groups,
                            "out_channels": cout, "kernel_size": 3, "groups": groups,
                            "algorithm": "im2col"}, seed=1, dtype=np.float64)
        x = rng.standard_normal((1, 2 * groups, 6, 7))
        np.testing.assert_allclose(conv.apply(x), reference(conv, x), atol=1e-12)
    expected_last = "packed" if _conv.PACKED_VECTOR else "openblas"
    assert calls == ["openblas", "openblas", expected_last]


def test_packed_weights_layout():
    """Blocks of k_block taps, panels of rows channels, k-major, zero-padded."""
    w = np.arange(2 * 5 * 7, dtype=np.float64).reshape(10, 7)   # 2 groups of 5 rows
    packed = conv_module.packed_weight(w, 2, 4, 3)
    assert packed.shape == (2, 2 * 4 * 7)
    g, k0, kl, mp = 1, 3, 3, 1
    block = packed[g, k0 * 2 * 4: (k0 + kl) * 2 * 4]
    panel = block[mp * kl * 4: (mp + 1) * kl * 4].reshape(kl, 4)
    expected = np.zeros((4, kl))
    expected[:1] = w[5 + 4: 5 + 5, k0:k0 + kl]                  # row 4 of group 1, then zeros
    np.testing.assert_array_equal(panel, expected.T)
