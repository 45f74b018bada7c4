"""Command line: ``pyconv`` / ``python -m pyconv``.

Subcommands
-----------
``ops``        the registered ops, one line each
``describe``   the spec keys and rules of one op
``apply``      run a spec (or a list of specs) on an ``.npy``/``.npz`` file or an image
``summary``    the layer table of a spec or a list of specs for an input shape
``bench``      the benchmark cases of a ``benchmarks/`` folder, pyconv against PyTorch
``demo``       ops on the embedded sample image, timed and pictured
``config``     the build and runtime configuration

User mistakes (bad JSON, unknown op, wrong shapes, missing files) print one line on
standard error and exit with status 2, never a traceback. An unexpected failure
prints one line and exits with status 1; ``PYCONV_TRACEBACK=1`` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from pyconv._arrayio import UserError


# -- shared helpers ---------------------------------------------------------------------
def _load_json(arg, what="spec"):
    """A JSON document from a file path, or the JSON text itself when it looks like one."""
    text = None
    if os.path.isfile(arg):
        try:
            with open(arg, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{arg}: cannot read the {what} file ({e})") from None
        where = arg
    elif arg.lstrip().startswith(("{", "[")):
        text, where = arg, f"the {what} given on the command line"
    elif os.path.isdir(arg):
        raise UserError(f"{arg}: is a folder, not a {what} file")
    else:
        raise UserError(f"{arg}: no such {what} file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e})") from None


def _sequential():
    import pyconv

    seq = getattr(pyconv, "Sequential", None)
    if seq is None:
        raise UserError("a list of specs needs pyconv.Sequential, which this version of "
                        "pyconv does not have; give a single spec")
    return seq


def _build_model(spec, params=None, seed=None, dtype=None):
    """A :class:`pyconv.Conv` for a spec dict, a ``Sequential`` for a list of specs."""
    from pyconv._conv import Conv

    if isinstance(spec, dict):
        return Conv(spec, params=params, seed=seed, dtype=dtype)
    if isinstance(spec, list) and spec:
        if not all(isinstance(s, dict) for s in spec):
            raise UserError("a list of specs must hold JSON objects only")
        return _sequential()(spec, params=params, seed=seed, dtype=dtype)
    raise UserError("a spec must be a JSON object with an \"op\" key, or a non-empty list "
                    f"of such objects; got {type(spec).__name__}"
                    + (" (empty)" if spec == [] else ""))


def _parse_shape(text):
    """``1,3,224,224`` (also ``1x3x224x224`` or ``(1, 3, 224, 224)``) -> tuple of ints."""
    import re

    cleaned = text.strip().strip("()[]").strip()
    shape = ()
    if re.fullmatch(r"\d+(\s*[,x]\s*\d+)*,?", cleaned):
        shape = tuple(int(p) for p in re.split(r"\s*[,x]\s*", cleaned.rstrip(",")))
    if not shape:
        raise UserError(f"bad input shape {text!r}; expected comma-separated non-negative "
                        "ints such as 1,3,224,224")
    return shape


def _load_params(path):
    from pyconv._arrayio import read_arrays, suffix

    if suffix(path) != ".npz":
        raise UserError(f"{path}: parameters must be a .npz file of named arrays "
                        "(weight, bias, ...; '0.weight', ... for a list of specs)")
    return dict(read_arrays(path))


def _parse_inputs(items):
    """``NAME=FILE`` (an array file) or ``NAME=1,2,3`` (a tuple of ints) -> dict."""
    from pyconv._arrayio import read_arrays

    inputs = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise UserError(f"--input {item!r}: expected NAME=FILE or NAME=INTS, e.g. "
                            "offset=offset.npy or output_size=32,32")
        if os.path.exists(value) or value.lower().endswith((".npy", ".npz")):
            arrays = read_arrays(value)
            if len(arrays) != 1:
                raise UserError(f"--input {name}: {value} holds {len(arrays)} arrays; "
                                "give a file with one")
            inputs[name] = arrays[0][1]
        else:
            inputs[name] = _parse_shape(value)
    return inputs


class Progress:
    """A progress line on standard error, shown once the work has taken ``after`` s."""

    def __init__(self, total, label, after=1.0, stream=None):
        self.total, self.label, self.after = total, label, after
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.last = None
        self.shown = False

    def update(self, done):
        now = time.perf_counter()
        elapsed = now - self.start
        if elapsed < self.after and done < self.total:
            return
        if not self.shown and done >= self.total and elapsed < self.after:
            return  # finished quickly: nothing to show
        interval = min(self.after, 0.1 if self.tty else 1.0)  # a terminal line is redrawn
        if done < self.total and self.last is not None and now - self.last < interval:
            return
        self.last = now
        left = elapsed / done * (self.total - done) if done else float("nan")
        text = (f"pyconv: {self.label} {done}/{self.total} ({100 * done // self.total}%) "
                f"{elapsed:.1f} s" + (f", about {left:.1f} s left" if done < self.total
                                      else ", done"))
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            if done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = True


def _batched(value, n):
    import numpy as np

    return isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == n


def apply_in_chunks(model, x, inputs, *, chunk=None, n_threads=None, label="images",
                    progress_after=1.0, stream=None):
    """Run ``model.apply`` over the batch axis chunk by chunk, reporting progress.

    Extra inputs whose first axis is the batch axis are split with ``x``. Results
    (arrays, or tuples of arrays) are assembled into full-batch arrays.
    """
    import numpy as np

    kwargs = {} if n_threads is None else {"n_threads": n_threads}
    x = np.asarray(x)
    n = x.shape[0] if x.ndim else 0
    if chunk is None:
        chunk = max(1, math.ceil(n / 20))
    if n <= chunk:
        return model.apply(x, **inputs, **kwargs)
    model.output_shape(x.shape)  # refuse a bad shape before the first chunk runs
    progress = Progress(n, label, progress_after, stream)
    full = None
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        part = {k: (v[lo:hi] if _batched(v, n) else v) for k, v in inputs.items()}
        y = model.apply(x[lo:hi], **part, **kwargs)
        parts = y if isinstance(y, tuple) else (y,)
        if full is None:
            full = [np.empty((n,) + p.shape[1:], dtype=p.dtype) for p in parts]
        for dest, p in zip(full, parts):
            dest[lo:hi] = p
        progress.update(hi)
    return tuple(full) if isinstance(y, tuple) else full[0]


# -- subcommands ------------------------------------------------------------------------
def _cmd_ops(args):
    from pyconv._registry import available_ops, get_op

    names = available_ops()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {get_op(name).summary}")


def _cmd_describe(args):
    from pyconv._registry import get_op

    op = get_op(args.op)
    print(f"{op.name}: {op.summary}\n\nspec keys:")
    for k in op.keys:
        default = "required" if k.required else f"default {json.dumps(k.default)}"
        print(f"  {k.name:<16} {k.type_doc} ({default})")
        if k.doc:
            print(f"  {'':<16} {k.doc}")
    if op.inputs:
        print(f"\napply() inputs: {', '.join(op.inputs)}")
    if op.formulas:
        print("\nrules:")
        for name, text in op.formulas.items():
            print(f"  {name:<8} {text}")


def _cmd_apply(args):
    import numpy as np

    from pyconv._arrayio import check_output_path, read_arrays, suffix, write_arrays

    check_output_path(args.output)
    spec = _load_json(args.spec)
    params = _load_params(args.params) if args.params else None
    model = _build_model(spec, params=params, seed=args.seed, dtype=args.param_dtype)
    inputs = _parse_inputs(args.input)
    arrays = read_arrays(args.x, key=args.key, gray=args.gray)
    if args.chunk is not None and args.chunk < 1:
        raise UserError(f"--chunk must be a positive int; got {args.chunk}")
    if suffix(args.output) != ".npz" and len(arrays) > 1:
        raise UserError(f"{args.output}: the input holds {len(arrays)} arrays "
                        f"({', '.join(n for n, _ in arrays)}); write a .npz or pick one "
                        "with --key")
    # One-time set-up (loading and pinning scipy's BLAS, ~1 s) before the progress clock.
    from pyconv import _threads

    with _threads.blas_pinned:
        pass
    results = []
    for name, x in arrays:
        if args.dtype:
            x = x.astype(args.dtype)
        label = "images" if len(arrays) == 1 else f"{name!r} images"
        y = apply_in_chunks(model, x, inputs, chunk=args.chunk, n_threads=args.threads,
                            label=label, progress_after=args.progress_after)
        if isinstance(y, tuple):  # e.g. pooling values and indices
            results.append((name, y[0]))
            results += [(f"{name}_{i}", extra) for i, extra in enumerate(y[1:], start=1)]
        else:
            results.append((name, y))
    if suffix(args.output) not in (".npz",) and len(results) > 1 and len(arrays) == 1:
        print(f"pyconv: note: the op returned {len(results)} arrays; writing the first "
              f"(use a .npz output to keep {', '.join(n for n, _ in results[1:])})",
              file=sys.stderr)
        results = results[:1]
    write_arrays(args.output, results, scale=args.scale)
    if not args.quiet:
        shapes = ", ".join(f"{n} {tuple(np.shape(a))} {np.asarray(a).dtype}"
                           for n, a in results)
        print(f"wrote {args.output}: {shapes}", file=sys.stderr)


def _cmd_summary(args):
    spec = _load_json(args.spec)
    shape = _parse_shape(args.input_shape)
    layers = [spec] if isinstance(spec, dict) else spec
    if not isinstance(layers, list) or not layers or not all(
            isinstance(s, dict) for s in layers):
        raise UserError("a spec must be a JSON object with an \"op\" key, or a non-empty "
                        "list of such objects")
    import pyconv

    seq = getattr(pyconv, "Sequential", None)
    if seq is None:
        raise UserError("pyconv summary needs pyconv.Sequential, which this version of "
                        "pyconv does not have")
    net = seq(layers, seed=0)
    print(net.summary(shape))


def _find_benchmarks(folder):
    """Import ``bench_*.py`` modules of a ``benchmarks`` package; ``{name: module}``."""
    import glob
    import importlib

    candidates = [folder] if folder else [os.path.join(os.getcwd(), "benchmarks")]
    if not folder:
        try:  # an importable benchmarks package (e.g. the source tree on sys.path)
            import benchmarks

            candidates.insert(0, os.path.dirname(benchmarks.__file__))
        except ImportError:
            pass
    for path in candidates:
        path = os.path.abspath(path)
        if os.path.isfile(os.path.join(path, "harness.py")):
            break
    else:
        where = folder or "./benchmarks"
        raise UserError(f"no benchmarks folder at {where} (it lives in pyconv's source "
                        "tree: run pyconv bench from a checkout, or pass --benchmarks DIR)")
    parent, package = os.path.split(path)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    for name in [m for m in list(sys.modules) if m == package or m.startswith(package + ".")]:
        if not os.path.abspath(getattr(sys.modules[name], "__file__", "") or "").startswith(
                path + os.sep):
            del sys.modules[name]  # an unrelated package of the same name
    harness = importlib.import_module(f"{package}.harness")
    modules = {}
    for file in sorted(glob.glob(os.path.join(path, "bench_*.py"))):
        stem = os.path.splitext(os.path.basename(file))[0]
        modules[stem[len("bench_"):]] = f"{package}.{stem}"
    return harness, modules


def _cmd_bench(args):
    import importlib

    harness, modules = _find_benchmarks(args.benchmarks)
    families = args.family.split(",") if args.family else sorted(modules)
    unknown = [f for f in families if f not in modules]
    if unknown:
        raise UserError(f"no benchmark family {', '.join(unknown)}; there are: "
                        f"{', '.join(sorted(modules)) or 'none'}")
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        threads = []
    if not threads or any(t < 1 for t in threads):
        raise UserError(f"--threads expects comma-separated positive ints; got "
                        f"{args.threads!r}")
    cases = []
    for family in families:
        try:
            module = importlib.import_module(modules[family])
            made = module.make_cases()
        except ImportError as e:
            raise UserError(f"benchmark {family!r} needs {e.name or e} (the peer it is "
                            "timed against); install it first") from None
        cases += [c for c in made if not args.only or args.only in c.name]
    if not cases:
        raise UserError("no benchmark case matches" + (f" --only {args.only!r}"
                                                        if args.only else ""))
    if args.list:
        for c in cases:
            print(f"{c.name:<34} {c.shape:<26} {c.dtype}")
        return
    results = harness.run_cases(cases, threads, repeats=args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.rst:
        write_performance_table(args.rst, results)
        print(f"wrote {args.rst}", file=sys.stderr)


def write_performance_table(path, results):
    """Write benchmark results as the reStructuredText table the docs include."""
    import platform

    import pyconv

    head = ("case", "shape", "dtype", "threads", "pyconv ms", "peer ms",
            "peer / pyconv", "GFLOP/s")
    rows = [(r["case"], r["shape"], r["dtype"], str(r["threads"]), f"{r['pyconv_ms']:.2f}",
             f"{r['peer_ms']:.2f}", f"{r['ratio']:.2f}",
             "" if r["gflops"] != r["gflops"] else f"{r['gflops']:.1f}") for r in results]
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in (head, *rows):
        lines.append("   * - " + (row[0] or " "))
        lines += [f"     - {cell or ' '}" for cell in row[1:]]
    stamp = (f"Measured with pyconv {pyconv.__version__} on {platform.machine()} "
             f"({platform.processor() or 'unknown CPU'}), "
             f"{time.strftime('%Y-%m-%d')}; peer: {results[0]['peer'] if results else '-'}.")
    with open(path, "w", encoding="utf-8") as f:
        f.write(stamp + "\n\n" + "\n".join(lines) + "\n")


def _cmd_demo(args):
    from pyconv._demo import run_demo

    run_demo(None if args.no_pictures else args.out, repeats=args.repeats)


def _cmd_config(args):
    from pyconv._config import show_config

    show_config()


# -- parser -----------------------------------------------------------------------------
def build_parser():
    parser = argparse.ArgumentParser(prog="pyconv", description="CNN convolution and "
                                     "pooling ops on NumPy arrays.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ops", help="list the registered ops")
    p.set_defaults(func=_cmd_ops)
    p = sub.add_parser("describe", help="spec keys and rules of one op")
    p.add_argument("op")
    p.set_defaults(func=_cmd_describe)

    p = sub.add_parser(
        "apply", help="run a spec on an array file or an image",
        description="Run a spec (JSON object) or a list of specs on INPUT and write the "
        "result. INPUT and OUTPUT: .npy, .npz (every array in it, same names), or an "
        "image (PNG, JPEG, ...; needs Pillow: pip install 'pyconv[image]'), read as a "
        "(1, C, H, W) float32 batch in [0, 1].")
    p.add_argument("spec", metavar="SPEC", help="JSON file (or JSON text) of a spec or a "
                   "list of specs")
    p.add_argument("x", metavar="INPUT", help="input .npy, .npz or image")
    p.add_argument("-o", "--output", required=True, help="output .npy, .npz or image")
    p.add_argument("--params", help=".npz of parameters (PyTorch state-dict names); "
                   "missing ones are initialised from --seed")
    p.add_argument("--seed", type=int, default=0, help="seed for missing parameters")
    p.add_argument("--input", action="append", metavar="NAME=FILE",
                   help="extra input of the op (offset=off.npy, output_size=32,32); "
                   "repeatable")
    p.add_argument("--key", help="use only this array of an .npz input")
    p.add_argument("--gray", action="store_true", help="read an image as one grey channel")
    p.add_argument("--dtype", choices=("float32", "float64"),
                   help="convert the input to this dtype first")
    p.add_argument("--param-dtype", choices=("float32", "float64"), default=None,
                   help="storage dtype of the parameters")
    p.add_argument("--threads", type=int, help="threads (default: pyconv's policy)")
    p.add_argument("--chunk", type=int, help="images per chunk (default: batch / 20)")
    p.add_argument("--scale", choices=("auto", "clip", "minmax"), default="auto",
                   help="image output: clip [0, 1], stretch min..max, or auto (clip if "
                   "the data lies in [0, 1])")
    p.add_argument("-q", "--quiet", action="store_true", help="no messages on stderr")
    p.add_argument("--progress-after", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_apply)

    p = sub.add_parser("summary", help="layer table of a spec or a list of specs",
                       description="Print the layers' output shapes, parameters, MACs "
                       "and receptive fields (uses pyconv.Sequential).")
    p.add_argument("spec", metavar="SPEC", help="JSON file (or JSON text) of a spec or a "
                   "list of specs")
    p.add_argument("--input-shape", required=True, metavar="N,C,...",
                   help="input shape, e.g. 1,3,224,224")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("bench", help="time pyconv against PyTorch (from a source tree)",
                       description="Run the cases of benchmarks/bench_*.py (found in the "
                       "current folder or given with --benchmarks).")
    p.add_argument("--benchmarks", metavar="DIR", help="the benchmarks folder")
    p.add_argument("--family", help="comma-separated families (bench_<family>.py)")
    p.add_argument("--only", help="only cases whose name contains this text")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--list", action="store_true", help="list the cases, run nothing")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--rst", help="also write a reStructuredText table (the docs' "
                   "performance_table.rst)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="run ops on the embedded sample image")
    p.add_argument("--out", default="pyconv-demo", help="folder for the pictures")
    p.add_argument("--no-pictures", action="store_true", help="print the table only")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per op")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("config", help="show the build and runtime configuration")
    p.set_defaults(func=_cmd_config)
    return parser


def _one_line(e):
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, KeyError) and len(e.args) == 1:
        text = f"missing key {e.args[0]!r}"
    return text


def main(argv=None):
    """Entry point of the ``pyconv`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"pyconv: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, KeyError, MemoryError) as e:
        if os.environ.get("PYCONV_TRACEBACK"):
            raise
        print(f"pyconv: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyconv: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line, with a way to see more
        if os.environ.get("PYCONV_TRACEBACK"):
            raise
        print(f"pyconv: internal error: {type(e).__name__}: {_one_line(e)} (set "
              "PYCONV_TRACEBACK=1 to see the traceback)", file=sys.stderr)
        return 1
    return 0
