"""Pooling ops: shape rules, values and indices against PyTorch and NumPy loops."""
import math

import numpy as np
import pytest

import pyconv
import reference_pooling as ref

MAX_MODES = ("neg_inf", "zeros", "constant", "reflect", "symmetric", "replicate",
             "circular")
AVG_MODES = ("zeros", "constant", "reflect", "symmetric", "replicate", "circular")


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def F(torch):
    return torch.nn.functional


def run(spec, x, **kw):
    return pyconv.Conv(spec).apply(x, **kw)


# -- shape rule -------------------------------------------------------------------------
@pytest.mark.parametrize("length,k,s,p,ceil,expected", [
    (32, 1, 2, 0, True, 16),   # SEMANTICS.md checks
    (9, 4, 4, 2, True, 3),
    (5, 2, 2, 1, False, 3),
    (5, 2, 2, 1, True, 3),     # a 4th window would start in the right padding
    (6, 3, 2, 1, True, 4),     # the last window starts on the last element
    (1, 3, 3, 0, True, 1),     # ceil mode accepts an input shorter than the kernel
])
def test_semantics_length_checks(length, k, s, p, ceil, expected):
    for op in ("max_pool1d", "avg_pool1d"):
        spec = {"op": op, "kernel_size": k, "stride": s, "padding": p, "ceil_mode": ceil}
        conv = pyconv.Conv(spec)
        assert conv.output_shape((2, 3, length)) == (2, 3, expected)
        assert run(spec, np.ones((2, 3, length))).shape == (2, 3, expected)


def _random_pool_config(rng, family, rank):
    while True:
        k = [int(v) for v in rng.integers(1, 4, rank)]
        s = [int(v) for v in rng.integers(1, 4, rank)]
        d = [int(v) for v in rng.integers(1, 3, rank)] if family == "max" else [1] * rank
        ceil = bool(rng.random() < 0.6)
        spatial = [int(v) for v in rng.integers(1, 8, rank)]
        if family == "lp":
            pads = [(0, 0)] * rank
            pad_spec = None
        elif rng.random() < 0.15:
            pad_spec = "same"
            pads = [_same(n, kk, ss, dd) for n, kk, ss, dd in zip(spatial, k, s, d)]
        else:
            pads = [(int(rng.integers(0, (dd * (kk - 1) + 1) // 2 + 1)),
                     int(rng.integers(0, (dd * (kk - 1) + 1) // 2 + 1)))
                    for kk, dd in zip(k, d)]
            pad_spec = pads
        outs = [ref.out_length(n, kk, ss, dd, lo, hi, ceil)
                for n, kk, ss, dd, (lo, hi) in zip(spatial, k, s, d, pads)]
        if all(o is not None for o in outs):
            return k, s, d, ceil, spatial, pads, pad_spec, tuple(outs)


def _same(length, k, s, d):
    out = -(-length // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - length, 0)
    return (total // 2, total - total // 2)


@pytest.mark.parametrize("family", ["max", "avg", "lp"])
def test_random_configs_shape_and_values_vs_numpy(family, rng):
    """Shape rule == output shape == reference, values == float64 loops (300 configs)."""
    n_configs = {"max": 120, "avg": 120, "lp": 60}[family]
    for _ in range(n_configs):
        rank = int(rng.integers(1, 4))
        k, s, d, ceil, spatial, pads, pad_spec, outs = _random_pool_config(rng, family,
                                                                            rank)
        x = rng.standard_normal((1, 2, *spatial))
        spec = {"op": f"{family}_pool{rank}d", "kernel_size": k, "stride": s,
                "ceil_mode": ceil}
        if family == "lp":
            p = float(rng.choice([1.0, 2.0, 3.0, 0.7, np.inf]))
            spec["norm_type"] = p
            if p not in (1.0, np.inf) and p != int(p) or p == 3.0:
                x = np.abs(x)  # keep powers real; negative sums give NaN in both
            expected = ref.lp_pool(x, p, k, s, ceil)
        else:
            spec["padding"] = pad_spec
            modes = MAX_MODES if family == "max" else AVG_MODES
            mode = str(rng.choice(modes))
            value = float(rng.standard_normal()) if mode == "constant" else 0.0
            spec.update(padding_mode=mode, padding_value=value)
            if family == "max":
                spec.update(dilation=d, return_indices=True)
                expected = ref.max_pool(x, k, s, d, pads, ceil, mode, value)
            else:
                cip = bool(rng.random() < 0.5) if mode == "zeros" else True
                over = int(rng.integers(1, 5)) if rng.random() < 0.2 else None
                spec.update(count_include_pad=cip, divisor_override=over)
                expected = ref.avg_pool(x, k, s, pads, ceil, cip, over, mode, value)
        conv = pyconv.Conv(spec)
        assert conv.output_shape(x.shape) == (1, 2, *outs), spec
        got = conv.apply(x)
        if family == "max":
            assert got[0].shape == got[1].shape == (1, 2, *outs), spec
            np.testing.assert_array_equal(got[0], expected[0], err_msg=str(spec))
            np.testing.assert_array_equal(got[1], expected[1], err_msg=str(spec))
            assert got[1].dtype == np.int64
            # the values path (separable kernel) agrees with the indices path
            spec["return_indices"] = False
            np.testing.assert_array_equal(run(spec, x), expected[0], err_msg=str(spec))
        else:
            assert got.shape == (1, 2, *outs), spec
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12,
                                       err_msg=str(spec))


# -- against PyTorch ------------------------------------------------------------------------
def _torch_pool_config(rng, family, rank):
    """Configs PyTorch accepts: symmetric padding <= k // 2."""
    while True:
        k = [int(v) for v in rng.integers(1, 5, rank)]
        s = [int(v) for v in rng.integers(1, 4, rank)]
        d = [int(v) for v in rng.integers(1, 3, rank)] if family == "max" else [1] * rank
        p = [int(rng.integers(0, kk // 2 + 1)) for kk in k] if family != "lp" else [0] * rank
        ceil = bool(rng.random() < 0.6)
        spatial = [int(v) for v in rng.integers(1, 10, rank)]
        outs = [ref.out_length(n, kk, ss, dd, pp, pp, ceil)
                for n, kk, ss, dd, pp in zip(spatial, k, s, d, p)]
        if all(o is not None for o in outs):
            return k, s, d, p, ceil, spatial


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_matches_torch(torch, rng, dtype):
    for _ in range(60):
        rank = int(rng.integers(1, 4))
        k, s, d, p, ceil, spatial = _torch_pool_config(rng, "max", rank)
        x = rng.standard_normal((2, 3, *spatial)).astype(dtype)
        x[rng.random(x.shape) < 0.1] = 0.5  # ties
        fn = getattr(F(torch), f"max_pool{rank}d")
        tv, ti = fn(torch.from_numpy(x), k, s, p, d, ceil_mode=ceil, return_indices=True)
        spec = {"op": f"max_pool{rank}d", "kernel_size": k, "stride": s, "padding": p,
                "dilation": d, "ceil_mode": ceil, "return_indices": True}
        v, i = run(spec, x)
        assert v.dtype == dtype
        np.testing.assert_array_equal(v, tv.numpy(), err_msg=str(spec))
        # A window of padding only (dilation) has value -inf; PyTorch then reports an
        # index past the window, pyconv -1.
        empty = i == -1
        assert (v[empty] == -np.inf).all()
        np.testing.assert_array_equal(i[~empty], ti.numpy()[~empty], err_msg=str(spec))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_pool_matches_torch(torch, rng, dtype):
    tol = 1e-6 if dtype == np.float32 else 1e-12
    compared = 0
    for _ in range(60):
        rank = int(rng.integers(1, 4))
        k, s, _, p, ceil, spatial = _torch_pool_config(rng, "avg", rank)
        cip = bool(rng.random() < 0.5)
        over = int(rng.integers(1, 6)) if (rng.random() < 0.3 and rank > 1) else None
        x = rng.standard_normal((2, 3, *spatial)).astype(dtype)
        fn = getattr(F(torch), f"avg_pool{rank}d")
        kw = {"divisor_override": over} if rank > 1 else {}
        try:
            expected = fn(torch.from_numpy(x), k, s, p, ceil_mode=ceil,
                          count_include_pad=cip, **kw).numpy()
        except RuntimeError as e:  # avg_pool3d refuses inputs smaller than the kernel
            assert "smaller than kernel" in str(e)
            continue
        compared += 1
        spec = {"op": f"avg_pool{rank}d", "kernel_size": k, "stride": s, "padding": p,
                "ceil_mode": ceil, "count_include_pad": cip, "divisor_override": over}
        got = run(spec, x)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol, err_msg=str(spec))
    assert compared >= 45


def test_avg_divisor_check():
    spec = {"op": "avg_pool2d", "kernel_size": 2, "stride": 3, "ceil_mode": True}
    got = run(spec, np.arange(49.0).reshape(1, 1, 7, 7))
    np.testing.assert_array_equal(got[0, 0], [[4, 7, 9.5], [25, 28, 30.5],
                                             [42.5, 45.5, 48]])
    got32 = run(spec, np.arange(49, dtype=np.float32).reshape(1, 1, 7, 7))
    np.testing.assert_array_equal(got32, got.astype(np.float32))


def test_avg_divisor_override_1d():
    x = np.arange(6.0).reshape(1, 1, 6)
    got = run({"op": "avg_pool1d", "kernel_size": 3, "divisor_override": 2}, x)
    np.testing.assert_array_equal(got, [[[1.5, 6.0]]])
    got = run({"op": "avg_pool1d", "kernel_size": 3, "divisor_override": -1}, x)
    np.testing.assert_array_equal(got, [[[-3.0, -12.0]]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lp_pool_matches_torch(torch, rng, dtype):
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for _ in range(40):
        rank = int(rng.integers(1, 4))
        k, s, _, _, ceil, spatial = _torch_pool_config(rng, "lp", rank)
        p = float(rng.choice([1.0, 2.0, 3.0, 1.5, np.inf]))
        x = rng.standard_normal((2, 2, *spatial)).astype(dtype)
        fn = getattr(F(torch), f"lp_pool{rank}d")
        kk, ss = (k[0], s[0]) if rank == 1 else (k, s)  # lp_pool1d needs ints
        expected = fn(torch.from_numpy(x), p, kk, ss, ceil_mode=ceil).numpy()
        spec = {"op": f"lp_pool{rank}d", "norm_type": p, "kernel_size": k, "stride": s,
                "ceil_mode": ceil}
        got = run(spec, x)
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol, equal_nan=True,
                                   err_msg=str(spec))
        assert np.array_equal(np.isnan(got), np.isnan(expected)), spec


def test_lp_pool_ceil_scales_partial_window_to_k(torch):
    x = np.array([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
    got = run({"op": "lp_pool1d", "norm_type": 2.0, "kernel_size": 2, "ceil_mode": True},
              x)
    np.testing.assert_allclose(got, [[[math.sqrt(5), 5.0, math.sqrt(50)]]], rtol=1e-15)
    inf = run({"op": "lp_pool1d", "norm_type": float("inf"), "kernel_size": 2},
              np.array([[[0.5, 0.2, -3.0, 1.0]]]))
    np.testing.assert_array_equal(inf, [[[0.5, 3.0]]])


# -- NaN, infinities ------------------------------------------------------------------
def test_nan_propagates_and_last_nan_index_wins(torch):
    x = np.array([[[np.nan, 1.0, np.nan, 2.0, 0.0, 5.0]]])
    spec = {"op": "max_pool1d", "kernel_size": 4, "stride": 2, "return_indices": True}
    v, i = run(spec, x)
    tv, ti = F(torch).max_pool1d(torch.from_numpy(x), 4, 2, return_indices=True)
    assert np.isnan(v).all()
    np.testing.assert_array_equal(i, ti.numpy())
    np.testing.assert_array_equal(i, [[[2, 2]]])
    spec["return_indices"] = False
    assert np.isnan(run(spec, x)).all()
    x2 = np.ones((1, 1, 5, 5), dtype=np.float32)
    x2[0, 0, 2, 3] = np.nan
    for op in ("max_pool2d", "adaptive_max_pool2d", "global_max_pool"):
        spec = ({"op": op, "kernel_size": 3, "stride": 2} if op == "max_pool2d" else
                {"op": op, "output_size": 2} if op.startswith("adaptive") else {"op": op})
        got = run(spec, x2)
        assert np.isnan(got).any(), op
        if op != "global_max_pool":
            assert not np.isnan(got).all(), op  # only the windows holding the NaN


def test_negative_infinity_inputs(torch):
    x = np.full((1, 1, 4, 4), -np.inf)
    x[0, 0, 3, 3] = 1.0
    spec = {"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1,
            "return_indices": True}
    v, i = run(spec, x)
    tv, ti = F(torch).max_pool2d(torch.from_numpy(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(v, tv.numpy())
    np.testing.assert_array_equal(i, ti.numpy())
    assert v[0, 0, 0, 0] == -np.inf and i[0, 0, 0, 0] == 0
    spec["return_indices"] = False
    np.testing.assert_array_equal(run(spec, x), tv.numpy())


def test_all_padding_window_gives_neg_inf_and_minus_one():
    # dilation 5 with padding 3: the first window's taps are -3 and 2, both outside
    spec = {"op": "max_pool1d", "kernel_size": 2, "stride": 5, "dilation": 5,
            "padding": 3, "return_indices": True}
    v, i = run(spec, np.array([[[1.0, 2.0]]]))
    assert v.shape == (1, 1, 1) and v[0, 0, 0] == -np.inf and i[0, 0, 0] == -1


# -- padding modes ------------------------------------------------------------------------
def test_padding_modes_meaning():
    x = np.array([[[1.0, 5.0, 2.0, 3.0]]])
    base = {"op": "max_pool1d", "kernel_size": 3, "stride": 1, "padding": 1,
            "return_indices": True}
    # reflect: 5|1 5 2 3|2 ; the left window's max is x[1] itself and its copy at -1
    v, i = run({**base, "padding_mode": "reflect"}, x)
    np.testing.assert_array_equal(v, [[[5, 5, 5, 3]]])
    np.testing.assert_array_equal(i, [[[1, 1, 1, 3]]])
    # circular: 3|1 5 2 3|1
    v, i = run({**base, "padding_mode": "circular"}, x)
    np.testing.assert_array_equal(v, [[[5, 5, 5, 3]]])
    np.testing.assert_array_equal(i, [[[1, 1, 1, 3]]])
    # symmetric: 1|1 5 2 3|3 with the first maximum winning ties
    v, i = run({**base, "padding_mode": "symmetric", "kernel_size": 2, "stride": 2}, x)
    np.testing.assert_array_equal(v, [[[1, 5, 3]]])
    np.testing.assert_array_equal(i, [[[0, 1, 3]]])
    v, i = run({**base, "padding_mode": "constant", "padding_value": 9.0}, x)
    np.testing.assert_array_equal(v, [[[9, 5, 5, 9]]])
    np.testing.assert_array_equal(i, [[[-1, 1, 1, -1]]])
    avg = run({"op": "avg_pool1d", "kernel_size": 3, "stride": 1, "padding": 1,
               "padding_mode": "replicate"}, x)
    np.testing.assert_allclose(avg, [[[7 / 3, 8 / 3, 10 / 3, 8 / 3]]], rtol=1e-15)


def test_count_include_pad_false_needs_zeros_mode():
    with pytest.raises(pyconv.SpecError, match="count_include_pad"):
        pyconv.Conv({"op": "avg_pool2d", "kernel_size": 3, "padding": 1,
                     "padding_mode": "reflect", "count_include_pad": False})


# -- adaptive and global ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adaptive_matches_torch_and_numpy(torch, rng, dtype):
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for _ in range(40):
        rank = int(rng.integers(1, 4))
        spatial = [int(v) for v in rng.integers(1, 9, rank)]
        out = [int(v) for v in rng.integers(1, 10, rank)]
        keep = [None if rng.random() < 0.2 else o for o in out]
        resolved = [n if o is None else o for n, o in zip(spatial, keep)]
        x = rng.standard_normal((2, 2, *spatial)).astype(dtype)
        x[rng.random(x.shape) < 0.1] = 0.25
        t = torch.from_numpy(x)
        avg = run({"op": f"adaptive_avg_pool{rank}d", "output_size": keep}, x)
        tavg = getattr(F(torch), f"adaptive_avg_pool{rank}d")(t, resolved).numpy()
        np.testing.assert_allclose(avg, tavg, rtol=tol, atol=tol)
        np.testing.assert_allclose(avg, ref.adaptive_pool(x, resolved, "avg"), rtol=tol,
                                   atol=tol)
        v, i = run({"op": f"adaptive_max_pool{rank}d", "output_size": keep,
                    "return_indices": True}, x)
        tv, ti = getattr(F(torch), f"adaptive_max_pool{rank}d")(t, resolved,
                                                               return_indices=True)
        np.testing.assert_array_equal(v, tv.numpy())
        np.testing.assert_array_equal(i, ti.numpy())
        rv, ri = ref.adaptive_pool(x, resolved, "max")
        np.testing.assert_array_equal(i, ri)
        plain = run({"op": f"adaptive_max_pool{rank}d", "output_size": keep}, x)
        np.testing.assert_array_equal(plain, v)


@pytest.mark.parametrize("rank", [1, 2, 3, 4])
def test_global_pools(rng, rank):
    x = rng.standard_normal((2, 3, *([4, 5, 3, 2][:rank])))
    axes = tuple(range(2, 2 + rank))
    g = run({"op": "global_avg_pool"}, x)
    assert g.shape == (2, 3, *([1] * rank))
    np.testing.assert_allclose(g, x.mean(axis=axes, keepdims=True), rtol=1e-12)
    m = run({"op": "global_max_pool", "keepdims": False}, x)
    assert m.shape == (2, 3)
    np.testing.assert_array_equal(m, x.max(axis=axes))
    with pytest.raises(ValueError, match="at least one spatial axis"):
        run({"op": "global_avg_pool"}, np.ones((2, 3)))


# -- unpooling --------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_unpool_matches_torch(torch, rng, rank):
    spatial = (7, 6, 5)[:rank]
    x = rng.standard_normal((2, 3, *spatial))
    v, i = run({"op": f"max_pool{rank}d", "kernel_size": 2, "stride": 2, "padding": 1,
                "return_indices": True}, x)
    spec = {"op": f"max_unpool{rank}d", "kernel_size": 2, "stride": 2, "padding": 1}
    conv = pyconv.Conv(spec)
    fn = getattr(F(torch), f"max_unpool{rank}d")
    got = conv.apply(v, indices=i, output_size=spatial)
    exp = fn(torch.from_numpy(v), torch.from_numpy(i), 2, 2, 1,
             output_size=spatial).numpy()
    assert got.shape == exp.shape == x.shape
    np.testing.assert_array_equal(got, exp)
    np.testing.assert_array_equal(got, ref.max_unpool(v, i, spatial))
    assert conv.apply(v, indices=i, output_size=x.shape).shape == x.shape
    # the default size: the pooled op's input size when the windows tile it
    even = (6, 4, 8)[:rank]
    x = rng.standard_normal((2, 3, *even)).astype(np.float32)
    v, i = run({"op": f"max_pool{rank}d", "kernel_size": 2, "return_indices": True}, x)
    got = pyconv.Conv({"op": f"max_unpool{rank}d", "kernel_size": 2}).apply(v, indices=i)
    exp = fn(torch.from_numpy(v), torch.from_numpy(i), 2).numpy()
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, exp)


def test_unpool_duplicates_last_wins_and_int32_indices():
    x = np.array([[[1.0, 2.0, 3.0]]])
    idx = np.array([[[0, 0, 2]]], dtype=np.int32)
    got = run({"op": "max_unpool1d", "kernel_size": 2}, x, indices=idx)
    np.testing.assert_array_equal(got, [[[2.0, 0.0, 3.0, 0.0, 0.0, 0.0]]])


def test_unpool_bad_indices_raise_before_writing():
    x = np.ones((1, 2, 3))
    conv = pyconv.Conv({"op": "max_unpool1d", "kernel_size": 2})
    out = np.full((1, 2, 6), 7.0)
    good = np.zeros((1, 2, 3), dtype=np.int64)
    cases = [
        (np.array([[[0, 1, 6], [0, 1, 2]]]), ValueError, "out of range"),
        (np.array([[[0, -1, 2], [0, 1, 2]]]), ValueError, "out of range"),
        (np.zeros((1, 2, 4), dtype=np.int64), ValueError, "shape"),
        (good.astype(np.float64), TypeError, "integer"),
        (None, TypeError, "indices"),
    ]
    for idx, exc, match in cases:
        with pytest.raises(exc, match=match):
            conv.apply(x, indices=idx, out=out)
        assert (out == 7.0).all()
    with pytest.raises(ValueError, match="strictly between"):
        conv.apply(x, indices=good, output_size=(8,))
    with pytest.raises(ValueError, match="entries"):
        conv.apply(x, indices=good, output_size=(6, 6))


# -- spec and input errors ---------------------------------------------------------------
@pytest.mark.parametrize("spec,match", [
    ({"op": "max_pool2d", "kernel_size": 3, "padding": 2}, "half the effective kernel"),
    ({"op": "max_pool1d", "kernel_size": 2, "padding": [[0, 2]]}, "half"),
    ({"op": "avg_pool2d", "kernel_size": 0}, "kernel_size"),
    ({"op": "avg_pool2d", "kernel_size": -2}, "kernel_size"),
    ({"op": "max_pool2d", "kernel_size": 2, "stride": 0}, "stride"),
    ({"op": "max_pool2d", "kernel_size": 2, "dilation": 0}, "dilation"),
    ({"op": "avg_pool1d", "kernel_size": 2, "divisor_override": 0}, "divisor_override"),
    ({"op": "lp_pool2d", "norm_type": 0, "kernel_size": 2}, "norm_type"),
    ({"op": "lp_pool2d", "norm_type": float("nan"), "kernel_size": 2}, "norm_type"),
    ({"op": "max_pool1d", "kernel_size": 2, "padding_value": 1.0}, "padding_value"),
    ({"op": "max_pool1d", "kernel_size": 2, "padding_mode": "wrap"}, "padding_mode"),
    ({"op": "adaptive_avg_pool2d", "output_size": 0}, "output_size"),
    ({"op": "adaptive_avg_pool2d", "output_size": [2, 2, 2]}, "output_size"),
    ({"op": "max_pool2d"}, "kernel_size"),
])
def test_bad_specs(spec, match):
    with pytest.raises(pyconv.SpecError, match=match):
        pyconv.Conv(spec)


def test_dilated_padding_limit_uses_effective_kernel():
    # PyTorch checks k // 2 = 1 here; pyconv the effective kernel (5 // 2 = 2)
    spec = {"op": "max_pool1d", "kernel_size": 3, "dilation": 2, "padding": 2}
    assert pyconv.Conv(spec).output_shape((1, 1, 5)) == (1, 1, 2)


def test_bad_inputs():
    with pytest.raises(ValueError, match="smaller than the effective kernel"):
        run({"op": "max_pool2d", "kernel_size": 3}, np.ones((1, 1, 2, 5)))
    with pytest.raises(ValueError, match="4-D input"):
        run({"op": "avg_pool2d", "kernel_size": 2}, np.ones((1, 4, 4)))
    with pytest.raises(ValueError, match="zero-size"):
        run({"op": "avg_pool1d", "kernel_size": 1}, np.ones((1, 1, 0)))
    with pytest.raises(TypeError, match="dtype"):
        run({"op": "avg_pool1d", "kernel_size": 1}, np.ones((1, 1, 3), dtype=complex))
    with pytest.raises(ValueError, match="< 1"):
        pyconv.Conv({"op": "max_unpool1d", "kernel_size": 2, "padding": 1}).output_shape(
            (1, 1, 1))


# -- vectorised paths -------------------------------------------------------------------
def _hard_data(rng, shape, dtype):
    """Few distinct values (many ties), signed zeros, NaN and infinities."""
    x = rng.integers(-3, 4, size=shape).astype(dtype)
    u = rng.random(shape)
    x[u < 0.15] = -0.0
    x[(u > 0.50) & (u < 0.52)] = np.nan
    x[(u > 0.60) & (u < 0.62)] = -np.inf
    x[(u > 0.70) & (u < 0.71)] = np.inf
    return x


# Rows long enough that 8-wide loops run (the kernels' stride-1 and stride-2 fast
# paths), with a scalar tail and ceil-mode cut windows at the end.
VECTOR_WINDOWS = [(3, 2, 1, False), (3, 2, 1, True), (2, 2, 0, False), (2, 2, 1, True),
                  (3, 1, 1, False), (4, 2, 2, True), (5, 1, 2, False), (3, 2, 0, True)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,s,p,ceil", VECTOR_WINDOWS)
def test_vector_paths_match_reference(rng, dtype, k, s, p, ceil):
    for rank, spatial in ((1, (53,)), (2, (9, 53)), (3, (3, 5, 45))):
        x = _hard_data(rng, (1, 2, *spatial), dtype)
        win = dict(kernel_size=k, stride=s, ceil_mode=ceil)
        pads = [(p, p)] * rank
        ev, ei = ref.max_pool(x, [k] * rank, [s] * rank, [1] * rank, pads, ceil)
        spec = {"op": f"max_pool{rank}d", "padding": p, "return_indices": True, **win}
        v, i = run(spec, x)
        np.testing.assert_array_equal(v, ev, err_msg=str(spec))  # NaN where expected
        np.testing.assert_array_equal(i, ei, err_msg=str(spec))
        spec["return_indices"] = False
        np.testing.assert_array_equal(run(spec, x), ev, err_msg=str(spec))
        spec = {"op": f"avg_pool{rank}d", "padding": p, **win}
        with np.errstate(invalid="ignore"):
            expected = ref.avg_pool(x, [k] * rank, [s] * rank, pads, ceil)
        np.testing.assert_allclose(run(spec, x), expected, rtol=1e-6, err_msg=str(spec))
        if p == 0:
            spec = {"op": f"lp_pool{rank}d", "norm_type": 2.0, **win}
            expected = ref.lp_pool(x, 2.0, [k] * rank, [s] * rank, ceil)
            np.testing.assert_allclose(run(spec, x), expected, rtol=1e-6, err_msg=str(spec))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8])
def test_stride_4_windows_and_rows_read_in_place(rng, dtype, k):
    # Stride 4 runs 8 windows at a time through a 4x4 transpose per 128-bit lane
    # (taps beyond 4 from a second transpose), in tap order; windows one row high
    # without padding read the input row in place, the vector loop stopping where it
    # would read past the row (widths where the last window ends the row or not).
    for width in (32, 33, 35, 53, 4 * k + 28):
        for rank, spatial, kernel in ((1, (width,), k), (2, (3, width), (1, k))):
            x = _hard_data(rng, (2, 3, *spatial), dtype)
            ks = [1] * (rank - 1) + [k]
            for ceil in (False, True):
                win = dict(kernel_size=kernel, stride=[1] * (rank - 1) + [4],
                           ceil_mode=ceil)
                ev, _ = ref.max_pool(x, ks, win["stride"], [1] * rank, [(0, 0)] * rank,
                                     ceil)
                got = run({"op": f"max_pool{rank}d", **win}, x)
                np.testing.assert_array_equal(got, ev, err_msg=f"{win} {width}")
                with np.errstate(invalid="ignore"):
                    expected = ref.avg_pool(x, ks, win["stride"], [(0, 0)] * rank, ceil)
                got = run({"op": f"avg_pool{rank}d", **win}, x)
                np.testing.assert_allclose(got, expected, rtol=1e-6,
                                           err_msg=f"{win} {width}")


@pytest.mark.parametrize("k,s", [(4, 4), (2, 4), (1, 4), (2, 2), (3, 2), (3, 1)])
def test_rows_read_in_place_stop_at_the_input_end(rng, guarded_array, k, s):
    # The vector loops read a few values past their last tap; on a row read in place
    # that would pass the end of the input: the input ends at an unreadable page.
    for width in (s * 15 + k, s * 16 + k + 1, s * 17 + k + 2):
        x = guarded_array((2, 3, width), np.float32)
        x[...] = _hard_data(rng, x.shape, np.float32)
        with np.errstate(invalid="ignore"):
            expected_avg = ref.avg_pool(x, [k], [s], [(0, 0)], False)
        for op, expected in (("max_pool1d", ref.max_pool(x, [k], [s], [1], [(0, 0)],
                                                         False)[0]),
                             ("avg_pool1d", expected_avg)):
            got = run({"op": op, "kernel_size": k, "stride": s}, x)
            np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=f"{op} {width}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_whole_plane_windows_run_on_the_global_kernel(rng, monkeypatch, dtype):
    # A window that is the whole plane (a pool over the full spatial size, adaptive
    # pooling to 1): the global-pool kernel, the same values as the reference (NaN
    # propagates through max); windows that only look like it keep the general
    # kernel (padding, dilation, a cut window, divisor_override, indices).
    from pyconv.ops import pooling

    general = pooling.run_separable
    calls = []
    monkeypatch.setattr(pooling, "run_separable",
                        lambda *a, **k: calls.append(1) or general(*a, **k))
    import pyconv.ops.adaptive as adaptive
    monkeypatch.setattr(adaptive, "run_separable", pooling.run_separable)
    x = rng.standard_normal((3, 5, 7, 6)).astype(dtype)
    x[1, 2, 3, 4] = np.nan
    whole = [({"op": "avg_pool2d", "kernel_size": [7, 6]}, "avg"),
             ({"op": "max_pool2d", "kernel_size": [7, 6], "stride": 3}, "max"),
             ({"op": "adaptive_avg_pool2d", "output_size": 1}, "avg"),
             ({"op": "adaptive_max_pool2d", "output_size": [1, 1]}, "max")]
    for spec, kind in whole:
        with np.errstate(invalid="ignore"):
            expected = (np.mean if kind == "avg" else np.max)(
                x.astype(np.float64), axis=(2, 3), keepdims=True)
        got = run(spec, x)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == np.float32
                                   else 1e-13, err_msg=str(spec))
    assert calls == []
    x = x[:, :, :, :5].copy()  # 7x5
    general_cases = [{"op": "avg_pool2d", "kernel_size": [7, 5], "divisor_override": 3},
                     {"op": "avg_pool2d", "kernel_size": [7, 5], "padding": [0, 1],
                      "count_include_pad": False},
                     {"op": "max_pool2d", "kernel_size": [7, 3], "dilation": [1, 2]},
                     {"op": "max_pool2d", "kernel_size": [6, 5], "stride": 4}]
    for spec in general_cases:
        run(spec, x)
    assert len(calls) == len(general_cases)
    v, i = run({"op": "adaptive_max_pool2d", "output_size": 1, "return_indices": True}, x)
    assert i.shape == (3, 5, 1, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_whole_plane_max_keeps_the_scans_winner_among_ties(dtype):
    # The global kernel's eight lanes would pick a winner among equal values by lane;
    # for the values that compare equal yet differ (+0.0 and -0.0; NaNs) it is the
    # scan's: the first zero of the largest value, the last NaN.
    x = np.full((1, 3, 5, 5), -1.0, dtype)
    x[0, 0].flat[2], x[0, 0].flat[9] = -0.0, 0.0     # first: -0.0 (lane 2 after lane 1)
    x[0, 1].flat[1], x[0, 1].flat[10] = 0.0, -0.0    # first: +0.0
    x[0, 2].flat[3] = np.nan
    nan2 = np.array(np.nan, dtype)
    nan2.view(np.uint32 if dtype == np.float32 else np.uint64)[...] |= 1  # other payload
    x[0, 2].flat[12] = nan2
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for spec in ({"op": "max_pool2d", "kernel_size": 5},
                 {"op": "adaptive_max_pool2d", "output_size": 1},
                 {"op": "global_max_pool"},
                 {"op": "max_pool2d", "kernel_size": 5, "return_indices": True}):
        got = run(spec, x)
        got = (got[0] if isinstance(got, tuple) else got).reshape(3)
        assert np.signbit(got[0]) and not np.signbit(got[1]), spec
        assert got[2:].view(bits) == nan2.view(bits), spec


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_indices_fast_kernel_equals_scan_in_tap_order(rng, dtype):
    """The order-free kernel (used where padding never takes part) against the kernel
    that scans each window in row-major tap order: same value bits, same indices."""
    import copy

    from pyconv.ops import pooling

    specs = [{"op": "max_pool2d", "kernel_size": k, "stride": s, "padding": p,
              "dilation": d, "ceil_mode": ceil, "return_indices": True}
             for k, s, p, d, ceil in [(3, 2, 1, 1, False), (2, 2, 0, 1, True),
                                      (3, 1, 1, 1, False), (3, 2, 2, 2, True),
                                      (4, 3, 2, 1, True)]]
    specs.append({"op": "max_pool3d", "kernel_size": 3, "stride": 2, "padding": 1,
                  "return_indices": True})
    for spec in specs:
        rank = int(spec["op"][-2])
        x = _hard_data(rng, (2, 3, *((7, 9, 37) if rank == 3 else (19, 41))), dtype)
        conv = pyconv.Conv(spec)
        plan = conv.op.plan(conv.spec, x.shape)
        assert plan.pads_skipped
        slow = copy.copy(plan)
        slow.pads_skipped = False
        for n_threads in (1, 2):
            v, i = conv.apply(x, n_threads=n_threads)
            sv, si = pooling.run_max_indices(x, np.empty_like(v), slow, n_threads)
            np.testing.assert_array_equal(v.view(np.uint8), sv.view(np.uint8), str(spec))
            np.testing.assert_array_equal(i, si, err_msg=str(spec))


def test_adaptive_hard_data_and_few_planes(rng, monkeypatch):
    from pyconv import _threads

    monkeypatch.setattr(_threads, "SERIAL_WORK_FLOPS", 0)
    x = _hard_data(rng, (1, 1, 37, 61), np.float32)
    ev, ei = ref.adaptive_pool(x, (5, 9), "max")
    for n_threads in (1, 2):  # one plane: the parallel units are pieces of it
        v, i = run({"op": "adaptive_max_pool2d", "output_size": (5, 9),
                    "return_indices": True}, x, n_threads=n_threads)
        np.testing.assert_array_equal(v, ev)
        np.testing.assert_array_equal(i, ei)
    for spec in ({"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1},
                 {"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1,
                  "return_indices": True},
                 {"op": "avg_pool2d", "kernel_size": 2, "ceil_mode": True}):
        for planes in (1, 3):
            y = _hard_data(rng, (1, planes, 40, 70), np.float32)
            a, b = run(spec, y, n_threads=1), run(spec, y, n_threads=2)
            for u, w in zip(a if isinstance(a, tuple) else (a,),
                            b if isinstance(b, tuple) else (b,)):
                assert np.array_equal(u.view(np.uint8), w.view(np.uint8)), spec


def test_plans_follow_the_input_shape():
    """Shape rules and plans are cached per (spec, shape): new shapes get new plans."""
    pool = pyconv.Conv({"op": "avg_pool2d", "kernel_size": 2, "ceil_mode": True})
    for h, w in [(4, 4), (5, 7), (4, 4), (3, 9)]:
        x = np.arange(h * w, dtype=float).reshape(1, 1, h, w)
        expected = ref.avg_pool(x, [2, 2], [2, 2], [(0, 0)] * 2, True)
        np.testing.assert_array_equal(pool.apply(x), expected)


# -- threads, layouts, empty, dtype ---------------------------------------------------
@pytest.mark.parametrize("spec", [
    {"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1},
    {"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1,
     "return_indices": True},
    {"op": "avg_pool2d", "kernel_size": 3, "stride": 1, "padding": 1},
    {"op": "lp_pool2d", "norm_type": 1.5, "kernel_size": 2},
    {"op": "adaptive_avg_pool2d", "output_size": 5},
    {"op": "global_avg_pool"},
])
def test_threads_bit_identical(rng, spec):
    x = np.abs(rng.standard_normal((4, 16, 48, 48))).astype(np.float32)
    a = run(spec, x, n_threads=1)
    b = run(spec, x, n_threads=2)
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert np.array_equal(u, v, equal_nan=True)


def test_unpool_threads_bit_identical(rng):
    x = rng.standard_normal((8, 32, 64, 64)).astype(np.float32)
    v, i = run({"op": "max_pool2d", "kernel_size": 2, "return_indices": True}, x)
    conv = pyconv.Conv({"op": "max_unpool2d", "kernel_size": 2})
    assert np.array_equal(conv.apply(v, indices=i, n_threads=1),
                          conv.apply(v, indices=i, n_threads=2))


def test_strided_readonly_fortran_inputs_unchanged(rng):
    base = rng.standard_normal((2, 3, 10, 12))
    spec = {"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1,
            "padding_mode": "reflect"}
    expected = run(spec, np.ascontiguousarray(base[:, :, ::2, 1::2]))
    strided = base[:, :, ::2, 1::2]
    ro = base.copy()
    ro.setflags(write=False)
    before = base.copy()
    np.testing.assert_array_equal(run(spec, strided), expected)
    np.testing.assert_array_equal(run(spec, np.asfortranarray(base)), run(spec, ro))
    np.testing.assert_array_equal(base, before)


def test_empty_batch_and_channels():
    for shape in [(0, 3, 8, 8), (2, 0, 8, 8)]:
        x = np.ones(shape, dtype=np.float32)
        v, i = run({"op": "max_pool2d", "kernel_size": 2, "return_indices": True}, x)
        assert v.shape == i.shape == (shape[0], shape[1], 4, 4) and i.dtype == np.int64
        v, i = run({"op": "adaptive_max_pool2d", "output_size": 3,
                    "return_indices": True}, x)
        assert v.shape == (shape[0], shape[1], 3, 3)
        assert run({"op": "avg_pool2d", "kernel_size": 2}, x).shape[2:] == (4, 4)
        assert run({"op": "global_avg_pool", "keepdims": False}, x).shape == shape[:2]
        assert run({"op": "max_unpool2d", "kernel_size": 2}, x,
                   indices=np.zeros(shape, np.int64)).shape[2:] == (16, 16)


def test_dtype_rule():
    x = np.arange(16, dtype=np.int16).reshape(1, 1, 4, 4)
    assert run({"op": "avg_pool2d", "kernel_size": 2}, x).dtype == np.float32
    assert run({"op": "max_pool2d", "kernel_size": 2}, x.astype(np.int64)).dtype == \
        np.float64
    np.testing.assert_array_equal(run({"op": "max_pool2d", "kernel_size": 2}, x)[0, 0],
                                  [[5, 7], [13, 15]])


def test_out_argument_and_spec_roundtrip():
    conv = pyconv.Conv({"op": "avg_pool2d", "kernel_size": [2, 3]})
    assert conv.spec["stride"] == [2, 3] and conv.param_count == 0
    assert pyconv.Conv(conv.spec) == conv
    x = np.ones((1, 2, 4, 6))
    out = np.empty((1, 2, 2, 2))
    assert conv.apply(x, out=out) is out
    np.testing.assert_array_equal(out, 1.0)
    assert conv.macs(x.shape) == 0 and conv.flops(x.shape) == 1 * 2 * 4 * 6
    for name in pyconv.available_ops():
        if "pool" in name:
            op = pyconv.get_op(name)
            assert op.summary and set(op.formulas) >= {"output", "params", "macs", "flops"}


@pytest.mark.parametrize("spec", [
    {"op": "avg_pool2d", "kernel_size": 3, "stride": 1, "padding": 1},
    {"op": "avg_pool2d", "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
     "count_include_pad": False},
    {"op": "lp_pool2d", "norm_type": 2, "kernel_size": 3, "stride": 2, "ceil_mode": True},
    {"op": "adaptive_avg_pool2d", "output_size": [5, 3]},
])
def test_float32_divisors_formed_in_float32_give_the_same_bits(spec, rng):
    # The separable kernel forms float32 divisors in float32 when the plan says that is
    # exact; the same call with the divisors formed in double must agree bit for bit.
    from pyconv.ops import pooling
    x = rng.standard_normal((2, 3, 17, 13)).astype(np.float32)
    conv = pyconv.Conv(spec)
    k = pooling.kernel()
    real = k.pool_separable_f32
    calls = []

    def spy(*args):
        calls.append(args)
        return real(*args)

    try:
        k.pool_separable_f32 = spy
        fast = conv.apply(x)
    finally:
        k.pool_separable_f32 = real
    DIV_EXACT, OUT = 16, 1                 # pool_separable_f32's arguments
    assert len(calls) == 1 and calls[0][DIV_EXACT]
    args = list(calls[0])
    args[DIV_EXACT] = False
    args[OUT] = np.full_like(args[OUT], np.nan)
    real(*args)
    np.testing.assert_array_equal(args[OUT].reshape(fast.shape), fast)


def test_float32_divisors_beyond_2_24_are_formed_in_double():
    from pyconv import _pool_geometry as pg
    fields = dict(in_shape=(1, 1, 8, 8), out_shape=(1, 1, 1, 1), tab_d=np.zeros((1, 1)),
                  tab_h=np.zeros((1, 1)), tab_w=np.zeros((1, 1)), wsrc=np.zeros(8),
                  lo_w=0, wstart=np.zeros(1), wcnt=np.ones(1), dw=1, n_uniform=0, kw=1,
                  sw=1, flops_per_output=1, pads_skipped=True)
    exact = pg.Plan(divs=(np.ones(1), np.full(1, 4096.0), np.full(1, 4096.0)), **fields)
    assert exact.div_f32_exact          # 2**24 itself is a float32
    beyond = pg.Plan(divs=(np.ones(1), np.full(1, 4097.0), np.full(1, 4096.0)), **fields)
    assert not beyond.div_f32_exact
    fraction = pg.Plan(divs=(np.ones(1), np.ones(1), np.full(1, 2.5)), **fields)
    assert not fraction.div_f32_exact
