"""Deformable convolution: deform_conv1d, deform_conv2d, deform_conv3d."""
import json
import math
import os

import numpy as np
import pytest

import pyconv
from reference import conv_nd as reference_conv
from reference_deform import deform_conv_nd as reference_deform

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "deform_conv2d.npz")
TOL32 = 2e-5  # float32 tolerance relative to the output's magnitude


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def close(got, ref, dtype):
    """Absolute error relative to the magnitude of the reference."""
    scale = max(1.0, float(np.max(np.abs(ref)))) if np.size(ref) else 1.0
    tol = 1e-12 if np.dtype(dtype) == np.float64 else TOL32
    err = float(np.max(np.abs(np.asarray(got, np.float64) - ref))) if np.size(ref) else 0.0
    assert err <= tol * scale, f"max abs error {err:.3g} > {tol * scale:.3g}"


def make_spec(rank, C, Co, k=None, **kw):
    if k is not None:
        kw["kernel_size"] = k
    return {"op": f"deform_conv{rank}d", "in_channels": C, "out_channels": Co, **kw}


def pads_of(conv, shape):
    spec = conv.spec
    return conv.op.geometry(spec, shape)[1]


# -- golden torchvision data -----------------------------------------------------------

def golden_cases():
    data = np.load(GOLDEN, allow_pickle=False)
    return data, [str(n) for n in data["cases"]]


def golden_conv(data, name):
    meta = json.loads(str(data[f"{name}/meta"]))
    w = data[f"{name}/weight"]
    x = data[f"{name}/x"]
    spec = make_spec(2, x.shape[1], w.shape[0], list(w.shape[2:]), stride=meta["stride"],
                     padding=meta["padding"], dilation=meta["dilation"],
                     groups=meta["groups"], offset_groups=meta["offset_groups"],
                     bias=meta["has_bias"], modulated=meta["modulated"])
    params = {"weight": w}
    if meta["has_bias"]:
        params["bias"] = data[f"{name}/bias"]
    inputs = {"offset": data[f"{name}/offset"]}
    if meta["modulated"]:
        inputs["mask"] = data[f"{name}/mask"]
    return pyconv.Conv(spec, params=params), x, inputs, meta


def test_golden_file_has_all_cases():
    data, names = golden_cases()
    assert len(names) == 16
    assert json.loads(str(data["versions"]))["torchvision"].startswith("0.29")


@pytest.mark.parametrize("index", range(16))
def test_golden_torchvision(index):
    data, names = golden_cases()
    name = names[index]
    conv, x, inputs, meta = golden_conv(data, name)
    ref = data[f"{name}/out"]
    y = conv.apply(x, **inputs)
    assert y.dtype == np.float64 and y.shape == ref.shape
    close(y, ref, np.float64)
    y32 = conv.apply(x.astype(np.float32),
                     **{k: v.astype(np.float32) for k, v in inputs.items()})
    assert y32.dtype == np.float32
    close(y32, ref, np.float32)


@pytest.mark.parametrize("index", [0, 3, 10, 11, 15])
def test_reference_agrees_with_golden(index):
    # The NumPy loop the other tests trust reproduces torchvision's stored outputs.
    data, names = golden_cases()
    name = names[index]
    conv, x, inputs, meta = golden_conv(data, name)
    ref = reference_deform(x, inputs["offset"], data[f"{name}/weight"],
                           data[f"{name}/bias"] if meta["has_bias"] else None,
                           meta["stride"], [(p, p) for p in meta["padding"]],
                           meta["dilation"], meta["groups"], meta["offset_groups"],
                           inputs.get("mask"))
    close(ref, data[f"{name}/out"], np.float64)


# -- random configurations against the NumPy loop ------------------------------------------

def random_offsets(rng, shape, kind, spatial_max):
    if kind == "fractional":
        return rng.normal(0.0, 1.5, shape)
    if kind == "large":       # most samples fall outside the image
        return rng.uniform(-1.5 * spatial_max, 1.5 * spatial_max, shape)
    if kind == "integer":     # samples exactly on pixels
        return rng.integers(-3, 4, shape).astype(np.float64)
    # "boundary": mixes exact edge values -1, 0, n-1, n and half-pixels; offsets
    # relative to the base grid are added in the test (see boundary_offsets)
    raise ValueError(kind)


def boundary_offsets(rng, conv, shape, out_shape):
    """Offsets that put sampling positions exactly on -1, -0.5, 0, n-1, n-0.5, n, ..."""
    spec = conv.spec
    rank = len(spec["kernel_size"])
    pads = pads_of(conv, shape)
    K = math.prod(spec["kernel_size"])
    og = spec["offset_groups"]
    N = shape[0]
    out_sp = out_shape[2:]
    off = np.zeros((N, rank * og * K, *out_sp))
    eps = 2.0 ** -10
    taps = list(np.ndindex(*spec["kernel_size"]))
    for g in range(og):
        for t, tap in enumerate(taps):
            for a in range(rank):
                n = shape[2 + a]
                targets = np.array([-2.0, -1.0, -1.0 + eps, -0.5, 0.0, 0.5, n - 1.0,
                                    n - 0.5, n - eps, float(n), n + 1.0])
                grid = (np.arange(out_sp[a]) * spec["stride"][a] - pads[a][0]
                        + tap[a] * spec["dilation"][a]).reshape(
                            [-1 if b == a else 1 for b in range(rank)])
                chosen = rng.choice(targets, size=(N, *out_sp))
                off[:, g * rank * K + rank * t + a] = chosen - grid
    return off


def random_case(rng, rank, modulated, kind):
    og = int(rng.choice([1, 2]))
    groups = int(rng.choice([1, 2]))
    C = og * groups * int(rng.integers(1, 3))
    Co = groups * int(rng.integers(1, 3))
    k = [int(v) for v in rng.integers(1, 4, rank)]
    if rank == 3:
        k = [int(v) for v in rng.integers(1, 3, rank)]
    stride = [int(v) for v in rng.integers(1, 3, rank)]
    dilation = [int(v) for v in rng.integers(1, 3, rank)]
    padding = [[int(rng.integers(0, 3)), int(rng.integers(0, 3))] for _ in range(rank)]
    lo_size = [max(1, d * (kk - 1) + 1 - p[0] - p[1]) for d, kk, p in zip(dilation, k, padding)]
    size_hi = {1: 10, 2: 7, 3: 5}[rank]
    spatial = [int(rng.integers(lo, lo + size_hi)) for lo in lo_size]
    N = int(rng.integers(1, 3))
    spec = make_spec(rank, C, Co, k, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, offset_groups=og, modulated=modulated,
                     bias=bool(rng.integers(0, 2)))
    conv = pyconv.Conv(spec, seed=int(rng.integers(1 << 30)), dtype=np.float64)
    shape = (N, C, *spatial)
    out_shape = conv.output_shape(shape)
    K = math.prod(k)
    off_shape = (N, rank * og * K, *out_shape[2:])
    if kind == "boundary":
        offset = boundary_offsets(rng, conv, shape, out_shape)
    else:
        offset = random_offsets(rng, off_shape, kind, max(spatial))
    inputs = {"offset": offset}
    if modulated:
        inputs["mask"] = rng.uniform(-0.5, 1.5, (N, og * K, *out_shape[2:]))
    x = rng.standard_normal(shape)
    return conv, x, inputs


def reference_for(conv, x, inputs):
    spec = conv.spec
    p = conv.params
    y = reference_deform(x, inputs["offset"], p["weight"], p.get("bias"), spec["stride"],
                         pads_of(conv, x.shape), spec["dilation"], spec["groups"],
                         spec["offset_groups"], inputs.get("mask"))
    return np.maximum(y, 0) if spec["activation"] == "relu" else y


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("kind", ["fractional", "large", "integer", "boundary"])
def test_against_numpy_reference(rng, rank, modulated, kind):
    for _ in range(3 if rank < 3 else 2):
        conv, x, inputs = random_case(rng, rank, modulated, kind)
        ref = reference_for(conv, x, inputs)
        close(conv.apply(x, **inputs), ref, np.float64)
        y32 = conv.apply(x.astype(np.float32), **inputs)
        assert y32.dtype == np.float32
        if kind != "boundary":  # float32 moves points off exact boundaries
            close(y32, ref, np.float32)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_relu_and_same_padding(rng, rank):
    spec = make_spec(rank, 2, 3, 3, padding="same", stride=2, activation="relu",
                     modulated=True)
    conv = pyconv.Conv(spec, seed=1, dtype=np.float64)
    shape = (2, 2) + (7, 6, 5)[:rank]
    out = conv.output_shape(shape)
    assert out[2:] == tuple(-(-n // 2) for n in shape[2:])
    inputs = {"offset": rng.normal(0, 1, (2, rank * 3 ** rank, *out[2:])),
              "mask": rng.uniform(0, 1, (2, 3 ** rank, *out[2:]))}
    x = rng.standard_normal(shape)
    y = conv.apply(x, **inputs)
    assert np.all(y >= 0)
    close(y, reference_for(conv, x, inputs), np.float64)


def test_offset_layout_2d():
    # One tap, one pixel: channel 0 moves along rows (dy), channel 1 along columns (dx).
    x = np.arange(20, dtype=np.float64).reshape(1, 1, 4, 5)
    conv = pyconv.Conv(make_spec(2, 1, 1, 1, bias=False), params={"weight": np.ones((1, 1, 1, 1))})
    off = np.zeros((1, 2, 4, 5))
    off[0, 0] = 1.0            # dy = +1: read the next row
    y = conv.apply(x, offset=off)
    assert y[0, 0, 0, 0] == x[0, 0, 1, 0] and y[0, 0, 3, 2] == 0.0
    off[0, 0] = 0.0
    off[0, 1] = 0.5            # dx = +0.5: average with the next column
    y = conv.apply(x, offset=off)
    assert y[0, 0, 0, 0] == 0.5 and y[0, 0, 1, 4] == 0.5 * x[0, 0, 1, 4]


def test_offset_layout_3d_axes_order():
    x = np.arange(2 * 3 * 4, dtype=np.float64).reshape(1, 1, 2, 3, 4)
    conv = pyconv.Conv(make_spec(3, 1, 1, 1, bias=False),
                       params={"weight": np.ones((1, 1, 1, 1, 1))})
    for axis, shifted in enumerate((x[0, 0, 1, 0, 0], x[0, 0, 0, 1, 0], x[0, 0, 0, 0, 1])):
        off = np.zeros((1, 3, 2, 3, 4))
        off[0, axis] = 1.0     # channels are (dz, dy, dx)
        assert conv.apply(x, offset=off)[0, 0, 0, 0, 0] == shifted


# -- zero offsets: a plain convolution ------------------------------------------------------

@pytest.mark.parametrize("rank", [1, 2, 3])
def test_zero_offsets_reproduce_conv(rng, torch, rank):
    F = [None, torch.nn.functional.conv1d, torch.nn.functional.conv2d,
         torch.nn.functional.conv3d][rank]
    kw = dict(kernel_size=[3, 2, 3][:rank], stride=[2, 1, 1][:rank], padding=1,
              dilation=[1, 2, 1][:rank], groups=2)
    dc = pyconv.Conv(make_spec(rank, 4, 6, offset_groups=2, modulated=True, **kw),
                     seed=3, dtype=np.float64)
    plain = pyconv.Conv({"op": f"conv{rank}d", "in_channels": 4, "out_channels": 6, **kw},
                        params=dc.params)
    x = rng.standard_normal((2, 4) + (9, 8, 7)[:rank])
    out = dc.output_shape(x.shape)
    K = math.prod(kw["kernel_size"])
    zeros = np.zeros((2, rank * 2 * K, *out[2:]))
    ones = np.ones((2, 2 * K, *out[2:]))
    y = dc.apply(x, offset=zeros, mask=ones)
    close(y, plain.apply(x), np.float64)
    t = lambda a: torch.from_numpy(np.array(a))  # writeable copies  # noqa: E731
    ref = F(t(x), t(dc.params["weight"]), t(dc.params["bias"]), stride=kw["stride"], padding=1,
            dilation=kw["dilation"], groups=2).numpy()
    close(y, ref, np.float64)
    y32 = dc.apply(x.astype(np.float32), offset=zeros, mask=ones)
    close(y32, ref, np.float32)
    # Without modulation too.
    dc1 = pyconv.Conv(make_spec(rank, 4, 6, offset_groups=2, **kw), params=dc.params)
    close(dc1.apply(x, offset=zeros), ref, np.float64)


# -- learned offsets (mmcv Pack form) --------------------------------------------------------

@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("modulated", [False, True])
def test_learned_zero_init_is_plain_conv(rng, rank, modulated):
    k = [3, 3, 2][:rank]
    spec = make_spec(rank, 4, 6, k, padding=1, stride=[1, 2, 1][:rank], groups=2,
                     offset_groups=2, offsets="learned", modulated=modulated)
    conv = pyconv.Conv(spec, seed=5, dtype=np.float64)
    K = math.prod(k)
    M = (rank + modulated) * 2 * K
    shapes = conv.param_shapes
    assert shapes["offset_weight"] == (M, 4, *k) and shapes["offset_bias"] == (M,)
    assert conv.param_count == 6 * 2 * K + 6 + M * 4 * K + M
    assert not conv.params["offset_weight"].any() and not conv.params["offset_bias"].any()
    plain = pyconv.Conv({"op": f"conv{rank}d", "in_channels": 4, "out_channels": 6,
                         "kernel_size": k, "padding": 1, "stride": [1, 2, 1][:rank],
                         "groups": 2, "bias": False},
                        params={"weight": conv.params["weight"]})
    x = rng.standard_normal((2, 4) + (7, 6, 5)[:rank])
    scale = 0.5 if modulated else 1.0   # mask = sigmoid(0) = 0.5, as in mmcv
    bias = conv.params["bias"].reshape((1, -1) + (1,) * rank)
    close(conv.apply(x), scale * plain.apply(x) + bias, np.float64)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("modulated", [False, True])
def test_learned_against_reference(rng, rank, modulated):
    k = [3, 2, 2][:rank]
    spec = make_spec(rank, 2, 3, k, padding=1, dilation=[2, 1, 1][:rank],
                     offset_groups=2, offsets="learned", modulated=modulated)
    K = math.prod(k)
    M = (rank + modulated) * 2 * K
    params = {"weight": rng.standard_normal((3, 2, *k)), "bias": rng.standard_normal(3),
              "offset_weight": rng.standard_normal((M, 2, *k)),
              "offset_bias": rng.standard_normal(M)}
    conv = pyconv.Conv(spec, params=params)
    x = rng.standard_normal((2, 2) + (6, 5, 4)[:rank])
    pads = pads_of(conv, x.shape)
    # mmcv: out = conv_offset(x); o1, o2, mask = chunk(out, 3); offset = cat(o1, o2).
    pred = reference_conv(x, params["offset_weight"], params["offset_bias"], [1] * rank,
                          pads, spec["dilation"], 1)
    offset = pred[:, :rank * 2 * K]
    mask = 1.0 / (1.0 + np.exp(-pred[:, rank * 2 * K:])) if modulated else None
    ref = reference_deform(x, offset, params["weight"], params["bias"], [1] * rank, pads,
                           spec["dilation"], 1, 2, mask)
    close(conv.apply(x), ref, np.float64)
    close(conv.apply(x.astype(np.float32)), ref, np.float32)


def test_learned_mmcv_chunk_layout():
    # 2-D modulated: channels [0, 2K) are cat(o1, o2) = offsets, [2K, 3K) mask logits.
    K = 9
    spec = make_spec(2, 1, 1, 3, padding=1, offsets="learned", modulated=True, bias=False)
    ob = np.zeros(3 * K)
    ob[2 * 4] = 1.0             # tap t=4 (centre), dy = +1
    ob[2 * K + 4] = 50.0        # its mask logit: sigmoid -> 1
    ob[2 * K:2 * K + 4] = -50.0  # other taps: mask ~ 0
    ob[2 * K + 5:] = -50.0
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 1, 1] = 1.0
    conv = pyconv.Conv(spec, params={"weight": w, "offset_weight": np.zeros((3 * K, 1, 3, 3)),
                                     "offset_bias": ob})
    x = np.arange(20.0).reshape(1, 1, 4, 5)
    y = conv.apply(x)
    expect = np.zeros((4, 5))
    expect[:3] = x[0, 0, 1:]
    np.testing.assert_allclose(y[0, 0], expect, atol=1e-12)


def test_learned_rejects_given_offsets(rng):
    conv = pyconv.Conv(make_spec(2, 2, 2, 3, offsets="learned"), seed=0)
    x = rng.standard_normal((1, 2, 5, 5))
    with pytest.raises(TypeError, match="learned"):
        conv.apply(x, offset=np.zeros((1, 18, 3, 3)))


# -- shape rule, counts, threads, layouts ----------------------------------------------------

def test_shape_rule_random_configs():
    rng = np.random.default_rng(1234)
    checked = 0
    for _ in range(300):
        rank = int(rng.integers(1, 4))
        og = int(rng.integers(1, 3))
        C = og * int(rng.integers(1, 3))
        k = [int(v) for v in rng.integers(1, 4, rank)]
        stride = [int(v) for v in rng.integers(1, 4, rank)]
        dilation = [int(v) for v in rng.integers(1, 3, rank)]
        choice = rng.integers(0, 3)
        padding = ("same" if choice == 0 else
                   [[int(rng.integers(0, 3)), int(rng.integers(0, 3))] for _ in range(rank)]
                   if choice == 1 else int(rng.integers(0, 2)))
        spatial = [int(v) for v in rng.integers(1, {1: 12, 2: 8, 3: 5}[rank], rank)]
        N = int(rng.integers(0, 3))
        learned = bool(rng.integers(0, 2))
        modulated = bool(rng.integers(0, 2))
        spec = make_spec(rank, C, 2, k, stride=stride, dilation=dilation, padding=padding,
                         offset_groups=og, modulated=modulated,
                         offsets="learned" if learned else "input")
        conv = pyconv.Conv(spec, seed=0)
        shape = (N, C, *spatial)
        try:
            out = conv.output_shape(shape)
        except ValueError as e:
            assert "too small" in str(e)
            with pytest.raises(ValueError, match="too small"):
                conv.apply(np.zeros(shape, np.float32))
            continue
        pads = (pads_of(conv, shape) if padding != "same" else
                [((-(-n // s) - 1) * s + d * (kk - 1) + 1 - n) for n, s, d, kk in
                 zip(spatial, stride, dilation, k)])
        if padding == "same":
            expect = [-(-n // s) for n, s in zip(spatial, stride)]
        else:
            expect = [(n + lo + hi - d * (kk - 1) - 1) // s + 1
                      for n, (lo, hi), d, kk, s in zip(spatial, pads, dilation, k, stride)]
        assert out == (N, 2, *expect)
        inputs = {}
        if not learned:
            K = math.prod(k)
            inputs["offset"] = rng.normal(0, 2, (N, rank * og * K, *out[2:]))
            if modulated:
                inputs["mask"] = rng.uniform(0, 1, (N, og * K, *out[2:]))
        y = conv.apply(rng.standard_normal(shape).astype(np.float32), **inputs)
        assert y.shape == out and y.dtype == np.float32
        checked += 1
    assert checked > 150


def test_macs_flops_and_counts():
    spec = make_spec(2, 4, 8, 3, padding=1, groups=2, offset_groups=2)
    conv = pyconv.Conv(spec, seed=0)
    shape = (2, 4, 10, 12)
    P = 2 * 10 * 12
    assert conv.macs(shape) == P * 8 * 2 * 9
    assert conv.flops(shape) == 2 * P * 8 * 2 * 9 + 2 * 4 * 2 * 4 * 9 * 10 * 12
    assert conv.param_count == 8 * 2 * 9 + 8
    learned = pyconv.Conv({**spec, "offsets": "learned", "modulated": True}, seed=0)
    M = 3 * 2 * 9
    assert learned.macs(shape) == P * 8 * 2 * 9 + P * M * 4 * 9
    assert learned.param_count == 8 * 2 * 9 + 8 + M * 4 * 9 + M
    for rank in (1, 3):
        c = pyconv.Conv(make_spec(rank, 2, 2, 2, offsets="learned"), seed=0)
        assert c.param_shapes["offset_weight"] == (rank * 2 ** rank, 2) + (2,) * rank


def test_init_matches_torchvision_bounds():
    conv = pyconv.Conv(make_spec(2, 6, 4, 3, groups=2), seed=0, dtype=np.float64)
    bound = 1 / math.sqrt(3 * 9)
    for name in ("weight", "bias"):
        a = conv.params[name]
        assert np.all(np.abs(a) <= bound) and np.abs(a).max() > 0.5 * bound
    assert pyconv.Conv(conv.spec) == conv


@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_threads_bit_identical(rng, rank, learned):
    size = {1: (10000,), 2: (60, 50), 3: (10, 10, 10)}[rank]
    spec = make_spec(rank, 16, 16, 3, padding=1, offset_groups=2, groups=2, modulated=True,
                     offsets="learned" if learned else "input")
    conv = pyconv.Conv(spec, seed=0)
    if learned:  # non-zero offset conv so that offsets and mask vary
        M = (rank + 1) * 2 * 3 ** rank
        params = dict(conv.params, offset_weight=rng.normal(0, 0.3, (M, 16) + (3,) * rank),
                      offset_bias=rng.normal(0, 1, M))
        conv = pyconv.Conv(spec, params=params)
    x = rng.standard_normal((1, 16, *size)).astype(np.float32)
    out = conv.output_shape(x.shape)
    inputs = {}
    if not learned:
        inputs = {"offset": rng.normal(0, 2, (1, rank * 2 * 3 ** rank, *out[2:])),
                  "mask": rng.uniform(0, 1, (1, 2 * 3 ** rank, *out[2:]))}
    assert conv.flops(x.shape) > 8_000_000   # large enough to run on 2 threads
    y1 = conv.apply(x, n_threads=1, **inputs)
    y2 = conv.apply(x, n_threads=2, **inputs)
    assert np.array_equal(y1, y2)


def test_noncontiguous_readonly_inputs_unchanged(rng):
    conv = pyconv.Conv(make_spec(2, 3, 4, 3, padding=1, modulated=True), seed=0,
                       dtype=np.float64)
    xb = rng.standard_normal((2, 3, 12, 14))
    x = xb[:, :, ::2, ::2]                           # strided
    out = conv.output_shape(x.shape)
    off = np.asfortranarray(rng.normal(0, 1, (2, 18, *out[2:])))
    mask = rng.uniform(0, 1, (2, 9, *out[2:]) )[..., ::-1]   # negative strides
    for a in (xb, off):
        a.setflags(write=False)
    copies = [np.array(a) for a in (xb, off, mask)]
    y = conv.apply(x, offset=off, mask=mask)
    for a, c in zip((xb, off, mask), copies):
        assert np.array_equal(a, c)
    ref = conv.apply(np.ascontiguousarray(x), offset=np.ascontiguousarray(off),
                     mask=np.ascontiguousarray(mask))
    assert np.array_equal(y, ref)
    close(y, reference_for(conv, x, {"offset": off, "mask": mask}), np.float64)


def test_out_argument(rng):
    conv = pyconv.Conv(make_spec(1, 2, 3, 3), seed=0)
    x = rng.standard_normal((2, 2, 9)).astype(np.float32)
    off = rng.normal(0, 1, (2, 3, 7)).astype(np.float32)
    out = np.empty((2, 3, 7), np.float32)
    y = conv.apply(x, offset=off, out=out)
    assert y is out and np.array_equal(out, conv.apply(x, offset=off))


def test_empty_batch():
    conv = pyconv.Conv(make_spec(2, 2, 3, 3, modulated=True), seed=0)
    y = conv.apply(np.zeros((0, 2, 5, 5), np.float32), offset=np.zeros((0, 18, 3, 3)),
                   mask=np.zeros((0, 9, 3, 3)))
    assert y.shape == (0, 3, 3, 3) and y.dtype == np.float32


def test_dtype_rule(rng):
    conv = pyconv.Conv(make_spec(2, 1, 2, 2), seed=0)
    x = rng.integers(0, 5, (1, 1, 4, 4)).astype(np.int16)
    off = rng.normal(0, 1, (1, 8, 3, 3))                # float64 offsets, float32 compute
    y = conv.apply(x, offset=off)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, conv.apply(x.astype(np.float32),
                                             offset=off.astype(np.float32)), rtol=1e-6)
    assert conv.apply(x.astype(np.int64), offset=off).dtype == np.float64
    with pytest.raises(TypeError, match="offset"):
        conv.apply(x, offset=off.astype(np.complex128))
    with pytest.raises(TypeError, match="offset"):
        conv.apply(x, offset=np.zeros((1, 8, 3, 3), bool))


# -- non-finite values -------------------------------------------------------------------------

def test_outside_samples_are_zero_even_next_to_inf_and_nan(rng):
    conv = pyconv.Conv(make_spec(2, 2, 3, 3, padding=1), seed=0, dtype=np.float64)
    x = rng.standard_normal((1, 2, 5, 6))
    x[0, 0, 0, 0] = np.inf
    x[0, 1, -1, -1] = np.nan
    off = np.full((1, 18, 5, 6), 1e6)          # every sample far outside
    y = conv.apply(x, offset=off)
    assert np.array_equal(y, np.broadcast_to(conv.params["bias"][None, :, None, None],
                                             y.shape))
    off = np.full((1, 18, 5, 6), np.inf)
    assert np.array_equal(conv.apply(x, offset=off), y)
    # Samples in the image but with the non-finite pixels outside the window.
    off = np.zeros((1, 18, 5, 6))
    y = conv.apply(x, offset=off)
    assert np.isfinite(y[0, :, 2, 2]).all()
    assert not np.isfinite(y[0, :, 0, 0]).all()


def test_nan_offset_gives_nan_only_there(rng):
    conv = pyconv.Conv(make_spec(2, 1, 1, 1), seed=0, dtype=np.float64)
    x = rng.standard_normal((1, 1, 4, 4))
    off = np.zeros((1, 2, 4, 4))
    off[0, 1, 2, 3] = np.nan
    y = conv.apply(x, offset=off)
    assert np.isnan(y[0, 0, 2, 3]) and np.isnan(y).sum() == 1


# -- errors -----------------------------------------------------------------------------------

def test_spec_errors():
    with pytest.raises(pyconv.SpecError, match="offset_groups"):
        pyconv.Conv(make_spec(2, 6, 4, 3, offset_groups=4))
    with pytest.raises(pyconv.SpecError, match="groups"):
        pyconv.Conv(make_spec(2, 6, 4, 3, groups=4))
    with pytest.raises(pyconv.SpecError, match="groups"):
        pyconv.Conv(make_spec(2, 4, 6, 3, groups=4))
    with pytest.raises(pyconv.SpecError, match="offsets"):
        pyconv.Conv(make_spec(2, 4, 6, 3, offsets="given"))
    with pytest.raises(pyconv.SpecError, match="padding_mode"):
        pyconv.Conv(make_spec(2, 4, 6, 3, padding_mode="reflect"))
    with pytest.raises(pyconv.SpecError, match="kernel_size"):
        pyconv.Conv(make_spec(3, 4, 6, [3, 3]))
    with pytest.raises(pyconv.SpecError, match="modulated"):
        pyconv.Conv(make_spec(2, 4, 6, 3, modulated=1))


def test_input_errors(rng):
    conv = pyconv.Conv(make_spec(2, 2, 3, 3, offset_groups=2), seed=0)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    good = np.zeros((2, 36, 4, 4), np.float32)
    with pytest.raises(TypeError, match=r"offset=.*\(2, 36, 4, 4\)"):
        conv.apply(x)
    with pytest.raises(ValueError, match=r"offset .*\(2, 36, 4, 4\).*got \(2, 18, 4, 4\)"):
        conv.apply(x, offset=np.zeros((2, 18, 4, 4)))
    with pytest.raises(ValueError, match="offset"):
        conv.apply(x, offset=np.zeros((2, 36, 4, 5)))
    with pytest.raises(ValueError, match="offset"):
        conv.apply(x, offset=np.zeros((1, 36, 4, 4)))
    with pytest.raises(TypeError, match="modulated=False"):
        conv.apply(x, offset=good, mask=np.ones((2, 18, 4, 4)))
    with pytest.raises(ValueError, match="input channels"):
        conv.apply(x[:, :1], offset=good)
    with pytest.raises(TypeError, match="unexpected input"):
        conv.apply(x, offset=good, indices=good)
    v2 = pyconv.Conv(make_spec(2, 2, 3, 3, offset_groups=2, modulated=True), seed=0)
    with pytest.raises(TypeError, match=r"mask=.*\(2, 18, 4, 4\)"):
        v2.apply(x, offset=good)
    with pytest.raises(ValueError, match=r"mask .*got \(2, 9, 4, 4\)"):
        v2.apply(x, offset=good, mask=np.ones((2, 9, 4, 4)))
    assert v2.apply(x, offset=good, mask=np.ones((2, 18, 4, 4))).shape == (2, 3, 4, 4)


def test_registered():
    names = pyconv.available_ops()
    for rank in (1, 2, 3):
        assert f"deform_conv{rank}d" in names
        op = pyconv.get_op(f"deform_conv{rank}d")
        assert op.inputs == ("offset", "mask") and op.summary and op.formulas
