"""Sphinx extension: pages generated from the installed pyconv at build time.

* ``generated/api.rst``: every name in ``pyconv.__all__``, grouped, through autodoc;
* ``generated/ops/<op>.rst``: one reference page per registered op (spec keys,
  extra inputs, rules, parameter shapes, a runnable example, the family's notes),
  so an op added by a plugin or a new module gets the same page for free;
* ``generated/gallery/``: pictures made by ``docs/gallery.py``.

Example convention: an op may declare ``example = {"spec": {...}, "input_shape":
(...), "inputs": {"offset": "np.zeros((1, 18, 8, 8), np.float32)"}}`` (``inputs``
optional: Python expressions evaluated with ``np``, ``x`` and ``conv`` in scope). Without
it an example spec is derived from the required keys; if none can be derived, or it
does not run without extra inputs, the page says so.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import textwrap

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.dirname(HERE)
GENERATED = os.path.join(DOCS, "generated")

try:
    from sphinx.util import logging as _logging

    LOG = _logging.getLogger(__name__)
except ImportError:  # generating without Sphinx
    import logging

    LOG = logging.getLogger(__name__)


# -- small helpers -------------------------------------------------------------------------
def write_if_changed(path, text):
    """Write ``text`` unless the file already holds it (keeps Sphinx's cache useful)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


_RST_SPECIAL = re.compile(r"([\\`*|_])")


def rst_text(text):
    """Plain text made safe for reStructuredText (no accidental markup)."""
    return _RST_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def rst_literal(text):
    text = " ".join(str(text).split())
    return f"``{text}``" if text else ""


def heading(text, char):
    return f"{text}\n{char * len(text)}\n"


def py_value(value):
    """A Python literal for a JSON-able value (double-quoted strings)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(py_value(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_value(k)}: {py_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def wrap_call(prefix, items, suffix, width=88):
    """``prefix{items}suffix`` as doctest lines (``>>>`` then ``...``) within ``width``."""
    lines, line = [], ">>> " + prefix + "{"
    indent = "... " + " " * (len(prefix) + 1)
    for i, item in enumerate(items):
        piece = item + (", " if i < len(items) - 1 else "")
        if len(line) + len(piece.rstrip()) > width and not line.endswith("{"):
            lines.append(line.rstrip())
            line = indent
        line += piece
    lines.append(line + "}" + suffix)
    return lines


def list_table(header, rows, widths=None):
    out = [".. list-table::", "   :header-rows: 1"]
    if widths:
        out.append("   :widths: " + " ".join(map(str, widths)))
    out.append("")
    for row in [header, *rows]:
        out.append("   * - " + (row[0] or "\\ "))
        out += ["     - " + (cell or "\\ ") for cell in row[1:]]
    return "\n".join(out) + "\n"


# -- examples --------------------------------------------------------------------------------
GUESSES = {
    "in_channels": [4, 3, 2, 1], "out_channels": [8, 4, 2, 1], "channels": [4],
    "num_channels": [4], "num_features": [4], "kernel_size": [3, 2, 1],
    "output_size": [4, 2, 1], "depth_multiplier": [2, 1], "norm_type": [2.0],
    "p": [2.0], "scale_factor": [2], "size": [4],
}
FALLBACK = [3, 2, 1, 1.0, 0.5, True, False, "same", None]


def _rank(op):
    m = re.search(r"([123])d(?:_|$)", op.name)
    return int(m.group(1)) if m else 2


def derive_spec(op):
    """A valid spec from guesses for the required keys, or None."""
    from pyconv import SpecError

    keys = list(getattr(op, "keys", ()))
    required = [k.name for k in keys if getattr(k, "required", False)]
    choices = {name: GUESSES.get(name, []) + FALLBACK for name in required}
    index = {name: 0 for name in required}
    for _ in range(60):
        body = {name: choices[name][index[name]] for name in required}
        try:
            op.normalize(dict(body))
            return {"op": op.name, **body}
        except SpecError as e:
            bad = e.key if e.key in index else None
            if bad is None:
                return None
            index[bad] += 1
            if index[bad] >= len(choices[bad]):
                return None
        except Exception:
            return None
    return None


def derive_input_shape(conv, rank):
    spec = conv.spec
    channels = spec.get("in_channels") or spec.get("channels") or spec.get(
        "num_channels") or 4
    for r in [rank] + [r for r in (2, 1, 3) if r != rank]:  # the name's rank first
        for size in ((8, 16) if r < 3 else (6, 12)):
            shape = (1, int(channels)) + (size,) * r
            try:
                conv.output_shape(shape)
                return shape
            except Exception:
                continue
    return None


def build_example(op):
    """Everything the op page shows about an example: spec, shapes, counts, code."""
    import pyconv

    declared = getattr(op, "example", None)
    source = "declared by the op" if declared else "derived from the op's required keys"
    if declared:
        spec = {"op": op.name, **{k: v for k, v in declared["spec"].items() if k != "op"}}
    else:
        spec = derive_spec(op)
    if spec is None:
        return None
    try:
        conv = pyconv.Conv(spec, seed=0)
    except Exception:
        return None
    rank = _rank(op)
    shape = (tuple(declared["input_shape"]) if declared and "input_shape" in declared
             else derive_input_shape(conv, rank))
    if shape is None:
        return None
    try:
        out_shape = conv.output_shape(shape)
        counts = (out_shape, conv.param_count, conv.macs(shape), conv.flops(shape))
    except Exception:
        return None
    inputs = dict(declared.get("inputs", {})) if declared else {}
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    run_error = None
    result_repr = None
    try:
        env = {"np": np, "x": x, "conv": conv, "pyconv": pyconv}
        values = {name: eval(expr, env) for name, expr in inputs.items()}  # noqa: S307
        y = conv.apply(x, **values)
        if isinstance(y, tuple):
            result_repr = ("[(a.shape, a.dtype) for a in y]",
                           repr([(a.shape, a.dtype) for a in y]))
        else:
            result_repr = ("y.shape, y.dtype", repr((y.shape, y.dtype)))
    except Exception as e:  # needs inputs the example does not give
        run_error = " ".join(str(e).split())
    return {"spec": conv.spec if not declared else spec, "given_spec": spec,
            "shape": shape, "counts": counts, "param_shapes": conv.param_shapes,
            "inputs": inputs, "result": result_repr, "run_error": run_error,
            "source": source}


def example_lines(ex):
    spec = ex["given_spec"]
    items = [f"{py_value(k)}: {py_value(v)}" for k, v in spec.items()]
    lines = [">>> import numpy as np, pyconv"]
    lines += wrap_call("conv = pyconv.Conv(", items, ", seed=0)")
    lines += [">>> conv.param_shapes", repr(ex["param_shapes"])]
    lines += [f">>> x = np.random.default_rng(0).standard_normal({ex['shape']!r})"
              ".astype(np.float32)"]
    out_shape, count, macs, flops = ex["counts"]
    lines += [">>> conv.output_shape(x.shape), conv.param_count",
              repr((out_shape, count)),
              ">>> conv.macs(x.shape), conv.flops(x.shape)", repr((macs, flops))]
    if ex["result"] is not None:
        args = "".join(f", {name}={name}" for name in ex["inputs"])
        for name, expr in ex["inputs"].items():
            lines.append(f">>> {name} = {expr}")
        lines += [f">>> y = conv.apply(x{args})", f">>> {ex['result'][0]}", ex["result"][1]]
    return lines


# -- pages ------------------------------------------------------------------------------------
def _default_text(k):
    if getattr(k, "required", False):
        return "required"
    return rst_literal(py_value(getattr(k, "default", None)))


def op_page(op):
    name = op.name
    parts = [f".. _op-{name}:\n", heading(name, "="), rst_text(getattr(op, "summary", "")
                                                               or "(no summary)") + "\n"]
    module = type(op).__module__
    where = "a plugin" if not module.startswith("pyconv.") else f"``{module}``"
    parts.append(f"Registered as ``{name}``, defined in {where}.\n")

    parts.append(heading("Spec keys", "-"))
    keys = list(getattr(op, "keys", ()))
    if keys:
        rows = [(rst_literal(k.name), rst_text(getattr(k, "type_doc", "") or ""),
                 _default_text(k), rst_text(getattr(k, "doc", "") or "")) for k in keys]
        parts.append(list_table(("key", "accepts", "default", "meaning"), rows,
                                (14, 30, 14, 42)))
    else:
        parts.append("This op takes no spec keys besides ``\"op\"``.\n")

    inputs = tuple(getattr(op, "inputs", ()) or ())
    parts.append(heading("Inputs", "-"))
    text = ("``apply(x)`` takes ``x`` of shape ``(N, C, *spatial)``")
    if inputs:
        text += (", and the keyword inputs " + ", ".join(f"``{i}``" for i in inputs)
                 + " (see the family notes below).")
    else:
        text += " and no other input."
    parts.append(text + "\n")

    formulas = dict(getattr(op, "formulas", {}) or {})
    parts.append(heading("Rules", "-"))
    if formulas:
        rows = [(rst_text(k), rst_literal(v)) for k, v in formulas.items()]
        parts.append(list_table(("rule", "formula"), rows, (12, 88)))
    else:
        parts.append("The op declares no formulas.\n")

    parts.append(heading("Example", "-"))
    try:
        ex = build_example(op)
    except Exception:
        ex = None
    if ex is None:
        parts.append("No example spec could be derived for this op; give it an "
                     "``example`` attribute (see :doc:`/plugins`).\n")
    else:
        rows = [(rst_literal(p), rst_literal(str(tuple(s))))
                for p, s in ex["param_shapes"].items()]
        parts.append(f"Example spec ({ex['source']}) on an input of shape "
                     f"``{ex['shape']}``.\n")
        if rows:
            parts.append(list_table(("parameter", "shape"), rows, (30, 70)))
        else:
            parts.append("The op has no parameters.\n")
        if ex["result"] is None:
            parts.append("The op needs extra inputs to run (" + rst_text(ex["run_error"])
                         + "); the family notes below show a full call.\n")
        parts.append("\n".join(example_lines(ex)) + "\n")

    mod = importlib.import_module(module)
    doc = inspect.getdoc(mod)
    if doc and module.startswith("pyconv."):
        parts.append(heading("Family notes", "-"))
        parts.append(f"From the docstring of ``{module}``.\n")
        notes = demote_headings(literal_roles(doc))
        problems = rst_problems(notes)
        if problems:  # show it as written rather than break the build
            LOG.info("pyconv_docs: the docstring of %s is not valid reStructuredText "
                     "(%s); shown as plain text on %s", module, problems[0], name)
            notes = "::\n\n" + textwrap.indent(doc, "    ")
        parts.append(notes + "\n")
    return "\n".join(parts)


_ROLE = re.compile(r":(?:py:)?(?:data|func|class|mod|meth|attr|obj|exc|const|"
                   r"attribute|function):`~?([^`<]+?)(?:\s*<[^>]*>)?`")


def literal_roles(doc):
    """Python roles become literals: their targets are not documented on the page."""
    return _ROLE.sub(lambda m: f"``{m.group(1).strip()}``", doc)


def rst_problems(text):
    """Warnings and errors docutils reports for ``text`` (an empty list if clean)."""
    import io

    try:
        from docutils.core import publish_doctree
    except ImportError:  # generating without Sphinx: nothing to check with
        return []

    stream = io.StringIO()
    publish_doctree(text, settings_overrides={"report_level": 2, "halt_level": 5,
                                              "warning_stream": stream,
                                              "file_insertion_enabled": False,
                                              "raw_enabled": False})
    return [line for line in stream.getvalue().splitlines()
            if "(WARNING/" in line or "(ERROR/" in line or "(SEVERE/" in line]


def demote_headings(doc):
    """Turn the docstring's ``---`` section underlines into a lower level (``~~~``)."""
    lines = doc.splitlines()
    out = []
    for i, line in enumerate(lines):
        if (i > 0 and line and set(line) <= set("-=") and len(line) >= 3
                and lines[i - 1].strip() and len(line) >= len(lines[i - 1].rstrip())):
            line = "~" * len(line)
        out.append(line)
    return "\n".join(out)


def ops_index(names, ops):
    # Included from docs/ops.rst: paths are absolute from the source folder.
    lines = [".. toctree::", "   :hidden:", ""] + [f"   /generated/ops/{n}" for n in names]
    rows = [(f":doc:`{n} </generated/ops/{n}>`", rst_text(ops[n].summary or ""))
            for n in names]
    lines.append("")
    return "\n".join(lines) + "\n" + list_table(("op", "summary"), rows, (25, 75))


API_GROUPS = [
    ("Convolution objects", ["Conv", "Sequential"]),
    ("Registry", ["available_ops", "get_op", "register_op", "registry", "Key"]),
    ("Threads and memory", ["get_num_threads", "set_num_threads", "num_threads",
                            "release_workspaces"]),
    ("Configuration", ["config", "show_config", "__version__"]),
    ("Errors and warnings", ["SpecError", "PluginWarning"]),
]


def api_page():
    import pyconv

    public = list(pyconv.__all__)
    groups = [(title, [n for n in names if n in public]) for title, names in API_GROUPS]
    known = {n for _, names in groups for n in names}
    rest = [n for n in public if n not in known]
    if rest:
        groups.append(("Other names", rest))
    parts = [".. currentmodule:: pyconv\n"]
    for title, names in groups:
        if not names:
            continue
        parts.append(heading(title, "-"))
        parts.append(".. autosummary::\n\n" + "".join(f"   {n}\n" for n in names))
        for n in names:
            obj = getattr(pyconv, n)
            if inspect.isclass(obj):
                parts.append(f".. autoclass:: {n}\n   :members:\n")
            elif callable(obj) and not isinstance(obj, type):
                parts.append(f".. autofunction:: {n}\n")
            else:
                parts.append(f".. autodata:: {n}\n   :no-value:\n")
    return "\n".join(parts)


# -- Sphinx hooks -------------------------------------------------------------------------------
def generate(app=None):
    import pyconv

    names = list(pyconv.available_ops())
    ops = {n: pyconv.get_op(n) for n in names}
    ops_dir = os.path.join(GENERATED, "ops")
    os.makedirs(ops_dir, exist_ok=True)
    for stale in os.listdir(ops_dir):
        if stale.endswith(".rst") and stale[:-4] not in names and stale != "index.rst":
            os.remove(os.path.join(ops_dir, stale))
    for n in names:
        write_if_changed(os.path.join(ops_dir, f"{n}.rst"), op_page(ops[n]))
    write_if_changed(os.path.join(ops_dir, "index.rst"), ops_index(names, ops))
    write_if_changed(os.path.join(GENERATED, "api.rst"), api_page())

    import sys

    sys.path.insert(0, DOCS)
    try:
        gallery = importlib.import_module("gallery")
        write_if_changed(os.path.join(GENERATED, "gallery.rst"),
                         gallery.build(os.path.join(GENERATED, "gallery")))
    finally:
        sys.path.remove(DOCS)


_PARAM_LINE = re.compile(r"^(\s*\**\w+(?:, \**\w+)* : )(.*)$")


def escape_param_types(app, what, name, obj, options, lines):
    """Escape ``*`` in numpydoc parameter type lines (``shape (N, C, *spatial)``).

    The type text is reStructuredText, where a lone ``*`` opens an emphasis; docstrings
    are written for ``help()`` readers first.
    """
    for i, line in enumerate(lines):
        m = _PARAM_LINE.match(line)
        if m and "*" in m.group(2):
            lines[i] = m.group(1) + re.sub(r"(?<!\\)\*", r"\\*", m.group(2))


def setup(app):
    app.connect("builder-inited", generate)
    app.connect("autodoc-process-docstring", escape_param_types, priority=400)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":  # python docs/_ext/pyconv_docs.py: generate without Sphinx
    generate()
    print(textwrap.fill(f"wrote {GENERATED}"))
