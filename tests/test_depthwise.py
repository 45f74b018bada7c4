"""Depthwise, pointwise, separable convolution and the direct grouped kernel."""
import json
import mmap
import subprocess
import sys

import numpy as np
import pytest

import pyconv
import reference_depthwise as refdw
from pyconv.ops import depthwise as dwmod
from reference import conv_nd as ref_conv_nd, same_pads

MODES = ("zeros", "constant", "reflect", "symmetric", "replicate", "circular")
TORCH_PAD = {"zeros": "constant", "constant": "constant", "reflect": "reflect",
             "replicate": "replicate", "circular": "circular"}


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def tol(dtype):
    return (2e-5, 2e-5) if dtype == np.float32 else (1e-12, 1e-12)


def assert_close(y, ref, dtype):
    rtol, atol = tol(dtype)
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(y, ref, rtol=rtol, atol=atol * scale)


def explicit_pads(spec_padding, spatial, k, s, d):
    if isinstance(spec_padding, str):
        return [same_pads(n, kk, ss, dd, spec_padding == "same_lower")
                for n, kk, ss, dd in zip(spatial, k, s, d)]
    return [tuple(p) for p in spec_padding]


def torch_padded(torch, x, pads, mode, value):
    """x padded with F.pad (pairs given per axis, first axis first)."""
    flat = []
    for lo, hi in reversed(pads):
        flat += [lo, hi]
    t = torch.from_numpy(x)
    if TORCH_PAD[mode] == "constant":
        return torch.nn.functional.pad(t, flat, mode="constant", value=value)
    return torch.nn.functional.pad(t, flat, mode=TORCH_PAD[mode])


def torch_conv(torch, rank):
    return getattr(torch.nn.functional, f"conv{rank}d")


# -- depthwise ----------------------------------------------------------------------------
DW_CASES = [
    # rank, spatial, k, stride, padding, dilation, multiplier
    (2, (9, 11), 3, 1, 1, 1, 1),
    (2, (9, 11), 3, 2, 1, 1, 2),
    (2, (10, 7), 3, 1, "same", 2, 1),
    (2, (10, 7), 4, 3, "same", 1, 1),
    (2, (10, 7), 2, 2, "same_lower", 1, 3),
    (2, (8, 8), 5, 1, [[2, 1], [0, 3]], 1, 1),
    (2, (6, 13), (1, 3), (1, 2), [0, 1], (1, 2), 2),
    (2, (12, 12), 7, 1, 3, 1, 1),
    (1, (17,), 3, 1, 1, 1, 2),
    (1, (17,), 5, 2, "same", 2, 1),
    (3, (5, 6, 7), 3, 1, 1, 1, 1),
    (3, (5, 6, 7), (2, 3, 3), (1, 2, 1), [[1, 0], [1, 1], [2, 1]], (2, 1, 1), 2),
]


def dw_spec(rank, k, s, p, d, m, mode="zeros", value=0.0, **extra):
    spec = {"op": f"depthwise_conv{rank}d", "in_channels": 3, "depth_multiplier": m,
            "kernel_size": k, "stride": s, "padding": p, "dilation": d,
            "padding_mode": mode, "padding_value": value}
    spec.update(extra)
    return spec


@pytest.mark.parametrize("case", DW_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_matches_torch(torch, rng, case, dtype):
    rank, spatial, k, s, p, d, m = case
    for mode in ("zeros", "reflect", "replicate", "circular", "constant"):
        value = 1.5 if mode == "constant" else 0.0
        conv = pyconv.Conv(dw_spec(rank, k, s, p, d, m, mode, value), seed=1)
        x = rng.standard_normal((2, 3, *spatial)).astype(dtype)
        y = conv.apply(x)
        sp = conv.spec
        pads = explicit_pads(sp["padding"], spatial, sp["kernel_size"], sp["stride"],
                             sp["dilation"])
        if mode == "reflect" and any(max(pr) >= n for pr, n in zip(pads, spatial)):
            continue  # torch refuses reflect pads as wide as the input
        xt = torch_padded(torch, x, pads, mode, value)
        ref = torch_conv(torch, rank)(
            xt, torch.tensor(conv.params["weight"].astype(dtype)),
            torch.tensor(conv.params["bias"].astype(dtype)),
            stride=sp["stride"], dilation=sp["dilation"], groups=3).numpy()
        assert y.shape == ref.shape and y.dtype == dtype
        assert_close(y, ref, dtype)


@pytest.mark.parametrize("case", DW_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_depthwise_matches_numpy_loops(rng, case, mode):
    rank, spatial, k, s, p, d, m = case
    value = -0.75 if mode == "constant" else 0.0
    conv = pyconv.Conv(dw_spec(rank, k, s, p, d, m, mode, value, activation="relu"),
                       seed=2, dtype=np.float64)
    x = rng.standard_normal((2, 3, *spatial))
    sp = conv.spec
    pads = explicit_pads(sp["padding"], spatial, sp["kernel_size"], sp["stride"],
                         sp["dilation"])
    ref = refdw.depthwise_nd(x, conv.params["weight"], conv.params["bias"], sp["stride"],
                             pads, sp["dilation"], m, mode, value)
    assert_close(conv.apply(x), np.maximum(ref, 0), np.float64)


def test_depthwise_wide_padding_all_modes(rng):
    # Padding wider than the input repeats the pattern (as np.pad), every row is edge.
    for mode in MODES:
        spec = dw_spec(2, 3, 1, [[4, 5], [3, 2]], 1, 1, mode, 0.5 if mode == "constant"
                       else 0.0)
        conv = pyconv.Conv(spec, seed=3, dtype=np.float64)
        x = rng.standard_normal((1, 3, 2, 3))
        ref = refdw.depthwise_nd(x, conv.params["weight"], conv.params["bias"], [1, 1],
                                 [(4, 5), (3, 2)], [1, 1], 1, mode, spec["padding_value"])
        assert_close(conv.apply(x), ref, np.float64)


def test_depthwise_no_bias_and_channel_order(rng):
    # Output channel c*m + j reads input channel c only.
    conv = pyconv.Conv({"op": "depthwise_conv2d", "in_channels": 2, "depth_multiplier": 3,
                        "kernel_size": 1, "bias": False},
                       params={"weight": np.arange(1, 7, dtype=float).reshape(6, 1, 1, 1)})
    x = np.stack([np.ones((2, 2)), 10 * np.ones((2, 2))])[None]
    y = conv.apply(x)
    assert conv.param_shapes == {"weight": (6, 1, 1, 1)}
    np.testing.assert_array_equal(y[0, :, 0, 0], [1, 2, 3, 40, 50, 60])


# -- shape rule ---------------------------------------------------------------------------
def random_window_spec(r, rank, op):
    k = [int(v) for v in r.integers(1, 5, rank)]
    s = [int(v) for v in r.integers(1, 4, rank)]
    d = [int(v) for v in r.integers(1, 3, rank)]
    choice = r.integers(0, 4)
    if choice == 0:
        p = r.choice(["valid", "same", "same_lower"]).item()
    elif choice == 1:
        p = int(r.integers(0, 3))
    else:
        p = [[int(a), int(b)] for a, b in r.integers(0, 4, (rank, 2))]
    mode = r.choice(["zeros", "constant", "replicate", "circular", "symmetric"]).item()
    spec = {"op": f"{op}{rank}d", "in_channels": int(r.integers(1, 4)),
            "kernel_size": k, "stride": s, "dilation": d, "padding": p,
            "padding_mode": mode, "depth_multiplier": int(r.integers(1, 3))}
    if op == "separable_conv":
        spec["out_channels"] = int(r.integers(1, 5))
        spec["bias"] = r.choice(["pointwise", "both", "none"]).item()
    return spec


@pytest.mark.parametrize("op", ["depthwise_conv", "separable_conv"])
def test_shape_rule_matches_output_over_random_configs(op):
    r = np.random.default_rng(1234)
    checked = 0
    for _ in range(300):
        rank = int(r.integers(1, 4))
        spec = random_window_spec(r, rank, op)
        conv = pyconv.Conv(spec, seed=0)
        shape = (int(r.integers(1, 3)), spec["in_channels"],
                 *[int(v) for v in r.integers(1, 9, rank)])
        try:
            expected = conv.output_shape(shape)
        except ValueError as e:
            assert "too small" in str(e)
            with pytest.raises(ValueError, match="too small"):
                conv.apply(np.zeros(shape))
            continue
        x = r.standard_normal(shape)
        y = conv.apply(x)
        assert y.shape == expected
        sp = conv.spec
        pads = explicit_pads(sp["padding"], shape[2:], sp["kernel_size"], sp["stride"],
                             sp["dilation"])
        if op == "depthwise_conv":
            ref = refdw.depthwise_nd(x, conv.params["weight"], conv.params["bias"],
                                     sp["stride"], pads, sp["dilation"],
                                     sp["depth_multiplier"], sp["padding_mode"])
        else:
            ref = refdw.separable_nd(x, conv.params, sp["stride"], pads, sp["dilation"],
                                     sp["depth_multiplier"], sp["padding_mode"])
        assert ref.shape == expected
        assert_close(y, ref, np.float32)
        checked += 1
    assert checked > 150


# -- pointwise ----------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 1), (1, 2), (3, 4)])
def test_pointwise_matches_torch_and_numpy(torch, rng, rank, stride, groups):
    spec = {"op": f"pointwise_conv{rank}d", "in_channels": 8, "out_channels": 12,
            "stride": stride, "groups": groups}
    conv = pyconv.Conv(spec, seed=4, dtype=np.float64)
    x = rng.standard_normal((2, 8, *[7, 6, 5][:rank]))
    y = conv.apply(x)
    assert conv.param_shapes["weight"] == (12, 8 // groups) + (1,) * rank
    ref = torch_conv(torch, rank)(torch.from_numpy(x), torch.tensor(conv.params["weight"]),
                                  torch.tensor(conv.params["bias"]), stride=stride,
                                  groups=groups).numpy()
    assert_close(y, ref, np.float64)
    assert_close(y, refdw.pointwise_nd(x, conv.params["weight"], conv.params["bias"],
                                       [stride] * rank, groups), np.float64)
    relu = pyconv.Conv(dict(spec, activation="relu", bias=False), seed=4)
    x32 = x.astype(np.float32)
    ref = refdw.pointwise_nd(x32, relu.params["weight"], None, [stride] * rank, groups)
    assert_close(relu.apply(x32), np.maximum(ref, 0), np.float32)
    assert conv.macs(x.shape) == int(np.prod(y.shape)) * (8 // groups)


# -- separable ----------------------------------------------------------------------------
def test_textbook_parameter_counts():
    base = {"op": "separable_conv2d", "in_channels": 32, "out_channels": 64,
            "kernel_size": 3}
    assert pyconv.Conv(dict(base, bias="none")).param_count == 288 + 2048 == 2336
    assert pyconv.Conv(base).param_count == 2400  # default: Keras, one pointwise bias
    assert pyconv.Conv(dict(base, bias="both")).param_count == 2432
    assert pyconv.Conv({"op": "conv2d", "in_channels": 32, "out_channels": 64,
                        "kernel_size": 3, "bias": False}).param_count == 18432
    both = pyconv.Conv(dict(base, bias="both"))
    assert both.param_shapes == {"depthwise_weight": (32, 1, 3, 3),
                                 "depthwise_bias": (32,),
                                 "pointwise_weight": (64, 32, 1, 1),
                                 "pointwise_bias": (64,)}
    assert "pointwise_bias" not in pyconv.Conv(dict(base, bias="none")).param_shapes
    assert pyconv.Conv(base).spec["bias"] == "pointwise"


@pytest.mark.parametrize("bias", ["pointwise", "both", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_separable_matches_two_torch_convs(torch, rng, bias, dtype):
    F = torch.nn.functional
    for rank, spatial, m, act in [(2, (11, 9), 2, None), (1, (20,), 1, "relu"),
                                  (3, (4, 5, 6), 1, "relu")]:
        spec = {"op": f"separable_conv{rank}d", "in_channels": 4, "out_channels": 5,
                "depth_multiplier": m, "kernel_size": 3, "stride": 2, "padding": "same",
                "padding_mode": "reflect", "bias": bias, "activation": act}
        conv = pyconv.Conv(spec, seed=5, dtype=dtype)
        x = rng.standard_normal((2, 4, *spatial)).astype(dtype)
        sp = conv.spec
        pads = explicit_pads(sp["padding"], spatial, sp["kernel_size"], sp["stride"],
                             sp["dilation"])
        p = {k: torch.tensor(v) for k, v in conv.params.items()}
        f = torch_conv(torch, rank)
        mid = f(torch_padded(torch, x, pads, "reflect", 0.0), p["depthwise_weight"],
                p.get("depthwise_bias"), stride=2, groups=4)
        ref = f(mid, p["pointwise_weight"], p.get("pointwise_bias"))
        if act == "relu":
            ref = F.relu(ref)
        assert_close(conv.apply(x), ref.numpy(), dtype)


def test_separable_many_bands_and_band_boundaries(rng, monkeypatch):
    # A tiny band budget forces one output row per band: bands must tile exactly.
    monkeypatch.setattr(dwmod, "BAND_BYTES", 64)
    spec = {"op": "separable_conv2d", "in_channels": 3, "out_channels": 4,
            "depth_multiplier": 2, "kernel_size": 3, "padding": 1, "bias": "both",
            "padding_mode": "symmetric"}
    conv = pyconv.Conv(spec, seed=6, dtype=np.float64)
    x = rng.standard_normal((3, 3, 13, 10))
    ref = refdw.separable_nd(x, conv.params, [1, 1], [(1, 1), (1, 1)], [1, 1], 2,
                             "symmetric")
    for n in (1, 2):
        assert_close(conv.apply(x, n_threads=n), ref, np.float64)


@pytest.mark.parametrize("level", ["avx2", "baseline"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_separable_pointwise_on_either_gemm(rng, monkeypatch, level, dtype):
    # The pointwise step runs on the packed tiles (AVX2 build: weights packed in
    # blocks of k_block channels, here forced to 64 so that 150 channels take three
    # blocks; 7 output channels leave a partial panel of rows, bands of 13 and 26
    # columns partial panels of columns) or on BLAS (baseline build). Both kernels
    # (multiplier 1: the row kernel; 2: the padded-row kernel); any thread count
    # gives the same bits.
    from pyconv import _kernels
    from pyconv.ops import conv as convmod

    monkeypatch.setattr(_kernels, "LEVEL", level)
    monkeypatch.setattr(convmod, "PACKED_WEIGHT_BLOCK_BYTES", 1)
    packed = dwmod._pointwise_packed(np.zeros((7, 150), dtype), dtype, 1)
    assert (packed[1] == 64) if level == "avx2" else packed == ()
    for c_in, m in ((150, 1), (75, 2)):
        spec = {"op": "separable_conv2d", "in_channels": c_in, "out_channels": 7,
                "depth_multiplier": m, "kernel_size": 3, "padding": 1,
                "activation": "relu"}
        conv = pyconv.Conv(spec, seed=2, dtype=dtype)
        x = rng.standard_normal((2, c_in, 6, 13)).astype(dtype)
        ref = refdw.separable_nd(x.astype(np.float64),
                                 {k: v.astype(np.float64) for k, v in conv.params.items()},
                                 [1, 1], [(1, 1), (1, 1)], [1, 1], m)
        y = conv.apply(x, n_threads=1)
        assert_close(y, np.maximum(ref, 0), dtype)
        np.testing.assert_array_equal(conv.apply(x, n_threads=3), y)


@pytest.mark.parametrize("ksize,stride", [(3, 2), (5, 1), (5, 2), (7, 1)])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "constant"])
def test_separable_depthwise_step_on_the_plane_kernel(rng, monkeypatch, ksize, stride,
                                                      mode):
    # 2-D 5x5 and 7x7, and 3x3 at stride 2: the depthwise step of each band runs on
    # the plane kernel (its row table sliced at the band), any multiplier; bands of
    # one and of several rows, against the float64 loops; any thread count, the
    # same bits; on either build (pointwise on the packed tiles or on BLAS).
    from pyconv import _kernels
    for level, band_bytes, m in (("avx2", 64, 1), ("avx2", dwmod.BAND_BYTES, 2),
                                 ("avx2", 3000, 1), ("baseline", 3000, 2)):
        monkeypatch.setattr(_kernels, "LEVEL", level)
        monkeypatch.setattr(dwmod, "BAND_BYTES", band_bytes)
        spec = {"op": "separable_conv2d", "in_channels": 3, "out_channels": 5,
                "depth_multiplier": m, "kernel_size": ksize, "stride": stride,
                "padding": ksize // 2, "padding_mode": mode, "bias": "both",
                "activation": "relu"}
        if mode == "constant":
            spec["padding_value"] = 0.5
        conv = pyconv.Conv(spec, seed=4, dtype=np.float64)
        x = rng.standard_normal((2, 3, 11, 19))
        _, pads, out = conv.op.geometry(conv.spec, x.shape)
        assert dwmod._plan((11, 19), conv.spec, pads, out).plane_conv is not None
        ref = refdw.separable_nd(x, conv.params, [stride] * 2, [(ksize // 2,) * 2] * 2,
                                 [1, 1], m, mode, spec.get("padding_value", 0.0))
        y = conv.apply(x, n_threads=1)
        assert_close(y, np.maximum(ref, 0), np.float64)
        np.testing.assert_array_equal(conv.apply(x, n_threads=3), y)


def _separable_kernel_call():
    """The depthwise kernel module, the plan of a 4 -> 6 3x3 separable layer on one 5x5
    image, and the kernels' leading arguments for it (float64)."""
    from pyconv import _kernels
    conv = pyconv.Conv({"op": "separable_conv2d", "in_channels": 4, "out_channels": 6,
                        "kernel_size": 3, "padding": 1}, seed=0, dtype=np.float64)
    x = np.zeros((1, 4, 5, 5))
    _, pads, out = conv.op.geometry(conv.spec, x.shape)
    p = conv.params
    head = (x.reshape(1, 4, -1), p["depthwise_weight"].reshape(4, -1), np.zeros(1),
            p["pointwise_weight"].reshape(6, 4), p["pointwise_bias"], np.zeros((1, 6, 25)))
    return _kernels.load("_depthwise"), dwmod._plan((5, 5), conv.spec, pads, out), head


def test_separable_plane_refuses_inconsistent_arguments():
    kernel, plan, head = _separable_kernel_call()
    rowidx, colidx, lo_w, stride, ksize = plan.plane_conv
    values, pointers = kernel.plane_conv_workspace(5, 5, 5, False, 8, 1, 3)
    geometry = (rowidx, colidx, 5, 5, 5, 5, lo_w)
    tail = (0.0, False, True, False, 5)
    work = np.zeros((1, 4 * 25 + values))
    row_work = np.zeros((1, pointers), np.intp)
    kernel.separable_plane(*head, *geometry, 1, 3, *tail, work, row_work, 1)  # runs
    with pytest.raises(ValueError, match="separable_plane: inconsistent"):
        kernel.separable_plane(*head, *geometry, 1, 3, *tail, work[:, :-1], row_work, 1)
    with pytest.raises(ValueError, match="separable_plane: inconsistent"):
        kernel.separable_plane(*head, *geometry, 2, 3, *tail, work, row_work, 1)
    with pytest.raises(ValueError, match="separable_plane: rows_per_band"):
        kernel.separable_plane(*head, *geometry, 1, 4, *tail, work, row_work, 1)


def test_separable_refuses_a_short_packed_weight_or_panel():
    kernel, plan, head = _separable_kernel_call()
    args = (*head, *plan.row_kernel_args(), 1, 0.0, False, True, False, 5,
            np.zeros((1, 4 * 25)), 1)
    packed = np.zeros(8 * 4)  # two panels of 4 rows, 4 channels
    kernel.separable_rows(*args, packed, 4, np.zeros((1, 4 * 12)))  # enough: runs
    for bad in ((packed[:-1], 4, np.zeros((1, 48))), (packed, 0, np.zeros((1, 48))),
                (packed, 4, np.zeros((1, 47))), (packed, 4, None)):
        with pytest.raises(ValueError, match="separable_rows: packed pointwise weight"):
            kernel.separable_rows(*args, *bad)


def test_separable_macs_and_formulas():
    conv = pyconv.Conv({"op": "separable_conv2d", "in_channels": 32, "out_channels": 64,
                        "kernel_size": 3, "padding": 1})
    assert conv.macs((2, 32, 10, 10)) == 2 * 100 * (32 * 9 + 64 * 32)
    assert conv.flops((2, 32, 10, 10)) == 2 * conv.macs((2, 32, 10, 10))
    for name in ("depthwise_conv2d", "pointwise_conv2d", "separable_conv2d"):
        op = pyconv.get_op(name)
        assert set(op.formulas) >= {"output", "params", "macs", "flops"} and op.summary


# -- grouped direct kernel ----------------------------------------------------------------
GROUPED = [
    # rank, C_in, C_out, groups, spatial, k, stride, padding, dilation, mode
    (2, 8, 16, 4, (9, 10), 3, 1, 1, 1, "zeros"),
    (2, 12, 6, 3, (9, 10), 3, 2, 1, 1, "reflect"),
    (2, 16, 16, 2, (8, 7), 3, 1, 2, 2, "circular"),
    (2, 6, 12, 6, (7, 9), 5, 1, 2, 1, "replicate"),
    (2, 8, 8, 1, (6, 6), (1, 3), (2, 1), (0, 1), 1, "zeros"),
    (1, 8, 4, 2, (15,), 3, 1, 1, 1, "zeros"),
    (3, 4, 8, 2, (4, 5, 6), 3, 1, 1, 1, "replicate"),
    # rows a whole number of vectors past the widest blocks (narrower blocks follow)
    # or not (the last widest block overlaps), for 4, 2 and 1 output channels a block
    (2, 16, 16, 2, (5, 24), 3, 1, 1, 1, "zeros"),
    (2, 6, 6, 2, (4, 28), 3, 1, 1, 1, "reflect"),
]


@pytest.mark.parametrize("case", GROUPED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grouped_direct_matches_torch(torch, rng, case, dtype):
    rank, cin, cout, g, spatial, k, s, p, d, mode = case
    conv = pyconv.Conv({"op": f"conv{rank}d", "in_channels": cin, "out_channels": cout,
                        "groups": g, "kernel_size": k, "stride": s, "padding": p,
                        "dilation": d, "padding_mode": mode}, seed=7, dtype=dtype)
    sp, op = conv.spec, conv.op
    x = rng.standard_normal((2, cin, *spatial)).astype(dtype)
    _, pads, out_spatial = op.geometry(sp, x.shape)
    out = np.full(conv.output_shape(x.shape), np.nan, dtype)
    y = dwmod.grouped_direct_forward(op.name, x, conv.params["weight"],
                                     conv.params["bias"], out, sp, pads, out_spatial, 2)
    assert y is out
    ref = torch_conv(torch, rank)(
        torch_padded(torch, x, pads, mode, 0.0), torch.tensor(conv.params["weight"]),
        torch.tensor(conv.params["bias"]), stride=sp["stride"],
        dilation=sp["dilation"], groups=g).numpy()
    assert_close(y, ref, dtype)
    assert_close(y, conv.apply(x), dtype)  # agrees with the im2col + GEMM path
    relu_spec = dict(sp, activation="relu")
    y2 = dwmod.grouped_direct_forward(op.name, x, conv.params["weight"], None,
                                      np.empty_like(out), relu_spec, pads, out_spatial, 1)
    ref2 = ref_conv_nd(x, conv.params["weight"], None, sp["stride"], pads,
                       sp["dilation"], g, mode)
    assert_close(y2, np.maximum(ref2, 0), dtype)


def test_grouped_direct_splits_rows_when_planes_are_few(rng, monkeypatch):
    # One image, one output channel, two threads: the plane is split into row tiles.
    from pyconv import _threads

    monkeypatch.setattr(_threads, "SERIAL_WORK_FLOPS", 0)
    conv = pyconv.Conv({"op": "depthwise_conv2d", "in_channels": 1, "kernel_size": 3,
                        "padding": 1}, seed=8, dtype=np.float64)
    x = rng.standard_normal((1, 1, 23, 17))
    ref = refdw.depthwise_nd(x, conv.params["weight"], conv.params["bias"], [1, 1],
                             [(1, 1), (1, 1)], [1, 1], 1)
    for n in (1, 2, 3):
        assert_close(conv.apply(x, n_threads=n), ref, np.float64)


def test_prefers_direct(monkeypatch):
    def spec(cin, g, cout=None, k=3, s=1):
        return pyconv.Conv({"op": "conv2d", "in_channels": cin,
                            "out_channels": cout or cin, "groups": g,
                            "kernel_size": k, "stride": s}).spec
    assert dwmod.prefers_direct(spec(256, 256), (1, 256, 56, 56))
    assert dwmod.prefers_direct(spec(256, 32), (1, 256, 56, 56))
    assert dwmod.prefers_direct(spec(256, 16), (1, 256, 56, 56))  # 16 per group
    assert not dwmod.prefers_direct(spec(256, 1), (1, 256, 56, 56))
    assert not dwmod.prefers_direct(spec(256, 4), (1, 256, 56, 56))
    assert not dwmod.prefers_direct(spec(8, 8, 256), (1, 8, 56, 56))  # 32 out / group
    assert dwmod.prefers_direct(spec(256, 32, k=1), (1, 256, 56, 56))
    assert not dwmod.prefers_direct(spec(256, 16, k=1), (1, 256, 56, 56))
    # float32 rows narrower than a vector, strided: im2col from 8 channels per group
    narrow = (1, 256, 14, 14)
    assert not dwmod.prefers_direct(spec(256, 32, s=2), narrow, np.float32, 7)
    assert not dwmod.prefers_direct(spec(256, 16, s=2), narrow, np.float32, 7)
    assert dwmod.prefers_direct(spec(256, 64, s=2), narrow, np.float32, 7)   # 4 per group
    assert dwmod.prefers_direct(spec(256, 256, s=2), narrow, np.float32, 7)  # depthwise
    assert dwmod.prefers_direct(spec(256, 32, s=2), narrow, np.float64, 7)
    assert dwmod.prefers_direct(spec(256, 32, s=2), narrow, np.float32, 8)
    # at stride 1 the flat kernel runs along the rows end to end: direct at any width
    assert dwmod.prefers_direct(spec(256, 32), (1, 256, 7, 7), np.float32, 7)
    monkeypatch.setattr(dwmod, "FLAT_KERNEL", False)
    assert not dwmod.prefers_direct(spec(256, 32), (1, 256, 7, 7), np.float32, 7)


def test_narrow_float32_grouped_runs_on_im2col(monkeypatch, rng):
    # "auto" sends a 7-wide float32 output with 16 channels per group to im2col + GEMM
    # (spied on), and the result matches the direct kernel's.
    from pyconv.ops import conv as convmod
    calls = []
    real = convmod.conv_forward
    monkeypatch.setattr(convmod, "conv_forward",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    spec = {"op": "conv2d", "in_channels": 64, "out_channels": 64, "groups": 4,
            "kernel_size": 3, "stride": 2, "padding": 1}
    x = rng.standard_normal((2, 64, 14, 14)).astype(np.float32)
    auto = pyconv.Conv(spec, seed=0)
    direct = pyconv.Conv({**spec, "algorithm": "direct"}, params=auto.params)
    y = auto.apply(x)
    assert calls and y.shape == (2, 64, 7, 7)
    np.testing.assert_allclose(y, direct.apply(x), rtol=1e-5, atol=1e-5)


# Odd widths (vector tails), 1-3 and 5-6 output channels per group (every register
# block), strides 2 and 3, dilation, every padding mode, the constant pad value.
KERNEL_EDGES = [
    # C_in, C_out, groups, (H, W), k, stride, padding, dilation, mode
    (6, 15, 3, (7, 37), 3, 1, 1, 1, "zeros"),
    (4, 12, 2, (6, 19), 3, 2, 1, 1, "reflect"),
    (6, 9, 3, (5, 23), (3, 5), (1, 3), (1, 2), (1, 2), "circular"),
    (3, 6, 3, (9, 3), 3, 2, 1, 1, "replicate"),
    (8, 8, 2, (4, 70), (2, 4), (2, 2), "same", 1, "symmetric"),
    (2, 4, 2, (5, 1), (3, 1), 1, (1, 0), 1, "constant"),
]


@pytest.mark.parametrize("case", KERNEL_EDGES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padded_row_kernel_edges_match_numpy_loops(rng, case, dtype):
    cin, cout, g, spatial, k, s, p, d, mode = case
    spec = {"op": "conv2d", "in_channels": cin, "out_channels": cout, "groups": g,
            "kernel_size": k, "stride": s, "padding": p, "dilation": d,
            "padding_mode": mode, "padding_value": -0.5 if mode == "constant" else 0.0,
            "algorithm": "direct"}
    conv = pyconv.Conv(spec, seed=3, dtype=dtype)
    sp = conv.spec
    x = rng.standard_normal((2, cin, *spatial)).astype(dtype)
    _, pads, _ = conv.op.geometry(sp, x.shape)
    ref = ref_conv_nd(x, conv.params["weight"], conv.params["bias"], sp["stride"], pads,
                      sp["dilation"], g, mode, sp["padding_value"])
    y = conv.apply(x, n_threads=2)
    assert_close(y, ref, dtype)
    assert np.array_equal(y, conv.apply(x, n_threads=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padded_row_kernel_batches_rows_when_scratch_is_small(rng, monkeypatch, dtype):
    # Scratch for 2 padded rows only: the 4*9 rows of an output row go in batches,
    # accumulated through the output (with relu applied after the last batch).
    spec = {"op": "conv2d", "in_channels": 8, "out_channels": 6, "groups": 2,
            "kernel_size": 3, "stride": (1, 2), "padding": 1, "activation": "relu",
            "algorithm": "direct", "padding_mode": "reflect"}
    conv = pyconv.Conv(spec, seed=4, dtype=dtype)
    x = rng.standard_normal((2, 8, 6, 29)).astype(dtype)
    want = conv.apply(x)
    plan = dwmod._plan(x.shape[2:], conv.spec, [(1, 1), (1, 1)], want.shape[2:])
    monkeypatch.setattr(dwmod, "ROW_SCRATCH_BYTES", 2 * plan.QS * x.dtype.itemsize)
    assert plan.scratch(4, x.dtype.itemsize)[:2] == (False, 2)
    got = conv.apply(x, n_threads=2)
    np.testing.assert_array_equal(got, want)  # same order of operations
    ref = ref_conv_nd(x, conv.params["weight"], conv.params["bias"], [1, 2],
                      [(1, 1), (1, 1)], [1, 1], 2, "reflect")
    assert_close(got, np.maximum(ref, 0), dtype)


def test_direct_algorithm_on_a_dense_conv_many_input_channels(rng):
    # algorithm="direct" with groups=1: 40 input channels per group.
    spec = {"op": "conv2d", "in_channels": 40, "out_channels": 5, "kernel_size": 3,
            "padding": 1, "algorithm": "direct"}
    conv = pyconv.Conv(spec, seed=5, dtype=np.float64)
    x = rng.standard_normal((1, 40, 9, 13))
    ref = ref_conv_nd(x, conv.params["weight"], conv.params["bias"], [1, 1],
                      [(1, 1), (1, 1)], [1, 1], 1, "zeros")
    assert_close(conv.apply(x), ref, np.float64)


def test_cached_plans_are_read_only():
    conv = pyconv.Conv(dw_spec(2, 3, 2, 1, 1, 1), seed=0)
    plan = dwmod._plan((9, 11), conv.spec, [(1, 1), (1, 1)], (5, 6))
    assert plan is dwmod._plan((9, 11), conv.spec, [(1, 1), (1, 1)], (5, 6))
    for table in (plan.idx_h, plan.idx_w, plan.jmap, plan.qoff, plan.phase):
        assert not table.flags.writeable


def test_depthwise_large_multiplier_uses_gemm_path_correctly(rng):
    m = dwmod.DIRECT_MAX_CHANNELS_PER_GROUP + 4
    conv = pyconv.Conv(dw_spec(2, 3, 2, "same", 1, m, "reflect"), seed=12,
                       dtype=np.float64)
    x = rng.standard_normal((2, 3, 9, 8))
    pads = explicit_pads("same", (9, 8), [3, 3], [2, 2], [1, 1])
    ref = refdw.depthwise_nd(x, conv.params["weight"], conv.params["bias"], [2, 2], pads,
                             [1, 1], m, "reflect")
    assert_close(conv.apply(x), ref, np.float64)


# -- threads, layouts, dtypes, empty batches ----------------------------------------------
def all_ops_for_threads():
    return [
        {"op": "depthwise_conv2d", "in_channels": 16, "depth_multiplier": 2,
         "kernel_size": 3, "padding": 1},
        {"op": "depthwise_conv3d", "in_channels": 4, "kernel_size": 3, "stride": 2,
         "padding": "same", "padding_mode": "reflect"},
        {"op": "separable_conv2d", "in_channels": 16, "out_channels": 24,
         "kernel_size": 5, "padding": 2, "bias": "both"},
        {"op": "pointwise_conv2d", "in_channels": 16, "out_channels": 24},
    ]


@pytest.mark.parametrize("spec", all_ops_for_threads())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_counts_are_bit_identical(rng, spec, dtype):
    conv = pyconv.Conv(spec, seed=9, dtype=dtype)
    rank = int(spec["op"][-2])
    x = rng.standard_normal((3, spec["in_channels"], *[40, 36, 12][:rank])).astype(dtype)
    y1 = conv.apply(x, n_threads=1)
    y2 = conv.apply(x, n_threads=2)
    assert np.array_equal(y1, y2)


def test_grouped_direct_thread_counts_bit_identical(rng):
    conv = pyconv.Conv({"op": "conv2d", "in_channels": 16, "out_channels": 32,
                        "groups": 4, "kernel_size": 3, "padding": 1}, seed=10)
    x = rng.standard_normal((2, 16, 40, 40)).astype(np.float32)
    _, pads, osp = conv.op.geometry(conv.spec, x.shape)
    outs = [dwmod.grouped_direct_forward("conv2d", x, conv.params["weight"],
                                         conv.params["bias"], np.empty((2, 32, 40, 40),
                                                                       np.float32),
                                         conv.spec, pads, osp, n) for n in (1, 2)]
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.parametrize("spec", all_ops_for_threads())
def test_strided_readonly_fortran_inputs_unchanged(rng, spec):
    conv = pyconv.Conv(spec, seed=11, dtype=np.float64)
    rank = int(spec["op"][-2])
    base = rng.standard_normal((2, spec["in_channels"], *[18, 14, 10][:rank]))
    expected = conv.apply(np.ascontiguousarray(base))
    big = np.zeros((4,) + base.shape[1:-1] + (2 * base.shape[-1],))
    big[::2, ..., ::2] = base
    strided = big[::2, ..., ::2]
    strided.flags.writeable = False
    fortran = np.asfortranarray(base)
    snapshot = big.copy()
    for arr in (strided, fortran):
        np.testing.assert_array_equal(conv.apply(arr), expected)
    np.testing.assert_array_equal(big, snapshot)


@pytest.mark.parametrize("spec", all_ops_for_threads())
def test_empty_batch(spec):
    conv = pyconv.Conv(spec, seed=0)
    rank = int(spec["op"][-2])
    x = np.zeros((0, spec["in_channels"], *[9, 8, 7][:rank]), np.float32)
    y = conv.apply(x)
    assert y.shape == conv.output_shape(x.shape) and y.shape[0] == 0


def test_dtype_rule_and_out(rng):
    conv = pyconv.Conv({"op": "depthwise_conv2d", "in_channels": 2, "kernel_size": 3},
                       seed=0)
    x = rng.integers(-3, 4, (1, 2, 6, 6))
    assert conv.apply(x.astype(np.int16)).dtype == np.float32
    assert conv.apply(x.astype(np.int64)).dtype == np.float64
    assert conv.apply(x.astype(np.float64)).dtype == np.float64
    out = np.empty((1, 2, 4, 4), np.float32)
    assert conv.apply(x.astype(np.float32), out=out) is out
    with pytest.raises(TypeError):
        conv.apply(x.astype(np.complex64))


def test_init_matches_pytorch_bounds():
    conv = pyconv.Conv({"op": "separable_conv2d", "in_channels": 8, "out_channels": 16,
                        "depth_multiplier": 2, "kernel_size": 5, "bias": "both"}, seed=0)
    p = conv.params
    assert np.abs(p["depthwise_weight"]).max() <= 1 / 5 and p["depthwise_weight"].std() > 0
    assert np.abs(p["depthwise_bias"]).max() <= 1 / 5
    assert np.abs(p["pointwise_weight"]).max() <= 1 / 4
    assert np.abs(p["pointwise_bias"]).max() <= 1 / 4
    again = pyconv.Conv(conv.spec, seed=0)
    assert all(np.array_equal(p[k], again.params[k]) for k in p)
    assert pyconv.Conv(json.loads(json.dumps(conv.spec))) == conv


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,key", [
    ({"op": "depthwise_conv2d", "in_channels": 4, "kernel_size": 3,
      "depth_multiplier": 0}, "depth_multiplier"),
    ({"op": "depthwise_conv2d", "in_channels": 0, "kernel_size": 3}, "in_channels"),
    ({"op": "depthwise_conv2d", "in_channels": 4, "kernel_size": 0}, "kernel_size"),
    ({"op": "depthwise_conv2d", "in_channels": 4, "kernel_size": 3,
      "padding": "full"}, "padding"),
    ({"op": "depthwise_conv2d", "in_channels": 4, "kernel_size": 3,
      "padding_value": 1.0}, "padding_value"),
    ({"op": "depthwise_conv1d", "in_channels": 4, "kernel_size": 3,
      "padding_mode": "mirror"}, "padding_mode"),
    ({"op": "depthwise_conv2d", "in_channels": 4, "kernel_size": 3,
      "activation": "tanh"}, "activation"),
    ({"op": "depthwise_conv2d", "in_channels": 4, "kernel_size": 3,
      "groups": 4}, "groups"),
    ({"op": "separable_conv2d", "in_channels": 4, "out_channels": 8, "kernel_size": 3,
      "bias": True}, "bias"),
    ({"op": "separable_conv2d", "in_channels": 4, "out_channels": 8, "kernel_size": 3,
      "depth_multiplier": -1}, "depth_multiplier"),
    ({"op": "separable_conv3d", "in_channels": 4, "kernel_size": 3}, "out_channels"),
    ({"op": "pointwise_conv2d", "in_channels": 6, "out_channels": 8, "groups": 4},
     "groups"),
    ({"op": "pointwise_conv2d", "in_channels": 6, "out_channels": 8, "stride": 0},
     "stride"),
])
def test_bad_specs_raise_spec_error(spec, key):
    with pytest.raises(pyconv.SpecError) as info:
        pyconv.Conv(spec)
    assert key in str(info.value) and spec["op"] in str(info.value)


def test_bad_inputs_raise_clear_errors():
    conv = pyconv.Conv({"op": "depthwise_conv2d", "in_channels": 4, "kernel_size": 5},
                       seed=0)
    with pytest.raises(ValueError, match="depthwise_conv2d: expected 4 input channels"):
        conv.apply(np.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match="4-D input"):
        conv.apply(np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="too small"):
        conv.apply(np.zeros((1, 4, 3, 8)))
    sep = pyconv.Conv({"op": "separable_conv1d", "in_channels": 2, "out_channels": 3,
                       "kernel_size": 3}, seed=0)
    with pytest.raises(ValueError, match="depthwise_weight"):
        pyconv.Conv(sep.spec, params={"depthwise_weight": np.zeros((2, 1, 2))})
    with pytest.raises(ValueError, match="unknown parameter"):
        pyconv.Conv(sep.spec, params={"depthwise_bias": np.zeros(2)})


@pytest.mark.parametrize("ksize", [3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plane_conv_kernel_every_padding(rng, monkeypatch, mode, dtype, stream, stride, ksize):
    # The plane kernel, 3x3, 5x5 and 7x7, at stride 1 and 2 (shapes too small for the
    # kernel skipped): every mode, uneven pads (wider than the input
    # where the mode allows), odd and even heights, rows narrower than a vector, a
    # whole number of vectors wide or not (the last strip overlaps), rows wide enough
    # for strips read in place between edge strips read from padded copies (padding
    # rows from the row of pad values), a channel multiplier, bias, fused ReLU,
    # outputs written in place or streamed (each band's copy finished during the
    # next band, at any alignment); banding and thread count change nothing.
    from pyconv import _threads

    monkeypatch.setattr(_threads, "SERIAL_WORK_FLOPS", 0)
    monkeypatch.setattr(dwmod, "STREAM_MIN_BYTES", 0 if stream else 1 << 62)
    wide = mode not in ("reflect",)
    for spatial, pads in [((7, 9), [[1, 1], [1, 1]]), ((6, 5), [[0, 2], [2, 0]]),
                          ((5, 19), [[1, 1], [0, 1]]), ((4, 14), [[1, 0], [1, 1]]),
                          ((3, 2), [[3, 1], [2, 4]] if wide else [[2, 1], [1, 1]]),
                          ((1, 1), [[1, 1], [1, 1]] if wide else [[0, 0], [0, 0]]),
                          ((5, 41), [[1, 1], [1, 1]]), ((4, 37), [[2, 1], [1, 2]]),
                          # left and right padding wider than an edge strip's block
                          ((6, 30), [[1, 2], [13, 12]]),
                          # stride 2: strips read 2 vectors + 2 columns, odd and even
                          # widths and heights, rows of 1 to 3 output vectors
                          ((9, 56), [[1, 1], [1, 1]]), ((8, 57), [[0, 1], [0, 1]]),
                          ((5, 35), [[1, 1], [2, 1]]), ((7, 16), [[1, 0], [1, 0]])]:
        if ksize > 3 and any(n + lo + hi < ksize for n, (lo, hi) in zip(spatial, pads)):
            continue
        for mult, relu in ((1, False), (2, True)):
            spec = {"op": "depthwise_conv2d", "in_channels": 3, "kernel_size": ksize,
                    "depth_multiplier": mult, "padding": pads, "padding_mode": mode,
                    "activation": "relu" if relu else None, "stride": stride}
            if mode == "constant":
                spec["padding_value"] = -0.75
            if spatial == (1, 1) and not wide:
                spec["kernel_size"] = 1  # reflect cannot pad a 1-pixel axis
            conv = pyconv.Conv(spec, seed=3, dtype=dtype)
            x = rng.standard_normal((2, 3, *spatial)).astype(dtype)
            x[1, 2, 0, 0] = np.nan if relu else x[1, 2, 0, 0]
            _, geometry_pads, out = conv.op.geometry(conv.spec, x.shape)
            plan = dwmod._plan(spatial, conv.spec, geometry_pads, out)
            assert (plan.plane_conv is not None) == (spec["kernel_size"] == ksize)
            y = conv.apply(x, n_threads=1)
            ref = ref_conv_nd(x.astype(np.float64), conv.params["weight"].astype(np.float64),
                              conv.params["bias"].astype(np.float64), (stride, stride),
                              pads, (1, 1), 3, mode, spec.get("padding_value", 0.0))
            if relu:
                ref = np.where(ref < 0, 0, ref)  # NaN stays NaN
            np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
            ok = ~np.isnan(ref)
            assert_close(y[ok], ref[ok], dtype)
            for n in (2, 3, 5):  # fewer planes than threads: planes split into bands
                np.testing.assert_array_equal(y[:1], conv.apply(x[:1], n_threads=n))
                np.testing.assert_array_equal(y, conv.apply(x, n_threads=n))


@pytest.mark.parametrize("ksize", [3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plane_conv_same_bits_streamed_or_not_per_build(rng, monkeypatch, dtype, stride,
                                                        ksize):
    # Vector strips (8 or 4 lanes on AVX2, 4 or 2 on the baseline build; at stride 2
    # split into even and odd lanes, in a permuted lane order on AVX2), streamed or
    # in place, on 1 or 2 threads: one arithmetic per build, so the same bits. The
    # AVX2 build forms each kernel row's sum with FMA, the baseline build multiplies
    # and adds: both within rounding of the float64 loop.
    from pyconv import _kernels
    conv = pyconv.Conv({"op": "depthwise_conv2d", "in_channels": 5, "kernel_size": ksize,
                        "padding": ksize // 2, "activation": "relu", "stride": stride},
                       seed=1, dtype=dtype)
    x = rng.standard_normal((3, 5, 17, 37)).astype(dtype)
    ref = ref_conv_nd(x.astype(np.float64), conv.params["weight"].astype(np.float64),
                      conv.params["bias"].astype(np.float64), (stride, stride),
                      [[ksize // 2] * 2] * 2, (1, 1), 5, "zeros", 0.0)
    for level in ("avx2", "baseline"):
        monkeypatch.setattr(_kernels, "LEVEL", level)
        runs = []
        for stream in (0, 1 << 62):
            monkeypatch.setattr(dwmod, "STREAM_MIN_BYTES", stream)
            runs += [conv.apply(x, n_threads=n) for n in (1, 2)]
        for y in runs[1:]:
            np.testing.assert_array_equal(y, runs[0])
        assert_close(runs[0], np.maximum(ref, 0), dtype)


@pytest.mark.parametrize("ksize", [3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plane_conv_strips_read_in_place_stop_at_the_input_end(rng, guarded_array, dtype,
                                                            stride, ksize):
    # Strips read their input rows in place only where every value they load lies in
    # the row: the input ends at an unreadable page, every width up to 4 vectors.
    for W in range(ksize, 36):
        for pad in (0, ksize // 2):
            x = guarded_array((1, 2, ksize + 2, W), dtype)
            x[...] = rng.standard_normal(x.shape)
            conv = pyconv.Conv({"op": "depthwise_conv2d", "in_channels": 2,
                                "kernel_size": ksize, "stride": stride, "padding": pad},
                               seed=0, dtype=dtype)
            ref = ref_conv_nd(x.astype(np.float64), conv.params["weight"].astype(np.float64),
                              conv.params["bias"].astype(np.float64), (stride, stride),
                              [[pad, pad]] * 2, (1, 1), 2, "zeros", 0.0)
            assert_close(conv.apply(x, n_threads=1), ref, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plane_conv_kernel_refuses_short_workspace(dtype):
    from pyconv import _kernels
    kernel = _kernels.load("_depthwise")
    N, C, H, W = 1, 2, 4, 20
    x = np.zeros((N, C, H * W), dtype)
    out = np.zeros((N, C, H * W), dtype)
    rowidx = np.arange(-1, H + 1, dtype=np.intp)
    rowidx[-1] = -1
    colidx = np.arange(-1, W + 1, dtype=np.intp)
    colidx[-1] = -1
    values, pointers = kernel.plane_conv_workspace(H, W, W, True, np.dtype(dtype).itemsize)
    args = (x, np.zeros((C, 9), dtype), np.zeros(C, dtype), out, rowidx, colidx, H, W, H, W,
            1, dtype(0), True, False, H, True)
    work, row_work = np.zeros((1, values), dtype), np.zeros((1, pointers), np.intp)
    kernel.plane_conv(*args, work, row_work, 1)  # enough: runs
    for short in (np.zeros((1, values - 1), dtype), work[:, :0]):
        with pytest.raises(ValueError, match="plane_conv"):
            kernel.plane_conv(*args, short, row_work, 1)
    with pytest.raises(ValueError, match="plane_conv"):
        kernel.plane_conv(*args, work, np.zeros((1, pointers - 1), np.intp), 1)
    with pytest.raises(ValueError, match="plane_conv"):
        kernel.plane_conv(*args, work, row_work, 2)  # one workspace row for two threads
    with pytest.raises(ValueError, match="band"):
        kernel.plane_conv(*args[:-2], 0, True, work, row_work, 1)
    with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
        kernel.plane_conv(*args, work, row_work, 1, 3)
    with pytest.raises(ValueError, match="ksize must be 3, 5 or 7, got 4"):
        kernel.plane_conv(*args, work, row_work, 1, 1, 4)
    with pytest.raises(ValueError, match="plane_conv"):  # 9 weights per channel, not 25
        kernel.plane_conv(*args, work, row_work, 1, 1, 5)
    # stride 2 reads more rows and columns per band: the stride-1 tables and
    # workspace are too short for it
    with pytest.raises(ValueError, match="plane_conv"):
        kernel.plane_conv(*args, work, row_work, 1, 2)
    need = kernel.plane_conv_workspace(H, W, W, True, np.dtype(dtype).itemsize, 2)
    assert need[0] > values and need[1] > pointers


def test_plane_conv_kernel_is_the_path_taken():
    conv = pyconv.Conv({"op": "depthwise_conv2d", "in_channels": 4, "kernel_size": 3,
                        "padding": 1})
    _, pads, out = conv.op.geometry(conv.spec, (1, 4, 8, 8))
    assert dwmod._plan((8, 8), conv.spec, pads, out).plane_conv is not None
    strided = pyconv.Conv({**conv.spec, "stride": 2})
    _, pads, out = strided.op.geometry(strided.spec, (1, 4, 8, 8))
    assert dwmod._plan((8, 8), strided.spec, pads, out).plane_conv[3] == 2
    wide = pyconv.Conv({**conv.spec, "kernel_size": 7, "padding": 3})
    _, pads, out = wide.op.geometry(wide.spec, (1, 4, 8, 8))
    assert dwmod._plan((8, 8), wide.spec, pads, out).plane_conv[3:] == (1, 7)
    for other in ({"stride": 3}, {"stride": [1, 2]}, {"dilation": 2},
                  {"kernel_size": [3, 5], "padding": 1}, {"kernel_size": 4}):
        spec = pyconv.Conv({**conv.spec, **other}).spec
        _, pads, out = conv.op.geometry(spec, (1, 4, 8, 8))
        assert dwmod._plan((8, 8), spec, pads, out).plane_conv is None


@pytest.mark.parametrize("op,groups", [("depthwise_conv3d", None), ("conv3d", 2)])
@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_depth_one_3d_with_depth_padding_is_not_the_2d_plane_kernel(rng, op, groups, mode):
    # A (1, 3, 3) kernel on one input slice with depth padding has several output
    # slices: the 2-D plane kernel must not take it (it would fill only one).
    spec = {"op": op, "in_channels": 2, "kernel_size": [1, 3, 3], "padding": [1, 1, 1],
            "padding_mode": mode}
    if groups:
        spec.update(out_channels=2, groups=groups)
    conv = pyconv.Conv({**spec, "algorithm": "direct"} if groups else spec, seed=0)
    x = rng.standard_normal((1, 2, 1, 5, 6))
    y = conv.apply(x)
    assert y.shape == (1, 2, 3, 5, 6)
    _, pads, _ = conv.op.geometry(conv.spec, x.shape)
    ref = ref_conv_nd(x, conv.params["weight"], conv.params["bias"], (1, 1, 1), pads,
                      (1, 1, 1), 2, mode)
    assert_close(y, ref, np.float64)


@pytest.mark.parametrize("level", ["avx2", "baseline"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grouped_register_blocks_on_either_build(rng, monkeypatch, level, dtype):
    # The direct grouped kernel's register blocks (4, 2 and 1 output channels; 1 to 4
    # vectors, a 3-vector block first on rows of an odd number of vectors, scalar
    # edge columns): FMA in the AVX2 build, a multiply and an add in the baseline
    # build; both within rounding of the float64 loop, whatever the thread count.
    from pyconv import _kernels
    monkeypatch.setattr(_kernels, "LEVEL", level)
    for c_in, c_out, groups, width in [(16, 16, 2, 56), (16, 8, 4, 61), (6, 6, 3, 29),
                                       (8, 4, 4, 24), (4, 4, 1, 7)]:
        spec = {"op": "conv2d", "in_channels": c_in, "out_channels": c_out,
                "kernel_size": 3, "padding": 1, "groups": groups, "activation": "relu"}
        conv = pyconv.Conv(spec, seed=2, dtype=dtype)
        x = rng.standard_normal((2, c_in, 5, width)).astype(dtype)
        assert dwmod.prefers_direct(conv.spec, x.shape)
        y = conv.apply(x, n_threads=1)
        ref = ref_conv_nd(x.astype(np.float64), conv.params["weight"].astype(np.float64),
                          conv.params["bias"].astype(np.float64), (1, 1), [[1, 1], [1, 1]],
                          (1, 1), groups)
        assert_close(y, np.maximum(ref, 0), dtype)
        np.testing.assert_array_equal(y, conv.apply(x, n_threads=2))


_GUARDED = r"""
import ctypes, mmap, sys
import numpy as np
import pyconv
dtype, width, mode = np.dtype(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
k, stride = (int(v) for v in sys.argv[5:7]) if len(sys.argv) > 5 else (3, 1)
page = mmap.PAGESIZE
libc = ctypes.CDLL(None)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
buf = mmap.mmap(-1, 3 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
start = ctypes.addressof(ctypes.c_char.from_buffer(buf))
# the pages on either side of the input: no access
assert libc.mprotect(start, page, 0) == 0 and libc.mprotect(start + 2 * page, page, 0) == 0
n = page // dtype.itemsize
x = np.frombuffer(buf, dtype=dtype, count=n, offset=page).reshape(1, 1, n // width, width)
x[...] = np.random.default_rng(5).standard_normal(x.shape)
conv = pyconv.Conv({"op": "depthwise_conv2d", "in_channels": 1, "kernel_size": k,
                    "stride": stride, "padding": k // 2, "padding_mode": mode}, seed=5,
                   dtype=dtype)
np.save(sys.argv[4], conv.apply(x))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes: Linux")
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("dtype,width", [(np.float32, 128), (np.float64, 64),
                                         (np.float32, 16), (np.float64, 8)])
def test_plane_conv_edge_strips_read_only_the_input(tmp_path, mode, dtype, width):
    # The edge strips of a 3x3 stride-1 layer read their rows in place, the lane one
    # column past them replaced by the padding's value: on the input's first and
    # last rows that column lies outside the array, so the first and last planes
    # take padded copies. Here the array fills one page between two pages that may
    # not be read (a read there kills the process: with that exception removed,
    # every case does), and the result still matches the float64 loop.
    out = tmp_path / "y.npy"
    run = subprocess.run([sys.executable, "-c", _GUARDED, np.dtype(dtype).name, str(width),
                          mode, str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = mmap.PAGESIZE // np.dtype(dtype).itemsize // width
    x = np.random.default_rng(5).standard_normal((1, 1, rows, width)).astype(dtype)
    conv = pyconv.Conv({"op": "depthwise_conv2d", "in_channels": 1, "kernel_size": 3,
                        "padding": 1, "padding_mode": mode}, seed=5, dtype=dtype)
    _, pads, out_spatial = conv.op.geometry(conv.spec, x.shape)
    assert dwmod._plan(x.shape[2:], conv.spec, pads, out_spatial).plane_conv is not None
    ref = ref_conv_nd(x.astype(np.float64), conv.params["weight"].astype(np.float64),
                      conv.params["bias"].astype(np.float64), (1, 1), [[1, 1], [1, 1]],
                      (1, 1), 1, mode)
    assert_close(np.load(out), ref, dtype)


def _avx512_build_cases():
    """(spec, input shape) over every route of the depthwise module and Winograd."""
    cases = []
    for rank, spatial, k, s, p, d, m in DW_CASES:
        cases.append((dw_spec(rank, k, s, p, d, m, mode="reflect"), (2, 3, *spatial)))
    for rank, cin, cout, g, spatial, k, s, p, d, mode in GROUPED:
        cases.append(({"op": f"conv{rank}d", "in_channels": cin, "out_channels": cout,
                       "groups": g, "kernel_size": k, "stride": s, "padding": p,
                       "dilation": d, "padding_mode": mode, "algorithm": "direct"},
                      (2, cin, *spatial)))
    for cin, cout, g, hw, k, s, p, d, mode in KERNEL_EDGES:
        cases.append(({"op": "conv2d", "in_channels": cin, "out_channels": cout,
                       "groups": g, "kernel_size": k, "stride": s, "padding": p,
                       "dilation": d, "padding_mode": mode, "algorithm": "direct"},
                      (2, cin, *hw)))
    # the plane kernel: 3x3, 5x5, 7x7 at stride 1 and 2, rows of 1 to 3 vectors
    for i, (k, s, width) in enumerate([(3, 1, 61), (3, 2, 70), (5, 1, 33), (5, 2, 47),
                                       (7, 1, 29), (7, 2, 100), (3, 1, 16), (5, 1, 9)]):
        cases.append((dw_spec(2, k, s, k // 2, 1, 1, mode=MODES[i % len(MODES)],
                              value=0.5 if MODES[i % len(MODES)] == "constant" else 0.0,
                              in_channels=4), (2, 4, 13, width)))
    cases.append(({"op": "separable_conv2d", "in_channels": 8, "out_channels": 12,
                   "kernel_size": 5, "padding": 2, "bias": "both"}, (2, 8, 21, 37)))
    for variant in ("winograd_f2", "winograd_f4"):
        for groups, width in ((1, 45), (4, 58)):
            cases.append(({"op": "conv2d", "in_channels": 8, "out_channels": 8,
                           "groups": groups, "kernel_size": 3, "padding": 1,
                           "padding_mode": "replicate", "algorithm": variant},
                          (3, 8, 19, width)))
    return cases


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avx512_builds_give_the_same_bits(rng, monkeypatch, dtype):
    """The depthwise and Winograd modules' AVX-512 builds (64-byte vectors, the same
    operations in the same order, FMA alike) against their AVX2 builds, and against
    the float64 NumPy loops."""
    import importlib

    from pyconv import _kernels
    if not (_kernels.WIDE_LOOPS and _kernels.active_level("_depthwise") == "avx512"):
        pytest.skip("no AVX-512 on this CPU (or PYCONV_KERNELS=avx2), or no such build")
    avx2 = {}
    for name in _kernels.AVX512_BUILDS:
        avx2[name] = importlib.import_module(f"pyconv._kernels.{name}_avx2")
        avx2[name].set_wide_loops(True)
    # rows narrower than a 512-bit vector go to the AVX2 build
    assert dwmod._kernels_for(15, 4) is dwmod._kernels_for(7, 8) is avx2["_depthwise"]
    assert dwmod._kernels_for(16, 4).__name__.endswith("_avx512")
    key = (_kernels.LEVEL, _kernels.WIDE_LOOPS)
    for spec, shape in _avx512_build_cases():
        conv = pyconv.Conv(spec, seed=3, dtype=dtype)
        x = rng.standard_normal(shape).astype(dtype)
        wide = conv.apply(x)
        with monkeypatch.context() as patch:
            for name, module in avx2.items():
                patch.setitem(_kernels._loaded, (name, *key), module)
            assert _kernels.active_level("_depthwise") == "avx2"
            narrow = conv.apply(x)
        assert wide.tobytes() == narrow.tobytes(), spec
        if "weight" in conv.params:
            rank = len(shape) - 2
            _, pads, _ = conv.op.geometry(conv.spec, shape)
            ref = ref_conv_nd(x.astype(np.float64), conv.params["weight"].astype(np.float64),
                              conv.params["bias"].astype(np.float64),
                              tuple(conv.spec["stride"]), pads,
                              tuple(conv.spec["dilation"]),
                              conv.spec.get("groups", conv.spec["in_channels"]),
                              conv.spec["padding_mode"], conv.spec["padding_value"])
            assert_close(wide, ref, dtype), (spec, rank)


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes: Linux")
@pytest.mark.parametrize("ksize,stride", [(3, 2), (5, 1), (5, 2), (7, 1), (7, 2)])
@pytest.mark.parametrize("dtype,width", [(np.float32, 16), (np.float64, 8),
                                         (np.float32, 32)])
def test_plane_conv_strips_read_only_the_input(tmp_path, ksize, stride, dtype, width):
    # The other plane-kernel strips, between no-access pages as above: rows of one
    # and two vectors of either build (16 float32 values are one AVX-512 vector), the
    # stride-2 strips reading pairs of vectors one column past their taps.
    out = tmp_path / "y.npy"
    run = subprocess.run([sys.executable, "-c", _GUARDED, np.dtype(dtype).name, str(width),
                          "zeros", str(out), str(ksize), str(stride)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = mmap.PAGESIZE // np.dtype(dtype).itemsize // width
    x = np.random.default_rng(5).standard_normal((1, 1, rows, width)).astype(dtype)
    conv = pyconv.Conv({"op": "depthwise_conv2d", "in_channels": 1, "kernel_size": ksize,
                        "stride": stride, "padding": ksize // 2}, seed=5, dtype=dtype)
    pad = ksize // 2
    ref = ref_conv_nd(x.astype(np.float64), conv.params["weight"].astype(np.float64),
                      conv.params["bias"].astype(np.float64), (stride, stride),
                      [[pad, pad], [pad, pad]], (1, 1), 1)
    assert_close(np.load(out), ref, dtype)


def _spy_flat(monkeypatch):
    """Record each call of the flat kernel (its n_threads argument); the real one."""
    from pyconv import _kernels
    kernels = _kernels.load("_depthwise")
    calls = []
    real = kernels.grouped_flat
    monkeypatch.setattr(kernels, "grouped_flat",
                        lambda *a, **kw: calls.append(a[-1]) or real(*a, **kw))
    return calls, real


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flat_kernel_matches_padded_rows_and_numpy_loops(rng, monkeypatch, dtype):
    """1-D and 2-D layers at stride 1 on the flat kernel (padded rows end to end,
    spied on): the same bits as the padded-row kernel, whose sums run in the same
    order, and within rounding of the float64 loops; over random layers with every
    padding mode, dilation, 1-15 output channels per group (the 8-, 4-, 2- and
    1-channel blocks), widths from 1 to past two block widths, bands of 1, 2, 3 rows
    or the whole plane, outputs stored by the blocks (where the build has masked
    vector stores), streamed or copied from the scratch, 1 and 3 threads (the
    serial-work thresholds off, so that small layers do run threaded)."""
    from pyconv import _threads
    calls, _ = _spy_flat(monkeypatch)
    monkeypatch.setattr(_threads, "SERIAL_WORK_FLOPS", 0)
    monkeypatch.setattr(_threads, "SERIAL_WORK_BYTES", 0)
    modes = ["zeros", "constant", "reflect", "replicate", "circular", "symmetric"]
    r = np.random.default_rng(7)
    checked = 0
    for i in range(48):
        rank = 1 + i % 2
        cin_g, cout_g = int(r.integers(2, 6)), int(r.integers(1, 16))
        groups = int(r.integers(1, 3))
        k = [int(v) for v in r.integers(1, 6, rank)]
        d = [int(v) for v in r.integers(1, 4, rank)]
        spatial = [int(r.integers(1, 12)) for _ in range(rank - 1)]
        spatial.append(int(r.integers(1, 110)))
        mode = modes[i % len(modes)]
        # padding up to the window's reach, within what reflect/circular allow
        pad = [int(r.integers(0, min((kk - 1) * dd, n - 1) + 1)) if n > 1 else 0
               for kk, dd, n in zip(k, d, spatial)]
        spec = {"op": f"conv{rank}d", "in_channels": cin_g * groups,
                "out_channels": cout_g * groups, "groups": groups, "kernel_size": k,
                "dilation": d, "padding": pad, "padding_mode": mode,
                "padding_value": -0.75 if mode == "constant" else 0.0,
                "activation": "relu" if i % 3 == 0 else None, "algorithm": "direct",
                "bias": i % 4 != 1}
        conv = pyconv.Conv(spec, seed=i, dtype=dtype)
        x = rng.standard_normal((2, cin_g * groups, *spatial)).astype(dtype)
        try:
            _, pads, out_spatial = conv.op.geometry(conv.spec, x.shape)
        except ValueError:
            continue  # window larger than the padded input
        plan = dwmod._plan(x.shape[2:], conv.spec, pads, out_spatial)
        assert plan.flat is not None
        band = (1, 2, 3, 10 ** 6)[(i // 2) % 4]
        KH, dh, Wp = plan.k[1], plan.flat[1], plan.Wp
        with monkeypatch.context() as patch:
            patch.setattr(dwmod, "FLAT_BAND_BYTES",
                          min(band + (KH - 1) * dh, 1 << 20) * cin_g * Wp * dtype().itemsize)
            write = ("direct", "stream", "scratch")[(i // 4) % 3]
            patch.setattr(dwmod, "FLAT_DIRECT_WRITES", write == "direct")
            patch.setattr(dwmod, "STREAM_MIN_BYTES", 0 if write == "stream" else 1 << 40)
            calls.clear()
            flat = [conv.apply(x, n_threads=n) for n in (1, 3)]
            assert calls[0] == 1 and calls[1] >= 2, spec   # the kernel's n_threads
            patch.setattr(dwmod, "FLAT_KERNEL", False)
            rows = conv.apply(x, n_threads=1)
        assert flat[0].tobytes() == flat[1].tobytes() == rows.tobytes(), spec
        ref = ref_conv_nd(x.astype(np.float64), conv.params["weight"].astype(np.float64),
                          conv.params["bias"].astype(np.float64) if spec["bias"] else None,
                          (1,) * rank, pads, d, groups, mode, spec["padding_value"])
        if spec["activation"]:
            ref = np.maximum(ref, 0)
        assert_close(flat[0], ref, dtype)
        checked += 1
    assert checked >= 36


def test_flat_kernel_leaves_long_rows_to_the_padded_row_kernel(rng, monkeypatch):
    # A 1-D layer whose one-row band would exceed FLAT_MAX_BYTES runs on the
    # padded-row kernel (bounded scratch): the same bits, either way.
    calls, real = _spy_flat(monkeypatch)
    conv = pyconv.Conv({"op": "conv1d", "in_channels": 16, "out_channels": 16,
                        "groups": 2, "kernel_size": 5, "padding": 2,
                        "padding_mode": "reflect"}, seed=1)
    x = rng.standard_normal((1, 16, 3000)).astype(np.float32)
    flat = conv.apply(x)
    assert calls
    # 8 input rows (KH = 1) and two scratches of 8 channels, 3004 padded columns
    monkeypatch.setattr(dwmod, "FLAT_MAX_BYTES", (8 + 2 * 8) * 3004 * 4 - 1)
    calls.clear()
    rows = conv.apply(x)
    assert not calls and rows.tobytes() == flat.tobytes()


def test_flat_kernel_is_the_path_taken_and_refuses_bad_geometry(rng, monkeypatch):
    # "auto" sends 8 channels per group at stride 1 to the flat kernel (spied on),
    # not to Winograd; the kernel checks its geometry and workspace itself.
    calls, real = _spy_flat(monkeypatch)
    conv = pyconv.Conv({"op": "conv2d", "in_channels": 64, "out_channels": 64,
                        "groups": 8, "kernel_size": 3, "padding": 1}, seed=0)
    x = rng.standard_normal((2, 64, 12, 20)).astype(np.float32)
    conv.apply(x)
    assert calls
    plan = dwmod._plan((12, 20), conv.spec, [(1, 1), (1, 1)], (12, 20))
    hmap, dh = plan.flat
    w = conv.params["weight"].reshape(64, -1)
    out = np.empty((2, 64, 240), np.float32)
    from pyconv import _kernels
    # bands of 4 rows, cin_g = cout_g = 8, 3x3, Wp = 22, float32
    values, ints = _kernels.load("_depthwise").flat_workspace(8, 8, 4, 3, 1, 22, 4)
    args = (x.reshape(2, 64, -1), w, conv.params["bias"], out, *plan.args(False, 1),
            hmap, dh, 8, 0.0, True, False, 4, False)
    with pytest.raises(ValueError, match="workspace too small"):
        real(*args, np.empty((1, values - 1), np.float32), np.empty((1, ints), np.intp), 1)
    with pytest.raises(ValueError, match="not a 2-D stride-1 geometry"):
        real(*args[:10], hmap[:5], *args[11:], np.empty((1, values), np.float32),
             np.empty((1, ints), np.intp), 1)
    short = (*args[:3], np.empty((2, 64, 239), np.float32), *args[4:])
    with pytest.raises(ValueError, match="do not match the geometry"):
        real(*short, np.empty((1, values), np.float32), np.empty((1, ints), np.intp), 1)
    streamed = (*args[:-1], True)
    with pytest.raises(ValueError, match="direct and stream exclude each other"):
        real(*streamed, np.empty((1, values), np.float32), np.empty((1, ints), np.intp), 1,
             True)
    real(*args, np.empty((1, values), np.float32), np.empty((1, ints), np.intp), 1)
    np.testing.assert_array_equal(out.reshape(2, 64, 12, 20), conv.apply(x))
    # writing the output directly needs no output scratch
    direct, _ = _kernels.load("_depthwise").flat_workspace(8, 8, 4, 3, 1, 22, 4, False,
                                                           True)
    assert direct < values
    out[:] = np.nan
    real(*args, np.empty((1, direct), np.float32), np.empty((1, ints), np.intp), 1, True)
    np.testing.assert_array_equal(out.reshape(2, 64, 12, 20), conv.apply(x))


def test_flat_kernel_takes_2d_groups_of_8_from_winograd_only():
    # 2-D 3x3 stride 1 with 8 channels per group: the flat kernel, not Winograd F4;
    # 16 per group, and conv3d's stacked Winograd at 8 per group, keep Winograd.
    def route(op, c, groups, k, shape):
        conv = pyconv.Conv({"op": op, "in_channels": c, "out_channels": c,
                            "groups": groups, "kernel_size": k, "padding": "same"})
        _, pads, out_spatial = conv.op.geometry(conv.spec, shape)
        return conv.op._route(conv.spec, shape, pads, out_spatial, np.dtype(np.float32))
    assert route("conv2d", 256, 32, 3, (8, 256, 56, 56)) == (None, False, True)
    assert route("conv2d", 256, 16, 3, (8, 256, 56, 56))[0] == "F4"
    assert route("conv3d", 64, 8, (1, 3, 3), (2, 64, 8, 28, 28))[0] == "F4"
