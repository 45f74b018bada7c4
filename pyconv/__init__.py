"""pyconv: every CNN convolution and pooling op as compiled, OpenMP-parallel CPU kernels.

One entry point serves every op::

    >>> import numpy as np, pyconv
    >>> conv = pyconv.Conv({"op": "conv2d", "in_channels": 3, "out_channels": 8,
    ...                     "kernel_size": 3, "padding": "same"}, seed=0)
    >>> conv.apply(np.zeros((1, 3, 32, 32), np.float32)).shape
    (1, 8, 32, 32)
"""
from pyconv._config import config, show_config
from pyconv._conv import Conv
from pyconv._errors import PluginWarning, SpecError
from pyconv._registry import available_ops, get_op, register_op, registry
from pyconv._sequential import Sequential
from pyconv._spec import Key
from pyconv._threads import get_num_threads, num_threads, set_num_threads
from pyconv._version import __version__
from pyconv._workspace import release_workspaces


def _register_builtins():
    from pyconv.ops import builtin_ops

    for op in builtin_ops():
        register_op(op)


_register_builtins()

__all__ = [
    "Conv",
    "Key",
    "PluginWarning",
    "Sequential",
    "SpecError",
    "__version__",
    "available_ops",
    "config",
    "get_num_threads",
    "get_op",
    "num_threads",
    "register_op",
    "registry",
    "release_workspaces",
    "set_num_threads",
    "show_config",
]
