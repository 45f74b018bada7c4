"""The contract every op fulfils, built-in or plugin.

An op is an object (usually one instance of an :class:`Op` subclass) that declares

* ``name`` and a one-line ``summary``;
* ``keys``: its spec keys (:class:`pyconv.Key`), with defaults and validation;
* ``output_shape(spec, input_shape)``: the shape rule, used before any allocation;
* ``param_shapes(spec)``: parameter names (PyTorch state-dict names) and shapes;
* ``macs(spec, input_shape)``: multiply-accumulates (``flops`` defaults to twice that);
* ``forward(spec, x, params, out, n_threads, **inputs)``: the computation.

``spec`` is always the normalised dict that :meth:`Op.normalize` returned.
"""
from __future__ import annotations

import difflib
import math


from pyconv._errors import SpecError
from pyconv._spec import Invalid


class Op:
    """Base class for ops. Subclasses set the class attributes and override methods.

    Attributes
    ----------
    name : str
        Registry name, the spec's ``"op"`` value.
    summary : str
        One line for ``pyconv ops`` and the op reference.
    keys : tuple of Key
        Declared spec keys.
    inputs : tuple of str
        Extra keyword inputs ``apply`` accepts (``offset``, ``indices``, ...).
    formulas : dict
        Human-readable shape/parameter/FLOP rules for the op reference.
    """

    name = None
    summary = ""
    keys = ()
    inputs = ()
    formulas = {}
    #: True if ``out`` may be the input itself (elementwise ops).
    inplace_ok = False

    # -- spec -----------------------------------------------------------------
    def normalize(self, spec):
        """Validate ``spec`` (without ``"op"``) and return its normal form."""
        known = {k.name: k for k in self.keys}
        for name in spec:
            if name not in known:
                close = difflib.get_close_matches(str(name), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise SpecError(self.name, name, "one of the op's keys: " +
                                ", ".join(known), detail=f"got unknown key {name!r}{hint}")
        out = {}
        for k in self.keys:
            if k.name in spec:
                try:
                    out[k.name] = k.check(spec[k.name])
                except Invalid as e:
                    raise SpecError(self.name, k.name, e.expected, spec[k.name],
                                    detail=e.detail) from None
            elif k.required:
                raise SpecError(self.name, k.name, k.type_doc or "a value",
                                detail="the key is required and missing")
            else:
                out[k.name] = k.check(k.default)  # defaults are normalised too
        self.check(out)
        return out

    def check(self, spec):
        """Cross-key checks on a normalised spec; raise :class:`SpecError`."""

    # -- declared rules ----------------------------------------------------------
    def output_shape(self, spec, input_shape):
        raise NotImplementedError

    def param_shapes(self, spec):
        return {}

    def macs(self, spec, input_shape):
        return 0

    def flops(self, spec, input_shape):
        return 2 * self.macs(spec, input_shape)

    def init_params(self, spec, rng):
        """Fresh parameters as float64 arrays (PyTorch's default initialisation)."""
        return {}

    def forward(self, spec, x, params, out, n_threads, **inputs):
        raise NotImplementedError

    def check_inputs(self, spec, input_shape, dtype, **inputs):
        """Validate the extra inputs without computing (used when the output is empty).

        ``forward`` validates them too; ops with ``inputs`` override this so that a
        bad ``offset=`` or ``indices=`` is reported even for an empty batch.
        """

    # -- helpers for subclasses --------------------------------------------------
    def check_input_shape(self, input_shape, rank, channels=None):
        """Validate ``(N, C, *spatial)`` with ``rank`` spatial axes; return it as a tuple."""
        shape = tuple(int(n) for n in input_shape)
        if len(shape) != rank + 2:
            axes = "".join(("L",) if rank == 1 else ("H", "W") if rank == 2 else ("D", "H", "W"))
            raise ValueError(f"{self.name}: expected a {rank + 2}-D input (N, C, "
                             f"{', '.join(axes)}); got shape {shape}")
        if any(n < 0 for n in shape):
            raise ValueError(f"{self.name}: negative size in input shape {shape}")
        if channels is not None and shape[1] != channels:
            raise ValueError(f"{self.name}: expected {channels} input channels "
                             f"(in_channels); got {shape[1]} in input shape {shape}")
        if any(n == 0 for n in shape[2:]):
            raise ValueError(f"{self.name}: zero-size spatial axis in input shape {shape}")
        return shape

    def __repr__(self):
        return f"<pyconv op {self.name!r}>"


def kaiming_uniform(rng, shape, fan_in):
    """PyTorch's ``kaiming_uniform_(a=sqrt(5))``: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return rng.uniform(-bound, bound, size=shape)


def prod(values):
    return math.prod(int(v) for v in values)
