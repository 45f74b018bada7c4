"""``Sequential``: a stack of ops with shape inference, counts and a summary table.

Receptive field
---------------
Per spatial axis, starting from ``r = 1`` and ``j = 1`` at the input, each layer with a
window of effective size ``k_eff = d*(k-1) + 1`` and stride ``s`` gives
``r_out = r_in + (k_eff - 1) * j_in`` and ``j_out = j_in * s`` (SEMANTICS.md, "Shapes and
counts of whole stacks"). ``r`` is the number of input pixels one output pixel
depends on along that axis, ``j`` the distance in input pixels between two adjacent
output pixels. Padding does not change either.

A layer's window comes from, in order:

1. ``op.receptive_field(spec)`` (or ``op.receptive_field(spec, input_shape)``) if the
   op defines it: ``None`` for an op without a window (elementwise, 1x1), else one
   ``(k_eff, stride)`` pair per spatial axis;
2. the spec's ``kernel_size``/``stride``/``dilation`` keys (a missing or ``None``
   stride means the kernel size, the pooling convention), unless the op name says it
   upsamples (``transpose``, ``unpool``), where those keys mean something else;
3. nothing: if the spatial shape is unchanged the field is kept, otherwise it is
   unknown (shown as ``?``) from that layer on.
"""
from __future__ import annotations

import inspect
import json
import numbers

import numpy as np

from pyconv._conv import Conv


def _add_context(error, prefix):
    """Prefix an exception's message in place (keeps its type and attributes)."""
    if error.args and isinstance(error.args[0], str):
        error.args = (prefix + error.args[0],) + error.args[1:]
    else:
        error.args = (prefix + str(error),)


def _split_params(params, n_layers):
    """``{"i.name": array}`` -> ``{i: {name: array}}``, checking the indices."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise TypeError("Sequential: params must be a dict {'<layer>.<name>': array}; got "
                        f"{type(params).__name__}")
    per_layer = {}
    for full, value in params.items():
        head, sep, name = str(full).partition(".")
        if not sep or not head.isdigit() or not name:
            raise ValueError(f"Sequential: parameter key {full!r} is not of the form "
                             "'<layer index>.<name>' (e.g. '0.weight')")
        i = int(head)
        if i >= n_layers:
            raise ValueError(f"Sequential: parameter key {full!r} names layer {i}, but the "
                             f"stack has {n_layers} layers")
        per_layer.setdefault(i, {})[name] = value
    return per_layer


def _window(conv, in_shape, out_shape):
    """Per-axis ``(k_eff, stride)`` pairs, ``None`` (no window) or ``"unknown"``."""
    op, spec = conv.op, conv.spec
    rank = len(in_shape) - 2
    method = getattr(op, "receptive_field", None)
    if callable(method):
        try:
            n_args = len(inspect.signature(method).parameters)
        except (TypeError, ValueError):
            n_args = 1
        window = method(spec, tuple(in_shape)) if n_args >= 2 else method(spec)
        if window is None:
            return None
        return [(int(k), int(s)) for k, s in window]
    name = op.name.lower()
    if "kernel_size" in spec and "transpose" not in name and "unpool" not in name:
        k = spec["kernel_size"]
        s = spec.get("stride")
        d = spec.get("dilation")
        k = [k] * rank if isinstance(k, numbers.Integral) else list(k)
        s = k if s is None else ([s] * rank if isinstance(s, numbers.Integral) else list(s))
        d = [1] * rank if d is None else (
            [d] * rank if isinstance(d, numbers.Integral) else list(d))
        if len(k) == len(s) == len(d) == rank:
            return [(di * (ki - 1) + 1, si) for ki, si, di in zip(k, s, d)]
        return "unknown"
    if len(out_shape) == len(in_shape) and tuple(out_shape[2:]) == tuple(in_shape[2:]):
        return None
    return "unknown"


def _fmt_int(n):
    return f"{n:,}"


def _fmt_axes(values):
    return "?" if values is None else "x".join(str(v) for v in values)


class StackSummary:
    """What :meth:`Sequential.summary` returns; ``str()`` (and ``repr()``) is the table.

    Attributes
    ----------
    rows : list of dict
        One per layer: ``index``, ``op``, ``output_shape``, ``params``, ``macs``,
        ``flops``, ``rf`` (receptive field per spatial axis, or None if unknown) and
        ``jump`` (likewise).
    input_shape, output_shape : tuple
    total_params, total_macs, total_flops : int
    """

    def __init__(self, input_shape, rows):
        self.input_shape = tuple(input_shape)
        self.rows = rows
        self.output_shape = rows[-1]["output_shape"] if rows else self.input_shape
        self.total_params = sum(r["params"] for r in rows)
        self.total_macs = sum(r["macs"] for r in rows)
        self.total_flops = sum(r["flops"] for r in rows)

    def table(self):
        head = ("#", "Layer (op)", "Output shape", "Params", "MACs", "Receptive field",
                "Jump")
        first = ("", "input", str(self.input_shape), "", "",
                 _fmt_axes([1] * (len(self.input_shape) - 2)),
                 _fmt_axes([1] * (len(self.input_shape) - 2)))
        body = [first] + [
            (str(r["index"]), r["op"], str(r["output_shape"]), _fmt_int(r["params"]),
             _fmt_int(r["macs"]), _fmt_axes(r["rf"]), _fmt_axes(r["jump"]))
            for r in self.rows]
        widths = [max(len(row[c]) for row in [head] + body) for c in range(len(head))]
        right = {0, 3, 4}

        def line(row):
            cells = [cell.rjust(w) if c in right else cell.ljust(w)
                     for c, (cell, w) in enumerate(zip(row, widths))]
            return "  ".join(cells).rstrip()

        rule_len = sum(widths) + 2 * (len(widths) - 1)
        parts = [line(head), "=" * rule_len]
        parts += [line(row) for row in body]
        parts += ["=" * rule_len,
                  f"Total params: {_fmt_int(self.total_params)}",
                  f"Total MACs: {_fmt_int(self.total_macs)}",
                  f"Total FLOPs: {_fmt_int(self.total_flops)}",
                  "-" * rule_len]
        return "\n".join(parts)

    def __str__(self):
        return self.table()

    __repr__ = __str__


class Sequential:
    """A stack of ops applied one after the other.

    Parameters
    ----------
    layers : sequence of (dict, str or Conv), or a JSON string of such a list
        Layer specs (``{"op": name, **keys}``) or ready :class:`pyconv.Conv` objects.
    params : dict of array_like, optional
        Parameters as a PyTorch ``nn.Sequential`` state dict names them:
        ``"{layer index}.{name}"`` (``"0.weight"``, ``"0.bias"``, ...). They override
        those of Conv layers passed in; missing ones are initialised.
    seed : int or numpy.random.Generator, optional
        Seeds the initialisation of all missing parameters, layer after layer.
    dtype : {None, 'float32', 'float64'}
        Storage dtype of the parameters of layers built from specs.

    Examples
    --------
    >>> import numpy as np, pyconv
    >>> net = pyconv.Sequential([
    ...     {"op": "conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3,
    ...      "padding": "same"},
    ...     {"op": "relu"},
    ...     {"op": "conv2d", "in_channels": 8, "out_channels": 16, "kernel_size": 3,
    ...      "stride": 2},
    ... ], seed=0)
    >>> net.output_shape((1, 3, 32, 32))
    (1, 16, 15, 15)
    >>> net.param_count
    1392
    >>> net.apply(np.zeros((1, 3, 32, 32), np.float32)).shape
    (1, 16, 15, 15)
    >>> sorted(net.params)
    ['0.bias', '0.weight', '2.bias', '2.weight']
    >>> pyconv.Sequential(net.spec, params=net.params).spec == net.spec
    True
    >>> print(net.summary((1, 3, 32, 32)))  # doctest: +NORMALIZE_WHITESPACE
    #  Layer (op)  Output shape      Params     MACs  Receptive field  Jump
    ======================================================================
       input       (1, 3, 32, 32)                     1x1              1x1
    0  conv2d      (1, 8, 32, 32)       224  221,184  3x3              1x1
    1  relu        (1, 8, 32, 32)         0        0  3x3              1x1
    2  conv2d      (1, 16, 15, 15)    1,168  259,200  5x5              2x2
    ======================================================================
    Total params: 1,392
    Total MACs: 480,384
    Total FLOPs: 968,960
    ----------------------------------------------------------------------
    """

    def __init__(self, layers, *, params=None, seed=None, dtype=None):
        if isinstance(layers, str):
            try:
                layers = json.loads(layers)
            except json.JSONDecodeError as e:
                raise ValueError(f"Sequential: the layers string is not valid JSON: {e}") \
                    from None
        if isinstance(layers, (dict, Conv)) or not hasattr(layers, "__iter__"):
            raise TypeError("Sequential: layers must be a list of specs or Conv objects; "
                            f"got {type(layers).__name__}")
        layers = list(layers)
        per_layer = _split_params(params, len(layers))
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        built = []
        for i, item in enumerate(layers):
            given = per_layer.get(i, {})
            if not isinstance(item, (dict, str, Conv)):
                raise TypeError(f"Sequential: layer {i} must be a spec (dict or JSON "
                                f"string) or a pyconv.Conv; got {type(item).__name__}")
            try:
                if isinstance(item, Conv) and given:
                    conv = Conv(item.spec, params={**item.params, **given},
                                dtype=item.dtype)
                elif isinstance(item, Conv):
                    conv = item
                else:
                    conv = Conv(item, params=given, seed=rng, dtype=dtype)
            except (ValueError, TypeError) as e:
                _add_context(e, f"Sequential: layer {i}: ")
                raise
            built.append(conv)
        self._layers = built

    # -- container ----------------------------------------------------------------
    @property
    def layers(self):
        """The layers, as a list of :class:`pyconv.Conv` (a fresh list)."""
        return list(self._layers)

    def __len__(self):
        return len(self._layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(self._layers[index])
        return self._layers[index]

    def __iter__(self):
        return iter(self._layers)

    def __repr__(self):
        if not self._layers:
            return "Sequential([])"
        inner = ",\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self._layers))
        return f"Sequential([\n{inner}\n])"

    # -- declared rules -----------------------------------------------------------------
    @property
    def spec(self):
        """JSON-able list of the layers' normalised specs."""
        return [layer.spec for layer in self._layers]

    def get_config(self):
        """Same as :attr:`spec`."""
        return self.spec

    @property
    def params(self):
        """All parameters, ``{"{index}.{name}": read-only array}`` (state-dict style)."""
        return {f"{i}.{name}": arr for i, layer in enumerate(self._layers)
                for name, arr in layer.params.items()}

    @property
    def param_count(self):
        """Number of scalar parameters of all layers."""
        return sum(layer.param_count for layer in self._layers)

    def _walk(self, input_shape):
        """Yield ``(index, layer, in_shape, out_shape)``; errors name the layer."""
        try:
            shape = tuple(int(n) for n in input_shape)
        except (TypeError, ValueError):
            raise ValueError(f"Sequential: input shape must be a sequence of ints; got "
                             f"{input_shape!r}") from None
        for i, layer in enumerate(self._layers):
            try:
                out = layer.output_shape(shape)
            except ValueError as e:
                source = ("the input" if i == 0 else
                          f"the output of layer {i - 1} ({self._layers[i - 1].op.name})")
                raise ValueError(f"Sequential: layer {i} ({layer.op.name}) cannot take "
                                 f"{source}, of shape {shape}: {e}") from e
            yield i, layer, shape, out
            shape = out

    def output_shape(self, input_shape):
        """Shape of the stack's output for an input shape (nothing is computed)."""
        shape = tuple(input_shape)
        for _, _, _, shape in self._walk(input_shape):
            pass
        return tuple(int(n) for n in shape)

    def macs(self, input_shape):
        """Multiply-accumulates of the whole stack."""
        return sum(layer.macs(shape) for _, layer, shape, _ in self._walk(input_shape))

    def flops(self, input_shape):
        """FLOPs of the whole stack (each layer counted by its op's convention)."""
        return sum(layer.flops(shape) for _, layer, shape, _ in self._walk(input_shape))

    def receptive_field(self, input_shape):
        """``(field, jump)`` of the stack's output per spatial axis (None if unknown)."""
        rows = self._rows(input_shape)
        if not rows:
            n = len(tuple(input_shape)) - 2
            return [1] * n, [1] * n
        return rows[-1]["rf"], rows[-1]["jump"]

    def _rows(self, input_shape):
        rows = []
        n_axes = max(len(tuple(input_shape)) - 2, 0)
        rf, jump = [1] * n_axes, [1] * n_axes
        for i, layer, shape, out in self._walk(input_shape):
            if rf is not None:
                window = _window(layer, shape, out)
                if window == "unknown" or (window is not None and len(window) != len(rf)):
                    rf = jump = None
                elif window is not None:
                    rf = [r + (k - 1) * j for r, j, (k, _) in zip(rf, jump, window)]
                    jump = [j * s for j, (_, s) in zip(jump, window)]
            rows.append({"index": i, "op": layer.op.name, "output_shape": out,
                         "params": layer.param_count, "macs": layer.macs(shape),
                         "flops": layer.flops(shape),
                         "rf": None if rf is None else list(rf),
                         "jump": None if jump is None else list(jump)})
        return rows

    def summary(self, input_shape, *, print_fn=None):
        """A Keras-style table: layer, op, output shape, params, MACs, receptive field.

        Parameters
        ----------
        input_shape : tuple of int
            ``(N, C, *spatial)``.
        print_fn : callable, optional
            Called with the table text (e.g. ``print``).

        Returns
        -------
        StackSummary
            ``str()`` gives the table; ``rows`` and ``total_*`` give the figures.
        """
        result = StackSummary(tuple(int(n) for n in input_shape), self._rows(input_shape))
        if print_fn is not None:
            print_fn(result.table())
        return result

    # -- computation ---------------------------------------------------------------------
    def apply(self, x, *, n_threads=None):
        """Run the layers in order; an op returning a tuple passes its first element on.

        ``x`` is never modified. Shapes are checked for the whole stack before any
        layer runs. Elementwise ops run in place on intermediate results.
        """
        arr = np.asarray(x)
        for _ in self._walk(arr.shape):  # fail before computing anything
            pass
        y = arr
        for i, layer in enumerate(self._layers):
            try:
                if (y is not arr and layer.op.inplace_ok and isinstance(y, np.ndarray)
                        and y.flags.c_contiguous and y.flags.writeable
                        and y.dtype in (np.float32, np.float64)
                        and layer.output_shape(y.shape) == y.shape
                        and not np.may_share_memory(y, arr)):
                    result = layer.apply(y, out=y, n_threads=n_threads)
                else:
                    result = layer.apply(y, n_threads=n_threads)
            except (ValueError, TypeError) as e:
                _add_context(e, f"Sequential: layer {i} ({layer.op.name}): ")
                raise
            y = result[0] if isinstance(result, tuple) else result
        if y is arr:  # an empty stack (or an identity op) must not hand back the input
            y = np.array(arr, copy=True)
        return y

    def __eq__(self, other):
        if not isinstance(other, Sequential):
            return NotImplemented
        return self.spec == other.spec

    __hash__ = None

