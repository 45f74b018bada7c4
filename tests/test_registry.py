"""Registry, plugins through entry points, spec validation and the public API surface."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyconv
from pyconv.ops import Op

BUILTIN = {"conv1d", "conv2d", "conv3d"}


def test_every_builtin_op_is_registered():
    from pyconv.ops import builtin_ops

    names = {op.name for op in builtin_ops()}
    assert BUILTIN <= names
    assert names <= set(pyconv.available_ops())
    for name in names:
        op = pyconv.get_op(name)
        assert op.name == name and op.summary and op.formulas
        assert pyconv.registry[name] is op


def test_registry_view_is_read_only():
    with pytest.raises(TypeError):
        pyconv.registry["x"] = None


class Square(Op):
    name = "square_test_op"
    summary = "Square every element."

    def output_shape(self, spec, input_shape):
        return tuple(input_shape)

    def macs(self, spec, input_shape):
        return int(np.prod(input_shape))

    def forward(self, spec, x, params, out, n_threads):
        return np.multiply(x, x, out=out)


def test_register_refuses_duplicates_unless_replace():
    pyconv.register_op(Square, replace=True)
    with pytest.raises(ValueError, match="already registered"):
        pyconv.register_op(Square)
    pyconv.register_op(Square(), replace=True)
    assert pyconv.Conv({"op": "square_test_op"}).apply(np.array([[3.0]]))[0, 0] == 9
    with pytest.raises(TypeError, match="is not an op"):
        pyconv.register_op(object())


def test_unknown_op_and_bad_specs_raise_spec_error():
    with pytest.raises(pyconv.SpecError, match=r"'conv2D'.*did you mean 'conv2d'"):
        pyconv.Conv({"op": "conv2D"})
    with pytest.raises(pyconv.SpecError, match="no 'op' key"):
        pyconv.Conv({"in_channels": 3})
    with pytest.raises(pyconv.SpecError, match="not valid JSON"):
        pyconv.Conv("{op: conv2d")
    base = {"op": "conv2d", "in_channels": 4, "out_channels": 6, "kernel_size": 3}
    cases = [
        ({"stride": 0}, "stride", "positive int"),
        ({"kernel_size": [3, 3, 3]}, "kernel_size", "sequence of 2"),
        ({"padding": "full"}, "padding", "'same'"),
        ({"padding": -1}, "padding", "non-negative"),
        ({"padding": [[1, 2, 3], [0, 0]]}, "padding", "(lo, hi) pairs"),
        ({"groups": 4}, "groups", "a divisor of out_channels (6)"),
        ({"padding_mode": "mirror"}, "padding_mode", "'reflect'"),
        ({"padding_value": 1.0}, "padding_value", "padding_mode is 'constant'"),
        ({"bias": 1}, "bias", "True or False"),
        ({"activation": "gelu"}, "activation", "None or one of 'relu'"),
        ({"in_channels": 0}, "in_channels", "an int >= 1"),
        ({"in_channels": 2.0}, "in_channels", "an int >= 1"),
        ({"strides": 2}, "strides", "did you mean 'stride'"),
    ]
    for extra, key, text in cases:
        with pytest.raises(pyconv.SpecError) as info:
            pyconv.Conv({**base, **extra})
        err = info.value
        assert isinstance(err, ValueError)
        assert err.op == "conv2d" and err.key == key, (extra, err)
        assert text in str(err) and str(err).startswith("conv2d: spec key"), str(err)
    missing = dict(base)
    del missing["kernel_size"]
    with pytest.raises(pyconv.SpecError, match="'kernel_size'.*required"):
        pyconv.Conv(missing)


def test_spec_is_normalised_and_round_trips():
    conv = pyconv.Conv({"op": "conv3d", "in_channels": 2, "out_channels": 2,
                        "kernel_size": (3, 1, 2), "padding": (1, (0, 2), 0)})
    spec = conv.spec
    assert spec["kernel_size"] == [3, 1, 2]
    assert spec["padding"] == [[1, 1], [0, 2], [0, 0]]
    assert json.loads(json.dumps(spec)) == spec
    assert pyconv.Conv(spec).spec == spec
    assert pyconv.Conv.from_config(conv.get_config()) == conv
    assert "conv3d" in repr(conv) and '"kernel_size": [3, 1, 2]' in repr(conv)
    spec["stride"] = [9, 9, 9]  # a copy: the object is unaffected
    assert conv.spec["stride"] == [1, 1, 1]


PLUGIN_MODULE = textwrap.dedent('''
    import numpy as np
    from pyconv.ops import Op
    from pyconv._spec import key, real

    class Scale(Op):
        name = "scale_plugin"
        summary = "Multiply by a constant."
        keys = (key("factor", real(), 2.0, "The factor."),)

        def output_shape(self, spec, input_shape):
            return tuple(input_shape)

        def forward(self, spec, x, params, out, n_threads):
            return np.multiply(x, spec["factor"], out=out)
''')


def make_distribution(root, name, module_source, entry_value, module_name):
    (root / f"{module_name}.py").write_text(module_source)
    dist = root / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[pyconv.ops]\n{module_name} = {entry_value}\n")


def run_python(code, path):
    env_code = f"import sys; sys.path.insert(0, {str(path)!r})\n" + code
    # cwd outside the source tree, so the subprocess imports the installed package
    return subprocess.run([sys.executable, "-c", env_code], capture_output=True, text=True,
                          timeout=120, cwd=path)


def test_plugin_distribution_registers_an_op(tmp_path):
    make_distribution(tmp_path, "pyconv-scale", PLUGIN_MODULE, "scale_mod:Scale", "scale_mod")
    result = run_python(textwrap.dedent('''
        import numpy as np, pyconv
        assert "scale_plugin" in pyconv.available_ops()
        conv = pyconv.Conv({"op": "scale_plugin", "factor": 3})
        print(conv.apply(np.array([[1.0, 2.0]])).tolist(), conv.spec)
    '''), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[[3.0, 6.0]]" in result.stdout and "'factor': 3.0" in result.stdout


def test_lazy_plugin_lookup_by_name(tmp_path):
    make_distribution(tmp_path, "pyconv-scale", PLUGIN_MODULE, "scale_mod:Scale", "scale_mod")
    result = run_python("import pyconv\nprint(pyconv.get_op('scale_plugin').summary)", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Multiply by a constant." in result.stdout


def test_broken_plugin_warns_and_never_breaks_import(tmp_path):
    make_distribution(tmp_path, "pyconv-broken", "raise RuntimeError('boom')\n",
                      "broken_mod:Thing", "broken_mod")
    result = run_python(textwrap.dedent('''
        import warnings, pyconv
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ops = pyconv.available_ops()
        assert "conv2d" in ops
        print([str(w.message) for w in caught if w.category is pyconv.PluginWarning])
    '''), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pyconv-broken" in result.stdout and "boom" in result.stdout


def test_show_config(capsys):
    pyconv.show_config()
    text = capsys.readouterr().out
    assert text.startswith(f"pyconv {pyconv.__version__}")
    assert "openmp" in text and "threads" in text and "blas" in text
    # the AVX2 build runs its own GEMM, except for wide layers on AVX-512 CPUs; the
    # baseline build OpenBLAS
    from pyconv import _kernels
    avx2 = _kernels.active_level("_conv") == "avx2"
    expected = ("packed" if avx2 and (not _kernels.CPU_AVX512 or _kernels.WIDE_LOOPS)
                else "openblas")
    if _kernels.GEMM != "auto":
        expected = _kernels.GEMM if avx2 else "openblas"
    assert pyconv.config()["gemm"] == expected
    assert ("packed" in text.split("gemm")[1].split("\n")[0]) == _kernels.packed_gemm(1)


def test_openmp_present_when_the_build_requires_it():
    # A wheel or CI build sets PYCONV_REQUIRE_OPENMP=1; it must then really have OpenMP.
    import os

    if os.environ.get("PYCONV_REQUIRE_OPENMP", "0") not in ("", "0"):
        assert pyconv.config()["openmp"] is True


def test_public_names():
    for name in pyconv.__all__:
        assert getattr(pyconv, name) is not None
    assert issubclass(pyconv.SpecError, ValueError)


def test_extra_inputs_checked_even_for_an_empty_batch():
    unpool = pyconv.Conv({"op": "max_unpool2d", "kernel_size": 2})
    x = np.zeros((0, 3, 4, 4))
    assert unpool.apply(x, indices=np.zeros((0, 3, 4, 4), np.int64)).shape == (0, 3, 8, 8)
    with pytest.raises(ValueError, match="indices must have the input's shape"):
        unpool.apply(x, indices=np.zeros((0, 3, 4, 5), np.int64))
    with pytest.raises(TypeError, match="needs indices="):
        unpool.apply(x)


def test_deform_offsets_checked_even_for_an_empty_batch():
    conv = pyconv.Conv({"op": "deform_conv2d", "in_channels": 2, "out_channels": 2,
                        "kernel_size": 3, "padding": 1}, seed=0)
    x = np.zeros((0, 2, 5, 5))
    assert conv.apply(x, offset=np.zeros((0, 18, 5, 5))).shape == (0, 2, 5, 5)
    with pytest.raises(ValueError, match="offset"):
        conv.apply(x, offset=np.zeros((0, 18, 5, 4)))
    with pytest.raises(TypeError, match="offset="):
        conv.apply(x)


def test_output_shapes_remembered_per_input_shape_stay_right():
    # apply() remembers each input shape's output shape; a bad shape is never
    # remembered, and many shapes do not grow the memory without bound
    pool = pyconv.Conv({"op": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1})
    x = np.arange(2 * 3 * 9 * 9, dtype=np.float32).reshape(2, 3, 9, 9)
    first = pool.apply(x)
    assert np.array_equal(pool.apply(x), first) and first.shape == (2, 3, 5, 5)
    conv = pyconv.Conv({"op": "conv2d", "in_channels": 3, "out_channels": 2,
                        "kernel_size": 3}, seed=0)
    for _ in range(2):
        with pytest.raises(ValueError, match="channels"):
            conv.apply(np.zeros((1, 4, 8, 8), np.float32))
    for size in range(4, 84):
        y = pool.apply(np.zeros((1, 1, size, size), np.float32))
        half = (size - 1) // 2 + 1
        assert y.shape == pool.output_shape((1, 1, size, size)) == (1, 1, half, half)
    assert len(pool._shape_cache) <= 64
    # shape inputs (output_size=) still decide the shape on every call
    up = pyconv.Conv({"op": "conv_transpose2d", "in_channels": 1, "out_channels": 1,
                      "kernel_size": 3, "stride": 2, "padding": 1}, seed=0)
    small = np.zeros((1, 1, 4, 4), np.float32)
    assert up.apply(small).shape == (1, 1, 7, 7)
    assert up.apply(small, output_size=(8, 8)).shape == (1, 1, 8, 8)
    assert up.apply(small).shape == (1, 1, 7, 7)
