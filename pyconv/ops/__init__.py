"""Built-in ops, one module per family, and the :class:`Op` base class for plugins.

Each public module here (no leading underscore) defines ``OPS``, the list of op
instances it contributes; :func:`builtin_ops` collects them.
"""
import importlib
import pkgutil

from pyconv.ops._base import Op, kaiming_uniform

__all__ = ["Op", "kaiming_uniform", "builtin_ops"]


def builtin_ops():
    """Every built-in op instance, module by module in alphabetical order."""
    ops = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            ops.extend(module.OPS)
    return ops
