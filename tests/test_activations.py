"""Elementwise activations against torch.nn.functional, a float64 reference and
high-precision values (mpmath), plus in-place, threading, dtype and error rules."""
import math

import numpy as np
import pytest

import pyconv
from reference_activations import activation as reference

# (spec, torch call name, torch kwargs)
CASES = [
    ({"op": "relu"}, "relu", {}),
    ({"op": "leaky_relu"}, "leaky_relu", {}),
    ({"op": "leaky_relu", "negative_slope": 0.2}, "leaky_relu", {"negative_slope": 0.2}),
    ({"op": "leaky_relu", "negative_slope": -1.5}, "leaky_relu", {"negative_slope": -1.5}),
    ({"op": "relu6"}, "relu6", {}),
    ({"op": "elu"}, "elu", {}),
    ({"op": "elu", "alpha": 0.3}, "elu", {"alpha": 0.3}),
    ({"op": "gelu"}, "gelu", {}),
    ({"op": "gelu", "approximate": "tanh"}, "gelu", {"approximate": "tanh"}),
    ({"op": "sigmoid"}, "sigmoid", {}),
    ({"op": "tanh"}, "tanh", {}),
]
IDS = ["-".join(str(v) for v in spec.values()) for spec, _, _ in CASES]
NAMES = ["relu", "leaky_relu", "relu6", "elu", "gelu", "sigmoid", "tanh"]

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, -1e-300, 5e-324, -5e-324,
                    1.0, -1.0, 6.0, 6.5, -6.5, 20.0, -20.0, 40.0, -40.0, 88.0, -88.0,
                    89.0, -89.0, 104.0, -104.0, 710.0, -710.0, 1e30, -1e30, 3e38, -3e38,
                    1e300, -1e300, 1.7e308, -1.7e308])


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def mpmath():
    return pytest.importorskip("mpmath")


def torch_apply(torch, name, kwargs, x):
    fn = getattr(torch, name) if name in ("sigmoid", "tanh") else getattr(
        torch.nn.functional, name)
    return fn(torch.from_numpy(np.array(x)), **kwargs).numpy()


def sample(rng, shape, dtype, scale=4.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def assert_close(got, want, x, tol):
    """|got - want| <= tol * max(|want|, min(1, |x|)): relative to the magnitudes."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    scale = np.maximum(np.abs(want), np.minimum(1.0, np.abs(np.asarray(x, np.float64))))
    with np.errstate(invalid="ignore"):  # inf - inf
        err = np.abs(got - want)
    bad = ~(err <= tol * scale + 1e-300) & ~(np.isnan(got) & np.isnan(want))
    bad &= ~(got == want)  # equal infinities
    assert not bad.any(), (f"{bad.sum()} mismatches; first at x={np.asarray(x)[bad][:5]}: "
                           f"got {got[bad][:5]}, want {want[bad][:5]}")


# -- values ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,tname,tkw", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_float64_reference(spec, tname, tkw, dtype, rng):
    x = sample(rng, (3, 5, 7, 11), dtype)
    y = pyconv.Conv(spec).apply(x)
    assert y.dtype == dtype and y.shape == x.shape
    # float32 is computed in float32: the reference takes the float32 input exactly.
    assert_close(y, reference(spec, x), x, 2e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("spec,tname,tkw", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch(spec, tname, tkw, dtype, rng, torch):
    x = sample(rng, (2, 3, 17, 19), dtype)
    y = pyconv.Conv(spec).apply(x)
    want = torch_apply(torch, tname, tkw, x)
    # torch's float32 gelu loses relative accuracy in the negative tail (1 + erf
    # cancels), so the float32 comparison is relative to max(|y|, min(1, |x|)).
    assert_close(y, want, x, 4e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("spec,tname,tkw", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values_like_torch(spec, tname, tkw, dtype, torch):
    with np.errstate(over="ignore"):
        x = SPECIAL.astype(dtype)
    y = pyconv.Conv(spec).apply(x)
    want = torch_apply(torch, tname, tkw, x)
    if spec["op"] == "gelu":
        # Documented difference: gelu(-inf) is its limit -0.0; torch gives NaN.
        neg_inf = x == -np.inf
        assert np.isnan(want[neg_inf]).all()
        assert (y[neg_inf] == 0).all() and np.signbit(y[neg_inf]).all()
        # torch's own misses, seen with its float32 AVX-512 kernel: NaN at +inf, and
        # inf at 3e38 (x * (1 + erf) overflows before the halving). There the exact
        # value is x itself (gelu(x) rounds to x from x = 6 on); elsewhere torch is
        # the reference.
        torch_off = ~neg_inf & ~np.isnan(x) & (np.isnan(want) | (np.isinf(want)
                                                                 & ~np.isinf(x)))
        assert (x[torch_off] > 6).all()
        np.testing.assert_array_equal(y[torch_off], x[torch_off])
        keep = ~neg_inf & ~torch_off
        x, y, want = x[keep], y[keep], want[keep]
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))  # NaN only from NaN
    finite_y = ~np.isnan(y)
    assert_close(y[finite_y], want[finite_y], x[finite_y],
                 4e-6 if dtype == np.float32 else 1e-12)
    # Signed zeros: where torch returns a zero, ours has the same sign. (torch's
    # float32 gelu returns +0.0 for negative x, its float64 gelu -0.0: use float64.)
    if spec["op"] == "gelu":
        want = torch_apply(torch, tname, tkw, x.astype(np.float64))
    zero = want == 0
    np.testing.assert_array_equal(np.signbit(y[zero]), np.signbit(want[zero]))


def test_special_values_exact():
    f64 = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -1e308, 1e308])

    def run(spec, x=f64):
        return pyconv.Conv(spec).apply(x)

    y = run({"op": "relu"})
    assert np.isnan(y[0]) and y[1] == 0 and y[2] == np.inf and np.signbit(y[3])
    y = run({"op": "sigmoid"})
    np.testing.assert_array_equal(y[1:], [0.0, 1.0, 0.5, 0.5, 0.0, 1.0])
    y = run({"op": "tanh"})
    np.testing.assert_array_equal(y[1:3], [-1.0, 1.0])
    assert np.signbit(y[3])
    for approx in ("none", "tanh"):
        y = run({"op": "gelu", "approximate": approx})
        assert np.isnan(y[0]) and y[2] == np.inf and y[6] == 1e308
        assert y[1] == 0 and np.signbit(y[1]) and y[5] == 0 and np.signbit(y[5])
    y = run({"op": "elu", "alpha": 2.0})
    np.testing.assert_array_equal(y[1:3], [-2.0, np.inf])
    y = run({"op": "relu6"})
    np.testing.assert_array_equal(y[1:], [0.0, 6.0, -0.0, 0.0, 0.0, 6.0])
    with np.errstate(all="raise"):  # no FP exception leaks into NumPy's state
        run({"op": "sigmoid"}, np.array([-1e4, 1e4], np.float32))


def _mp_function(mpmath, name):
    c = mpmath.sqrt(2 / mpmath.pi)
    return {
        "gelu": lambda v: v * mpmath.ncdf(v),
        "gelu_tanh": lambda v: v / (1 + mpmath.exp(-2 * c * (v + mpmath.mpf("0.044715")
                                                              * v ** 3))),
        "sigmoid": lambda v: 1 / (1 + mpmath.exp(-v)),
        "elu": lambda v: v if v > 0 else mpmath.expm1(v),
        "tanh": mpmath.tanh,
    }[name]


@pytest.mark.parametrize("name,lo,hi", [("gelu", -37.0, 5.0), ("gelu_tanh", -25.0, 5.0),
                                        ("sigmoid", -700.0, 30.0), ("elu", -30.0, 1.0),
                                        ("tanh", -20.0, 20.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accuracy_in_the_tails(name, lo, hi, dtype, mpmath):
    """Relative error within a few ulp times the condition number |x f'(x) / f(x)|.

    That is the accuracy of an exact evaluation at a one-ulp perturbation of x, the
    best a float formula can promise; the naive forms (1 + erf, 1 + tanh, exp(-x)
    overflowing) miss it by orders of magnitude in these ranges.
    """
    if dtype == np.float32:
        lo = max(lo, {"gelu": -13.0, "gelu_tanh": -9.0, "sigmoid": -87.0}.get(name, lo))
    x = np.linspace(lo, hi, 201).astype(dtype)
    spec = {"gelu": {"op": "gelu"}, "gelu_tanh": {"op": "gelu", "approximate": "tanh"},
            "sigmoid": {"op": "sigmoid"}, "elu": {"op": "elu"}, "tanh": {"op": "tanh"}}[name]
    y = pyconv.Conv(spec).apply(x).astype(np.float64)
    f = _mp_function(mpmath, name)
    mpmath.mp.dps = 40
    eps = float(np.finfo(dtype).eps)
    for xi, yi in zip(x.astype(np.float64), y):
        if xi == 0:
            continue
        v = mpmath.mpf(xi)
        want = f(v)
        if abs(float(want)) < np.finfo(dtype).tiny:  # the value underflows
            assert abs(yi) <= np.finfo(dtype).tiny, (name, xi, yi)
            continue
        cond = abs(v * mpmath.diff(f, v) / want)
        rel = abs((mpmath.mpf(yi) - want) / want)
        assert rel <= 4 * eps * (1 + cond), (name, xi, yi, float(want), float(cond))


def test_float32_gelu_dense_grid_against_float64_erfc():
    """The inline float32 erfc on a dense grid, against libm's float64 erfc.

    Error within a few ulp times (1 + the condition number x*f'/f), the accuracy of
    an exact evaluation at a one-ulp perturbation of x (here |x| grows to 13, where
    gelu's condition number is about x^2).
    """
    x = np.concatenate([np.linspace(-13.0, 6.0, 40001), np.linspace(-0.5, 0.5, 2001),
                        [0.0, -0.0, 1e-30, -1e-30, 1e-45, -1e-45]]).astype(np.float32)
    y = pyconv.Conv({"op": "gelu"}).apply(x).astype(np.float64)
    v = x.astype(np.float64)
    want = np.array([0.5 * t * math.erfc(-t / math.sqrt(2.0)) for t in v])
    # x f'(x) / f(x) for f = x * Phi(x): 1 + x * phi(x) / Phi(x)
    phi = np.exp(-v * v / 2) / math.sqrt(2 * math.pi)
    Phi = np.array([0.5 * math.erfc(-t / math.sqrt(2.0)) for t in v])
    cond = np.abs(1 + v * phi / np.where(Phi > 0, Phi, 1))
    eps = float(np.finfo(np.float32).eps)
    tiny = float(np.finfo(np.float32).tiny)
    ok = np.abs(want) < tiny
    assert (np.abs(y[ok]) <= tiny).all()
    rel = np.abs(y[~ok] - want[~ok]) / np.abs(want[~ok])
    assert (rel <= 4 * eps * (1 + cond[~ok])).all(), x[~ok][rel > 4 * eps * (1 + cond[~ok])][:5]
    assert (np.signbit(y) == np.signbit(x)).all()  # zeros keep the sign of x


# -- in place, layouts, threads -----------------------------------------------------------
@pytest.mark.parametrize("spec,tname,tkw", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [(5, 7), (3, 64, 41, 43)])
def test_in_place_writes_into_the_callers_array(spec, tname, tkw, dtype, size, rng):
    x = sample(rng, size, dtype)
    want = pyconv.Conv(spec).apply(x.copy())
    buf = x.copy()
    got = pyconv.Conv(spec).apply(buf, out=buf, n_threads=2)
    assert got is buf
    np.testing.assert_array_equal(buf, want)
    assert not np.array_equal(buf, x) or spec["op"] == "relu6" and (x >= 0).all()


def test_in_place_refused_when_not_possible(rng):
    conv = pyconv.Conv({"op": "relu"})
    x = sample(rng, (4, 6), np.float64)
    with pytest.raises(ValueError, match="overlaps the input"):
        conv.apply(x, out=x[:])  # a different view of the same memory
    with pytest.raises(ValueError, match="C-contiguous"):
        conv.apply(x.T, out=x.T)
    x16 = x.astype(np.float16)
    with pytest.raises(ValueError, match="dtype"):
        conv.apply(x16, out=x16)
    ro = x.copy()
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        conv.apply(ro, out=ro)
    np.testing.assert_array_equal(ro, x)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_never_modified_any_layout(name, rng):
    conv = pyconv.Conv({"op": name})
    base = sample(rng, (6, 10, 12), np.float64)
    views = [base, np.asfortranarray(base), base[:, ::2, 1::3], base.transpose(2, 0, 1)]
    for v in views:
        before = v.copy()
        ro = v.view()
        ro.setflags(write=False)
        y = conv.apply(ro)
        np.testing.assert_array_equal(ro, before)
        assert_close(y, reference({"op": name}, before), before, 1e-13)
        assert y.flags.c_contiguous and not np.shares_memory(y, base)


@pytest.mark.parametrize("spec,tname,tkw", CASES, ids=IDS)
def test_threads_bit_identical(spec, tname, tkw, rng):
    # Above the serial threshold, with a size that is not a multiple of the alignment.
    x = sample(rng, (3, 7, 101, 113), np.float32)
    conv = pyconv.Conv(spec)
    y1 = conv.apply(x, n_threads=1)
    y2 = conv.apply(x, n_threads=2)
    assert y1.tobytes() == y2.tobytes()


LONG_LOOPS = [("gelu", "GELU", np.float32), ("gelu_tanh", "GELU_TANH", np.float32),
              ("sigmoid", "SIGMOID", np.float32), ("sigmoid", "SIGMOID", np.float64)]


def long_loop_inputs(rng, dtype):
    """Every range the formulas branch on (by selects), the special values, and
    lengths that leave every remainder of the 8- and 16-wide vector loops."""
    with np.errstate(over="ignore"):
        values = [np.linspace(-120, 120, 20011), SPECIAL,
                  rng.standard_normal(4099) * 7, np.ldexp(1.0, np.arange(-149, 128)),
                  -np.ldexp(1.0, np.arange(-149, 128))]
        return [np.concatenate(values).astype(dtype)] + [
            (rng.standard_normal(n) * 10).astype(dtype) for n in range(1, 40)]


def assert_same_bits(a, b, what):
    """Bit for bit, except the sign and payload of NaNs (which IEEE leaves open)."""
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b), err_msg=str(what))
    assert a[~nan].tobytes() == b[~nan].tobytes(), what


@pytest.mark.parametrize("name,code,dtype", LONG_LOOPS)
def test_avx512_loops_give_the_same_bits(name, code, dtype, rng):
    """The AVX2 build's AVX-512 copies of the long loops against its AVX2 ones."""
    from pyconv import _kernels
    from pyconv.ops import activations as ops

    kernels = _kernels.load("_activations", "avx2")
    if not kernels.__name__.endswith("_avx2"):
        pytest.skip("no AVX2 build on this machine")
    if not _kernels.WIDE_LOOPS:
        pytest.skip("this CPU has no AVX-512 (or PYCONV_KERNELS=avx2)")
    code = getattr(ops, f"CODE_{code}")
    try:
        for x in long_loop_inputs(rng, dtype):
            got = {}
            for wide in (False, True):
                assert kernels.set_wide_loops(wide) == wide
                y = np.full_like(x, np.nan)
                kernels.unary(x, y, code, 0.0, 1)
                got[wide] = y
            assert_same_bits(got[True], got[False], (name, x.size))
    finally:
        kernels.set_wide_loops(_kernels.WIDE_LOOPS)


def test_avx512_loops_follow_the_cpu_and_the_environment():
    """On by default exactly where the CPU has AVX-512 under the AVX2 build; off with
    PYCONV_KERNELS=avx2 (and with =baseline, whose build has no copies)."""
    import os
    import subprocess
    import sys

    from pyconv import _kernels

    assert pyconv.config()["avx512_loops"] == (
        _kernels.LEVEL == "avx2" and _kernels._cpu_has("AVX512_SKX")
        and os.environ.get("PYCONV_KERNELS", "auto") != "avx2")
    code = ("import pyconv; from pyconv import _kernels; "
            "print(pyconv.config()['avx512_loops'], _kernels.LEVEL)")
    for value in ("avx2", "baseline"):
        env = dict(os.environ, PYCONV_KERNELS=value)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        assert out[0] == "False"
        has_avx2 = _kernels._cpu_has("AVX2", "FMA3")
        assert out[1] == ("avx2" if value == "avx2" and has_avx2 else "baseline")


@pytest.mark.parametrize("name,code,dtype", LONG_LOOPS)
def test_avx2_and_baseline_builds_give_the_same_bits(name, code, dtype, rng):
    """No FMA contraction in the activations: the two builds round alike."""
    from pyconv import _kernels
    from pyconv.ops import activations as ops

    avx2 = _kernels.load("_activations", "avx2")
    base = _kernels.load("_activations", "baseline")
    if avx2 is base:
        pytest.skip("no AVX2 build on this machine")
    code = getattr(ops, f"CODE_{code}")
    for x in long_loop_inputs(rng, dtype):
        y_avx2, y_base = np.empty_like(x), np.empty_like(x)
        avx2.unary(x, y_avx2, code, 0.0, 1)
        base.unary(x, y_base, code, 0.0, 1)
        assert_same_bits(y_avx2, y_base, (name, x.size))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_slices_cover_every_element(dtype, rng):
    """The kernel's per-thread slices, at any count and size, compute every element once."""
    from pyconv._kernels import _activations
    from pyconv.ops import activations as ops

    for n in [1, 2, 15, 16, 17, 31, 33, 47, 100, 257]:
        x = sample(rng, n, dtype)
        want = np.empty_like(x)
        _activations.unary(x, want, ops.CODE_SIGMOID, 0.0, 1)
        for threads in (2, 3, 5, 8):
            got = np.full_like(x, np.nan)
            _activations.unary(x, got, ops.CODE_SIGMOID, 0.0, threads)
            assert got.tobytes() == want.tobytes(), (n, threads)


# -- shapes, dtypes, counts, specs --------------------------------------------------------
def test_shape_rule_matches_output_any_rank(rng):
    for i in range(300):
        name = NAMES[i % len(NAMES)]
        rank = int(rng.integers(1, 6))
        shape = tuple(int(n) for n in rng.integers(0, 4, size=rank))
        conv = pyconv.Conv({"op": name})
        y = conv.apply(np.ones(shape, np.float32))
        assert conv.output_shape(shape) == y.shape == shape


def test_zero_size_and_rank_errors():
    conv = pyconv.Conv({"op": "gelu"})
    y = conv.apply(np.empty((0, 3, 4)))
    assert y.shape == (0, 3, 4) and y.dtype == np.float64
    with pytest.raises(ValueError, match="gelu: expected an input with at least one axis"):
        conv.apply(np.float64(1.0))
    with pytest.raises(ValueError, match="negative size"):
        conv.output_shape((2, -1))


@pytest.mark.parametrize("dtype,want", [(np.float16, np.float32), (np.int8, np.float32),
                                        (np.uint16, np.float32), (np.bool_, np.float32),
                                        (np.int32, np.float64), (np.int64, np.float64),
                                        (np.float32, np.float32), (np.float64, np.float64)])
def test_dtype_rule(dtype, want):
    x = np.array([[-3, 0, 1, 7]]).astype(dtype)
    y = pyconv.Conv({"op": "relu6"}).apply(x)
    assert y.dtype == want
    np.testing.assert_array_equal(y, np.clip(x.astype(want), 0, 6))


def test_unsupported_dtypes_refused():
    conv = pyconv.Conv({"op": "tanh"})
    with pytest.raises(TypeError, match="tanh: input dtype complex128 is not supported"):
        conv.apply(np.ones(3, np.complex128))
    with pytest.raises(TypeError, match="not supported"):
        conv.apply(np.array(["a"]))


def test_counts_and_registration():
    shape = (2, 3, 4, 5)
    n = 120
    per = {"relu": 1, "leaky_relu": 2, "relu6": 2, "elu": 3, "gelu": 5, "sigmoid": 4,
           "tanh": 1}
    for name in NAMES:
        assert name in pyconv.available_ops()
        op = pyconv.get_op(name)
        assert op.inplace_ok and op.summary and set(op.formulas) >= {
            "output", "params", "macs", "flops"}
        conv = pyconv.Conv({"op": name})
        assert conv.param_count == 0 and conv.params == {}
        assert conv.macs(shape) == 0
        assert conv.flops(shape) == per[name] * n
        assert op.receptive_field(conv.spec) is None
    assert pyconv.Conv({"op": "gelu", "approximate": "tanh"}).flops(shape) == 9 * n


def test_spec_normalisation_and_errors():
    assert pyconv.Conv({"op": "leaky_relu"}).spec == {"op": "leaky_relu",
                                                       "negative_slope": 0.01}
    assert pyconv.Conv({"op": "elu", "alpha": 2}).spec == {"op": "elu", "alpha": 2.0}
    assert pyconv.Conv({"op": "gelu"}).spec == {"op": "gelu", "approximate": "none"}
    assert pyconv.Conv('{"op": "relu"}').spec == {"op": "relu"}
    bad = [({"op": "relu", "inplace": True}, "inplace"),
           ({"op": "leaky_relu", "negative_slope": "0.1"}, "negative_slope"),
           ({"op": "leaky_relu", "negative_slope": math.nan}, "negative_slope"),
           ({"op": "elu", "alpha": math.inf}, "alpha"),
           ({"op": "elu", "alpha": True}, "alpha"),
           ({"op": "gelu", "approximate": "erf"}, "approximate"),
           ({"op": "gelu", "approximate": None}, "approximate")]
    for spec, key in bad:
        with pytest.raises(pyconv.SpecError) as info:
            pyconv.Conv(spec)
        assert info.value.op == spec["op"] and info.value.key == key
        assert spec["op"] in str(info.value) and key in str(info.value)


def test_float32_params_are_rounded_like_torch(torch):
    x = np.array([-1e30, -3.0, -1e-3], np.float32)
    for spec, fn in [({"op": "leaky_relu", "negative_slope": 0.1},
                      lambda t: torch.nn.functional.leaky_relu(t, 0.1)),
                     ({"op": "elu", "alpha": 0.7}, lambda t: torch.nn.functional.elu(t, 0.7))]:
        y = pyconv.Conv(spec).apply(x)
        np.testing.assert_allclose(y, fn(torch.from_numpy(x)).numpy(), rtol=2e-7)


@pytest.mark.parametrize("dtype,lo,hi", [(np.float32, -110.0, -85.0),
                                         (np.float64, -750.0, -705.0)])
def test_sigmoid_subnormal_results(dtype, lo, hi, mpmath):
    """Down in the subnormal range the result is the exact value rounded once (or 0)."""
    x = np.linspace(lo, hi, 97).astype(dtype)
    y = pyconv.Conv({"op": "sigmoid"}).apply(x).astype(np.float64)
    mpmath.mp.dps = 40
    tiny = float(np.finfo(dtype).smallest_subnormal)
    for xi, yi in zip(x.astype(np.float64), y):
        want = 1 / (1 + mpmath.exp(-mpmath.mpf(xi)))
        assert abs(mpmath.mpf(yi) - want) <= max(tiny, 4e-7 * want if dtype == np.float32
                                                 else 1e-15 * want), (xi, yi, want)
