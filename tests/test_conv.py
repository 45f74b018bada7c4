"""Dense conv1d/2d/3d: shape rule, values against torch and a NumPy loop, inputs, threads."""
import json
import threading

import numpy as np
import pytest

import pyconv
from reference import conv_nd, same_pads

MODES = ["zeros", "constant", "reflect", "symmetric", "replicate", "circular"]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def random_config(rng, rank, small=True):
    """A random valid spec plus an input shape that gives a non-empty output."""
    groups = int(rng.choice([1, 1, 2, 3]))
    cin = groups * int(rng.integers(1, 4))
    cout = groups * int(rng.integers(1, 4))
    k = [int(v) for v in rng.integers(1, 4, rank)]
    s = [int(v) for v in rng.integers(1, 4, rank)]
    d = [int(v) for v in rng.integers(1, 3, rank)]
    mode = str(rng.choice(MODES))
    kind = rng.integers(0, 5)
    if kind == 0:
        padding = "same"
    elif kind == 1:
        padding = "same_lower"
    elif kind == 2:
        padding = "valid"
    elif kind == 3:
        padding = [int(v) for v in rng.integers(0, 3, rank)]
    else:
        padding = [[int(a), int(b)] for a, b in rng.integers(0, 3, (rank, 2))]
    lo = [dd * (kk - 1) + 1 for kk, dd in zip(k, d)]
    top = 9 if small else 40
    spatial = [int(rng.integers(lo_, lo_ + top)) for lo_ in lo]
    spec = {"op": f"conv{rank}d", "in_channels": cin, "out_channels": cout,
            "kernel_size": k, "stride": s, "dilation": d, "groups": groups,
            "padding": padding, "padding_mode": mode, "bias": bool(rng.integers(0, 2))}
    if mode == "constant":
        spec["padding_value"] = float(rng.normal())
    if rng.integers(0, 3) == 0:
        spec["activation"] = "relu"
    n = int(rng.integers(1, 3))
    return spec, (n, cin, *spatial)


def explicit_pads(spec, spatial):
    p = spec["padding"]
    if p in ("same", "same_lower"):
        return [same_pads(n, k, s, d, p == "same_lower") for n, k, s, d in
                zip(spatial, spec["kernel_size"], spec["stride"], spec["dilation"])]
    if p == "valid":
        return [(0, 0)] * len(spatial)
    return [tuple(v) if isinstance(v, list) else (v, v) for v in p]


def reference(conv, x):
    spec = conv.spec
    pads = explicit_pads(spec, x.shape[2:])
    y = conv_nd(x, conv.params["weight"], conv.params.get("bias"), spec["stride"], pads,
                spec["dilation"], spec["groups"], spec["padding_mode"], spec["padding_value"])
    if spec["activation"] == "relu":
        y = np.maximum(y, 0)
    return y


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_shape_rule_matches_output_over_random_configs(rank):
    rng = np.random.default_rng(100 + rank)
    for _ in range(150):
        spec, shape = random_config(rng, rank, small=rank < 3)
        conv = pyconv.Conv(spec, seed=1)
        x = rng.standard_normal(shape).astype(rng.choice([np.float32, np.float64]))
        assert conv.apply(x).shape == conv.output_shape(shape), spec


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_values_match_numpy_loop_float64(rank):
    rng = np.random.default_rng(200 + rank)
    for _ in range(40 if rank < 3 else 20):
        spec, shape = random_config(rng, rank)
        conv = pyconv.Conv(spec, seed=2, dtype=np.float64)
        x = rng.standard_normal(shape)
        np.testing.assert_allclose(conv.apply(x), reference(conv, x), rtol=1e-12,
                                   atol=1e-12, err_msg=json.dumps(spec))


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_values_match_numpy_loop_float32(rank):
    rng = np.random.default_rng(300 + rank)
    for _ in range(30 if rank < 3 else 15):
        spec, shape = random_config(rng, rank)
        conv = pyconv.Conv(spec, seed=3)
        x = rng.standard_normal(shape).astype(np.float32)
        y = conv.apply(x)
        assert y.dtype == np.float32
        ref = reference(conv, x.astype(np.float64))
        # float32 accumulation error grows with the number of terms summed
        scale = np.abs(conv.params["weight"]).max() * np.abs(x).max() * conv.params[
            "weight"][0].size
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6 * scale + 1e-6)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_values_match_torch(torch, rank):
    F = torch.nn.functional
    torch_mode = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}
    rng = np.random.default_rng(400 + rank)
    checked = 0
    for _ in range(60):
        spec, shape = random_config(rng, rank)
        if spec["padding_mode"] not in ("zeros", *torch_mode):
            continue
        conv = pyconv.Conv(spec, seed=4, dtype=np.float64)
        x = rng.standard_normal(shape)
        pads = explicit_pads(spec, shape[2:])
        if spec["padding_mode"] != "zeros":
            # torch's non-zero modes only allow pads smaller than the input
            if any(max(lo, hi) >= n for (lo, hi), n in zip(pads, shape[2:])):
                continue
        flat = [v for lo_hi in reversed(pads) for v in lo_hi]  # F.pad: last axis first
        mode = torch_mode.get(spec["padding_mode"], "constant")
        xt = F.pad(torch.from_numpy(x), flat, mode=mode)
        w = torch.from_numpy(conv.params["weight"].copy())
        b = torch.from_numpy(conv.params["bias"].copy()) if "bias" in conv.params else None
        fn = getattr(F, f"conv{rank}d")
        ref = fn(xt, w, b, stride=spec["stride"], dilation=spec["dilation"],
                 groups=spec["groups"]).numpy()
        if conv.spec["activation"] == "relu":
            ref = np.maximum(ref, 0)
        np.testing.assert_allclose(conv.apply(x), ref, rtol=1e-11, atol=1e-11)
        checked += 1
    assert checked >= 20


def test_strided_same_follows_the_tf_rule():
    # in=5, k=4, s=2 -> out=3, pads (1, 2) (SEMANTICS.md)
    conv = pyconv.Conv({"op": "conv1d", "in_channels": 1, "out_channels": 1,
                        "kernel_size": 4, "stride": 2, "padding": "same", "bias": False},
                       params={"weight": np.ones((1, 1, 4))})
    x = np.arange(1.0, 6.0).reshape(1, 1, 5)
    # padded: 0 | 1 2 3 4 5 | 0 0 -> windows [0,1,2,3], [2,3,4,5], [4,5,0,0]
    np.testing.assert_array_equal(conv.apply(x), [[[6.0, 14.0, 9.0]]])
    lower = pyconv.Conv({**conv.spec, "padding": "same_lower"}, params=conv.params)
    # padded: 0 0 | 1 2 3 4 5 | 0 -> [0,0,1,2], [1,2,3,4], [3,4,5,0]
    np.testing.assert_array_equal(lower.apply(x), [[[3.0, 10.0, 12.0]]])


@pytest.mark.parametrize("mode,expected", [
    ("zeros", [0, 0, 1, 2, 3, 4, 0, 0]),
    ("constant", [7, 7, 1, 2, 3, 4, 7, 7]),
    ("reflect", [3, 2, 1, 2, 3, 4, 3, 2]),
    ("symmetric", [2, 1, 1, 2, 3, 4, 4, 3]),
    ("replicate", [1, 1, 1, 2, 3, 4, 4, 4]),
    ("circular", [3, 4, 1, 2, 3, 4, 1, 2]),
])
def test_padding_mode_patterns(mode, expected):
    # An identity-like kernel [1, 0, 0, 0, 0] reads the padded signal as it is.
    spec = {"op": "conv1d", "in_channels": 1, "out_channels": 1, "kernel_size": 5,
            "padding": [[2, 6]], "padding_mode": mode, "bias": False}
    if mode == "constant":
        spec["padding_value"] = 7.0
    w = np.zeros((1, 1, 5))
    w[..., 0] = 1
    conv = pyconv.Conv(spec, params={"weight": w})
    y = conv.apply(np.array([[[1.0, 2.0, 3.0, 4.0]]]))
    np.testing.assert_array_equal(y[0, 0], expected)


def test_padding_wider_than_input_repeats_like_np_pad():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 1, 3, 2))
    for mode in ("reflect", "symmetric", "circular", "replicate"):
        spec = {"op": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 1,
                "padding": [[5, 4], [3, 7]], "padding_mode": mode, "bias": False}
        conv = pyconv.Conv(spec, params={"weight": np.ones((1, 1, 1, 1))})
        np.testing.assert_array_equal(conv.apply(x),
                                      conv_nd(x, np.ones((1, 1, 1, 1)), None, [1, 1],
                                              [(5, 4), (3, 7)], [1, 1], 1, mode))


def test_textbook_parameter_count():
    conv = pyconv.Conv({"op": "conv2d", "in_channels": 32, "out_channels": 64,
                        "kernel_size": 3, "bias": False})
    assert conv.param_count == 18_432
    assert conv.param_shapes == {"weight": (64, 32, 3, 3)}


def test_issue_example():
    conv = pyconv.Conv({"op": "conv2d", "in_channels": 3, "out_channels": 8,
                        "kernel_size": 3, "stride": 2, "padding": "same"}, seed=0)
    assert conv.output_shape((4, 3, 31, 31)) == (4, 8, 16, 16)
    assert conv.param_count == 224
    assert conv.flops((4, 3, 31, 31)) == 2 * 4 * 8 * 16 * 16 * 3 * 9
    x = np.random.default_rng(0).random((4, 3, 31, 31)).astype(np.float32)
    y = conv.apply(x)
    again = pyconv.Conv(conv.spec, params=conv.params)
    np.testing.assert_array_equal(again.apply(x), y)
    assert again == conv and again.spec == conv.spec
    assert pyconv.Conv(json.dumps(conv.spec)).spec == conv.spec


def test_pytorch_initialisation_bounds_and_seed():
    conv = pyconv.Conv({"op": "conv2d", "in_channels": 16, "out_channels": 32,
                        "kernel_size": 3}, seed=7)
    bound = 1 / np.sqrt(16 * 9)
    w, b = conv.params["weight"], conv.params["bias"]
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.9 * bound  # really uniform over the whole range
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound
    same = pyconv.Conv(conv.spec, seed=7)
    np.testing.assert_array_equal(same.params["weight"], w)
    other = pyconv.Conv(conv.spec, seed=8)
    assert not np.array_equal(other.params["weight"], w)


def test_relu_epilogue_and_no_bias():
    rng = np.random.default_rng(6)
    base = {"op": "conv2d", "in_channels": 4, "out_channels": 5, "kernel_size": 3}
    plain = pyconv.Conv(base, seed=1, dtype=np.float64)
    fused = pyconv.Conv({**base, "activation": "relu"}, params=plain.params)
    x = rng.standard_normal((2, 4, 9, 9))
    np.testing.assert_array_equal(fused.apply(x), np.maximum(plain.apply(x), 0))
    nobias = pyconv.Conv({**base, "bias": False}, params={"weight": plain.params["weight"]})
    np.testing.assert_allclose(nobias.apply(x) + plain.params["bias"][:, None, None],
                               plain.apply(x), atol=1e-13)


def test_fused_relu_keeps_nan_like_torch():
    conv = pyconv.Conv({"op": "conv1d", "in_channels": 1, "out_channels": 1,
                        "kernel_size": 1, "activation": "relu", "bias": False},
                       params={"weight": np.ones((1, 1, 1))})
    y = conv.apply(np.array([[[np.nan, -1.0, 2.0, np.inf, -np.inf]]]))
    np.testing.assert_array_equal(y, [[[np.nan, 0.0, 2.0, np.inf, 0.0]]])


@pytest.mark.parametrize("spec", [
    {"op": "conv2d", "in_channels": 16, "out_channels": 16, "kernel_size": 3,
     "padding": 1, "algorithm": "winograd_f4"},
    {"op": "conv2d", "in_channels": 2, "out_channels": 2, "kernel_size": 3,
     "padding": 1, "algorithm": "direct"},
    {"op": "depthwise_conv2d", "in_channels": 2, "kernel_size": 3, "padding": 1},
    {"op": "separable_conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3,
     "padding": 1},
    {"op": "conv_transpose2d", "in_channels": 2, "out_channels": 2, "kernel_size": 3,
     "padding": 1},
    {"op": "deform_conv2d", "in_channels": 2, "out_channels": 2, "kernel_size": 3,
     "padding": 1, "offsets": "learned"},
])
def test_every_fused_relu_keeps_nan(spec):
    conv = pyconv.Conv({**spec, "activation": "relu"}, seed=0, dtype=np.float64)
    c = spec["in_channels"]
    x = np.random.default_rng(19).standard_normal((1, c, 8, 8))
    x[0, 0, 4, 4] = np.nan
    y = conv.apply(x)
    assert np.isnan(y).any()
    assert (np.nan_to_num(y, nan=0.0) >= 0).all()


def test_pointwise_gemm_path_and_large_tiles():
    rng = np.random.default_rng(8)
    conv = pyconv.Conv({"op": "conv2d", "in_channels": 6, "out_channels": 4,
                        "kernel_size": 1, "groups": 2}, seed=1, dtype=np.float64)
    x = rng.standard_normal((3, 6, 37, 41))
    np.testing.assert_allclose(conv.apply(x), reference(conv, x), atol=1e-12)
    # many rows per tile and many tiles per image
    conv = pyconv.Conv({"op": "conv2d", "in_channels": 3, "out_channels": 2,
                        "kernel_size": 3, "padding": 1}, seed=1, dtype=np.float64)
    x = rng.standard_normal((1, 3, 300, 7))
    np.testing.assert_allclose(conv.apply(x, n_threads=2), reference(conv, x), atol=1e-12)


class TestInputs:
    spec = {"op": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3,
            "padding": 1, "groups": 1}

    def conv(self):
        return pyconv.Conv(self.spec, seed=0, dtype=np.float64)

    def test_layouts_and_views_give_the_same_result(self):
        rng = np.random.default_rng(9)
        conv = self.conv()
        x = rng.standard_normal((2, 3, 10, 12))
        expected = conv.apply(x)
        fortran = np.asfortranarray(x)
        np.testing.assert_array_equal(conv.apply(fortran), expected)
        big = rng.standard_normal((4, 3, 20, 24))
        big[::2, :, ::2, ::2] = x
        view = big[::2, :, ::2, ::2]
        np.testing.assert_array_equal(conv.apply(view), expected)
        ro = x.copy()
        ro.setflags(write=False)
        np.testing.assert_array_equal(conv.apply(ro), expected)

    def test_input_never_modified(self):
        rng = np.random.default_rng(10)
        x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
        before = x.copy()
        self.conv().apply(x)
        np.testing.assert_array_equal(x, before)

    def test_empty_batch(self):
        y = self.conv().apply(np.zeros((0, 3, 8, 8)))
        assert y.shape == (0, 4, 8, 8)

    def test_dtype_rule(self):
        conv = self.conv()
        x = np.arange(2 * 3 * 6 * 6).reshape(2, 3, 6, 6)
        assert conv.apply(x.astype(np.int64)).dtype == np.float64
        assert conv.apply(x.astype(np.int16)).dtype == np.float32
        assert conv.apply(x.astype(np.uint8)).dtype == np.float32
        assert conv.apply(x.astype(np.float16)).dtype == np.float32
        assert conv.apply(x.astype(bool)).dtype == np.float32
        np.testing.assert_allclose(conv.apply(x.astype(np.int64)),
                                   conv.apply(x.astype(np.float64)))
        with pytest.raises(TypeError, match="conv2d: input dtype complex128"):
            conv.apply(x.astype(np.complex128))
        with pytest.raises(TypeError, match="conv2d"):
            conv.apply(np.array([["a"]]))

    def test_out_argument(self):
        conv = self.conv()
        x = np.ones((1, 3, 5, 5))
        out = np.empty((1, 4, 5, 5))
        assert conv.apply(x, out=out) is out
        np.testing.assert_array_equal(out, conv.apply(x))
        with pytest.raises(ValueError, match=r"conv2d: out must have shape \(1, 4, 5, 5\)"):
            conv.apply(x, out=np.empty((1, 4, 5, 4)))
        with pytest.raises(ValueError, match="dtype float64"):
            conv.apply(x, out=np.empty((1, 4, 5, 5), np.float32))
        with pytest.raises(ValueError, match="C-contiguous"):
            conv.apply(x, out=np.empty((1, 4, 5, 10))[..., ::2])
        with pytest.raises(TypeError, match="numpy.ndarray"):
            conv.apply(x, out=[0])

    def test_bad_input_shapes(self):
        conv = self.conv()
        with pytest.raises(ValueError, match=r"conv2d: expected a 4-D input \(N, C, H, W\)"):
            conv.apply(np.ones((3, 8, 8)))
        with pytest.raises(ValueError, match="expected 3 input channels"):
            conv.apply(np.ones((1, 2, 8, 8)))
        small = pyconv.Conv({**self.spec, "padding": 0, "dilation": 3}, seed=0)
        with pytest.raises(ValueError, match=r"padded extent 4 \+ 0 \+ 0 = 4 is smaller "
                                             r"than the effective kernel"):
            small.output_shape((1, 3, 4, 9))
        with pytest.raises(TypeError, match="unexpected input"):
            conv.apply(np.ones((1, 3, 8, 8)), offset=np.ones(3))

    def test_bad_params(self):
        with pytest.raises(ValueError, match=r"'weight' must have shape \(4, 3, 3, 3\)"):
            pyconv.Conv(self.spec, params={"weight": np.ones((4, 3, 3))})
        with pytest.raises(ValueError, match="NaN or infinity"):
            pyconv.Conv(self.spec, params={"weight": np.full((4, 3, 3, 3), np.nan)})
        with pytest.raises(ValueError, match="unknown parameter"):
            pyconv.Conv(self.spec, params={"kernel": np.ones(3)})
        with pytest.raises(TypeError, match="real numeric"):
            pyconv.Conv(self.spec, params={"bias": np.ones(4, complex)})
        w = np.ones((4, 3, 3, 3))
        conv = pyconv.Conv(self.spec, params={"weight": w})
        w[:] = 5  # the caller's array is copied, later changes do not leak in
        assert conv.params["weight"].max() == 1
        with pytest.raises(ValueError):
            conv.params["weight"][:] = 0  # read-only


class TestThreads:
    def test_thread_counts_give_identical_results(self):
        rng = np.random.default_rng(11)
        for rank in (1, 2, 3):
            for _ in range(6):
                spec, shape = random_config(rng, rank)
                shape = (4, *shape[1:])
                conv = pyconv.Conv(spec, seed=0)
                x = rng.standard_normal(shape).astype(np.float32)
                one = conv.apply(x, n_threads=1)
                np.testing.assert_array_equal(one, conv.apply(x, n_threads=2))
                np.testing.assert_array_equal(one, conv.apply(x, n_threads=3))

    @pytest.mark.parametrize("spec,shape", [
        ({"op": "conv1d", "in_channels": 8, "out_channels": 8, "kernel_size": 5,
          "padding": "same", "padding_mode": "reflect"}, (3, 8, 5000)),
        ({"op": "conv2d", "in_channels": 6, "out_channels": 9, "kernel_size": 3,
          "stride": 2, "groups": 3, "padding": [[0, 2], [1, 1]]}, (3, 6, 261, 267)),
        ({"op": "conv3d", "in_channels": 4, "out_channels": 4, "kernel_size": 3,
          "padding": 1, "padding_mode": "circular"}, (2, 4, 9, 30, 30)),
        # one image: the rows are split into tiles, whatever the thread count
        ({"op": "conv3d", "in_channels": 8, "out_channels": 8, "kernel_size": 3,
          "padding": 1}, (1, 8, 12, 40, 40)),
        ({"op": "conv2d", "in_channels": 16, "out_channels": 16, "kernel_size": 3,
          "padding": 1}, (1, 16, 90, 70)),
    ])
    def test_parallel_results_identical(self, spec, shape):
        rng = np.random.default_rng(14)
        conv = pyconv.Conv(spec, seed=0)
        x = rng.standard_normal(shape).astype(np.float32)
        assert conv.flops(shape) > pyconv._threads.SERIAL_WORK_FLOPS  # really parallel
        one = conv.apply(x, n_threads=1)
        np.testing.assert_array_equal(one, conv.apply(x, n_threads=2))
        np.testing.assert_array_equal(one, conv.apply(x, n_threads=4))

    def test_serial_only_when_both_flops_and_bytes_are_small(self):
        from pyconv import _threads
        small_flops = _threads.SERIAL_WORK_FLOPS - 1
        assert _threads.resolve(2, small_flops, 100) == 1
        assert _threads.resolve(2, small_flops, 100, _threads.SERIAL_WORK_BYTES - 1) == 1
        # a memory-bound pool: few FLOPs per byte, but megabytes to move
        assert _threads.resolve(2, small_flops, 100, _threads.SERIAL_WORK_BYTES) == 2
        assert _threads.resolve(2, _threads.SERIAL_WORK_FLOPS, 100) == 2
        assert _threads.resolve(4, 10**9, 3) == 3     # never more threads than units

    def test_memory_bound_pool_runs_in_parallel(self, monkeypatch):
        # avg_pool2d k2 s2 of 8x64x112x112 does 6.4 MFLOP on 32 MB: parallel
        from pyconv import _threads
        seen = []
        real = _threads.resolve

        def spy(*args, **kwargs):
            seen.append(real(*args, **kwargs))
            return seen[-1]

        monkeypatch.setattr(_threads, "resolve", spy)
        pool = pyconv.Conv({"op": "avg_pool2d", "kernel_size": 2, "stride": 2})
        x = np.ones((8, 64, 112, 112), np.float32)
        assert pool.flops(x.shape) < _threads.SERIAL_WORK_FLOPS
        np.testing.assert_array_equal(pool.apply(x, n_threads=2), 1.0)
        assert seen == [2]

    def test_big_problem_split_over_threads(self):
        rng = np.random.default_rng(12)
        conv = pyconv.Conv({"op": "conv2d", "in_channels": 16, "out_channels": 16,
                            "kernel_size": 3, "padding": 1}, seed=0)
        x = rng.standard_normal((1, 16, 64, 64)).astype(np.float32)
        np.testing.assert_array_equal(conv.apply(x, n_threads=1), conv.apply(x, n_threads=2))

    def test_concurrent_apply_from_python_threads(self):
        rng = np.random.default_rng(13)
        conv = pyconv.Conv({"op": "conv2d", "in_channels": 8, "out_channels": 8,
                            "kernel_size": 3, "padding": 1}, seed=0)
        inputs = [rng.standard_normal((2, 8, 40, 40)).astype(np.float32) for _ in range(4)]
        expected = [conv.apply(x, n_threads=1) for x in inputs]
        results = [None] * 4
        errors = []

        def work(i):
            try:
                for _ in range(3):
                    results[i] = conv.apply(inputs[i], n_threads=2)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for r, e in zip(results, expected):
            np.testing.assert_array_equal(r, e)

    def test_policy(self, monkeypatch):
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        pyconv.set_num_threads(None)
        if pyconv.config()["openmp"]:
            assert pyconv.get_num_threads() == 3
            pyconv.set_num_threads(2)
            assert pyconv.get_num_threads() == 2
            with pyconv.num_threads(1):
                assert pyconv.get_num_threads() == 1
            assert pyconv.get_num_threads() == 2
        pyconv.set_num_threads(None)
        with pytest.raises(ValueError, match="positive int"):
            pyconv.set_num_threads(0)
        conv = pyconv.Conv({"op": "conv1d", "in_channels": 1, "out_channels": 1,
                            "kernel_size": 1}, seed=0)
        with pytest.raises(ValueError, match="n_threads expects a positive int"):
            conv.apply(np.ones((1, 1, 4)), n_threads=-1)

    def test_only_scipys_blas_is_pinned(self):
        from threadpoolctl import threadpool_info

        def blas_threads():
            return {i["filepath"]: i["num_threads"] for i in threadpool_info()
                    if i["user_api"] == "blas"}

        before = blas_threads()
        conv = pyconv.Conv({"op": "conv2d", "in_channels": 8, "out_channels": 8,
                            "kernel_size": 3}, seed=0)
        conv.apply(np.ones((4, 8, 32, 32), np.float32), n_threads=2)
        after = blas_threads()
        for path, n in after.items():
            if "scipy.libs" in path:
                assert n == 1
            else:
                assert n == before.get(path, n), path  # NumPy's BLAS is left alone


class TestAlgorithms:
    base = {"op": "conv2d", "in_channels": 16, "out_channels": 16, "kernel_size": 3,
            "padding": "same", "padding_mode": "reflect"}

    @pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
    def test_every_algorithm_agrees_with_the_reference(self, dtype, tol):
        rng = np.random.default_rng(15)
        x = rng.standard_normal((2, 16, 13, 11)).astype(dtype)
        ref = None
        for algo in ("im2col", "direct", "winograd", "winograd_f2", "winograd_f4", "auto"):
            conv = pyconv.Conv({**self.base, "algorithm": algo}, seed=0, dtype=dtype)
            if ref is None:
                ref = reference(conv, x.astype(np.float64))
                scale = np.abs(ref).max()
            np.testing.assert_allclose(conv.apply(x), ref, rtol=0, atol=tol * scale,
                                       err_msg=algo)

    def test_auto_keeps_nan_local(self):
        conv = pyconv.Conv({**self.base, "padding_mode": "zeros"}, seed=0, dtype=np.float64)
        x = np.random.default_rng(16).standard_normal((8, 16, 20, 20))
        x[0, 0, 10, 10] = np.nan
        y = conv.apply(x)
        assert np.isnan(y[0, :, 9:12, 9:12]).all()
        assert np.isnan(y).sum() == 16 * 9  # only the outputs whose window holds it

    @pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
    @pytest.mark.parametrize("op,shape", [("conv2d", (8, 16, 20, 20)),
                                          ("conv3d", (2, 16, 4, 20, 20))])
    def test_auto_keeps_nonfinite_local_in_float32(self, op, shape, value):
        # The kernel, not a pass over the input, detects it; im2col then reruns.
        conv = pyconv.Conv({**self.base, "op": op, "padding_mode": "zeros",
                            "kernel_size": 3, "padding": 1}, seed=0, dtype=np.float32)
        x = np.random.default_rng(17).standard_normal(shape).astype(np.float32)
        spot = (1, 3) + tuple(n // 2 for n in shape[2:])
        x[spot] = value
        y = conv.apply(x)
        window = (1, slice(None)) + tuple(slice(i - 1, i + 2) for i in spot[2:])
        assert not np.isfinite(y[window]).any()
        assert (~np.isfinite(y)).sum() == 16 * 3 ** (len(shape) - 2)
        xf = np.where(np.isfinite(x), x, 0).astype(np.float32)
        fine = np.ones(y.shape, bool)
        fine[window] = False
        np.testing.assert_allclose(y[fine], conv.apply(xf)[fine], rtol=0, atol=1e-4)

    def test_auto_survives_a_winograd_overflow(self):
        # Finite input whose Winograd transform overflows float32 (F4's input
        # transform scales by up to 25): auto falls back to im2col and stays finite.
        conv = pyconv.Conv({**self.base, "padding_mode": "zeros"}, seed=0,
                           params={"weight": np.full((16, 16, 3, 3), 1e-3, np.float32),
                                   "bias": np.zeros(16, np.float32)})
        x = np.full((8, 16, 20, 20), 3e37, np.float32)
        x[:, :, ::2] = -3e37
        y = conv.apply(x)
        assert np.isfinite(y).all()
        ref = reference(conv, x.astype(np.float64))
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
        forced = pyconv.Conv({**conv.spec, "algorithm": "winograd_f4"}, params=conv.params)
        assert not np.isfinite(forced.apply(x)).all()  # what auto avoided

    def test_winograd_needs_3_taps_and_stride_1(self):
        with pytest.raises(pyconv.SpecError, match="algorithm"):
            pyconv.Conv({**self.base, "kernel_size": 5, "algorithm": "winograd"})
        conv1d = {"op": "conv1d", "in_channels": 1, "out_channels": 1, "kernel_size": 3,
                  "dilation": 2, "algorithm": "winograd_f2"}
        pyconv.Conv(conv1d)   # any dilation (tests/test_winograd_1d.py)
        for other in ({"kernel_size": 5}, {"stride": 2}):
            with pytest.raises(pyconv.SpecError, match="algorithm"):
                pyconv.Conv({**conv1d, **other})

    @pytest.mark.parametrize("extra", [
        {"padding": 1},
        {"padding": "same", "padding_mode": "reflect", "groups": 2},
        {"padding": [[2, 0], [1, 1], [0, 2]], "padding_mode": "constant",
         "padding_value": 0.5, "kernel_size": [2, 3, 3]},
        {"padding": [1, 1, 1], "stride": [2, 1, 1], "dilation": [2, 1, 1],
         "padding_mode": "circular", "bias": False, "activation": "relu"},
        {"padding": [0, 1, 1], "padding_mode": "replicate", "kernel_size": [1, 3, 3]},
    ])
    @pytest.mark.parametrize("algo", ["winograd_f2", "winograd_f4"])
    def test_conv3d_by_stacked_winograd(self, extra, algo):
        rng = np.random.default_rng(17)
        spec = {"op": "conv3d", "in_channels": 4, "out_channels": 6, "kernel_size": 3,
                "algorithm": algo, **extra}
        conv = pyconv.Conv(spec, seed=0, dtype=np.float64)
        x = rng.standard_normal((2, 4, 5, 9, 7))
        ref = reference(conv, x)
        np.testing.assert_allclose(conv.apply(x), ref, rtol=0,
                                   atol=1e-12 * np.abs(ref).max())
        np.testing.assert_array_equal(conv.apply(x, n_threads=1), conv.apply(x, n_threads=2))

    def test_conv3d_auto_takes_winograd_and_agrees(self):
        rng = np.random.default_rng(18)
        spec = {"op": "conv3d", "in_channels": 16, "out_channels": 16, "kernel_size": 3,
                "padding": 1}
        x = rng.standard_normal((1, 16, 6, 12, 12)).astype(np.float32)
        auto = pyconv.Conv(spec, seed=0)
        im2col = pyconv.Conv({**spec, "algorithm": "im2col"}, params=auto.params)
        a, b = auto.apply(x), im2col.apply(x)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())
        assert not np.array_equal(a, b)  # really a different algorithm


def test_stride_2_rows_split_into_phases_match_the_reference():
    """im2col at stride 2 along W with 3 or more taps reads each input row once, split
    into its even and odd phases (rows up to PHASE_ROW_MAX values long; longer rows
    take the per-tap gather): every padding mode, dilation, output ranges that start
    inside a row, float32 and float64, and rows on both sides of the limit."""
    rng = np.random.default_rng(11)
    checked = 0
    for i in range(160):
        dtype = np.float64 if i % 4 else np.float32
        k, cin = int(rng.integers(3, 8)), int(rng.integers(1, 4))
        H, W = int(rng.integers(1, 12)), int(rng.integers(k, 40))
        mode = MODES[i % len(MODES)]
        pad = int(rng.integers(0, min(k, W)))      # reflect needs pad < W
        spec = {"op": "conv2d", "in_channels": cin, "out_channels": int(rng.integers(1, 9)),
                "kernel_size": [int(rng.integers(1, 4)), k], "stride": [1, 2],
                "padding": [0, pad], "padding_mode": mode,
                "dilation": [1, int(rng.integers(1, 3))], "algorithm": "im2col"}
        if H < spec["kernel_size"][0] or W + 2 * pad < (k - 1) * spec["dilation"][1] + 1:
            continue
        conv = pyconv.Conv(spec, seed=i, dtype=dtype)
        x = rng.standard_normal((2, cin, H, W)).astype(dtype)
        want = reference(conv, x.astype(np.float64))
        tol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(conv.apply(x), want, rtol=tol,
                                   atol=tol * np.abs(want).max(), err_msg=str(spec))
        checked += 1
    assert checked > 100
    for W in (4095, 4096, 4097, 5001):              # the phase buffer's limit
        conv = pyconv.Conv({"op": "conv1d", "in_channels": 2, "out_channels": 3,
                            "kernel_size": 5, "stride": 2, "padding": 2,
                            "padding_mode": "reflect", "algorithm": "im2col"},
                           seed=W, dtype=np.float64)
        x = rng.standard_normal((1, 2, W))
        np.testing.assert_allclose(conv.apply(x), reference(conv, x), rtol=1e-12,
                                   atol=1e-12)
