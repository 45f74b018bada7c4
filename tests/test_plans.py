"""Plans, routes and scratch views remembered across calls (pyconv._memo,
pyconv._workspace): a later call with another shape, dtype, spec or tuning constant
must never run on what an earlier call left behind."""
import numpy as np
import pytest

import pyconv
from pyconv import _kernels, _memo, _workspace
from reference import conv_nd as reference_conv


def _spy(monkeypatch, module_name, function_name):
    """Record the positional arguments of every call of a kernel function."""
    module = _kernels.load(module_name)
    real = getattr(module, function_name)
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, function_name, spy)
    return calls


def test_one_conv_alternating_shapes_and_dtypes_matches_the_reference():
    rng = np.random.default_rng(0)
    conv = pyconv.Conv({"op": "conv2d", "in_channels": 3, "out_channels": 4,
                        "kernel_size": 3, "padding": "same"}, seed=0, dtype=np.float64)
    w, b = conv.params["weight"], conv.params["bias"]
    shapes = [(1, 3, 9, 7), (2, 3, 5, 11), (1, 3, 9, 7), (3, 3, 4, 4), (2, 3, 5, 11)]
    for i, shape in enumerate(shapes * 2):
        dtype = np.float32 if i % 3 == 0 else np.float64
        x = rng.standard_normal(shape).astype(dtype)
        ref = reference_conv(x.astype(np.float64), w, b, (1, 1), [(1, 1), (1, 1)], (1, 1), 1)
        got = conv.apply(x)
        assert got.dtype == dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4 if dtype == np.float32 else 1e-10,
                                   atol=1e-4 if dtype == np.float32 else 1e-10)


def test_convs_with_equal_specs_but_different_algorithms_take_their_own_route(monkeypatch):
    x = np.random.default_rng(1).standard_normal((2, 16, 12, 12))
    base = {"op": "conv2d", "in_channels": 16, "out_channels": 16, "kernel_size": 3,
            "padding": 1}
    calls = _spy(monkeypatch, "_winograd", "winograd_2d")
    auto = pyconv.Conv(base, seed=0, dtype=np.float64)
    im2col = pyconv.Conv({**base, "algorithm": "im2col"}, params=auto.params)
    y_auto = auto.apply(x)
    assert len(calls) == 1     # 16 channels, 18 F4 tiles: "auto" takes Winograd
    y_im2col = im2col.apply(x)
    assert len(calls) == 1     # ... and "im2col" does not, on the same shape
    np.testing.assert_allclose(y_auto, y_im2col, rtol=1e-10, atol=1e-10)


def test_a_changed_tiling_constant_takes_effect(monkeypatch):
    from pyconv.ops import conv as conv_module
    conv = pyconv.Conv({"op": "conv2d", "in_channels": 8, "out_channels": 8,
                        "kernel_size": 1, "algorithm": "im2col"}, seed=0)
    x = np.random.default_rng(2).standard_normal((1, 8, 40, 40)).astype(np.float32)
    calls = _spy(monkeypatch, "_conv", "conv_nd")
    expected = conv.apply(x)
    conv.apply(x)
    TILE_COLUMNS, PACKED = 22, 23    # conv_nd's arguments
    if not calls[0][PACKED]:         # only the packed GEMM tiles by panels
        pytest.skip("no packed GEMM in this build")
    tile_columns = calls[-1][TILE_COLUMNS]
    monkeypatch.setattr(conv_module, "PACKED_MIN_UNITS", 1)   # no split for threads
    np.testing.assert_array_equal(conv.apply(x), expected)
    assert calls[-1][TILE_COLUMNS] != tile_columns


def test_1x1_layers_on_openblas_tile_by_their_own_constant(monkeypatch):
    """A 1x1 layer read in place takes DIRECT_TILE_COLUMNS, a layer with a column
    buffer TILE_COLUMNS; a change of either takes effect, and results stay right."""
    from pyconv import _kernels
    from pyconv.ops import conv as conv_module
    monkeypatch.setattr(_kernels, "GEMM", "openblas")
    calls = _spy(monkeypatch, "_conv", "conv_nd")
    TILE_COLUMNS = 22                # conv_nd's argument
    x = np.random.default_rng(4).standard_normal((8, 6, 20, 30))
    for kernel_size, constant in ((1, "DIRECT_TILE_COLUMNS"), (3, "TILE_COLUMNS")):
        pad = kernel_size // 2
        conv = pyconv.Conv({"op": "conv2d", "in_channels": 6, "out_channels": 5,
                            "kernel_size": kernel_size, "padding": pad,
                            "algorithm": "im2col"}, seed=0, dtype=np.float64)
        want = reference_conv(x, conv.params["weight"], conv.params["bias"], (1, 1),
                              [(pad, pad), (pad, pad)], (1, 1), 1)
        for columns in (60, 300):
            monkeypatch.setattr(conv_module, constant, columns)
            np.testing.assert_allclose(conv.apply(x), want, rtol=1e-12, atol=1e-12)
            assert calls[-1][TILE_COLUMNS] == columns   # whole rows of 30 outputs
        monkeypatch.undo()
        monkeypatch.setattr(_kernels, "GEMM", "openblas")
        calls = _spy(monkeypatch, "_conv", "conv_nd")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pair_tiles_take_k_blocks_that_stay_in_l1(monkeypatch, dtype):
    """Where the tiles take two column panels at once, a k block of them holds at most
    PACKED_PAIR_BYTES; with one panel at a time the weights' block alone decides.
    Either way the convolution (k blocks summed in order) matches the reference."""
    from pyconv.ops import conv as conv_module
    itemsize = np.dtype(dtype).itemsize
    panel = 24 if dtype == np.float32 else 12
    limit = conv_module.PACKED_PAIR_BYTES // (2 * panel * itemsize)
    x = np.random.default_rng(5).standard_normal((2, 300, 9, 10)).astype(dtype)
    conv = pyconv.Conv({"op": "conv2d", "in_channels": 300, "out_channels": 8,
                        "kernel_size": 1}, seed=0, dtype=dtype)
    want = reference_conv(x.astype(np.float64), conv.params["weight"].astype(np.float64),
                          conv.params["bias"].astype(np.float64), (1, 1),
                          [(0, 0), (0, 0)], (1, 1), 1)
    vector = _kernels.load("_conv").PACKED_VECTOR
    monkeypatch.setattr(_kernels, "GEMM", "packed")
    for multiple in (1, 2):
        monkeypatch.setattr(_kernels, "packed_panel_multiple", lambda m=multiple: m)
        monkeypatch.setattr(_memo, "_CACHE", {})   # (a machine constant: not in keys)
        _, k_block = conv_module.packed_tiling(90, 300, 2, 4, itemsize, panel, 2, True)
        if multiple == 2:
            assert k_block == max(conv_module.PACKED_MIN_K_BLOCK, limit) < 300
        else:
            assert k_block == 300
        calls = _spy(monkeypatch, "_conv", "conv_nd")
        tol = 1e-4 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(conv.apply(x), want, rtol=tol, atol=tol)
        K_BLOCK, PACKED = 24, 23             # conv_nd's arguments
        assert not vector or (calls[-1][PACKED] and calls[-1][K_BLOCK] == k_block)


def test_a_changed_winograd_chunk_constant_takes_effect(monkeypatch):
    from pyconv.ops import _winograd
    conv = pyconv.Conv({"op": "conv2d", "in_channels": 16, "out_channels": 16,
                        "kernel_size": 3, "padding": 1}, seed=0, dtype=np.float64)
    x = np.random.default_rng(3).standard_normal((8, 16, 48, 48))
    calls = _spy(monkeypatch, "_winograd", "winograd_2d")
    first = conv.apply(x)
    CHUNK = 22                       # winograd_2d's argument
    chunk = calls[-1][CHUNK]
    monkeypatch.setattr(_winograd, "TILES_PER_CHUNK", 256)
    np.testing.assert_allclose(conv.apply(x), first, rtol=1e-12, atol=1e-12)
    assert calls[-1][CHUNK] > chunk   # (a multiple of the packed GEMM's panel)


def test_plans_with_large_tables_are_not_kept():
    from pyconv.ops import conv as conv_module
    conv = pyconv.Conv({"op": "conv1d", "in_channels": 1, "out_channels": 1,
                        "kernel_size": 3, "algorithm": "im2col"}, seed=0)
    # tables: depth and height (one entry each), width (3 taps per output)
    fits = (conv_module.PLAN_MAX_TABLE_ENTRIES - 2) // 3
    _memo._CACHE.clear()
    conv.apply(np.ones((1, 1, 64), np.float32))
    conv.apply(np.ones((1, 1, fits + 2), np.float32))       # fits outputs: kept
    conv.apply(np.ones((1, 1, fits + 3), np.float32))       # one more: not kept
    kept = [k for k in _memo._CACHE if k[0] == "im2col"]
    assert [k[1] for k in kept] == [(1, 1, 64), (1, 1, fits + 2)]


def test_workspace_views_are_reused_only_for_the_same_request():
    _workspace.release_workspaces()
    a = _workspace.workspace((2, 3), np.float32)
    assert _workspace.workspace((2, 3), np.float32) is a
    assert _workspace.workspace([2, 3], "float32").shape == (2, 3)
    b = _workspace.workspace((3, 2), np.float32)
    assert b.shape == (3, 2) and b is not a
    c = _workspace.workspace((2, 3), np.float64)
    assert c.dtype == np.float64 and c.shape == (2, 3)
    big = _workspace.workspace((1000, 1000), np.float32)   # the buffer grows
    assert big.shape == (1000, 1000)
    again = _workspace.workspace((2, 3), np.float32)
    assert again.shape == (2, 3) and again.base is not a.base
    assert _workspace.workspace((2, 3), np.float32, slot="other") is not again
    _workspace.release_workspaces()
    assert _workspace.workspace((2, 3), np.float32) is not again


def test_a_mutated_spec_dict_gets_a_new_key():
    spec = {"kernel_size": [3, 3], "stride": [1, 1]}
    first = _memo.spec_key(spec)
    assert _memo.spec_key(spec) == first
    spec["stride"][0] = 2
    assert _memo.spec_key(spec) != first


def test_small_calls_still_validate_n_threads():
    relu = pyconv.Conv({"op": "relu"})
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_threads expects a positive int"):
            relu.apply(np.ones(4), n_threads=bad)


def test_a_weight_freed_after_its_module_is_torn_down_leaves_no_error(monkeypatch):
    # At interpreter exit a Conv may outlive the globals of pyconv.ops.conv; the
    # callback that drops its cached transform must not look them up then.
    import gc
    import sys

    from pyconv.ops import conv as conv_module
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    w = np.ones((4, 4, 3, 3), np.float32)
    w.setflags(write=False)
    assert conv_module.cached_transform(w, ("test tag",), lambda: 1) == 1
    cache = conv_module._transforms
    assert (id(w), "test tag") in cache
    key = (id(w), "test tag")
    monkeypatch.setattr(conv_module, "_transforms", None)   # as at interpreter exit
    del w
    gc.collect()
    assert not unraisable, [u.exc_value for u in unraisable]
    assert key not in cache


def test_a_shape_given_as_a_list_is_computed_not_remembered():
    conv = pyconv.Conv({"op": "conv2d", "in_channels": 3, "out_channels": 4,
                        "kernel_size": 3, "padding": "same"}, seed=0)
    pool = pyconv.Conv({"op": "max_pool2d", "kernel_size": 2})
    for c, shape in ((conv, (1, 3, 9, 7)), (pool, (1, 3, 9, 7))):
        want = c.op.geometry(c._spec, shape)
        entries = len(_memo._CACHE)
        assert c.op.geometry(c._spec, list(shape)) == want
        assert len(_memo._CACHE) == entries
    with pytest.raises(ValueError, match="conv2d"):
        conv.op.geometry(conv._spec, [1, 2, 9, 7])     # wrong channels: still refused


def test_pair_tiles_take_whole_pairs_of_panels(monkeypatch):
    """Where the tiles take two column panels at once, an im2col tile is a whole
    number of pairs (an odd panel would run alone at half the pair's rate); with one
    panel at a time, of panels. conv1d 128 -> 128, k3, on 4096 columns: 7 panels of
    24 a tile before."""
    from pyconv.ops import conv as conv_module
    for multiple in (1, 2):
        monkeypatch.setattr(_kernels, "packed_panel_multiple", lambda m=multiple: m)
        for P, ck in [(4096, 384), (12544, 147), (3136, 576), (100, 27), (5, 9)]:
            cols, _ = conv_module.packed_tiling(P, ck, 32, 4, 4, 24, 2, False)
            assert cols % (24 * multiple) == 0 and cols >= 24, (P, ck, multiple)
    monkeypatch.setattr(conv_module, "PACKED_PAIRED_TILES", False)
    cols, _ = conv_module.packed_tiling(4096, 384, 32, 4, 4, 24, 2, False)
    assert cols % 48 == 24   # the odd panel count this rule removes


def test_thread_workspace_rows_start_on_cache_lines():
    from pyconv._workspace import ALIGN, thread_workspace, workspace
    for values, dtype in [(1, np.float32), (10, np.float32), (17, np.float64),
                          (1000, np.float32), (8, np.float64)]:
        w = thread_workspace(3, values, dtype)
        assert w.flags.c_contiguous and w.shape[0] == 3 and w.shape[1] >= values
        assert all(w[t].ctypes.data % ALIGN == 0 for t in range(3))
        assert w.shape[1] * w.itemsize % ALIGN == 0
        assert w.shape[1] * w.itemsize < values * w.itemsize + ALIGN
    assert workspace((5, 3), np.float64).ctypes.data % ALIGN == 0
