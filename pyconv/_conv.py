"""``Conv``: a spec, the op it names, and its parameters."""
from __future__ import annotations

import json
import math

import numpy as np

from pyconv import _dtypes
from pyconv._errors import SpecError
from pyconv._output_pool import new_output
from pyconv._registry import get_op


#: Input shapes whose output shape a Conv remembers (then it starts over).
_SHAPE_CACHE_SIZE = 64


def _parse_spec(spec):
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as e:
            raise SpecError(None, None, "a dict or a JSON object string",
                            detail=f"the string is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise SpecError(None, None, "a dict with an 'op' key (or a JSON object string)",
                        spec)
    if "op" not in spec:
        raise SpecError(None, "op", "the name of a registered op",
                        detail="the spec has no 'op' key")
    return spec


class Conv:
    """One op with its spec and parameters; ``apply`` runs it on NumPy arrays.

    Parameters
    ----------
    spec : dict or str
        ``{"op": name, **keys}`` or the same as a JSON string. See
        :func:`pyconv.available_ops` and the op reference for the keys.
    params : dict of array_like, optional
        Parameters in PyTorch's layouts and state-dict names (``weight``, ``bias``,
        ...). Given ones are validated (shape, real dtype, finite) and copied; missing
        ones are initialised as PyTorch initialises them.
    seed : int or numpy.random.Generator, optional
        Seed for the initialisation of missing parameters (reproducible).
    dtype : {None, 'float32', 'float64'}
        Storage dtype of the parameters. ``None``: float64 if any given parameter is
        float64, else float32 (PyTorch's default). The computation always runs in the
        input's dtype; parameters are converted to it (and the conversion cached).

    Examples
    --------
    >>> import numpy as np, pyconv
    >>> conv = pyconv.Conv({"op": "conv2d", "in_channels": 3, "out_channels": 8,
    ...                     "kernel_size": 3, "stride": 2, "padding": "same"}, seed=0)
    >>> conv.output_shape((4, 3, 31, 31))
    (4, 8, 16, 16)
    >>> conv.param_count
    224
    >>> x = np.random.default_rng(0).random((4, 3, 31, 31), dtype=np.float32)
    >>> y = conv.apply(x)
    >>> y.shape, y.dtype
    ((4, 8, 16, 16), dtype('float32'))
    >>> again = pyconv.Conv(conv.spec, params=conv.params)
    >>> bool(np.array_equal(again.apply(x), y))
    True
    """

    def __init__(self, spec, *, params=None, seed=None, dtype=None):
        spec = _parse_spec(spec)
        self._op = get_op(spec["op"])
        body = {k: v for k, v in spec.items() if k != "op"}
        self._spec = {"op": self._op.name, **self._op.normalize(body)}
        self._param_shapes = {name: tuple(int(n) for n in shape) for name, shape
                              in self._op.param_shapes(self._spec).items()}
        self._params = self._build_params(params or {}, seed, dtype)
        self._cast_cache = {}
        # output shape by input shape: the spec never changes, and the shape rule
        # costs several microseconds of Python, a sizeable share of a small call
        self._shape_cache = {}

    # -- parameters -----------------------------------------------------------------
    def _build_params(self, given, seed, dtype):
        name = self._op.name
        if not isinstance(given, dict):
            raise TypeError(f"{name}: params must be a dict of arrays; got "
                            f"{type(given).__name__}")
        unknown = set(given) - set(self._param_shapes)
        if unknown:
            raise ValueError(f"{name}: unknown parameter(s) {sorted(unknown)}; this spec "
                             f"has {sorted(self._param_shapes) or 'no parameters'}")
        arrays = {}
        for pname, value in given.items():
            arr = np.asarray(value)
            if arr.dtype.kind not in "biuf" or arr.dtype.kind == "b":
                raise TypeError(f"{name}: parameter {pname!r} must be a real numeric "
                                f"array; got dtype {arr.dtype}")
            expected = self._param_shapes[pname]
            if arr.shape != expected:
                raise ValueError(f"{name}: parameter {pname!r} must have shape "
                                 f"{expected}; got {arr.shape}")
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}: parameter {pname!r} contains NaN or infinity")
            arrays[pname] = arr
        if dtype is None:
            dtype = (np.float64 if any(a.dtype == np.float64 for a in arrays.values())
                     else np.float32)
        dtype = np.dtype(dtype)
        if dtype not in _dtypes.NATIVE:
            raise TypeError(f"{name}: dtype must be float32 or float64; got {dtype}")
        self._dtype = dtype
        missing = [p for p in self._param_shapes if p not in arrays]
        if missing:
            rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
            fresh = self._op.init_params(self._spec, rng)
            for pname in missing:
                arrays[pname] = fresh[pname]
        params = {}
        for pname in self._param_shapes:  # declared order
            arr = np.array(arrays[pname], dtype=dtype, order="C", copy=True)
            arr.setflags(write=False)
            params[pname] = arr
        return params

    def _params_as(self, dtype):
        if dtype == self._dtype:
            return self._params
        cached = self._cast_cache.get(dtype)
        if cached is None:
            cached = {k: v.astype(dtype) for k, v in self._params.items()}
            for arr in cached.values():
                arr.setflags(write=False)
            self._cast_cache[dtype] = cached
        return cached

    # -- declared rules -----------------------------------------------------------------
    @property
    def op(self):
        """The registered op object."""
        return self._op

    @property
    def spec(self):
        """The normalised, JSON-able spec (a fresh copy)."""
        return json.loads(json.dumps(self._spec))

    @property
    def params(self):
        """Parameters, ``{name: read-only array}`` in PyTorch layouts."""
        return dict(self._params)

    @property
    def param_shapes(self):
        """``{name: shape}`` of the parameters."""
        return dict(self._param_shapes)

    @property
    def param_count(self):
        """Number of scalar parameters."""
        return sum(math.prod(s) for s in self._param_shapes.values())

    @property
    def dtype(self):
        """Storage dtype of the parameters."""
        return self._dtype

    def output_shape(self, input_shape, **inputs):
        """Output shape for an input shape, without computing anything.

        ``inputs``: extra inputs that decide the shape, for ops that list them in
        ``shape_inputs`` (``output_size=`` of the transposed convolutions).
        """
        unknown = set(inputs) - set(getattr(self._op, "shape_inputs", ()))
        if unknown:
            raise TypeError(f"{self._op.name}: output_shape() got unexpected input(s) "
                            f"{', '.join(sorted(unknown))}")
        return tuple(int(n) for n in self._op.output_shape(self._spec, tuple(input_shape),
                                                           **inputs))

    def macs(self, input_shape):
        """Multiply-accumulate count for an input shape."""
        return int(self._op.macs(self._spec, tuple(input_shape)))

    def flops(self, input_shape):
        """Floating-point operation count for an input shape (see the op's formulas)."""
        return int(self._op.flops(self._spec, tuple(input_shape)))

    def get_config(self):
        """Same as :attr:`spec` (numcodecs-style name)."""
        return self.spec

    @classmethod
    def from_config(cls, config, **kwargs):
        """Build from a spec (numcodecs-style name)."""
        return cls(config, **kwargs)

    # -- computation ------------------------------------------------------------------------
    def apply(self, x, *, out=None, n_threads=None, **inputs):
        """Run the op on ``x``.

        Parameters
        ----------
        x : array_like, shape (N, C, *spatial)
            Any memory layout; never modified. float32/float64 are computed natively;
            other real dtypes follow the rule in :mod:`pyconv._dtypes`.
        out : numpy.ndarray, optional
            Destination with exactly the output shape and dtype, C-contiguous and
            writeable.
        n_threads : int, optional
            Threads for this call (see :func:`pyconv.get_num_threads` for the policy).
        **inputs
            Extra inputs the op declares (e.g. ``offset``, ``mask``, ``indices``).

        Returns
        -------
        numpy.ndarray
        """
        name = self._op.name
        if inputs:
            unknown = set(inputs) - set(self._op.inputs)
            if unknown:
                allowed = ", ".join(self._op.inputs) or "none"
                raise TypeError(f"{name}: apply() got unexpected input(s) "
                                f"{', '.join(sorted(unknown))}; this op accepts: "
                                f"{allowed}")
        arr = np.asarray(x)
        dtype = _dtypes.compute_dtype(name, arr.dtype)
        shape_inputs = {k: v for k, v in inputs.items()
                        if k in getattr(self._op, "shape_inputs", ())} if inputs else None
        if shape_inputs:
            out_shape = self.output_shape(arr.shape, **shape_inputs)
        else:
            out_shape = self._shape_cache.get(arr.shape)
            if out_shape is None:
                out_shape = self.output_shape(arr.shape)  # raises on a bad shape
                if len(self._shape_cache) >= _SHAPE_CACHE_SIZE:
                    self._shape_cache.clear()
                self._shape_cache[arr.shape] = out_shape
        if out is not None:
            self._check_out(out, out_shape, dtype, arr)
        xc = np.ascontiguousarray(arr, dtype=dtype)
        if out is None:
            out = new_output(out_shape, dtype)
        if out.size == 0 and not getattr(self._op, "forward_when_empty", False):
            # Nothing to compute, but extra inputs are still validated.
            check_inputs = getattr(self._op, "check_inputs", None)
            if check_inputs is not None:
                check_inputs(self._spec, xc.shape, dtype, **inputs)
            return out
        return self._op.forward(self._spec, xc, self._params_as(dtype), out, n_threads,
                                **inputs)

    def _check_out(self, out, shape, dtype, x):
        name = self._op.name
        if not isinstance(out, np.ndarray):
            raise TypeError(f"{name}: out must be a numpy.ndarray; got {type(out).__name__}")
        if out.shape != shape or out.dtype != dtype:
            raise ValueError(f"{name}: out must have shape {shape} and dtype {dtype}; got "
                             f"shape {out.shape} and dtype {out.dtype}")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"{name}: out must be C-contiguous and writeable")
        if np.shares_memory(out, x) and not (self._op.inplace_ok and out is x):
            raise ValueError(f"{name}: out overlaps the input; this op cannot run in place")

    # -- identity ----------------------------------------------------------------------------
    def __eq__(self, other):
        """Equal when the specs are equal (parameters are not compared)."""
        if not isinstance(other, Conv):
            return NotImplemented
        return self._spec == other._spec

    __hash__ = None

    def __repr__(self):
        return f"Conv({json.dumps(self._spec)})"
