"""conv_transpose1d/2d/3d against PyTorch, a float64 scatter loop and TF's SAME rule."""
import itertools

import numpy as np
import pytest

import pyconv
import reference
import reference_transposed as ref
from pyconv.ops import transposed as tmod


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def make(rank, dtype="float64", seed=0, **keys):
    spec = {"op": f"conv_transpose{rank}d", **keys}
    return pyconv.Conv(spec, seed=seed, dtype=dtype)


def torch_conv_t(torch, conv, x, **kw):
    rank = x.ndim - 2
    f = getattr(torch.nn.functional, f"conv_transpose{rank}d")
    p = conv.params
    bias = torch.from_numpy(p["bias"].copy()) if "bias" in p else None
    return f(torch.from_numpy(x), torch.from_numpy(p["weight"].copy()), bias, **kw).numpy()


def scale(a):
    return max(1.0, float(np.abs(a).max()))


# (rank, C_in, C_out, in spatial, kernel, stride, padding, output_padding, dilation, groups, bias)
TORCH_CASES = [
    (1, 3, 5, (7,), 3, 1, 0, 0, 1, 1, True),
    (1, 4, 6, (9,), 4, 3, 2, 2, 1, 2, True),
    (1, 2, 2, (5,), 3, 2, 0, 1, 3, 1, False),
    (1, 3, 3, (6,), 2, 1, 1, 2, 3, 3, True),   # output_padding < dilation, >= stride
    (2, 3, 4, (5, 6), 3, 2, 1, 1, 1, 1, True),
    (2, 4, 8, (4, 5), (2, 3), (3, 2), (0, 1), (2, 1), (2, 1), 4, True),
    (2, 6, 4, (6, 5), 4, 2, 1, 0, 1, 2, False),
    (2, 2, 3, (3, 3), 5, 1, 2, 0, 2, 1, True),
    (2, 3, 2, (4, 4), 1, 3, 0, 2, 1, 1, True),  # kernel smaller than stride: gaps
    (3, 2, 4, (3, 4, 3), 3, 2, 1, 1, 1, 2, True),
    (3, 4, 4, (2, 3, 4), (2, 1, 3), (1, 2, 2), (0, 0, 1), (0, 1, 1), (2, 1, 1), 4, False),
]


@pytest.mark.parametrize("case", TORCH_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_torch(torch, rng, case, dtype):
    rank, ci, co, sp, k, s, p, op, d, g, b = case
    conv = make(rank, dtype, in_channels=ci, out_channels=co, kernel_size=k, stride=s,
                padding=p, output_padding=op, dilation=d, groups=g, bias=b)
    x = rng.standard_normal((2, ci, *sp)).astype(dtype)
    y = conv.apply(x)
    t = torch_conv_t(torch, conv, x, stride=s, padding=p, output_padding=op, dilation=d,
                     groups=g)
    assert y.shape == t.shape == conv.output_shape(x.shape)
    assert y.dtype == np.dtype(dtype)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(y, t, rtol=0, atol=tol * scale(t))


def random_geometry(rng, rank, k_end, s_end, d_end, sizes):
    """Kernel, stride, dilation (each in [1, end)), a valid output_padding, input
    sizes in ``range(*sizes)`` and the uncropped ("full") output length per axis."""
    k = [int(v) for v in rng.integers(1, k_end, rank)]
    s = [int(v) for v in rng.integers(1, s_end, rank)]
    d = [int(v) for v in rng.integers(1, d_end, rank)]
    op = [int(rng.integers(0, max(a, b))) for a, b in zip(s, d)]
    sp = [int(v) for v in rng.integers(*sizes, rank)]
    full = [(n - 1) * ss + dd * (kk - 1) + 1 + o
            for n, ss, dd, kk, o in zip(sp, s, d, k, op)]
    return k, s, d, op, sp, full


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_asymmetric_pairs_match_cropped_torch(torch, rng, rank):
    # A (lo, hi) pair crops lo at the start and hi at the end of the padding-0 result.
    for _ in range(6):
        k, s, d, op, sp, full = random_geometry(rng, rank, 4, 4, 3, (2, 5))
        pads = [[int(rng.integers(0, (f + 1) // 2)), int(rng.integers(0, (f + 1) // 2))]
                for f in full]
        conv = make(rank, in_channels=2, out_channels=3, kernel_size=k, stride=s,
                    padding=pads, output_padding=op, dilation=d)
        x = rng.standard_normal((1, 2, *sp))
        t = torch_conv_t(torch, conv, x, stride=s, padding=0, output_padding=op, dilation=d)
        window = tuple(slice(lo, f - hi) for (lo, hi), f in zip(pads, full))
        t = t[(slice(None), slice(None)) + window]
        y = conv.apply(x)
        assert y.shape == t.shape
        np.testing.assert_allclose(y, t, rtol=0, atol=1e-12 * scale(t))


@pytest.mark.parametrize("relu", [False, True])
def test_matches_numpy_scatter_reference(rng, relu):
    cases = [
        (1, 2, 4, (6,), [3], [2], [[1, 2]], [1], [1], 2),
        (2, 4, 2, (3, 4), [3, 2], [2, 3], [[0, 1], [2, 0]], [0, 2], [2, 1], 2),
        (2, 3, 3, (4, 3), [1, 4], [3, 1], [[0, 0], [1, 1]], [2, 0], [1, 2], 3),
        (3, 2, 2, (2, 3, 2), [2, 2, 3], [2, 1, 2], [[1, 0], [0, 1], [1, 1]], [1, 0, 1],
         [1, 2, 1], 1),
    ]
    for rank, ci, co, sp, k, s, pads, op, d, g in cases:
        conv = make(rank, in_channels=ci, out_channels=co, kernel_size=k, stride=s,
                    padding=pads, output_padding=op, dilation=d, groups=g,
                    activation="relu" if relu else None)
        x = rng.standard_normal((2, ci, *sp))
        crops, lengths = ref.torch_style_geometry(sp, k, s, d, pads, op)
        want = ref.conv_transpose_nd(x, conv.params["weight"], conv.params["bias"], s, d, g,
                                     crops, lengths)
        if relu:
            want = np.maximum(want, 0)
        y = conv.apply(x)
        assert y.shape == want.shape
        np.testing.assert_allclose(y, want, rtol=0, atol=1e-12 * scale(want))
        y32 = conv.apply(x.astype(np.float32))
        np.testing.assert_allclose(y32, want, rtol=0, atol=1e-5 * scale(want))


# -- the two algorithms ----------------------------------------------------------------

@pytest.mark.parametrize("level", ["avx2", "baseline"])
@pytest.mark.parametrize("algorithm", tmod.ALGORITHMS)
@pytest.mark.parametrize("case", TORCH_CASES)
def test_every_algorithm_and_build_matches_torch(torch, rng, monkeypatch, case, algorithm,
                                                 level):
    """Both algorithms, on either kernel build (the baseline build's phases run on
    OpenBLAS and are scattered by NumPy; the AVX2 build's are written in place)."""
    from pyconv import _kernels
    monkeypatch.setattr(_kernels, "LEVEL", level)
    rank, ci, co, sp, k, s, p, op, d, g, b = case
    conv = make(rank, "float64", in_channels=ci, out_channels=co, kernel_size=k, stride=s,
                padding=p, output_padding=op, dilation=d, groups=g, bias=b,
                algorithm=algorithm, activation="relu")
    x = rng.standard_normal((2, ci, *sp))
    t = np.maximum(torch_conv_t(torch, conv, x, stride=s, padding=p, output_padding=op,
                                dilation=d, groups=g), 0)
    np.testing.assert_allclose(conv.apply(x, n_threads=2), t, rtol=0,
                               atol=1e-12 * scale(t))


def random_cropped_conv(rng, algorithm, k_end, s_end, activation=None):
    """A random transposed convolution (rank 1-3, groups 1 or 2, paddings that may
    crop all outputs but one per axis), an input, its crops and lengths, and its
    float64 scatter-loop result (before the activation)."""
    rank = int(rng.integers(1, 4))
    k, s, d, op, sp, full = random_geometry(rng, rank, k_end, s_end, 4, (1, 6))
    pads = [[int(rng.integers(0, f)), int(rng.integers(0, f))] for f in full]
    pads = [[lo, min(hi, f - lo - 1)] for (lo, hi), f in zip(pads, full)]
    g = int(rng.choice([1, 2]))
    conv = make(rank, in_channels=2 * g, out_channels=g * int(rng.integers(1, 3)),
                kernel_size=k, stride=s, padding=pads, output_padding=op, dilation=d,
                groups=g, algorithm=algorithm, activation=activation)
    x = rng.standard_normal((2, 2 * g, *sp))
    crops, lengths = ref.torch_style_geometry(sp, k, s, d, pads, op)
    want = ref.conv_transpose_nd(x, conv.params["weight"], conv.params["bias"], s, d, g,
                                 crops, lengths)
    return conv, x, crops, lengths, want


def axes_of(conv, x, crops, lengths):
    """Per axis: (input length, output length, kernel, stride, dilation, crop)."""
    sp = conv.spec
    return list(zip(x.shape[2:], lengths, sp["kernel_size"], sp["stride"],
                    sp["dilation"], crops))


def test_subpixel_phases_over_random_geometry(rng):
    """Crops past the kernel (phases whose window starts inside the input or never
    meets it), dilations sharing a factor with the stride, kernels shorter than the
    stride (bias-only phases), against the float64 scatter loop."""
    from pyconv.ops import _subpixel
    kinds = set()
    for _ in range(120):
        conv, x, crops, lengths, want = random_cropped_conv(rng, "subpixel", 5, 5)
        for n, *axis in axes_of(conv, x, crops, lengths):
            for phase in _subpixel.axis_phases(n, *axis):
                kinds.add("bias only" if not phase[2] else
                          "cropped" if phase[4][0] > 0 or phase[4][1] < n else
                          "dilated" if phase[3] > 1 else "plain")
        np.testing.assert_allclose(conv.apply(x), want, rtol=0, atol=1e-12 * scale(want))
    assert kinds == {"bias only", "cropped", "dilated", "plain"}


def test_auto_takes_subpixel_where_the_packed_gemm_runs_its_phases():
    from pyconv import _kernels
    packed = _kernels.packed_gemm(64)
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    big = tmod.SUBPIXEL_MIN_FLOPS

    def spec(rank, cout, algorithm="auto"):
        return make(rank, in_channels=4, out_channels=cout, kernel_size=4, stride=2,
                    algorithm=algorithm).spec

    assert tmod.subpixel_preferred(spec(2, 64), 2, f32, big) == packed
    assert tmod.subpixel_preferred(spec(3, 64), 3, f32, big) == packed
    assert not tmod.subpixel_preferred(spec(2, 64), 2, f32, big - 1)   # call overhead
    assert not tmod.subpixel_preferred(spec(1, 64), 1, f32, big)
    assert not tmod.subpixel_preferred(spec(2, 200), 2, f32, big)      # OpenBLAS is faster
    assert tmod.subpixel_preferred(spec(2, 200), 2, f64, big) == packed
    assert tmod.subpixel_preferred(spec(1, 200, "subpixel"), 1, f32, 0)
    assert not tmod.subpixel_preferred(spec(2, 64, "col2im"), 2, f32, big)
    assert tmod.subpixel_preferred(spec(1, 200, "stacked"), 1, f32, 0)  # no common grid


def test_stacked_over_random_geometry(rng, monkeypatch):
    """One stacked convolution (phases at their window offsets) against the float64
    scatter loop: crops past the kernel, bias-only phases, dilations sharing a factor
    with the stride (the phases then may read different grids: run phase by phase),
    groups, ReLU."""
    from pyconv.ops import _subpixel
    by_phase = []
    subpixel_forward = _subpixel.subpixel_forward
    monkeypatch.setattr(_subpixel, "subpixel_forward",
                        lambda *a: by_phase.append(1) or subpixel_forward(*a))
    kinds = set()
    for _ in range(120):
        relu = bool(rng.integers(0, 2))
        conv, x, crops, lengths, want = random_cropped_conv(
            rng, "stacked", 6, 4, activation="relu" if relu else None)
        axes = [_subpixel.stacked_axis(*a) for a in axes_of(conv, x, crops, lengths)]
        for a in axes:
            kinds.add("no common grid" if a is None else
                      "bias-only phase" if not all(p[2] for p in a[5]) else
                      "cropped" if a[3][0] > 0 else
                      "zero taps" if any(len(p[2]) < a[1] for p in a[5]) else "full")
        if relu:
            want = np.maximum(want, 0)
        by_phase.clear()
        np.testing.assert_allclose(conv.apply(x), want, rtol=0, atol=1e-12 * scale(want))
        # without a common grid, "stacked" runs phase by phase, as documented
        assert by_phase == ([1] if None in axes else [])
    assert kinds == {"no common grid", "bias-only phase", "cropped", "zero taps", "full"}


def test_stacked_axis_of_a_4x4_stride_2_upsampler():
    # outputs 2q: taps 3, 1 from inputs q-1, q; 2q+1: taps 2, 0 from q, q+1. Together
    # a 3-tap window from q-1 (one zero of padding each side), phase 0 at offset 0,
    # phase 1 at offset 1.
    from pyconv.ops import _subpixel
    assert _subpixel.stacked_axis(8, 16, 4, 2, 1, 1) == (
        8, 3, 1, (0, 8), (1, 1), [(0, 8, (3, 1), 0), (1, 8, (2, 0), 1)])
    # k3 s2 d2: phase 0 reads inputs q-2, q-1, q (taps 2, 1, 0: dilation 1 once the
    # stride's factor is out); phase 1 has no tap (bias only), so computes zeros.
    assert _subpixel.stacked_axis(5, 15, 3, 2, 2, 0) == (
        8, 3, 1, (0, 5), (2, 3), [(0, 8, (2, 1, 0), 0), (1, 7, (), 0)])
    # k3 s2 d3: phase 0 reads q-3, q (taps 2, 0), phase 1 reads q-1 (tap 1), at
    # dilation 3: grids 2 apart, so no common window
    assert _subpixel.axis_phases(5, 15, 3, 2, 3, 0)[1][2] == (1,)
    assert _subpixel.stacked_axis(5, 15, 3, 2, 3, 0) is None


def test_auto_stacks_phases_where_winograd_pays(torch, rng, monkeypatch):
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)

    def prefers(rank, shape, dtype=f32, algorithm="auto", **keys):
        keys = {"in_channels": shape[1], "out_channels": 64, "kernel_size": 4, "stride": 2,
                "padding": 1, **keys}
        conv = make(rank, algorithm=algorithm, **keys)
        op = conv._op
        _, crops, lengths = op.geometry(conv.spec, shape)
        return tmod.stacked_preferred(conv.spec, rank, dtype, shape, crops, lengths,
                                      conv.flops(shape))

    big = (8, 64, 32, 32)
    assert prefers(2, big) and prefers(2, big, f64)                 # F4: 7/16 zero taps
    assert prefers(2, big, kernel_size=5, padding=2)
    assert prefers(2, big, kernel_size=3, stride=1)                 # no zero taps
    assert not prefers(2, big, kernel_size=3, output_padding=1)     # a 2x2 window
    assert prefers(2, big, kernel_size=2, padding=0)                # one 1x1 GEMM
    assert not prefers(2, (1, 64, 2, 2), kernel_size=2, padding=0)  # too little work
    assert not prefers(2, (1, 4, 4, 4))                             # no Winograd
    assert not prefers(2, (1, 64, 8, 8))                            # F2: 2.25 x 16/36
    assert prefers(3, (2, 32, 8, 16, 16))                           # F4: 4 x 64/216
    assert not prefers(3, (2, 32, 8, 16, 16), f64, kernel_size=(4, 4, 2))  # 2x2 planes
    assert not prefers(2, big, algorithm="subpixel")
    # the stacked output (8 x 4*64 x 32 x 32 float32: 8 MiB) beside the output
    monkeypatch.setattr(tmod, "STACKED_MAX_BYTES", 8 << 20)
    assert prefers(2, big)
    monkeypatch.setattr(tmod, "STACKED_MAX_BYTES", (8 << 20) - 1)
    assert not prefers(2, big)
    assert prefers(2, big, algorithm="stacked")
    assert prefers(1, (1, 2, 3), algorithm="stacked")
    # float32 "auto" then runs F(4x4, 3x3): error ~1e-6 of the output's magnitude
    conv = make(2, "float32", in_channels=64, out_channels=32, kernel_size=4, stride=2,
                padding=1)
    x = rng.standard_normal(big).astype(np.float32)
    w, b = (np.asarray(conv.params[k], np.float64) for k in ("weight", "bias"))
    t = torch.nn.functional.conv_transpose2d
    want = t(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w),
             torch.from_numpy(b), stride=2, padding=1).numpy()
    size = t(torch.from_numpy(np.abs(x.astype(np.float64))), torch.from_numpy(np.abs(w)),
             torch.from_numpy(np.abs(b)), stride=2, padding=1).numpy().max()
    err = np.abs(conv.apply(x) - want).max() / size
    assert 0 < err < 1e-5


def test_interleave_phases_refuses_inconsistent_shapes():
    from pyconv import _kernels
    il = _kernels.load("_transposed").interleave_phases
    src = np.arange(2 * 4 * 3 * 16, dtype=np.float64).reshape(2, 4, 3, 16)
    dst = np.zeros((2, 3, 64))
    table = np.array([[0, a, b, 1, 4, 4] for a in (0, 1) for b in (0, 1)], dtype=np.intp)
    il(src, dst, table, 4, 4, 8, 8, 1, 2, 2, 1)
    planes = dst.reshape(2, 3, 8, 8)
    for p, (a, b) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        np.testing.assert_array_equal(planes[:, :, a::2, b::2],
                                      src[:, p].reshape(2, 3, 4, 4))
    with pytest.raises(ValueError, match="inconsistent"):
        il(src, dst[:1], table, 4, 4, 8, 8, 1, 2, 2, 1)
    past = table.copy()
    past[3, 5] = 5                      # phase (1, 1) with 5 columns of 4
    with pytest.raises(ValueError, match="reaches past"):
        il(src, dst, past, 4, 4, 8, 8, 1, 2, 2, 1)
    past[3, 5] = 4
    past[3, 1] = 2                      # row phase 2 at stride 2: row 4*2 + 2 > 7
    with pytest.raises(ValueError, match="reaches past"):
        il(src, dst, past, 4, 4, 8, 8, 1, 2, 2, 1)
    with pytest.raises(ValueError, match="inconsistent"):
        il(src, dst, table[:3], 4, 4, 8, 8, 1, 2, 2, 1)


def test_subpixel_axis_phases_of_a_4x4_stride_2_upsampler():
    # outputs 2q read taps 3, 1 from inputs q-1, q; outputs 2q+1 taps 2, 0 from q, q+1
    assert _phases(8, 16, 4, 2, 1, 1) == [
        (0, 8, (3, 1), 1, (0, 8), (1, 0)), (1, 8, (2, 0), 1, (0, 8), (0, 1))]


def _phases(*args):
    from pyconv.ops import _subpixel
    return _subpixel.axis_phases(*args)


# -- "same" -----------------------------------------------------------------------------

# (in, k, s, d) -> (crop lo, out): TF pads total = max(d*(k-1)+1 - s, 0), lo = total//2
SAME_TABLE = [
    ((4, 3, 2, 1), (0, 8)),    # total 1: the odd pixel cropped at the end
    ((4, 4, 2, 1), (1, 8)),    # total 2
    ((4, 5, 2, 1), (1, 8)),    # total 3
    ((5, 3, 3, 1), (0, 15)),   # total 0
    ((5, 1, 3, 1), (0, 15)),   # kernel shorter than stride: nothing cropped
    ((3, 3, 1, 2), (2, 3)),    # effective kernel 5, total 4
    ((6, 2, 1, 1), (0, 6)),
]


@pytest.mark.parametrize("case,expected", SAME_TABLE)
def test_same_crop_and_length(rng, case, expected):
    n, k, s, d = case
    assert ref.tf_same_geometry([n], [k], [s], [d]) == ([expected[0]], [expected[1]])
    conv = make(1, in_channels=2, out_channels=2, kernel_size=k, stride=s, dilation=d,
                padding="same")
    x = rng.standard_normal((1, 2, n))
    y = conv.apply(x)
    assert y.shape == (1, 2, n * s) == conv.output_shape(x.shape)
    want = ref.conv_transpose_nd(x, conv.params["weight"], conv.params["bias"], [s], [d],
                                 1, [expected[0]], [expected[1]])
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-12 * scale(want))


@pytest.mark.parametrize("word", ["same", "same_lower"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_same_is_adjoint_of_tf_same_conv(rng, word, rank):
    # <conv_same(z), x> == <z, conv_transpose_same(x)>: the forward conv is the plain
    # NumPy reference with TF's same pads, so the rule is derived independently of pyconv.
    lower = word == "same_lower"
    for _ in range(4):
        k = [int(v) for v in rng.integers(1, 5, rank)]
        s = [int(v) for v in rng.integers(1, 4, rank)]
        d = [int(v) for v in rng.integers(1, 3, rank)]
        sp = [int(v) for v in rng.integers(1, 4, rank)]
        g = int(rng.choice([1, 2]))
        conv = make(rank, in_channels=2 * g, out_channels=2 * g, kernel_size=k, stride=s,
                    dilation=d, groups=g, padding=word, bias=False)
        x = rng.standard_normal((1, 2 * g, *sp))
        # Every length L with ceil(L/s) == in is a valid output_size under SAME.
        for L in itertools.product(*[range((n - 1) * ss + 1, n * ss + 1)
                                     for n, ss in zip(sp, s)]):
            y = conv.apply(x, output_size=L)
            assert y.shape == (1, 2 * g, *L)
            z = rng.standard_normal((1, 2 * g, *L))
            pads = [reference.same_pads(n, kk, ss, dd, lower)
                    for n, kk, ss, dd in zip(L, k, s, d)]
            fz = reference.conv_nd(z, conv.params["weight"], None, s, pads, d, g)
            assert fz.shape == x.shape
            lhs, rhs = float(np.sum(fz * x)), float(np.sum(z * y))
            assert abs(lhs - rhs) <= 1e-11 * max(1.0, abs(lhs))
        assert conv.apply(x).shape == (1, 2 * g, *[n * ss for n, ss in zip(sp, s)])


def test_same_matches_torch_autograd_of_padded_conv(torch, rng):
    # TF's conv2d_transpose(SAME) is the gradient of conv2d(SAME); build it in torch.
    conv = make(2, in_channels=3, out_channels=4, kernel_size=(4, 3), stride=(2, 3),
                padding="same", bias=False)
    x = rng.standard_normal((2, 3, 5, 4))
    y = conv.apply(x)
    L = (10, 12)
    pads = [reference.same_pads(n, k, s, 1) for n, k, s in zip(L, (4, 3), (2, 3))]
    z = torch.zeros((2, 4, *L), dtype=torch.float64, requires_grad=True)
    zp = torch.nn.functional.pad(z, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
    fz = torch.nn.functional.conv2d(zp, torch.from_numpy(conv.params["weight"].copy()),
                                    stride=(2, 3))
    (grad,) = torch.autograd.grad(fz, z, torch.from_numpy(x))
    np.testing.assert_allclose(y, grad.numpy(), rtol=0, atol=1e-12 * scale(y))


# -- shape rule --------------------------------------------------------------------------

def test_shape_rule_matches_output_over_random_configs(torch, rng):
    for _ in range(300):
        rank = int(rng.integers(1, 4))
        k = [int(v) for v in rng.integers(1, 5, rank)]
        s = [int(v) for v in rng.integers(1, 4, rank)]
        d = [int(v) for v in rng.integers(1, 3, rank)]
        sp = [int(v) for v in rng.integers(1, 5, rank)]
        op = [int(rng.integers(0, max(a, b))) for a, b in zip(s, d)]
        p = [int(rng.integers(0, 3)) for _ in range(rank)]
        spec = dict(in_channels=1, out_channels=2, kernel_size=k, stride=s, dilation=d,
                    padding=p, output_padding=op)
        lengths = [(n - 1) * ss - 2 * pp + dd * (kk - 1) + o + 1
                   for n, ss, pp, dd, kk, o in zip(sp, s, p, d, k, op)]
        conv = make(rank, **spec)
        shape = (int(rng.integers(1, 3)), 1, *sp)
        if min(lengths) < 1:
            with pytest.raises(ValueError, match="empty output"):
                conv.output_shape(shape)
            continue
        x = rng.standard_normal(shape)
        y = conv.apply(x)
        assert conv.output_shape(shape) == y.shape == (shape[0], 2, *lengths)
        t = torch_conv_t(torch, conv, x, stride=s, padding=p, output_padding=op, dilation=d)
        assert t.shape == y.shape
        np.testing.assert_allclose(y, t, rtol=0, atol=1e-12 * scale(t))


def test_output_size_selects_padding_like_torch(torch, rng):
    mod_cls = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d,
               3: torch.nn.ConvTranspose3d}
    for rank in (1, 2, 3):
        k, s, p, d = [3] * rank, [3, 2, 1][:rank], [1] * rank, [1, 2, 1][:rank]
        conv = make(rank, in_channels=2, out_channels=2, kernel_size=k, stride=s,
                    padding=p, dilation=d)
        m = mod_cls[rank](2, 2, k, stride=s, padding=p, dilation=d).double()
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(conv.params["weight"].copy()))
            m.bias.copy_(torch.from_numpy(conv.params["bias"].copy()))
        sp = [3, 4, 2][:rank]
        x = rng.standard_normal((1, 2, *sp))
        low = [(n - 1) * ss - 2 * pp + dd * (kk - 1) + 1
               for n, ss, pp, dd, kk in zip(sp, s, p, d, k)]
        for size in itertools.product(*[range(m0, m0 + ss) for m0, ss in zip(low, s)]):
            y = conv.apply(x, output_size=size)
            assert y.shape == conv.output_shape(x.shape, output_size=size) == (1, 2, *size)
            t = m(torch.from_numpy(x), output_size=list(size)).detach().numpy()
            np.testing.assert_allclose(y, t, rtol=0, atol=1e-12 * scale(t))
            # the full shape is accepted too, and so is out= of that shape
            out = np.empty((1, 2, *size))
            assert conv.apply(x, output_size=(1, 2, *size), out=out) is out
            np.testing.assert_array_equal(out, y)
        with pytest.raises(ValueError, match=r"reaches lengths .* \(min \+ stride - 1\)"):
            conv.apply(x, output_size=[m0 + ss for m0, ss in zip(low, s)])
        with pytest.raises(ValueError, match="reaches lengths"):
            conv.output_shape(x.shape, output_size=[m0 - 1 for m0 in low])


def test_output_size_errors(rng):
    conv = make(2, in_channels=2, out_channels=3, kernel_size=4, stride=2, padding=1)
    x = rng.standard_normal((2, 2, 4, 4))
    with pytest.raises(ValueError, match=r"axis 1 \(W\) reaches lengths 8 to 9"):
        conv.apply(x, output_size=(8, 10))
    with pytest.raises(ValueError, match="2 \\(spatial\\) or 4 \\(full shape\\)"):
        conv.apply(x, output_size=(8,))
    with pytest.raises(ValueError, match=r"batch and channels must be \(2, 3\)"):
        conv.apply(x, output_size=(2, 2, 8, 8))
    with pytest.raises(TypeError, match="sequence of ints"):
        conv.apply(x, output_size=8)
    with pytest.raises(TypeError, match="sequence of ints"):
        conv.apply(x, output_size=(8.5, 8))
    with pytest.raises(ValueError, match=r"out must have shape \(2, 3, 9, 9\)"):
        conv.apply(x, output_size=(9, 9), out=np.empty((2, 3, 8, 8)))
    with pytest.raises(TypeError, match="unexpected input"):
        conv.output_shape(x.shape, offset=1)
    same = make(1, in_channels=1, out_channels=1, kernel_size=3, stride=3, padding="same")
    with pytest.raises(ValueError, match="reaches lengths 7 to 9 \\(ceil"):
        same.apply(np.ones((1, 1, 3)), output_size=(10,))
    # output_size=None is the default shape; it replaces the spec's output_padding
    assert conv.apply(x, output_size=None).shape == (2, 3, 8, 8)
    op1 = make(2, in_channels=2, out_channels=3, kernel_size=4, stride=2, padding=1,
               output_padding=1)
    assert op1.apply(x, output_size=(8, 8)).shape == (2, 3, 8, 8)


def test_output_size_reaches_lengths_beyond_an_empty_default():
    # (1-1)*3 - 2 + 0 + 1 = -1 without output padding; output_size 1 uses padding 2.
    conv = make(1, in_channels=1, out_channels=1, kernel_size=1, stride=3, padding=1)
    with pytest.raises(ValueError, match="empty output"):
        conv.output_shape((1, 1, 1))
    y = conv.apply(np.ones((1, 1, 1)), output_size=(1,))
    np.testing.assert_array_equal(y, conv.params["bias"].reshape(1, 1, 1))


# -- engineering ------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", tmod.ALGORITHMS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_thread_counts_bit_identical(rng, dtype, algorithm):
    for rank, sp, k, s in [(2, (12, 10), 4, 2), (3, (4, 5, 6), 3, 2), (1, (500,), 5, 3)]:
        conv = make(rank, dtype, in_channels=16, out_channels=24, kernel_size=k, stride=s,
                    padding=1, groups=2, activation="relu", algorithm=algorithm)
        x = rng.standard_normal((3, 16, *sp)).astype(dtype)
        assert conv.flops(x.shape) > 2_000_000  # large enough to really use 2 threads
        y1 = conv.apply(x, n_threads=1)
        y2 = conv.apply(x, n_threads=2)
        assert np.array_equal(y1, y2)


@pytest.mark.parametrize("positions", [1, 2, 3, 11])
def test_chunked_blocks_match_reference(rng, monkeypatch, positions):
    # Tiny budgets force one-channel blocks and chunks of a few input positions that
    # start and end inside rows (W = 5) or span whole rows (11 -> 10).
    monkeypatch.setattr(tmod, "BLOCK_GEMM_ROWS", 5)
    monkeypatch.setattr(tmod, "COLUMN_BYTES_PER_THREAD", positions * 12 * 8)
    sp, k, s, pads, op = (3, 4, 5), (2, 3, 2), (2, 1, 3), [[1, 0], [0, 2], [1, 1]], (1, 0, 2)
    conv = make(3, in_channels=4, out_channels=6, kernel_size=k, stride=s, padding=pads,
                output_padding=op, groups=2, algorithm="col2im")
    x = rng.standard_normal((2, 4, *sp))
    crops, lengths = ref.torch_style_geometry(sp, k, s, (1, 1, 1), pads, op)
    want = ref.conv_transpose_nd(x, conv.params["weight"], conv.params["bias"],
                                 s, (1, 1, 1), 2, crops, lengths)
    np.testing.assert_allclose(conv.apply(x, n_threads=2), want, rtol=0,
                               atol=1e-12 * scale(want))


def test_long_1d_signal_is_chunked_inside_its_row(torch, rng, monkeypatch):
    monkeypatch.setattr(tmod, "COLUMN_BYTES_PER_THREAD", 4096)
    conv = make(1, in_channels=3, out_channels=4, kernel_size=5, stride=3, padding=2,
                output_padding=1, algorithm="col2im")
    x = rng.standard_normal((2, 3, 1000))
    t = torch_conv_t(torch, conv, x, stride=3, padding=2, output_padding=1)
    np.testing.assert_allclose(conv.apply(x), t, rtol=0, atol=1e-12 * scale(t))


def test_inputs_never_modified_any_layout(rng):
    conv = make(2, in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1)
    base = rng.standard_normal((2, 3, 10, 12))
    expected = conv.apply(np.ascontiguousarray(base[:, :, ::2, ::3]))
    read_only = np.array(base[:, :, ::2, ::3])
    read_only.setflags(write=False)
    for x in (base[:, :, ::2, ::3], np.asfortranarray(base[:, :, ::2, ::3]), read_only):
        before = x.copy()
        np.testing.assert_array_equal(conv.apply(x), expected)
        np.testing.assert_array_equal(x, before)
    w = conv.params["weight"].copy()
    conv.apply(base)
    np.testing.assert_array_equal(conv.params["weight"], w)


def test_empty_batch_and_dtype_rule():
    conv = make(2, "float32", in_channels=2, out_channels=3, kernel_size=3, stride=2)
    y = conv.apply(np.zeros((0, 2, 4, 4), np.float32))
    assert y.shape == (0, 3, 9, 9) and y.dtype == np.float32
    assert conv.apply(np.zeros((0, 2, 4, 4)), output_size=(10, 10)).shape == (0, 3, 10, 10)
    assert conv.apply(np.ones((1, 2, 4, 4), np.int8)).dtype == np.float32
    assert conv.apply(np.ones((1, 2, 4, 4), np.int64)).dtype == np.float64
    assert conv.apply(np.ones((1, 2, 4, 4), np.float16)).dtype == np.float32
    with pytest.raises(TypeError, match="not supported"):
        conv.apply(np.ones((1, 2, 4, 4), np.complex64))


def test_bad_inputs_raise_clear_errors():
    conv = make(2, in_channels=2, out_channels=3, kernel_size=3)
    with pytest.raises(ValueError, match="expected 2 input channels"):
        conv.apply(np.ones((1, 3, 4, 4)))
    with pytest.raises(ValueError, match="4-D input"):
        conv.apply(np.ones((1, 2, 4)))
    with pytest.raises(ValueError, match="zero-size spatial"):
        conv.apply(np.ones((1, 2, 0, 4)))
    big_pad = make(1, in_channels=1, out_channels=1, kernel_size=3, padding=[[2, 2]])
    with pytest.raises(ValueError, match=r"empty output along spatial axis 0.* = -1 < 1"):
        big_pad.apply(np.ones((1, 1, 1)))


@pytest.mark.parametrize("keys,bad", [
    (dict(stride=2, output_padding=2), "output_padding"),
    (dict(stride=2, dilation=3, output_padding=3), "output_padding"),
    (dict(output_padding=-1), "output_padding"),
    (dict(padding="same", stride=2, output_padding=1), "output_padding"),
    (dict(groups=3), "groups"),
    (dict(padding=-1), "padding"),
    (dict(padding="full"), "padding"),
    (dict(stride=0), "stride"),
    (dict(kernel_size=(3, 3, 3)), "kernel_size"),
    (dict(activation="tanh"), "activation"),
    (dict(bias=1), "bias"),
    (dict(output_pading=1), "output_pading"),
])
def test_bad_specs(keys, bad):
    spec = dict(in_channels=4, out_channels=2, kernel_size=3)
    spec.update(keys)
    with pytest.raises(pyconv.SpecError) as info:
        make(2, **spec)
    assert info.value.key == bad
    assert "conv_transpose2d" in str(info.value)


def test_output_padding_allowed_below_dilation():
    conv = make(1, in_channels=1, out_channels=1, kernel_size=2, stride=1, dilation=3,
                output_padding=2)
    assert conv.output_shape((1, 1, 4)) == (1, 1, 4 + 3 + 2)


def test_params_counts_and_init(torch):
    conv = make(3, in_channels=6, out_channels=4, kernel_size=(3, 2, 1), groups=2,
                seed=3)
    m = torch.nn.ConvTranspose3d(6, 4, (3, 2, 1), groups=2)
    assert conv.param_shapes == {"weight": tuple(m.weight.shape), "bias": (4,)}
    assert conv.param_count == sum(p.numel() for p in m.parameters()) == 6 * 2 * 6 + 4
    fan_in = torch.nn.init._calculate_fan_in_and_fan_out(m.weight)[0]
    assert fan_in == 2 * 6
    bound = 1 / np.sqrt(fan_in)
    for name in ("weight", "bias"):
        v = conv.params[name]
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.5 * bound
    big = make(2, in_channels=64, out_channels=32, kernel_size=3, seed=0)
    w = big.params["weight"]
    assert abs(np.abs(w).max() - 1 / np.sqrt(32 * 9)) < 1e-3 / np.sqrt(32 * 9)
    assert np.array_equal(make(2, in_channels=2, out_channels=2, kernel_size=3,
                               seed=5).params["weight"],
                          make(2, in_channels=2, out_channels=2, kernel_size=3,
                               seed=5).params["weight"])
    nob = make(1, in_channels=2, out_channels=2, kernel_size=3, bias=False)
    assert set(nob.params) == {"weight"} and nob.param_count == 12


def test_macs_flops_and_spec_roundtrip():
    conv = make(2, in_channels=8, out_channels=6, kernel_size=(3, 2), groups=2, stride=2)
    assert conv.macs((2, 8, 5, 4)) == 2 * 8 * 20 * 3 * 6
    assert conv.flops((2, 8, 5, 4)) == 2 * conv.macs((2, 8, 5, 4))
    assert pyconv.Conv(conv.spec) == conv
    assert conv.spec["padding"] == [[0, 0], [0, 0]]
    assert conv.spec["output_padding"] == [0, 0]
    op = pyconv.get_op("conv_transpose2d")
    assert op.inputs == ("output_size",)
    assert {"output", "params", "macs", "flops"} <= set(op.formulas) and op.summary


def test_weights_move_from_torch_unchanged(torch, rng):
    m = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                 groups=2).double()
    conv = pyconv.Conv({"op": "conv_transpose2d", "in_channels": 4, "out_channels": 6,
                        "kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1,
                        "groups": 2},
                       params={k: v.detach().numpy() for k, v in m.state_dict().items()})
    x = rng.standard_normal((2, 4, 5, 5))
    t = m(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(conv.apply(x), t, rtol=0, atol=1e-12 * scale(t))
