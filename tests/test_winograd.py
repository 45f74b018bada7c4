"""Winograd F(2x2,3x3) / F(4x4,3x3) convolution against the float64 NumPy reference and torch."""
import numpy as np
import pytest

from reference import conv_nd, pad_input
from pyconv.ops._winograd import (VARIANTS, NonFiniteTiles, chunk_tiles, winograd_conv2d, winograd_filter,
                                  winograd_preferred, winograd_supported)

MODES = ("zeros", "constant", "reflect", "symmetric", "replicate", "circular")
#: Max error relative to the magnitude max(conv(|x|, |w|)); measured F2 ~1e-7,
#: F4 ~1e-6 in float32, both ~1e-15 in float64 (see the module docstring).
TOL = {(np.float32, "F2"): 1e-6, (np.float32, "F4"): 1e-5,
       (np.float64, "F2"): 1e-14, (np.float64, "F4"): 1e-13}


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def run(x, w, b, pads, mode="zeros", value=0.0, relu=False, groups=1, n_threads=1,
        variant="F2", c_out=None, **kw):
    N, _, H, W = x.shape
    oh = H + pads[0][0] + pads[0][1] - 2
    ow = W + pads[1][0] + pads[1][1] - 2
    out = np.full((N, w.shape[0] if c_out is None else c_out, oh, ow), np.nan, x.dtype)
    res = winograd_conv2d(x, w, b, out, pads, mode, value, relu, groups,
                          n_threads=n_threads, variant=variant, **kw)
    assert res is out
    return out


def reference(x, w, b, pads, mode="zeros", value=0.0, relu=False, groups=1):
    y = conv_nd(x, w, b, (1, 1), pads, (1, 1), groups, mode, value)
    mag = conv_nd(np.abs(x), np.abs(w), None if b is None else np.abs(b), (1, 1), pads,
                  (1, 1), groups, mode, abs(value))
    return (np.maximum(y, 0) if relu else y), mag


def random_case(rng, dtype):
    groups = int(rng.integers(1, 4))
    cin_g, cout_g = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    N = int(rng.integers(1, 3))
    H, W = int(rng.integers(1, 14)), int(rng.integers(1, 14))
    pads = [[int(rng.integers(0, 4)), int(rng.integers(0, 4))] for _ in range(2)]
    for axis, n in enumerate((H, W)):           # output length >= 1
        while n + sum(pads[axis]) < 3:
            pads[axis][1] += 1
    x = rng.standard_normal((N, groups * cin_g, H, W)).astype(dtype)
    w = rng.standard_normal((groups * cout_g, cin_g, 3, 3)).astype(dtype)
    b = rng.standard_normal(groups * cout_g).astype(dtype) if rng.random() < 0.7 else None
    return x, w, b, [tuple(p) for p in pads], groups


@pytest.mark.parametrize("level", ["avx2", "baseline"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_configs_against_reference(rng, monkeypatch, dtype, variant, level):
    """Both GEMMs: the AVX2 build's packed tiles and the baseline build's OpenBLAS."""
    from pyconv import _kernels
    monkeypatch.setattr(_kernels, "LEVEL", level)
    worst = 0.0
    for i in range(36):
        x, w, b, pads, groups = random_case(rng, dtype)
        mode = MODES[i % len(MODES)]
        value = float(rng.standard_normal()) if mode == "constant" else 0.0
        relu = bool(i % 4 == 3)
        out = run(x, w, b, pads, mode, value, relu, groups, variant=variant)
        ref, mag = reference(x, w, b, pads, mode, value, relu, groups)
        assert out.shape == ref.shape and out.dtype == dtype
        err = np.max(np.abs(out - ref)) / max(np.max(mag), 1e-30)
        worst = max(worst, err)
        assert err < TOL[dtype, variant], (i, x.shape, w.shape, pads, mode, groups, err)
    assert worst > 0 or dtype == np.float64  # the comparison really compares


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_odd_sizes_and_partial_tiles(rng, mode, variant):
    # 11x9 with pads giving outputs that are not multiples of 2 or 4 in either axis.
    x = rng.standard_normal((2, 6, 11, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    for pads in ([(1, 1), (1, 1)], [(0, 2), (3, 0)], [(2, 0), (0, 0)], [(4, 5), (5, 4)]):
        out = run(x, w, b, pads, mode, 2.5 if mode == "constant" else 0.0, groups=2,
                  variant=variant)
        ref, mag = reference(x, w, b, pads, mode, 2.5 if mode == "constant" else 0.0,
                             groups=2)
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-13 * mag.max())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_float32_rows_of_every_tile_count(rng, variant):
    # Rows of 1 to 21 tiles and of 64-66 (a transform block's BLK = 64 tiles): the
    # float32 column split and output interleave work four tiles at a time, with a
    # remainder of 0-3 tiles, and every padding mode gathers its edge columns.
    m = VARIANTS[variant]
    for i, tiles in enumerate(list(range(1, 22)) + [64, 65, 66]):
        W = m * tiles - 2 + int(rng.integers(0, m))   # pads 1: OW = W, ceil(W/m) tiles
        mode = MODES[i % len(MODES)]
        x = rng.standard_normal((2, 4, 7, W)).astype(np.float32)
        w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
        b = rng.standard_normal(6).astype(np.float32)
        relu = bool(i % 2)
        value = 0.5 if mode == "constant" else 0.0
        out = run(x, w, b, [(1, 1), (1, 1)], mode, value, relu, groups=2, variant=variant)
        ref, mag = reference(x, w, b, [(1, 1), (1, 1)], mode, value, relu, groups=2)
        err = np.max(np.abs(out - ref)) / np.max(mag)
        assert err < TOL[np.float32, variant], (tiles, W, mode, relu, err)


@pytest.mark.parametrize("level", ["avx2", "baseline"])
@pytest.mark.parametrize("tiles_per_chunk", [3, 5, 7])
def test_float32_f4_chunks_that_cut_rows_and_images(rng, monkeypatch, level,
                                                    tiles_per_chunk):
    # Units of 3-7 tiles (the baseline build has no panel multiple) start and end
    # inside tile rows and span images: the F4 input transform's whole 4-tile steps
    # write past a row segment into tiles other segments and channels own, and its
    # vertical pass reads each segment's columns in place around their edges.
    from pyconv import _kernels
    from pyconv.ops import _winograd
    monkeypatch.setattr(_kernels, "LEVEL", level)
    monkeypatch.setattr(_winograd, "TILES_PER_CHUNK", tiles_per_chunk)
    # Wide pads give segments of padding columns only and tile rows of padding rows.
    x = rng.standard_normal((3, 6, 9, 23)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    for mode in MODES:
        value = -1.5 if mode == "constant" else 0.0
        for pads in ([(1, 1), (1, 1)], [(4, 5), (9, 6)]):
            out = run(x, w, b, pads, mode, value, groups=2, n_threads=2, variant="F4")
            ref, mag = reference(x, w, b, pads, mode, value, groups=2)
            err = np.max(np.abs(out - ref)) / np.max(mag)
            assert err < TOL[np.float32, "F4"], (mode, pads, err)


@pytest.mark.parametrize("tiles_per_chunk", [5, 64])
def test_float32_f4_avx512_transforms_give_the_same_bits(rng, monkeypatch, tiles_per_chunk):
    """The float32 F(4x4) transforms 16 tiles per step in AVX-512 registers against 4
    per step in SSE ones: rows of 1 to 40 tiles and around a block's 64 (masked tails
    of every length), every padding mode, bias and ReLU, chunks that cut rows."""
    from pyconv import _kernels
    from pyconv.ops import _winograd
    if not _kernels.WIDE_LOOPS:
        pytest.skip("this CPU has no AVX-512 (or PYCONV_KERNELS=avx2), or no AVX2 build")
    monkeypatch.setattr(_kernels, "LEVEL", "avx2")
    monkeypatch.setattr(_winograd, "TILES_PER_CHUNK", tiles_per_chunk)
    kernels = _kernels.load("_winograd")
    try:
        for i, tiles in enumerate(list(range(1, 41)) + [63, 64, 65, 66, 81]):
            W = 4 * tiles - 2 + int(rng.integers(0, 4))   # pads 1: ceil(W/4) tiles
            mode = MODES[i % len(MODES)]
            value = 0.5 if mode == "constant" else 0.0
            relu = bool(i % 2)
            x = rng.standard_normal((2, 4, 6, W)).astype(np.float32)
            w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
            b = rng.standard_normal(6).astype(np.float32)
            got = []
            for wide in (False, True):
                assert kernels.set_wide_loops(wide) == wide
                got.append(run(x, w, b, [(1, 1), (1, 1)], mode, value, relu, groups=2,
                               variant="F4"))
            assert got[0].tobytes() == got[1].tobytes(), (tiles, W, mode, relu)
            ref, mag = reference(x, w, b, [(1, 1), (1, 1)], mode, value, relu, groups=2)
            err = np.max(np.abs(got[1] - ref)) / np.max(mag)
            assert err < TOL[np.float32, "F4"], (tiles, W, mode, relu, err)
    finally:
        kernels.set_wide_loops(_kernels.WIDE_LOOPS)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_against_torch_realistic_channels(torch, rng, dtype, variant):
    F = torch.nn.functional
    x = rng.standard_normal((2, 32, 23, 30)).astype(dtype)
    w = (rng.standard_normal((24, 32, 3, 3)) / 17).astype(dtype)
    b = rng.standard_normal(24).astype(dtype)
    for mode, tmode in (("zeros", None), ("reflect", "reflect"),
                        ("replicate", "replicate"), ("circular", "circular")):
        out = run(x, w, b, [(1, 1), (1, 1)], mode, relu=True, n_threads=2, variant=variant)
        xt = torch.from_numpy(x.copy())
        with torch.no_grad():
            if tmode is None:
                ref = F.conv2d(xt, torch.from_numpy(w), torch.from_numpy(b), padding=1)
            else:
                ref = F.conv2d(F.pad(xt, (1, 1, 1, 1), mode=tmode), torch.from_numpy(w),
                               torch.from_numpy(b))
            ref = F.relu(ref).numpy()
        scale = float(np.abs(x).max() * np.abs(w).sum(axis=(1, 2, 3)).max())
        err = np.max(np.abs(out - ref)) / scale
        assert err < TOL[dtype, variant], (mode, err)


def test_asymmetric_pads_against_torch(torch, rng):
    F = torch.nn.functional
    x = rng.standard_normal((3, 8, 17, 10))
    w = rng.standard_normal((5, 8, 3, 3))
    pads = [(2, 0), (0, 3)]
    for variant in VARIANTS:
        out = run(x, w, None, pads, variant=variant)
        ref = F.conv2d(F.pad(torch.from_numpy(x), (0, 3, 2, 0)), torch.from_numpy(w)).numpy()
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_thread_count_bit_identical(rng, variant):
    x = rng.standard_normal((3, 16, 61, 57)).astype(np.float32)
    w = rng.standard_normal((24, 8, 3, 3)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    one = run(x, w, b, [(1, 1), (1, 1)], "reflect", groups=2, n_threads=1, variant=variant)
    two = run(x, w, b, [(1, 1), (1, 1)], "reflect", groups=2, n_threads=2, variant=variant)
    assert np.array_equal(one, two)
    # one image: the tiles of a single image are split among the threads
    one = run(x[:1], w, b, [(1, 1), (1, 1)], groups=2, n_threads=1, variant=variant)
    two = run(x[:1], w, b, [(1, 1), (1, 1)], groups=2, n_threads=2, variant=variant)
    assert np.array_equal(one, two)


def test_cached_filter_transform_matches_and_is_checked(rng):
    x = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    for variant in VARIANTS:
        u = winograd_filter(w, variant)
        assert u.shape == ((VARIANTS[variant] + 2) ** 2, 6, 4) and u.dtype == np.float32
        a = run(x, w, None, [(1, 1), (1, 1)], variant=variant)
        c = run(x, None, None, [(1, 1), (1, 1)], variant=variant, c_out=6,
                filter_transform=u)
        assert np.array_equal(a, c)
    with pytest.raises(ValueError, match="filter_transform"):
        run(x, None, None, [(1, 1), (1, 1)], variant="F4", c_out=6,
            filter_transform=winograd_filter(w, "F2"))
    with pytest.raises(ValueError, match="filter_transform"):
        run(x, None, None, [(1, 1), (1, 1)], variant="F2", c_out=6,
            filter_transform=winograd_filter(w.astype(np.float64), "F2"))


def test_filter_transform_definition():
    # U = G g G^T with the F(2,3) G written out; F4 checked through the convolution tests.
    g = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    np.testing.assert_allclose(winograd_filter(g, "F2")[:, 0, 0], (G @ g[0, 0] @ G.T).ravel())
    with pytest.raises(ValueError, match="variant"):
        winograd_filter(g, "F6")
    with pytest.raises(ValueError, match="3, 3"):
        winograd_filter(np.ones((2, 2, 5, 5)), "F2")
    with pytest.raises(TypeError, match="float32 or float64"):
        winograd_filter(np.ones((2, 2, 3, 3), np.int64), "F2")


def test_inputs_unchanged_readonly_and_zero_batch(rng):
    x = rng.standard_normal((2, 4, 8, 8))
    w = rng.standard_normal((4, 4, 3, 3))
    b = rng.standard_normal(4)
    for a in (x, w, b):
        a.flags.writeable = False
    copies = [a.copy() for a in (x, w, b)]
    run(x, w, b, [(1, 1), (1, 1)], "circular", variant="F4")
    for a, c in zip((x, w, b), copies):
        assert np.array_equal(a, c)
    out = np.full((0, 4, 8, 8), 7.0)
    winograd_conv2d(x[:0], w, b, out, [(1, 1), (1, 1)], "zeros", 0.0, False, 1)


def test_shape_mismatch_is_refused(rng):
    x = rng.standard_normal((1, 2, 8, 8))
    w = rng.standard_normal((2, 2, 3, 3))
    with pytest.raises(ValueError, match="out spatial shape"):
        winograd_conv2d(x, w, None, np.empty((1, 2, 7, 8)), [(1, 1), (1, 1)], "zeros",
                        0.0, False, 1)
    with pytest.raises(ValueError, match="variant"):
        winograd_conv2d(x, w, None, np.empty((1, 2, 8, 8)), [(1, 1), (1, 1)], "zeros",
                        0.0, False, 1, variant="F3")


def test_nan_stays_in_its_tiles(rng):
    # A non-finite input spoils the tiles that read it (inherent to the transform) and
    # nothing else.
    x = rng.standard_normal((1, 3, 24, 24))
    x[0, 1, 10, 13] = np.nan
    w = rng.standard_normal((2, 3, 3, 3))
    for variant, m in VARIANTS.items():
        out = run(x, w, None, [(1, 1), (1, 1)], variant=variant)
        bad = ~np.isfinite(out[0, 0])
        rows, cols = np.nonzero(bad)
        assert bad[9:12, 12:15].all()                       # the direct-conv footprint
        assert rows.min() >= (9 // m) * m and rows.max() < (11 // m + 1) * m
        assert cols.min() >= (12 // m) * m and cols.max() < (14 // m + 1) * m


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_check_finite_reports_spoiled_tiles(rng, value):
    x = rng.standard_normal((2, 3, 17, 19)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    for variant in VARIANTS:
        run(x, w, None, [(1, 1), (1, 1)], variant=variant, check_finite=True)  # no error
        # the last tile of the last image, the first tile, one inside a row
        for where in ((1, 2, 16, 18), (0, 0, 0, 0), (1, 1, 8, 9)):
            bad = x.copy()
            bad[where] = value
            with pytest.raises(NonFiniteTiles):
                run(bad, w, None, [(1, 1), (1, 1)], variant=variant, check_finite=True)
            run(bad, w, None, [(1, 1), (1, 1)], variant=variant)  # unchecked: no error
    # an infinite pad value spoils the edge tiles too
    with pytest.raises(NonFiniteTiles):
        run(x, w, None, [(1, 1), (1, 1)], "constant", np.inf, check_finite=True)


def test_chunks_balance_up_to_16_threads():
    # ResNet-like layers: the unit count is a multiple of 16, chunks stay large
    for n_tiles in (784, 1568, 3136, 6272, 12544):
        for groups in (1, 2, 4):
            c = chunk_tiles(n_tiles, groups, 64, 64, 4, 4)
            assert 24 <= c <= 64
            assert groups * -(-n_tiles // c) % 16 == 0, (n_tiles, groups, c)


def busiest_share(n_tiles, groups, chunk, threads):
    """Tiles of the busiest thread over an even share, with OpenMP's static schedule
    (contiguous blocks of units, the first ``units % threads`` one unit longer) and
    each group's last chunk partial."""
    per_group = -(-n_tiles // chunk)
    sizes = [min(chunk, n_tiles - k * chunk) for _ in range(groups) for k in range(per_group)]
    q, r = divmod(len(sizes), threads)
    loads, start = [], 0
    for t in range(threads):
        stop = start + q + (t < r)
        loads.append(sum(sizes[start:stop]))
        start = stop
    return max(loads) * threads / (groups * n_tiles)


@pytest.mark.parametrize("multiple", [12, 24])
def test_packed_chunks_are_panel_multiples_and_balance(multiple):
    # 16x64x56x56 (3136 F4 tiles): 66 units of 48 (the nearest multiple of 24) left
    # two of 16 threads a fifth unit; the chosen chunk does not
    chosen = chunk_tiles(3136, 1, 64, 64, 4, 4, multiple)
    assert busiest_share(3136, 1, 48, 16) > 1.2 > busiest_share(3136, 1, chosen, 16)
    # few tiles: enough units for 16 threads rather than a chunk past them
    assert chunk_tiles(31, 8, 64, 64, 4, 8, 12) == 24
    for n_tiles in (784, 1568, 3136, 6272, 12544):
        for groups in (1, 2, 4, 32):
            c = chunk_tiles(n_tiles, groups, 64, 64, 4, 4, multiple)
            assert c % multiple == 0 and 24 <= c <= 72, (n_tiles, groups, c)
            nearest = max(multiple, round(chunk_tiles(n_tiles, groups, 64, 64, 4, 4)
                                          / multiple) * multiple)
            for threads in (2, 4, 8, 16):
                share = busiest_share(n_tiles, groups, c, threads)
                assert share <= busiest_share(n_tiles, groups, nearest, threads) + 0.05
                if groups * n_tiles >= 3136:
                    assert share < 1.11, (n_tiles, groups, c, threads, share)


def test_large_constant_pad_does_not_leak_into_unwritten_tail(rng):
    # The positions past the padded extent of a partial edge tile are read as 0,
    # not as the pad value, so a huge pad value costs no accuracy elsewhere.
    x = rng.standard_normal((1, 2, 7, 7))
    w = rng.standard_normal((2, 2, 3, 3))
    out = run(x, w, None, [(0, 0), (0, 0)], "constant", 1e12, variant="F4")
    ref, mag = reference(x, w, None, [(0, 0), (0, 0)], "constant", 1e12)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-13 * mag.max())


def test_supported_preferred_and_chunks():
    spec = {"kernel_size": (3, 3), "stride": (1, 1), "dilation": (1, 1), "groups": 1,
            "in_channels": 64, "out_channels": 64, "padding": ((1, 1), (1, 1))}
    assert winograd_supported(spec, (8, 64, 56, 56))
    for bad in ({"kernel_size": (3, 5)}, {"stride": (2, 1)}, {"dilation": (1, 2)}):
        assert not winograd_supported({**spec, **bad}, (8, 64, 56, 56))
    assert winograd_preferred(spec, (8, 64, 56, 56), np.float64) == "F4"
    assert winograd_preferred(spec, (8, 64, 56, 56), np.float32) in VARIANTS
    assert winograd_preferred({**spec, "groups": 64}, (8, 64, 56, 56), np.float32) is None
    assert winograd_preferred({**spec, "stride": (2, 2)}, (8, 64, 56, 56), np.float32) is None
    few = {**spec, "in_channels": 3}
    assert winograd_preferred(few, (8, 3, 56, 56), np.float32) is None
    # thin GEMMs: one 4x4 image is a single F4 tile and 4 F2 tiles
    big = {**spec, "in_channels": 512, "out_channels": 512}
    assert winograd_preferred(big, (1, 512, 4, 4), np.float64) is None
    assert winograd_preferred(big, (1, 512, 7, 7), np.float64) == "F2"
    assert winograd_preferred(big, (8, 512, 7, 7), np.float64) == "F4"
    assert winograd_preferred({**big, "padding": "same"}, (8, 512, 7, 7), "float64") == "F4"
    for n_tiles in (1, 7, 49, 196, 784, 3136, 12544):
        for images in (1, 8):
            c = chunk_tiles(n_tiles, images, 64, 64, 4, 4)
            assert 1 <= c <= max(n_tiles, 1) and c <= 64
