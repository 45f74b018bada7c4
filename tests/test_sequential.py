"""Sequential: shape inference, counts and receptive fields against hand-computed
figures for a published network, apply against layer-by-layer and torch, specs, params
and error messages."""
import json

import numpy as np
import pytest

import pyconv
from pyconv.ops import Op


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def conv(cin, cout, k, stride=1, padding=1):
    return {"op": "conv2d", "in_channels": cin, "out_channels": cout, "kernel_size": k,
            "stride": stride, "padding": padding}


# All-CNN-C (Springenberg et al. 2015, "Striving for simplicity", table 2, model C),
# on 32x32x3 CIFAR-10 images: every layer is followed by a ReLU; the stride-2 3x3
# convolutions replace the max-pooling layers; the global average pool and softmax
# at the end are not convolutions and are left out.
ALL_CNN_C_CONVS = [
    conv(3, 96, 3), conv(96, 96, 3), conv(96, 96, 3, stride=2),
    conv(96, 192, 3), conv(192, 192, 3), conv(192, 192, 3, stride=2),
    conv(192, 192, 3, padding=0), conv(192, 192, 1, padding=0),
    conv(192, 10, 1, padding=0),
]


def all_cnn_c(**kwargs):
    layers = []
    for c in ALL_CNN_C_CONVS:
        layers += [c, {"op": "relu"}]
    return pyconv.Sequential(layers, **kwargs)


# Spatial sizes (padding 1 keeps a 3x3 stride-1 size; stride 2 with padding 1 gives
# floor((n + 2 - 3) / 2) + 1 = n / 2; valid 3x3 gives n - 2):
#   32 -> 32 -> 32 -> 16 -> 16 -> 16 -> 8 -> 6 -> 6 -> 6
ALL_CNN_C_SHAPES = [(1, 96, 32, 32), (1, 96, 32, 32), (1, 96, 16, 16), (1, 192, 16, 16),
                    (1, 192, 16, 16), (1, 192, 8, 8), (1, 192, 6, 6), (1, 192, 6, 6),
                    (1, 10, 6, 6)]
# Params = C_out * C_in * k*k + C_out:
#   96*3*9 + 96 = 2,688;  96*96*9 + 96 = 83,040 (twice);  192*96*9 + 192 = 166,080;
#   192*192*9 + 192 = 331,968 (three times);  192*192 + 192 = 37,056;  10*192 + 10 = 1,930
ALL_CNN_C_PARAMS = [2688, 83040, 83040, 166080, 331968, 331968, 331968, 37056, 1930]
# Total: 2,688 + 2*83,040 + 166,080 + 3*331,968 + 37,056 + 1,930 = 1,369,738
# (the paper quotes "1.3 M" for All-CNN-C).
ALL_CNN_C_TOTAL_PARAMS = 1_369_738
# MACs = C_out * H_out * W_out * C_in * k*k (batch 1):
#   96*32*32 * 3*9    =  98,304 * 27    =  2,654,208
#   96*32*32 * 96*9   =  98,304 * 864   = 84,934,656
#   96*16*16 * 96*9   =  24,576 * 864   = 21,233,664
#   192*16*16 * 96*9  =  49,152 * 864   = 42,467,328
#   192*16*16 * 192*9 =  49,152 * 1,728 = 84,934,656
#   192*8*8 * 192*9   =  12,288 * 1,728 = 21,233,664
#   192*6*6 * 192*9   =   6,912 * 1,728 = 11,943,936
#   192*6*6 * 192     =   6,912 * 192   =  1,327,104
#   10*6*6 * 192      =     360 * 192   =     69,120
ALL_CNN_C_MACS = [2654208, 84934656, 21233664, 42467328, 84934656, 21233664, 11943936,
                  1327104, 69120]
ALL_CNN_C_TOTAL_MACS = 270_798_336
# FLOPs: 2 per MAC for the convolutions plus 1 per element for each ReLU, whose
# element counts are the conv output sizes above:
#   98,304*2 + 24,576 + 49,152*2 + 12,288 + 6,912*2 + 360 = 345,960
ALL_CNN_C_TOTAL_FLOPS = 2 * 270_798_336 + 345_960  # = 541,942,632
# Receptive field: r += (k - 1) * j; j *= s. Per conv layer:
#   3x3 s1: r 3, j 1;  3x3 s1: r 5, j 1;  3x3 s2: r 7, j 2;  3x3 s1: r 7+2*2 = 11, j 2;
#   3x3 s1: r 15, j 2;  3x3 s2: r 19, j 4;  3x3 valid: r 19+2*4 = 27, j 4;  1x1: 27, 4;
#   1x1: 27, 4. The ReLUs keep the field of the conv before them.
ALL_CNN_C_RF = [3, 5, 7, 11, 15, 19, 27, 27, 27]
ALL_CNN_C_JUMP = [1, 1, 2, 2, 2, 4, 4, 4, 4]


def test_all_cnn_c_figures():
    net = all_cnn_c(seed=0)
    assert len(net) == 18
    assert sum(ALL_CNN_C_PARAMS) == ALL_CNN_C_TOTAL_PARAMS
    assert sum(ALL_CNN_C_MACS) == ALL_CNN_C_TOTAL_MACS
    shape = (1, 3, 32, 32)
    assert net.output_shape(shape) == (1, 10, 6, 6)
    assert net.param_count == ALL_CNN_C_TOTAL_PARAMS
    assert net.macs(shape) == ALL_CNN_C_TOTAL_MACS
    assert net.flops(shape) == ALL_CNN_C_TOTAL_FLOPS
    assert net.macs((8, 3, 32, 32)) == 8 * ALL_CNN_C_TOTAL_MACS
    assert net.receptive_field(shape) == ([27, 27], [4, 4])

    s = net.summary(shape)
    rows = s.rows
    assert [r["index"] for r in rows] == list(range(18))
    assert [r["op"] for r in rows] == ["conv2d", "relu"] * 9
    for i in range(9):
        c, a = rows[2 * i], rows[2 * i + 1]
        assert c["output_shape"] == a["output_shape"] == ALL_CNN_C_SHAPES[i]
        assert (c["params"], a["params"]) == (ALL_CNN_C_PARAMS[i], 0)
        assert (c["macs"], a["macs"]) == (ALL_CNN_C_MACS[i], 0)
        assert c["rf"] == a["rf"] == [ALL_CNN_C_RF[i]] * 2
        assert c["jump"] == a["jump"] == [ALL_CNN_C_JUMP[i]] * 2
    assert (s.total_params, s.total_macs, s.total_flops) == (
        ALL_CNN_C_TOTAL_PARAMS, ALL_CNN_C_TOTAL_MACS, ALL_CNN_C_TOTAL_FLOPS)
    assert s.input_shape == shape and s.output_shape == (1, 10, 6, 6)

    text = str(s)
    assert repr(s) == text
    lines = text.splitlines()
    assert lines[0].split() == ["#", "Layer", "(op)", "Output", "shape", "Params", "MACs",
                                "Receptive", "field", "Jump"]
    assert "input" in lines[2] and "(1, 3, 32, 32)" in lines[2]
    # layer 12: the valid 3x3 conv, 192*192*9 + 192 params, 11,943,936 MACs, 27x27, 4x4
    row12 = next(line for line in lines if line.split()[:2] == ["12", "conv2d"])
    assert row12.split()[2:] == ["(1,", "192,", "6,", "6)", "331,968", "11,943,936",
                                 "27x27", "4x4"]
    assert "Total params: 1,369,738" in text
    assert "Total MACs: 270,798,336" in text
    assert "Total FLOPs: 541,942,632" in text
    printed = []
    net.summary(shape, print_fn=printed.append)
    assert printed == [text]


def test_all_cnn_c_matches_torch(torch):
    net = all_cnn_c(seed=1)
    mods = []
    for c in ALL_CNN_C_CONVS:
        mods += [torch.nn.Conv2d(c["in_channels"], c["out_channels"], c["kernel_size"],
                                 stride=c["stride"], padding=c["padding"]),
                 torch.nn.ReLU()]
    model = torch.nn.Sequential(*mods).double()
    # nn.Sequential's state-dict keys are the ones pyconv.Sequential uses.
    assert set(model.state_dict()) == set(net.params)
    model.load_state_dict({k: torch.from_numpy(np.array(v, np.float64))
                           for k, v in net.params.items()})
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = net.apply(x)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # And back: a state dict from torch initialises the pyconv stack.
    again = pyconv.Sequential(net.spec, params={k: v.numpy() for k, v in
                                                model.state_dict().items()})
    np.testing.assert_allclose(again.apply(x), want, rtol=1e-10, atol=1e-12)


def small_net(**kwargs):
    return pyconv.Sequential([
        conv(2, 4, 3), {"op": "gelu"},
        {"op": "conv2d", "in_channels": 4, "out_channels": 6, "kernel_size": [3, 1],
         "stride": [2, 1], "dilation": [2, 1], "padding": 0}, {"op": "leaky_relu"},
        conv(6, 3, 1, padding=0), {"op": "sigmoid"},
    ], **kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_apply_equals_layer_by_layer(dtype, rng):
    net = small_net(seed=3)
    x = rng.standard_normal((3, 2, 13, 9)).astype(dtype)
    before = x.copy()
    y = x
    for layer in net.layers:
        y = layer.apply(y)
    got = net.apply(x)
    assert got.dtype == dtype and got.shape == net.output_shape(x.shape) == y.shape
    np.testing.assert_array_equal(got, y)
    np.testing.assert_array_equal(x, before)
    assert got.tobytes() == net.apply(x, n_threads=1).tobytes() == net.apply(
        x, n_threads=2).tobytes()


def test_apply_never_modifies_the_input(rng):
    # A stack that starts with an in-place-capable op must still leave x alone.
    for layers in ([{"op": "relu"}], [{"op": "relu"}, {"op": "tanh"}], []):
        net = pyconv.Sequential(layers)
        x = rng.standard_normal((2, 3, 4))
        before = x.copy()
        y = net.apply(x)
        np.testing.assert_array_equal(x, before)
        assert not np.shares_memory(x, y)
        ro = before.copy()
        ro.setflags(write=False)
        net.apply(ro)  # read-only input accepted


def test_receptive_field_with_dilation_and_per_axis_kernels():
    net = small_net(seed=0)
    rows = net.summary((1, 2, 13, 9)).rows
    # 3x3 s1: (3, 3), jumps (1, 1). Then kernel (3, 1), dilation (2, 1), stride (2, 1):
    # effective kernel (2*2 + 1, 1) = (5, 1): r = (3 + 4*1, 3 + 0) = (7, 3), j = (2, 1).
    # 1x1: unchanged. Activations: unchanged.
    assert [r["rf"] for r in rows] == [[3, 3]] * 2 + [[7, 3]] * 4
    assert [r["jump"] for r in rows] == [[1, 1]] * 2 + [[2, 1]] * 4


# -- ops without pyconv's window keys ---------------------------------------------------
class _PairOp(Op):
    """Doubles x and returns (y, something): Sequential must pass y on."""

    name = "test_sequential_pair"
    summary = "test op returning a tuple"

    def output_shape(self, spec, input_shape):
        return tuple(input_shape)

    def forward(self, spec, x, params, out, n_threads):
        np.multiply(x, 2, out=out)
        return out, np.zeros(out.shape, np.int64)


class _DownOp(Op):
    """Halves the last axis without declaring a window: the field becomes unknown."""

    name = "test_sequential_down"
    summary = "test op changing the size without a window"

    def output_shape(self, spec, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)

    def forward(self, spec, x, params, out, n_threads):
        out[...] = x[..., : 2 * out.shape[-1]:2]
        return out


class _WindowOp(_DownOp):
    """The same op declaring its window through ``receptive_field(spec)``."""

    name = "test_sequential_window"

    def receptive_field(self, spec):
        return [(1, 1), (1, 2)]


@pytest.fixture
def test_ops():
    for cls in (_PairOp, _DownOp, _WindowOp):
        pyconv.register_op(cls, replace=True)
    yield
    from pyconv import _registry

    for cls in (_PairOp, _DownOp, _WindowOp):
        _registry._ops.pop(cls.name, None)


def test_tuple_output_passes_first_element_on(test_ops, rng):
    net = pyconv.Sequential([{"op": "test_sequential_pair"}, {"op": "relu"}])
    x = rng.standard_normal((2, 5))
    np.testing.assert_array_equal(net.apply(x), np.maximum(2 * x, 0))


def test_receptive_field_sources(test_ops):
    shape = (1, 1, 8, 8)
    net = pyconv.Sequential([conv(1, 1, 3), {"op": "test_sequential_window"},
                             conv(1, 1, 3)])
    rows = net.summary(shape).rows
    # 3x3: r 3, j 1; window (1, 1)/(1, 2): r 3, j (1, 2); 3x3: r (5, 3+2*2=7), j (1, 2).
    assert [r["rf"] for r in rows] == [[3, 3], [3, 3], [5, 7]]
    assert [r["jump"] for r in rows] == [[1, 1], [1, 2], [1, 2]]
    net = pyconv.Sequential([conv(1, 1, 3), {"op": "test_sequential_down"},
                             conv(1, 1, 3)])
    s = net.summary(shape)
    assert [r["rf"] for r in s.rows] == [[3, 3], None, None]
    assert "?" in str(s).splitlines()[-7]
    assert net.receptive_field(shape) == (None, None)


# -- specs and params ---------------------------------------------------------------------
def test_spec_json_round_trip(rng):
    net = small_net(seed=5)
    text = json.dumps(net.spec)
    for again in (pyconv.Sequential(json.loads(text), params=net.params),
                  pyconv.Sequential(text, params=net.params)):
        assert again.spec == net.spec and again == net
        x = rng.standard_normal((1, 2, 13, 9)).astype(np.float32)
        np.testing.assert_array_equal(again.apply(x), net.apply(x))
    assert pyconv.Sequential(net.spec) == net  # specs equal, params not compared
    assert net.spec[0]["kernel_size"] == [3, 3]  # normalised
    assert net.get_config() == net.spec


def test_params_state_dict_form():
    net = small_net(seed=5)
    assert list(net.params) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight",
                                "4.bias"]
    assert net.params["2.weight"].shape == (6, 4, 3, 1)
    assert net.param_count == sum(v.size for v in net.params.values()) == (
        4 * 2 * 9 + 4 + 6 * 4 * 3 + 6 + 3 * 6 + 3)
    w = np.full((6, 4, 3, 1), 0.5)
    other = small_net(seed=6, params={"2.weight": w})
    np.testing.assert_array_equal(other.params["2.weight"], w)
    assert not np.array_equal(other.params["0.weight"], net.params["0.weight"])
    # seeds: same seed, same parameters
    again = small_net(seed=5)
    for k, v in net.params.items():
        np.testing.assert_array_equal(again.params[k], v)
    assert small_net(seed=5, dtype="float64").params["0.weight"].dtype == np.float64
    assert net.params["0.weight"].dtype == np.float32


def test_params_errors():
    with pytest.raises(ValueError, match="'weight' is not of the form"):
        small_net(params={"weight": np.zeros(1)})
    with pytest.raises(ValueError, match="names layer 9, but the stack has 6 layers"):
        small_net(params={"9.weight": np.zeros(1)})
    with pytest.raises(ValueError, match=r"layer 1: gelu: unknown parameter\(s\) \['weight'\]"):
        small_net(params={"1.weight": np.zeros(1)})
    with pytest.raises(ValueError, match=r"layer 2: conv2d: parameter 'weight' must have "
                                         r"shape \(6, 4, 3, 1\)"):
        small_net(params={"2.weight": np.zeros((6, 4, 3, 3))})
    with pytest.raises(TypeError, match="params must be a dict"):
        small_net(params=[1, 2])


def test_conv_objects_as_layers(rng):
    first = pyconv.Conv(conv(2, 4, 3), seed=0)
    net = pyconv.Sequential([first, {"op": "relu"}])
    assert net[0] is first
    np.testing.assert_array_equal(net.params["0.weight"], first.params["weight"])
    bias = np.arange(4.0)
    net2 = pyconv.Sequential([first, {"op": "relu"}], params={"0.bias": bias})
    np.testing.assert_array_equal(net2.params["0.bias"], bias)
    np.testing.assert_array_equal(net2.params["0.weight"], first.params["weight"])
    np.testing.assert_array_equal(first.params["bias"] != bias, True)  # not modified


def test_container_protocol():
    net = small_net(seed=0)
    assert len(net) == 6
    assert [layer.op.name for layer in net] == ["conv2d", "gelu", "conv2d", "leaky_relu",
                                                "conv2d", "sigmoid"]
    assert net[-1].op.name == "sigmoid" and net[1] is net.layers[1]
    tail = net[2:]
    assert isinstance(tail, pyconv.Sequential) and len(tail) == 4
    assert tail[0] is net[2]
    assert tail.output_shape((1, 4, 13, 9)) == net.output_shape((1, 2, 13, 9))
    layers = net.layers
    layers.pop()
    assert len(net) == 6  # a copy
    text = repr(net)
    assert text.startswith("Sequential([") and '(3) Conv({"op": "leaky_relu"' in text
    assert repr(pyconv.Sequential([])) == "Sequential([])"
    empty = pyconv.Sequential([])
    assert empty.output_shape((1, 2, 3)) == (1, 2, 3) and empty.param_count == 0
    assert empty.macs((1, 2, 3)) == 0 and "Total params: 0" in str(empty.summary((1, 2, 3)))


# -- errors ------------------------------------------------------------------------------
def test_shape_errors_name_layer_and_shapes():
    net = pyconv.Sequential([conv(3, 8, 3), {"op": "relu"}, conv(16, 8, 3)])
    with pytest.raises(ValueError) as info:
        net.output_shape((1, 3, 10, 10))
    msg = str(info.value)
    assert ("layer 2 (conv2d) cannot take the output of layer 1 (relu), of shape "
            "(1, 8, 10, 10)") in msg
    assert "expected 16 input channels" in msg
    with pytest.raises(ValueError, match=r"layer 0 \(conv2d\) cannot take the input, of "
                                         r"shape \(1, 4, 10, 10\)"):
        net.apply(np.zeros((1, 4, 10, 10), np.float32))
    with pytest.raises(ValueError, match="layer 0 .* cannot take"):
        pyconv.Sequential([conv(3, 8, 3, padding=0)]).macs((1, 3, 2, 2))  # too small
    with pytest.raises(ValueError, match="layer 2"):
        net.summary((1, 3, 10, 10))


def test_construction_errors():
    with pytest.raises(TypeError, match="layer 1 must be a spec"):
        pyconv.Sequential([{"op": "relu"}, 3])
    with pytest.raises(TypeError, match="layers must be a list"):
        pyconv.Sequential({"op": "relu"})
    with pytest.raises(pyconv.SpecError, match="layer 1: leaky_relu: spec key "
                                               "'negative_slope'"):
        pyconv.Sequential([{"op": "relu"}, {"op": "leaky_relu", "negative_slope": "x"}])
    with pytest.raises(ValueError, match="not valid JSON"):
        pyconv.Sequential("[{")
    with pytest.raises(TypeError, match=r"layer 0 \(relu\).*complex128"):
        pyconv.Sequential([{"op": "relu"}]).apply(np.zeros(3, np.complex128))
