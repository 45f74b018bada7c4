"""1-D Winograd F(2, 3) / F(4, 3) (3 taps, stride 1, any dilation) against the float64
NumPy reference loop and torch."""
import numpy as np
import pytest

import pyconv
from reference import conv_nd
from test_winograd import MODES, TOL   # the 2-D tests' modes and error bounds
from pyconv.ops import _winograd
from pyconv.ops._winograd import (NonFiniteTiles, winograd_conv1d, winograd_filter_1d,
                                  winograd_preferred_1d)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def run(x, w, b, pads, dilation, mode="zeros", value=0.0, relu=False, groups=1,
        n_threads=1, variant="F4", **kw):
    L = x.shape[2]
    out = np.full((x.shape[0], w.shape[0], L + pads[0] + pads[1] - 2 * dilation), np.nan,
                  x.dtype)
    res = winograd_conv1d(x, w, b, out, pads, mode, value, relu, groups, dilation,
                          n_threads=n_threads, variant=variant, **kw)
    assert res is out
    return out


def reference(x, w, b, pads, dilation, mode="zeros", value=0.0, relu=False, groups=1):
    args = ((1,), [tuple(pads)], (dilation,), groups, mode)
    y = conv_nd(x, w, b, *args, value)
    mag = conv_nd(np.abs(x), np.abs(w), None if b is None else np.abs(b), *args,
                  abs(value))
    return (np.maximum(y, 0) if relu else y), mag


@pytest.mark.parametrize("level", ["avx512", "avx2", "baseline"])
@pytest.mark.parametrize("variant", ["F2", "F4"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_configs_against_reference(rng, monkeypatch, dtype, variant, level):
    """Dilations below, at and above a vector's lanes, every padding mode, groups,
    bias and ReLU; small units (several per image, the last one short) on each build:
    AVX-512 (where the CPU has it) and AVX2, with the packed tiles, and the baseline
    build with OpenBLAS."""
    from pyconv import _kernels
    if level == "avx512" and not _kernels.WIDE_LOOPS:
        pytest.skip("no AVX-512 build in use on this machine")
    monkeypatch.setattr(_kernels, "LEVEL", "baseline" if level == "baseline" else "avx2")
    monkeypatch.setattr(_kernels, "WIDE_LOOPS", level == "avx512")
    monkeypatch.setattr(_winograd, "TILES_PER_CHUNK_1D", int(rng.integers(1, 40)))
    worst = 0.0
    for i in range(30):
        d = int(rng.choice([1, 2, 3, 4, 5, 8, 13, 16, 17, 33]))
        groups = int(rng.integers(1, 4))
        cin_g, cout_g = int(rng.integers(1, 7)), int(rng.integers(1, 7))
        L = int(rng.integers(1, 6 * d + 90))
        lo, hi = int(rng.integers(0, d + 3)), int(rng.integers(0, d + 3))
        while L + lo + hi - 2 * d < 1:
            hi += 1
        mode = MODES[i % len(MODES)]
        if mode in ("reflect", "symmetric", "circular") and max(lo, hi) >= L:
            mode = "replicate"
        value = float(rng.standard_normal()) if mode == "constant" else 0.0
        relu = bool(i % 4 == 3)
        x = rng.standard_normal((int(rng.integers(1, 3)), groups * cin_g, L)).astype(dtype)
        w = rng.standard_normal((groups * cout_g, cin_g, 3)).astype(dtype)
        b = rng.standard_normal(groups * cout_g).astype(dtype) if i % 3 else None
        out = run(x, w, b, (lo, hi), d, mode, value, relu, groups, n_threads=2,
                  variant=variant)
        ref, mag = reference(x, w, b, (lo, hi), d, mode, value, relu, groups)
        assert out.shape == ref.shape and out.dtype == dtype
        err = np.max(np.abs(out - ref)) / max(np.max(mag), 1e-30)
        worst = max(worst, err)
        assert err < TOL[dtype, variant], (i, x.shape, w.shape, (lo, hi), d, mode, err)
    assert worst > 0


@pytest.mark.parametrize("variant", ["F2", "F4"])
def test_every_output_length_around_the_vector_steps(rng, variant):
    # Lengths 1 .. 3 super-tiles plus a vector: each store path (whole vectors, lane by
    # lane at a unit's end) at dilations below, equal to and above the lanes.
    m = {"F2": 2, "F4": 4}[variant]
    for d in (1, 3, 4, 8, 16, 20):
        for OL in list(range(1, 3 * m * d + 18, max(1, d // 2))):
            L = OL + 2 * d - 2
            x = rng.standard_normal((1, 3, L))
            w = rng.standard_normal((2, 3, 3))
            b = rng.standard_normal(2)
            out = run(x, w, b, (1, 1), d, "circular" if L > 1 else "zeros",
                      variant=variant)
            ref, mag = reference(x, w, b, (1, 1), d, "circular" if L > 1 else "zeros")
            np.testing.assert_allclose(out, ref, rtol=0, atol=1e-13 * mag.max(),
                                       err_msg=f"d={d} OL={OL}")


def test_threads_and_vector_widths_give_the_same_bits(rng, monkeypatch):
    # Per lane, every step does the same operations in the same order (no FMA
    # contraction): 1 or 2 threads, and the AVX-512 build (16 lanes) against the AVX2
    # one (8), each with permuted steps where the dilation divides its lanes and
    # wasted lanes at dilation 7, agree.
    from pyconv import _kernels
    x = rng.standard_normal((3, 64, 700)).astype(np.float32)
    w = rng.standard_normal((48, 32, 3)).astype(np.float32)
    b = rng.standard_normal(48).astype(np.float32)
    results, lanes = {}, set()
    for wide in ((False, True) if _kernels.WIDE_LOOPS else (False,)):
        monkeypatch.setattr(_kernels, "WIDE_LOOPS", wide)
        lanes.add(_kernels.load("_winograd").TRANSFORM_LANES_1D["float32"])
        for d in (1, 2, 4, 7, 16):
            one = run(x, w, b, (d, d), d, "reflect", relu=True, groups=2, n_threads=1)
            two = run(x, w, b, (d, d), d, "reflect", relu=True, groups=2, n_threads=2)
            np.testing.assert_array_equal(one, two)
            if d in results:
                np.testing.assert_array_equal(one, results[d], err_msg=f"d={d}")
            results[d] = one
    assert len(lanes) == (2 if _kernels.WIDE_LOOPS else 1)   # both widths ran


def test_conv1d_algorithms_agree_with_torch(rng, torch):
    spec = {"op": "conv1d", "in_channels": 12, "out_channels": 10, "kernel_size": 3,
            "dilation": 3, "padding": "same", "padding_mode": "reflect", "groups": 2,
            "activation": "relu"}
    x = rng.standard_normal((2, 12, 77))
    base = pyconv.Conv(spec, seed=0, dtype=np.float64)
    w = torch.from_numpy(base.params["weight"].copy())
    xt = torch.nn.functional.pad(torch.from_numpy(x), (3, 3), mode="reflect")
    ref = torch.relu(torch.nn.functional.conv1d(
        xt, w, torch.from_numpy(base.params["bias"].copy()), dilation=3, groups=2)).numpy()
    for algo in ("winograd", "winograd_f2", "winograd_f4"):
        conv = pyconv.Conv({**spec, "algorithm": algo}, params=base.params,
                           dtype=np.float64)
        np.testing.assert_allclose(conv.apply(x), ref, rtol=0,
                                   atol=1e-13 * np.abs(ref).max(), err_msg=algo)
        y32 = conv.apply(x.astype(np.float32))
        np.testing.assert_allclose(y32, ref, rtol=0, atol=1e-5 * np.abs(ref).max(),
                                   err_msg=algo)


def test_auto_takes_winograd_where_it_pays(monkeypatch):
    from pyconv import _kernels
    calls = []
    module = _kernels.load("_winograd")
    real = module.winograd_1d
    monkeypatch.setattr(module, "winograd_1d", lambda *a: calls.append(a) or real(*a))
    spec = {"op": "conv1d", "in_channels": 128, "out_channels": 128, "kernel_size": 3,
            "dilation": 16}
    x = np.random.default_rng(3).standard_normal((1, 128, 300))
    auto = pyconv.Conv(spec, seed=0, dtype=np.float64)
    im2col = pyconv.Conv({**spec, "algorithm": "im2col"}, params=auto.params,
                         dtype=np.float64)
    a = auto.apply(x)
    assert len(calls) == 1
    np.testing.assert_allclose(a, im2col.apply(x), rtol=0, atol=1e-13 * np.abs(a).max())
    # few channels, a short output or another stride: im2col
    for other, shape in (({"in_channels": 8}, (1, 8, 300)), ({}, (1, 128, 40)),
                         ({"stride": 2}, (1, 128, 300)),
                         ({"kernel_size": 5}, (1, 128, 300))):
        pyconv.Conv({**spec, **other}, seed=0, dtype=np.float64).apply(
            np.zeros(shape))
    assert len(calls) == 1
    normal = {**spec, "dilation": [16], "groups": 1}
    assert winograd_preferred_1d(normal, 268, "float64") == "F4"
    # a dilation near the output length: a super-tile's tiles hold 1 valid output of 4
    assert winograd_preferred_1d({**normal, "dilation": [1000]}, 200, "float64") is None


def test_auto_keeps_a_nan_to_its_windows():
    # Winograd spreads a NaN over whole tiles: "auto" sees the non-finite outputs
    # and redoes the call with im2col.
    spec = {"op": "conv1d", "in_channels": 128, "out_channels": 128, "kernel_size": 3,
            "dilation": 16, "padding": "same"}
    x = np.random.default_rng(4).standard_normal((1, 128, 400))
    x[0, 5, 200] = np.nan
    auto = pyconv.Conv(spec, seed=0, dtype=np.float64)
    y = auto.apply(x)
    bad = np.unique(np.nonzero(~np.isfinite(y))[2])
    np.testing.assert_array_equal(bad, [184, 200, 216])
    forced = pyconv.Conv({**spec, "algorithm": "winograd"}, params=auto.params,
                         dtype=np.float64)
    assert (~np.isfinite(forced.apply(x))).sum() > 3 * 128
    out = np.empty((1, 128, 400))
    with pytest.raises(NonFiniteTiles):
        winograd_conv1d(x, auto.params["weight"], None, out, (16, 16), "zeros", 0.0,
                        False, 1, 16, check_finite=True)


def test_bad_arguments_are_refused(rng):
    x = rng.standard_normal((1, 4, 50))
    w = rng.standard_normal((6, 4, 3))
    with pytest.raises(ValueError, match="out length"):
        winograd_conv1d(x, w, None, np.empty((1, 6, 49)), (0, 0), "zeros", 0.0, False,
                        1, 1)
    with pytest.raises(ValueError, match="filter_transform"):
        winograd_conv1d(x, w, None, np.empty((1, 6, 48)), (0, 0), "zeros", 0.0, False,
                        1, 1, filter_transform=winograd_filter_1d(w, "F2"))
    with pytest.raises(ValueError, match="shape"):
        winograd_filter_1d(rng.standard_normal((6, 4, 5)))
    with pytest.raises(pyconv.SpecError, match="algorithm"):
        pyconv.Conv({"op": "conv1d", "in_channels": 1, "out_channels": 1,
                     "kernel_size": 3, "stride": 2, "algorithm": "winograd"})
    from pyconv import _kernels
    module = _kernels.load("_winograd")
    u = winograd_filter_1d(w, "F4")
    left, right = _winograd.edge_tables(50, 64 + 2, (0, 0), "zeros")
    bad = right.copy()
    bad[3] = 50   # past the input
    work = np.zeros((1, module.workspace_row_1d(4, 1, 4, 6, 16)))
    args = (x.reshape(-1), u, np.zeros(1), np.empty(6 * 48), 1, 4, 50, 48, 0)
    with pytest.raises(ValueError, match="edge table"):
        module.winograd_1d(*args, left, bad, 1, 4, 1, 0.0, False, False, 16, work, 1)
    with pytest.raises(ValueError, match="inconsistent"):
        module.winograd_1d(*args, left, right, 1, 4, 1, 0.0, False, False, 16,
                           work[:, :10], 1)
    # pads (2, 2): 13 super-tiles read positions up to 54, 2 past the input's end
    left2, right2 = _winograd.edge_tables(50, 54, (2, 2), "zeros")
    args2 = (x.reshape(-1), u, np.zeros(1), np.empty(6 * 52), 1, 4, 50, 52, 2)
    module.winograd_1d(*args2, left2, right2, 1, 4, 1, 0.0, False, False, 16, work, 1)
    for short_left, short_right in ((left2[:1], right2), (left2, right2[:1])):
        with pytest.raises(ValueError, match="inconsistent"):
            module.winograd_1d(*args2, short_left, short_right, 1, 4, 1, 0.0, False, False,
                               16, work, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_several_units_per_image_with_a_short_last_one(rng, dtype):
    # Long inputs: units of whole packed panels and a shorter last one per image,
    # read in place inside the input and through a copy at its padded end.
    from pyconv import _kernels
    from pyconv._dtypes import NATIVE_NAMES
    multiple = (_kernels.load("_winograd").PACKED_COLUMNS[NATIVE_NAMES[np.dtype(dtype)]]
                * _kernels.packed_panel_multiple())
    for d in (1, 3, 4, 16):
        L = int(rng.integers(2000, 2600))
        x = rng.standard_normal((2, 3, L)).astype(dtype)
        w = rng.standard_normal((5, 3, 3)).astype(dtype)
        b = rng.standard_normal(5).astype(dtype)
        pads = (d, int(rng.integers(0, 2 * d)))
        S = -(-(L + sum(pads) - 2 * d) // (4 * d))
        chunk = _winograd.chunk_super_tiles(S, d, multiple)
        assert S > chunk and S % chunk
        out = run(x, w, b, pads, d, "replicate", n_threads=2)
        ref, mag = reference(x, w, b, pads, d, "replicate")
        err = np.max(np.abs(out - ref)) / np.max(mag)
        assert err < TOL[dtype, "F4"], (d, L, pads, err)
