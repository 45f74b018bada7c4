"""The ``pyconv`` command line, run as users run it: ``python -m pyconv ...`` in a subprocess.

Every subcommand is run, and every kind of user mistake must give exactly one line on
stderr, a non-zero exit status, and no traceback.
"""
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyconv

CONV = {"op": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3,
        "padding": "same"}


def run(*args, cwd=None, env=None):
    full_env = dict(os.environ)
    full_env.pop("PYCONV_TRACEBACK", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pyconv", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=full_env, timeout=120)


def run_in_process(capsys, *args):
    from pyconv._cli import main

    capsys.readouterr()
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, out, err)


def assert_user_error(result, *fragments):
    """Exit status 2, one line on stderr that starts with 'pyconv: error:', no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pyconv: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 12, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "xs.npz", first=x[:2], second=x[2:].astype(np.float64))
    (tmp_path / "conv.json").write_text(json.dumps(CONV))
    return tmp_path, x


def expected(x, seed=0, spec=CONV):
    return pyconv.Conv(spec, seed=seed).apply(x)


# -- ops, describe, config, demo ------------------------------------------------------------
def test_ops_lists_every_registered_op():
    r = run("ops")
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert names == list(pyconv.available_ops())


def test_describe_prints_keys_and_rules_and_refuses_unknown_ops():
    r = run("describe", "conv2d")
    assert r.returncode == 0, r.stderr
    for text in ("kernel_size", "padding_mode", "required", "rules:", "macs"):
        assert text in r.stdout
    assert_user_error(run("describe", "conv2D"), "conv2D", "did you mean 'conv2d'")


def test_config_reports_openmp_and_threads():
    r = run("config")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"pyconv {pyconv.__version__}")
    assert "openmp" in r.stdout and "threads" in r.stdout


def test_demo_table_without_pictures(tmp_path):
    r = run("demo", "--no-pictures", "--repeats", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "conv2d" in r.stdout and "GFLOP/s" in r.stdout
    assert not os.listdir(tmp_path)


# -- apply -------------------------------------------------------------------------------
def test_apply_npy_matches_the_library(files):
    tmp, x = files
    r = run("apply", tmp / "conv.json", tmp / "x.npy", "-o", tmp / "y.npy", "--seed", "3")
    assert r.returncode == 0, r.stderr
    y = np.load(tmp / "y.npy")
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, expected(x, seed=3))
    assert "wrote" in r.stderr and "(5, 4, 12, 10)" in r.stderr


def test_apply_with_inline_json_params_and_threads(files):
    tmp, x = files
    conv = pyconv.Conv(CONV, seed=42, dtype=np.float64)
    np.savez(tmp / "params.npz", **conv.params)
    r = run("apply", json.dumps(CONV), tmp / "x.npy", "-o", tmp / "y.npy", "--params",
            tmp / "params.npz", "--threads", "2", "--dtype", "float64", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    y = np.load(tmp / "y.npy")
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, conv.apply(x.astype(np.float64)), rtol=1e-12, atol=1e-12)


def test_apply_npz_keeps_names_and_dtypes(files):
    tmp, x = files
    r = run("apply", tmp / "conv.json", tmp / "xs.npz", "-o", tmp / "ys.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp / "ys.npz") as out:
        assert sorted(out.files) == ["first", "second"]
        np.testing.assert_array_equal(out["first"], expected(x[:2]))
        assert out["second"].dtype == np.float64
        np.testing.assert_allclose(out["second"], expected(x[2:].astype(np.float64)),
                                   rtol=1e-12, atol=1e-12)
    r = run("apply", tmp / "conv.json", tmp / "xs.npz", "-o", tmp / "one.npy", "--key",
            "second")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp / "one.npy").shape == (3, 4, 12, 10)
    assert_user_error(run("apply", tmp / "conv.json", tmp / "xs.npz", "-o", tmp / "two.npy"),
                      "holds 2 arrays (first, second)", ".npz", "--key")
    assert_user_error(run("apply", tmp / "conv.json", tmp / "xs.npz", "-o", tmp / "k.npy",
                          "--key", "third"), "no array named 'third'", "'first'")


def test_apply_in_chunks_shows_progress_and_gives_the_same_result(files):
    tmp, x = files
    r = run("apply", tmp / "conv.json", tmp / "x.npy", "-o", tmp / "y.npy", "--chunk", "2",
            "--progress-after", "0")
    assert r.returncode == 0, r.stderr
    progress = [line for line in r.stderr.splitlines() if "images" in line]
    assert [p.split()[2] for p in progress] == ["2/5", "4/5", "5/5"], r.stderr
    assert progress[-1].endswith("done")
    np.testing.assert_array_equal(np.load(tmp / "y.npy"), expected(x))
    # a quick run prints no progress at all
    r = run("apply", tmp / "conv.json", tmp / "x.npy", "-o", tmp / "y.npy", "--chunk", "2")
    assert r.returncode == 0 and "images" not in r.stderr, r.stderr


def test_chunked_apply_splits_batched_extra_inputs():
    from pyconv._cli import apply_in_chunks

    class Recorder:
        def __init__(self):
            self.calls = []

        def output_shape(self, shape):
            return shape

        def apply(self, x, **inputs):
            self.calls.append((x.shape[0], {k: np.shape(v) for k, v in inputs.items()}))
            return x * 2, x[:, :1].astype(np.int64)

    model = Recorder()
    x = np.arange(7 * 2 * 3, dtype=np.float64).reshape(7, 2, 3)
    stream = io.StringIO()
    y, idx = apply_in_chunks(model, x, {"offset": np.zeros((7, 4)), "output_size": (5,)},
                             chunk=3, progress_after=0.0, stream=stream)
    np.testing.assert_array_equal(y, x * 2)
    assert idx.dtype == np.int64 and idx.shape == (7, 1, 3)
    assert [c[0] for c in model.calls] == [3, 3, 1]
    assert model.calls[0][1] == {"offset": (3, 4), "output_size": (1,)}
    assert stream.getvalue().count("\n") == 3


def test_apply_images_round_trip(files):
    Image = pytest.importorskip("PIL.Image")
    tmp, _ = files
    rgb = (np.arange(8 * 6 * 3).reshape(8, 6, 3) * 5 % 256).astype(np.uint8)
    Image.fromarray(rgb).save(tmp / "in.png")
    identity = {"op": "conv2d", "in_channels": 3, "out_channels": 3, "kernel_size": 1,
                "bias": False}
    np.savez(tmp / "eye.npz", weight=np.eye(3).reshape(3, 3, 1, 1))
    r = run("apply", json.dumps(identity), tmp / "in.png", "-o", tmp / "out.png",
            "--params", tmp / "eye.npz")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(tmp / "out.png")), rgb)
    # an image in, an array out: (1, C, H, W) float32 in [0, 1]
    r = run("apply", json.dumps(identity), tmp / "in.png", "-o", tmp / "out.npy",
            "--params", tmp / "eye.npz")
    y = np.load(tmp / "out.npy")
    assert y.shape == (1, 3, 8, 6) and y.dtype == np.float32
    np.testing.assert_allclose(y[0], np.moveaxis(rgb, -1, 0) / 255.0, rtol=1e-6)
    # grey input, signed output (an edge filter) is stretched to 0..255 in a JPEG
    edge = {"op": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3,
            "padding": "same", "padding_mode": "reflect", "bias": False}
    np.savez(tmp / "sobel.npz",
             weight=np.array([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])[None, None])
    r = run("apply", json.dumps(edge), tmp / "in.png", "-o", tmp / "edges.jpg", "--gray",
            "--params", tmp / "sobel.npz")
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(tmp / "edges.jpg"))
    assert out.shape == (8, 6) and out.min() < 30 and out.max() > 225
    # 4 output channels cannot be... they can (RGBA); 5 cannot
    five = dict(identity, out_channels=5)
    assert_user_error(run("apply", json.dumps(five), tmp / "in.png", "-o", tmp / "o.png"),
                      "(1, 5, 8, 6)", "cannot be written as an image")


def test_apply_user_errors_are_one_line(files, capsys):
    tmp, _ = files
    conv, x = tmp / "conv.json", tmp / "x.npy"
    (tmp / "bad.json").write_text('{"op": "conv2d", ')
    (tmp / "list.json").write_text("[]")
    (tmp / "number.json").write_text("3")
    (tmp / "not.npy").write_bytes(b"not an array")
    np.save(tmp / "complex.npy", np.ones((1, 3, 4, 4), np.complex64))
    cases = [
        (("apply", tmp / "bad.json", x, "-o", tmp / "y.npy"), ["bad.json", "not valid JSON"]),
        (("apply", tmp / "missing.json", x, "-o", tmp / "y.npy"),
         ["missing.json", "no such spec file"]),
        (("apply", tmp, x, "-o", tmp / "y.npy"), ["is a folder"]),
        (("apply", tmp / "list.json", x, "-o", tmp / "y.npy"), ["non-empty list"]),
        (("apply", tmp / "number.json", x, "-o", tmp / "y.npy"), ["JSON object"]),
        (("apply", '{"op": "conv2D"}', x, "-o", tmp / "y.npy"),
         ["registered op", "did you mean 'conv2d'"]),
        (("apply", '{"op": "conv2d", "in_channels": 3}', x, "-o", tmp / "y.npy"),
         ["conv2d", "out_channels", "required"]),
        (("apply", json.dumps(dict(CONV, stride=0)), x, "-o", tmp / "y.npy"),
         ["conv2d", "'stride'", "positive int"]),
        (("apply", json.dumps(dict(CONV, in_channels=5)), x, "-o", tmp / "y.npy"),
         ["conv2d", "expected 5 input channels"]),
        (("apply", json.dumps(dict(CONV, op="conv1d")), x, "-o", tmp / "y.npy"),
         ["conv1d", "3-D input"]),
        (("apply", conv, tmp / "missing.npy", "-o", tmp / "y.npy"), ["missing.npy",
                                                                     "no such file"]),
        (("apply", conv, tmp / "not.npy", "-o", tmp / "y.npy"), ["not a readable .npy"]),
        (("apply", conv, tmp / "conv.json", "-o", tmp / "y.npy"),
         ["unsupported input format '.json'"]),
        (("apply", conv, tmp / "complex.npy", "-o", tmp / "y.npy"),
         ["conv2d", "complex64", "not supported"]),
        (("apply", conv, x, "-o", tmp / "y.txt"), ["unsupported output format '.txt'"]),
        (("apply", conv, x, "-o", tmp / "nowhere" / "y.npy"), ["does not exist"]),
        (("apply", conv, x, "-o", tmp / "y.npy", "--params", tmp / "x.npy"),
         ["parameters must be a .npz"]),
        (("apply", conv, x, "-o", tmp / "y.npy", "--params", tmp / "xs.npz"),
         ["conv2d", "unknown parameter"]),
        (("apply", conv, x, "-o", tmp / "y.npy", "--input", "offset"),
         ["NAME=FILE"]),
        (("apply", conv, x, "-o", tmp / "y.npy", "--input", f"offset={x}"),
         ["conv2d", "unexpected input", "offset"]),
        (("apply", conv, x, "-o", tmp / "y.npy", "--chunk", "0"), ["--chunk"]),
        (("apply", conv, x, "-o", tmp / "y.npy", "--threads", "0"), ["n_threads"]),
    ]
    # A few through a real process; the rest through main() in this process (same code
    # path, without paying the interpreter start-up for each).
    for args, fragments in cases[:4]:
        assert_user_error(run(*args), *fragments)
    for args, fragments in cases[4:]:
        assert_user_error(run_in_process(capsys, *args), *fragments)
    assert not (tmp / "y.npy").exists()


def test_apply_list_of_specs_uses_sequential(files):
    tmp, x = files
    layers = [CONV, dict(CONV, in_channels=4, out_channels=2)]
    r = run("apply", json.dumps(layers), tmp / "x.npy", "-o", tmp / "y.npy")
    if hasattr(pyconv, "Sequential"):
        assert r.returncode == 0, r.stderr
        want = pyconv.Sequential(layers, seed=0).apply(x)
        np.testing.assert_array_equal(np.load(tmp / "y.npy"), want)
    else:
        assert_user_error(r, "pyconv.Sequential")


# -- summary -----------------------------------------------------------------------------
FAKE_SEQUENTIAL = textwrap.dedent("""
    import sys
    import pyconv
    from pyconv._cli import main

    class Sequential:
        def __init__(self, layers, seed=None, **kw):
            self.convs = [pyconv.Conv(s, seed=seed) for s in layers]
        def summary(self, shape):
            rows = []
            for c in self.convs:
                out = c.output_shape(shape)
                rows.append(f"{c.op.name} {out} {c.param_count}")
                shape = out
            return "\\n".join(rows)

    pyconv.Sequential = Sequential
    sys.exit(main(sys.argv[1:]))
""")


def test_summary_passes_specs_and_shape_to_sequential(tmp_path):
    (tmp_path / "net.json").write_text(json.dumps([CONV, dict(CONV, in_channels=4,
                                                                 stride=2)]))
    r = subprocess.run([sys.executable, "-c", FAKE_SEQUENTIAL, "summary",
                        str(tmp_path / "net.json"), "--input-shape", "1,3,16,16"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["conv2d (1, 4, 16, 16) 112", "conv2d (1, 4, 8, 8) 148"]
    r = subprocess.run([sys.executable, "-c", FAKE_SEQUENTIAL, "summary", json.dumps(CONV),
                        "--input-shape", "(1, 3, 9, 9)"], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip() == "conv2d (1, 4, 9, 9) 112", r.stderr


def test_summary_with_the_real_sequential_or_a_clear_error(tmp_path):
    r = run("summary", json.dumps(CONV), "--input-shape", "1,3,32,32")
    if hasattr(pyconv, "Sequential"):
        assert r.returncode == 0, r.stderr
        assert "conv2d" in r.stdout and "(1, 4, 32, 32)" in r.stdout and "112" in r.stdout
        assert_user_error(run("summary", json.dumps(CONV), "--input-shape", "1,5,32,32"),
                          "conv2d", "5")
    else:
        assert_user_error(r, "pyconv.Sequential")


def test_summary_user_errors(tmp_path):
    assert_user_error(run("summary", json.dumps(CONV), "--input-shape", "1,3,x"),
                      "bad input shape")
    assert_user_error(run("summary", tmp_path / "none.json", "--input-shape", "1,3,8,8"),
                      "no such spec file")
    assert_user_error(run("summary", '{"op": ', "--input-shape", "1,3,8,8"), "not valid JSON")
    assert_user_error(run("summary", '"conv2d"', "--input-shape", "1,3,8,8"),
                      "no such spec file")
    r = run("summary", json.dumps(CONV))  # argparse: a missing option is a usage error
    assert r.returncode == 2 and "--input-shape" in r.stderr and "Traceback" not in r.stderr


# -- bench -------------------------------------------------------------------------------
FAKE_BENCH = textwrap.dedent('''
    import numpy as np
    from fakebench.harness import Case

    def make_cases():
        x = np.ones((1, 1, 8))
        conv = __import__("pyconv").Conv({"op": "conv1d", "in_channels": 1,
                                          "out_channels": 1, "kernel_size": 3}, seed=0)
        ref = conv.apply(x)
        return [Case("tiny conv1d", "1x1x8", "float64", lambda n: conv.apply(x, n_threads=n),
                     lambda n: ref, flops=conv.flops(x.shape), peer_name="itself")]
''')


def test_bench_runs_a_benchmarks_folder(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    harness = os.path.join(root, "benchmarks", "harness.py")
    if not os.path.exists(harness):
        pytest.skip("the benchmark harness is not beside these tests (installed-wheel run)")
    pkg = tmp_path / "fakebench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "harness.py").write_text(open(harness).read())
    (pkg / "bench_tiny.py").write_text(FAKE_BENCH)
    r = run("bench", "--benchmarks", pkg, "--list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["tiny", "conv1d", "1x1x8", "float64"]
    r = run("bench", "--benchmarks", pkg, "--threads", "1", "--repeats", "2", "--json",
            tmp_path / "r.json", "--rst", tmp_path / "t.rst")
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [(row["case"], row["threads"]) for row in rows] == [("tiny conv1d", 1)]
    table = (tmp_path / "t.rst").read_text()
    assert ".. list-table::" in table and "tiny conv1d" in table
    assert_user_error(run("bench", "--benchmarks", pkg, "--only", "nothing"),
                      "no benchmark case matches")
    assert_user_error(run("bench", "--benchmarks", pkg, "--family", "conv"),
                      "no benchmark family conv", "tiny")
    assert_user_error(run("bench", "--benchmarks", pkg, "--threads", "0"), "--threads")


def test_bench_without_a_benchmarks_folder_says_so(tmp_path):
    assert_user_error(run("bench", "--benchmarks", tmp_path / "none"), "no benchmarks folder")


# -- in-process helpers ----------------------------------------------------------------
def test_shapes_and_image_scaling():
    from pyconv._arrayio import UserError, to_image_data
    from pyconv._cli import _parse_shape

    assert _parse_shape("1,3,224,224") == (1, 3, 224, 224)
    assert _parse_shape("1x3x8") == (1, 3, 8)
    assert _parse_shape("[2, 4]") == (2, 4)
    for bad in ("", "1,-3", "a,b"):
        with pytest.raises(UserError):
            _parse_shape(bad)
    y = np.array([[[[0.0, 0.5, 1.0]]]])
    np.testing.assert_array_equal(to_image_data(y), [[0, 128, 255]])
    np.testing.assert_array_equal(to_image_data(y * 4 - 2), [[0, 128, 255]])  # stretched
    np.testing.assert_array_equal(to_image_data(y * 4 - 2, "clip"), [[0, 0, 255]])
    with pytest.raises(UserError, match="cannot be written"):
        to_image_data(np.zeros((2, 3, 4, 4)))


def test_unexpected_failures_are_one_line_too(tmp_path):
    code = textwrap.dedent("""
        import sys
        import pyconv._cli as cli
        def boom(args):
            raise RuntimeError("kaput")
        cli._cmd_ops = boom
        sys.exit(cli.main(["ops"]))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env={k: v for k, v in os.environ.items()
                                         if k != "PYCONV_TRACEBACK"})
    assert r.returncode == 1
    assert r.stderr.strip() == ("pyconv: internal error: RuntimeError: kaput (set "
                                "PYCONV_TRACEBACK=1 to see the traceback)")
