"""The op registry: built-in ops and third-party ones from the ``pyconv.ops`` entry points.

Plugins are discovered lazily, once, the first time a name is missing or the list of
ops is asked for. A plugin that fails to load gives a :class:`PluginWarning` naming
its distribution and never breaks ``import pyconv``.

An entry point may point to an :class:`~pyconv.ops.Op` instance, an ``Op`` subclass
(instantiated with no arguments), or a list of either.
"""
from __future__ import annotations

import threading
import types
import warnings

from pyconv._errors import PluginWarning, SpecError

ENTRY_POINT_GROUP = "pyconv.ops"

_ops = {}
#: Read-only view of the registry: ``{name: op}``.
registry = types.MappingProxyType(_ops)
_plugins_loaded = False
_lock = threading.RLock()


def _as_op(obj):
    from pyconv.ops._base import Op

    if isinstance(obj, type) and issubclass(obj, Op):
        obj = obj()
    for attr in ("name", "keys", "output_shape", "forward"):
        if not hasattr(obj, attr):
            raise TypeError(f"register_op: {obj!r} is not an op: it lacks {attr!r} "
                            "(subclass pyconv.ops.Op)")
    if not isinstance(obj.name, str) or not obj.name:
        raise TypeError(f"register_op: {obj!r} has no valid name (a non-empty str)")
    return obj


def register_op(op, *, replace=False):
    """Add an op to the registry and return it (usable as a class decorator).

    Parameters
    ----------
    op : Op instance or Op subclass
        The op; a subclass is instantiated with no arguments.
    replace : bool
        Allow replacing an op already registered under the same name.

    Raises
    ------
    ValueError
        If the name is taken and ``replace`` is false.

    Examples
    --------
    >>> import numpy as np, pyconv
    >>> from pyconv.ops import Op
    >>> class Negate(Op):
    ...     name = "negate_example"
    ...     summary = "Multiply by -1."
    ...     def output_shape(self, spec, input_shape):
    ...         return tuple(input_shape)
    ...     def forward(self, spec, x, params, out, n_threads):
    ...         return np.negative(x, out=out)
    >>> _ = pyconv.register_op(Negate)
    >>> pyconv.Conv({"op": "negate_example"}).apply(np.array([[1.0, -2.0]]))
    array([[-1.,  2.]])
    """
    instance = _as_op(op)
    with _lock:
        if instance.name in _ops and not replace:
            raise ValueError(f"register_op: an op named {instance.name!r} is already "
                             "registered (pass replace=True to replace it)")
        _ops[instance.name] = instance
    return op


def _load_plugins():
    global _plugins_loaded
    with _lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True
        from importlib.metadata import entry_points

        try:
            eps = entry_points(group=ENTRY_POINT_GROUP)
        except Exception as e:  # pragma: no cover - broken metadata on sys.path
            warnings.warn(f"pyconv: could not read entry points: {e}", PluginWarning,
                          stacklevel=3)
            return
        for ep in eps:
            dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown distribution"
            try:
                obj = ep.load()
                objs = obj if isinstance(obj, (list, tuple)) else [obj]
                for item in objs:
                    instance = _as_op(item)
                    if instance.name in _ops:
                        raise ValueError(f"op name {instance.name!r} is already registered")
                    _ops[instance.name] = instance
            except Exception as e:
                warnings.warn(f"pyconv: plugin entry point {ep.name!r} ({ep.value}) from "
                              f"distribution {dist!r} failed to load and was skipped: "
                              f"{type(e).__name__}: {e}", PluginWarning, stacklevel=3)


def get_op(name):
    """The op registered under ``name``.

    Raises
    ------
    SpecError
        If no such op exists (the message lists close names).

    Examples
    --------
    >>> import pyconv
    >>> pyconv.get_op("conv2d").name
    'conv2d'
    """
    op = _ops.get(name)
    if op is None and not _plugins_loaded:
        _load_plugins()
        op = _ops.get(name)
    if op is None:
        import difflib

        close = difflib.get_close_matches(str(name), list(_ops), n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise SpecError(None, "op", "the name of a registered op (see "
                        "pyconv.available_ops())", detail=f"got {name!r}{hint}")
    return op


def available_ops():
    """Sorted names of every registered op, plugins included.

    Examples
    --------
    >>> import pyconv
    >>> "conv3d" in pyconv.available_ops()
    True
    """
    _load_plugins()
    return tuple(sorted(_ops))
