"""Built-in ops, one module per family, and the :class:`Op` base class for plugins."""
from pyconv.ops._base import Op, kaiming_uniform

__all__ = ["Op", "kaiming_uniform", "builtin_ops"]


def builtin_ops():
    """Every built-in op instance, in registration order."""
    from pyconv.ops import conv

    return [*conv.OPS]
