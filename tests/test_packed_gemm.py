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
        monkeypatch.setattr(_kernels, "GEMM", "packed")
        monkeypatch.setattr(conv_module, "PACKED_MAX_ROWS",
                            {"float32": 10**9, "float64": 10**9})
    elif kind == "openblas":
        monkeypatch.setattr(_kernels, "LEVEL", "baseline")
    else:
        # the baseline build's tiles: the plain C loop the header falls back to
        monkeypatch.setattr(_kernels, "LEVEL", "baseline")
        monkeypatch.setattr(_kernels, "GEMM", "packed")
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


def spy_gemms(monkeypatch):
    """A list that each im2col (explicit or implicit) or Winograd kernel call appends its
    GEMM to."""
    calls = []
    _conv = _kernels.load("_conv")
    real_conv = _conv.conv_nd

    def spy_conv(*args):
        calls.append("packed" if args[23] else "openblas")   # conv_nd's `packed`
        return real_conv(*args)

    real_phased = _conv.conv2d_phased

    def spy_phased(*args):
        calls.append("packed")   # the packed tiles without a column buffer
        return real_phased(*args)

    _winograd = _kernels.load("_winograd")
    real_winograd = _winograd.winograd_2d

    def spy_winograd(*args):
        calls.append("openblas" if args[-1] is None else "packed")   # u_packed
        return real_winograd(*args)

    monkeypatch.setattr(_conv, "conv_nd", spy_conv)
    monkeypatch.setattr(_conv, "conv2d_phased", spy_phased)
    monkeypatch.setattr(_winograd, "winograd_2d", spy_winograd)
    return calls


def test_wide_layers_go_to_openblas(monkeypatch):
    """Above PACKED_MAX_ROWS output channels per group the OpenBLAS GEMM runs."""
    calls = spy_gemms(monkeypatch)
    rng = np.random.default_rng(3)
    wide = conv_module.PACKED_MAX_ROWS["float64"] + 1
    for cout, groups in ((wide, 1), (2 * wide, 2), (8, 1)):
        conv = pyconv.Conv({"op": "conv2d", "in_channels": 2 * groups,
                            "out_channels": cout, "kernel_size": 3, "groups": groups,
                            "algorithm": "im2col"}, seed=1, dtype=np.float64)
        x = rng.standard_normal((1, 2 * groups, 6, 7))
        np.testing.assert_allclose(conv.apply(x), reference(conv, x), atol=1e-12)
    expected_last = "packed" if _kernels.packed_gemm(8) else "openblas"
    assert calls == ["openblas", "openblas", expected_last]


@pytest.mark.parametrize("avx512", [False, True])
def test_gemm_choice_by_cpu_and_group_width(monkeypatch, avx512):
    """Under "auto", AVX-512 CPUs send GEMMs of more than 16 rows to OpenBLAS;
    PYCONV_GEMM's two forced values decide for every GEMM; the baseline build,
    whose tiles are a plain loop, always takes OpenBLAS."""
    limit = _kernels.AVX512_PACKED_MAX_ROWS
    monkeypatch.setattr(_kernels, "CPU_AVX512", avx512)
    monkeypatch.setattr(_kernels, "LEVEL", "baseline")
    for gemm in ("auto", "packed", "openblas"):
        monkeypatch.setattr(_kernels, "GEMM", gemm)
        assert not _kernels.packed_gemm(1) and not _kernels.packed_gemm(1000)
    if not vector_build_available():
        pytest.skip("no AVX2 build on this machine")
    monkeypatch.setattr(_kernels, "LEVEL", "avx2")
    monkeypatch.setattr(_kernels, "GEMM", "auto")
    assert _kernels.packed_gemm(limit)
    assert _kernels.packed_gemm(limit + 1) == (not avx512)
    # GEMMs that the tiles' AVX-512 form serves better: on the tiles where it runs
    for wide in (False, True):
        monkeypatch.setattr(_kernels, "WIDE_LOOPS", wide)
        assert _kernels.packed_gemm(limit + 1, wide_wins=True) == (not avx512 or wide)
        assert _kernels.packed_gemm(limit + 1) == (not avx512)
        assert pyconv.config()["gemm"] == ("openblas" if avx512 and not wide else "packed")
    monkeypatch.setattr(_kernels, "GEMM", "packed")
    assert _kernels.packed_gemm(1) and _kernels.packed_gemm(10**6)
    monkeypatch.setattr(_kernels, "GEMM", "openblas")
    assert not _kernels.packed_gemm(1)
    assert pyconv.config()["gemm"] == "openblas"


@pytest.mark.parametrize("gemm", ["packed", "openblas"])
def test_each_forced_gemm_runs_and_agrees(monkeypatch, gemm):
    """The GEMM asked for is the one that runs (im2col, Winograd, grouped and
    separable layers wider than the AVX-512 limit), and each agrees with the float64
    loop."""
    if gemm == "packed" and not vector_build_available():
        pytest.skip("no AVX2 build on this machine")
    monkeypatch.setattr(_kernels, "LEVEL", "avx2")
    monkeypatch.setattr(_kernels, "GEMM", gemm)
    calls = spy_gemms(monkeypatch)
    rng = np.random.default_rng(4)
    rows = _kernels.AVX512_PACKED_MAX_ROWS + 8
    for algorithm, groups in (("im2col", 1), ("winograd", 1), ("winograd", 2)):
        conv = pyconv.Conv({"op": "conv2d", "in_channels": 3 * groups,
                            "out_channels": rows * groups, "kernel_size": 3,
                            "padding": 1, "groups": groups, "algorithm": algorithm},
                           seed=2, dtype=np.float64)
        x = rng.standard_normal((2, 3 * groups, 9, 10))
        np.testing.assert_allclose(conv.apply(x), reference(conv, x), rtol=1e-12,
                                   atol=1e-12)
    assert calls == [gemm] * 3
    sep = pyconv.Conv({"op": "separable_conv2d", "in_channels": 4, "out_channels": rows,
                       "kernel_size": 3, "padding": 1}, seed=3, dtype=np.float64)
    x = rng.standard_normal((2, 4, 8, 9))
    dw = sep.params["depthwise_weight"]
    pw = sep.params["pointwise_weight"]
    mid = np.zeros((2, 4, 8, 9))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for c in range(4):
        for i in range(3):
            for j in range(3):
                mid[:, c] += dw[c, 0, i, j] * xp[:, c, i:i + 8, j:j + 9]
    if "depthwise_bias" in sep.params:
        mid += sep.params["depthwise_bias"][None, :, None, None]
    want = np.einsum("oc,nchw->nohw", pw[:, :, 0, 0], mid)
    if "pointwise_bias" in sep.params:
        want += sep.params["pointwise_bias"][None, :, None, None]
    from pyconv.ops import depthwise
    tiles = []
    real_pointwise = depthwise._pointwise_packed

    def spy_pointwise(*args):
        result = real_pointwise(*args)
        tiles.append(bool(result))
        return result

    monkeypatch.setattr(depthwise, "_pointwise_packed", spy_pointwise)
    np.testing.assert_allclose(sep.apply(x), want, rtol=1e-12, atol=1e-12)
    assert tiles == [gemm == "packed"]


@pytest.mark.parametrize("k_blocks", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avx512_tiles_give_the_same_bits(monkeypatch, dtype, k_blocks):
    """The packed GEMM's whole tiles two panels at a time in AVX-512 registers, four
    or eight weight rows at a time, against one panel at a time in AVX2 ones: im2col,
    1x1, Winograd and separable layers, widths that leave an odd panel, a partial
    panel, or none, and 1 to 4 weight panels (an odd one left over, or none); the 1x1
    layers also without their prefetches of the next pair of panels."""
    if not vector_build_available():
        pytest.skip("no AVX2 build on this machine")
    if not _kernels.WIDE_LOOPS:
        pytest.skip("this CPU has no AVX-512 (or PYCONV_KERNELS=avx2)")
    monkeypatch.setattr(_kernels, "LEVEL", "avx2")
    monkeypatch.setattr(_kernels, "GEMM", "packed")
    modules = [_kernels.load(name) for name in ("_conv", "_winograd", "_depthwise")]
    rng = np.random.default_rng(5)
    specs = [({"op": "conv2d", "in_channels": 6, "out_channels": 8, "kernel_size": 3,
               "padding": 1, "algorithm": "im2col"}, (2, 6, 11, 53)),
             ({"op": "conv2d", "in_channels": 20, "out_channels": 12, "kernel_size": 1},
              (2, 20, 9, 16)),
             ({"op": "conv2d", "in_channels": 16, "out_channels": 40, "kernel_size": 1},
              (2, 16, 15, 41)),
             ({"op": "conv2d", "in_channels": 16, "out_channels": 16, "kernel_size": 3,
               "padding": 1, "algorithm": "winograd_f4"}, (2, 16, 21, 22)),
             ({"op": "separable_conv2d", "in_channels": 8, "out_channels": 12,
               "kernel_size": 3, "padding": 1}, (2, 8, 13, 17)),
             ({"op": "conv1d", "in_channels": 5, "out_channels": 4, "kernel_size": 3,
               "dilation": 2}, (3, 5, 300)),
             ({"op": "conv2d", "in_channels": 6, "out_channels": 28, "kernel_size": 3,
               "padding": 1, "algorithm": "im2col"}, (2, 6, 7, 50))]
    if k_blocks:   # sums continued from the output tile, block after block
        monkeypatch.setattr(conv_module, "PACKED_WEIGHT_BLOCK_BYTES", 1)
        monkeypatch.setattr(conv_module, "PACKED_MIN_K_BLOCK", 5)
    try:
        for spec, shape in specs:
            conv = pyconv.Conv(spec, seed=6, dtype=dtype)
            x = rng.standard_normal(shape).astype(dtype)
            got = []
            for wide, tall, prefetch in ((False, True, True), (True, False, True),
                                         (True, True, False), (True, True, True)):
                assert all(m.set_wide_loops(wide, tall) == wide for m in modules)
                # (only conv's layers pack pairs of panels)
                assert modules[0].set_wide_loops(wide, tall, prefetch) == wide
                got.append(conv.apply(x))
            assert len({g.tobytes() for g in got}) == 1, spec
            if "weight" in conv.params:   # (the separable op: test_depthwise)
                want = reference(conv, x.astype(np.float64))
                tol = 1e-12 if dtype == np.float64 else 1e-4
                np.testing.assert_allclose(got[3], want, rtol=tol, atol=tol)
    finally:
        for m in modules:
            m.set_wide_loops(_kernels.WIDE_LOOPS)


def test_gemm_environment_variable():
    """PYCONV_GEMM is read at import; an unknown value means "auto"."""
    import subprocess
    import sys

    code = "import pyconv; print(pyconv.config()['gemm'])"
    vector = _kernels.load("_conv").PACKED_VECTOR
    wide_ok = not _kernels.CPU_AVX512 or _kernels.WIDE_LOOPS
    auto = "packed" if vector and wide_ok else "openblas"
    for value, expected in (("openblas", "openblas"), ("bogus", auto), ("auto", auto)):
        env = dict(__import__("os").environ, PYCONV_GEMM=value)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
        assert out == expected, value


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


def test_a_module_loaded_again_follows_the_current_cpu_setting(monkeypatch):
    """Where a module has no AVX-512 build, both settings of WIDE_LOOPS share it: a
    load after the setting changed back gives it the AVX-512 tiles again (before,
    a test that turned them off left them off for every later test)."""
    if not _kernels.WIDE_LOOPS:
        pytest.skip("this CPU has no AVX-512 (or PYCONV_KERNELS=avx2)")
    monkeypatch.setattr(_kernels, "LEVEL", "avx2")
    assert _kernels.load("_conv").phased_vector(4) == 16
    monkeypatch.setattr(_kernels, "WIDE_LOOPS", False)
    assert _kernels.load("_conv").phased_vector(4) == 8
    monkeypatch.setattr(_kernels, "WIDE_LOOPS", True)
    assert _kernels.load("_conv").phased_vector(4) == 16


@pytest.mark.parametrize("tiny", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_1d_taps_read_in_place_give_the_same_bits(packed_gemm, dtype, tiny, monkeypatch):
    """Unpadded stride-1 1-D layers on the packed tiles read their taps from the input
    in place (spied on: the kernel gets one row offset per tap): the same bits as
    through the column buffer and within rounding of the NumPy loop; 1 to 12 weight
    panels (partial, odd and paired), widths that leave partial column panels,
    dilation, groups, one or several k-blocks, the AVX-512 tiles (which pack each
    pair as they read it) and the portable ones, 1 and 3 threads."""
    if tiny:
        tiny_blocks(monkeypatch)
    module = _kernels.load("_conv")
    offsets = []
    real = module.conv_nd
    monkeypatch.setattr(module, "conv_nd",
                        lambda *a: offsets.append(len(a[-1])) or real(*a))
    rng = np.random.default_rng(31)
    specs = [({"op": "conv1d", "in_channels": 5, "out_channels": 4, "kernel_size": 3,
               "dilation": 2}, (2, 5, 300)),
             ({"op": "conv1d", "in_channels": 6, "out_channels": 40, "kernel_size": 5},
              (3, 6, 211)),
             ({"op": "conv1d", "in_channels": 8, "out_channels": 24, "kernel_size": 2,
               "dilation": 7, "groups": 2, "activation": "relu"}, (2, 8, 500)),
             ({"op": "conv1d", "in_channels": 3, "out_channels": 9, "kernel_size": 4,
               "bias": False}, (1, 3, 40))]
    for spec, shape in specs:
        spec = dict(spec, algorithm="im2col")
        conv = pyconv.Conv(spec, seed=8, dtype=dtype)
        x = rng.standard_normal(shape).astype(dtype)
        offsets.clear()
        got = [conv.apply(x, n_threads=n) for n in (1, 3)]
        taps = (spec["in_channels"] // spec.get("groups", 1)) * np.prod(spec["kernel_size"])
        assert offsets == [taps, taps], spec
        monkeypatch.setattr(conv_module, "PACKED_ROW_TAPS", False)
        offsets.clear()
        buffered = conv.apply(x, n_threads=1)
        assert offsets == [0], spec
        monkeypatch.setattr(conv_module, "PACKED_ROW_TAPS", True)
        assert got[0].tobytes() == got[1].tobytes() == buffered.tobytes(), spec
        tol = 1e-12 if dtype == np.float64 else 1e-4
        np.testing.assert_allclose(got[0], reference(conv, x.astype(np.float64)),
                                   rtol=tol, atol=tol)


def test_conv_nd_refuses_tap_offsets_outside_the_input(rng):
    """The kernel checks the offsets it is given against the input it reads."""
    conv = pyconv.Conv({"op": "conv1d", "in_channels": 2, "out_channels": 8,
                        "kernel_size": 3, "algorithm": "im2col"}, seed=1)
    x = rng.standard_normal((1, 2, 50)).astype(np.float32)
    module = _kernels.load("_conv")
    calls = []
    real = module.conv_nd
    try:
        module.conv_nd = lambda *a: calls.append(a) or real(*a)
        want = conv.apply(x)
    finally:
        module.conv_nd = real
    args = list(calls[0])
    if not len(args[-1]):
        pytest.skip("this build runs the layer through its column buffer")
    out = np.empty_like(want)
    args[3] = out.reshape(1, 8, -1)
    real(*args)
    np.testing.assert_array_equal(out, want)
    bad = args[-1].copy()
    bad[-1] += 3   # the last tap's row would run past the input
    with pytest.raises(ValueError, match="b_off"):
        real(*args[:-1], bad)
